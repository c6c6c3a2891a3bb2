"""Image manifests: CIFAR-10's zip + CSV layout and Fashion-MNIST's idx files read in place,
our JSON Lines manifest, seeded splits, and teaching errors for what cannot be read. Most tests
build tiny look-alike sources; two read a few real images when the data are there."""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from suite.data.images import (
    CIFAR10_DIR,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    ImageDataError,
    ImageManifest,
    cifar10,
    decode_image,
    fashion_mnist,
    from_pil,
    load_image_manifest,
    read_image,
)

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("cat", "ship")


def image_bytes(seed: int, size: int = 8, fmt: str = "PNG", mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buffer, fmt)
    return buffer.getvalue()


def cifar_like(folder: Path, split: str = "train", per_class: int = 3) -> Path:
    """``split.zip`` of PNGs under ``split/<class>/NNNN.png`` and ``split.csv`` beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["path,label"]
    with zipfile.ZipFile(folder / f"{split}.zip", "w", zipfile.ZIP_STORED) as z:
        for c, label in enumerate(CLASSES):
            for i in range(per_class):
                member = f"{split}/{label}/{i:04d}.png"
                z.writestr(member, image_bytes(10 * c + i))
                rows.append(f"{member},{label}")
    (folder / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return folder / f"{split}.zip"


def idx_like(folder: Path, count: int = 5, size: int = 6) -> Path:
    """Fashion-MNIST's ``train-images-idx3-ubyte.gz`` and labels, ``count`` images."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.arange(count * size * size, dtype=np.uint8).reshape(count, size, size)
    images = folder / "train-images-idx3-ubyte.gz"
    with gzip.open(images, "wb") as f:
        f.write(struct.pack(">4B3I", 0, 0, 8, 3, count, size, size) + pixels.tobytes())
    with gzip.open(folder / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">4BI", 0, 0, 8, 1, count) + bytes(range(count)))
    return images


def test_a_cifar_layout_zip_is_read_in_place_in_csv_order(tmp_path):
    manifest = load_image_manifest(cifar_like(tmp_path))
    assert len(manifest) == 6 and manifest.labels == list(CLASSES)
    item = manifest[3]
    assert (item.id, item.member, item.label) == ("train/ship/0000", "train/ship/0000.png", "ship")
    image = manifest.load(3)
    assert image.dtype == torch.uint8 and image.shape == (3, 8, 8)
    expected = np.array(Image.open(io.BytesIO(image_bytes(10))))
    assert torch.equal(image, torch.from_numpy(expected).permute(2, 0, 1))
    assert not list(tmp_path.glob("train/"))  # nothing unpacked
    # Without a CSV: every image member, labelled by its folder.
    (tmp_path / "train.csv").unlink()
    assert ImageManifest.from_zip(tmp_path / "train.zip").labels == list(CLASSES)


def test_idx_files_are_read_with_their_labels(tmp_path):
    folder = tmp_path / "fashion-mnist"
    manifest = load_image_manifest(idx_like(folder))
    assert len(manifest) == 5
    assert [i.label for i in manifest] == list(FASHION_MNIST_CLASSES[:5])  # the folder's name
    assert manifest[2].id == "train-00002"
    image = manifest.load(2)
    assert image.shape == (1, 6, 6) and int(image[0, 0, 0]) == 72  # 2 * 36


def test_jsonl_round_trip_keeps_every_item(tmp_path):
    manifest = load_image_manifest(cifar_like(tmp_path / "c"))
    manifest = ImageManifest([*manifest, *load_image_manifest(idx_like(tmp_path / "f"))])
    path = manifest.to_jsonl(tmp_path / "images.jsonl.gz")
    again = load_image_manifest(path)
    assert list(again) == list(manifest)
    assert torch.equal(again.load(7), manifest.load(7))


def test_splits_and_samples_are_seeded_and_disjoint(tmp_path):
    manifest = load_image_manifest(cifar_like(tmp_path, per_class=10))
    rest, held = manifest.split(5, seed=3)
    assert len(rest) == 15 and len(held) == 5
    assert not {i.id for i in rest} & {i.id for i in held}
    assert [i.id for i in held] == [i.id for i in manifest.split(5, seed=3)[1]]
    assert [i.id for i in held] != [i.id for i in manifest.split(5, seed=4)[1]]
    assert len(manifest.split(0.25)[1]) == 5
    assert [i.id for i in manifest.sample(4, seed=1)] == [i.id for i in manifest.sample(4, 1)]
    assert manifest.sample(100) is manifest
    shuffled = manifest.shuffle(0)
    assert sorted(i.id for i in shuffled) == sorted(i.id for i in manifest)


def test_unreadable_or_missing_data_are_teaching_errors(tmp_path):
    with pytest.raises(ImageDataError, match="no image data at .*expected a .zip"):
        load_image_manifest(tmp_path / "absent.zip")
    zip_path = cifar_like(tmp_path)
    csv = tmp_path / "train.csv"
    csv.write_text(csv.read_text() + "train/dog/0000.png,dog\n")
    with pytest.raises(ImageDataError, match="lists 1 images that .* does not hold"):
        load_image_manifest(zip_path)
    (tmp_path / "bad.csv").write_text("file,label\nx.png,cat\n")
    with pytest.raises(ImageDataError, match="expected a header `path,label`"):
        ImageManifest.from_zip(zip_path, tmp_path / "bad.csv")
    # A corrupt member is named when it is read, not when the manifest is made.
    broken = tmp_path / "broken"
    broken.mkdir()
    with zipfile.ZipFile(broken / "test.zip", "w") as z:
        z.writestr("test/cat/0000.jpg", b"not a jpeg")
        z.writestr("test/cat/0001.jpg", b"")
    (broken / "test.csv").write_text("path,label\ntest/cat/0000.jpg,cat\ntest/cat/0001.jpg,cat\n")
    manifest = load_image_manifest(broken / "test.zip")
    with pytest.raises(ImageDataError, match="cannot decode .*test.zip:test/cat/0000.jpg"):
        manifest.load(0)
    with pytest.raises(ImageDataError, match="empty"):
        manifest.load(1)
    (tmp_path / "x-images-idx3-ubyte").write_bytes(b"\0\0\x08\x01" + b"\0" * 8)
    with pytest.raises(ImageDataError, match="not an idx file of 3-d"):
        load_image_manifest(tmp_path / "x-images-idx3-ubyte")
    (tmp_path / "m.jsonl").write_text('{"id": "a", "source": "nowhere.png"}\n')
    with pytest.raises(ImageDataError, match="nowhere.png does not exist"):
        load_image_manifest(tmp_path / "m.jsonl")
    (tmp_path / "n.jsonl").write_text('{"id": "a", "path": "x.png"}\n')
    with pytest.raises(ImageDataError, match="n.jsonl:1 is not an image item"):
        load_image_manifest(tmp_path / "n.jsonl")
    with pytest.raises(ImageDataError, match="appears twice"):
        ImageManifest([manifest[0], manifest[0]])


def test_read_image_takes_paths_pil_arrays_and_tensors(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(image_bytes(1))
    from_path = read_image(path)
    assert from_path.shape == (3, 8, 8)
    assert torch.equal(read_image(Image.open(path)), from_path)
    assert torch.equal(read_image(from_path.permute(1, 2, 0).numpy()), from_path)  # (H, W, C)
    assert read_image(torch.zeros(5, 7)).shape == (1, 5, 7)
    gray = tmp_path / "g.png"
    gray.write_bytes(image_bytes(2, mode="L"))
    assert read_image(gray).shape == (1, 8, 8)
    with pytest.raises(ImageDataError, match="no image file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ImageDataError, match="expected an image"):
        read_image(torch.zeros(0, 4, 4))
    with pytest.raises(ImageDataError, match="cannot read a dict"):
        read_image({})


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk claiming ``width x height`` RGB pixels, and no data."""
    import zlib

    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    crc = struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + crc


def test_bad_images_are_one_line_errors_and_odd_modes_keep_their_content():
    """Truncated, empty, huge and unidentifiable files are refused by name; images of other
    modes (palette, CMYK, alpha, 1-bit, 16-bit, float) decode to what a viewer shows."""
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    for data, message in [
        (encoded(rgb)[:100], "cannot decode bad.*truncated"),
        (encoded(rgb, "JPEG")[:300], "cannot decode bad.*[Tt]runcated"),
        (b"", "empty"),
        (b"GIF89a" + b"\0" * 4, "cannot decode bad"),
        (png_header(100_000, 100_000), "cannot decode bad"),
        (b"\xff" * 64, "not an image format"),
    ]:
        with pytest.raises(ImageDataError, match=message):
            decode_image(data, "bad")
    with pytest.raises(ImageDataError, match="over .* pixels"):
        from_pil(Image.new("1", (9000, 9000)), "big")
    for mode in ("P", "CMYK", "RGBA", "LA"):
        assert decode_image(encoded(rgb.convert(mode), "TIFF")).shape == (3, 16, 16)
    assert decode_image(encoded(rgb.convert("1"))).shape == (1, 16, 16)
    ramp = np.linspace(0, 1, 64).reshape(8, 8)
    expected = torch.from_numpy(np.rint(ramp * 255).astype(np.uint8))[None]
    wide = Image.fromarray((ramp * 65535).astype(np.uint16))
    assert (decode_image(encoded(wide)).int() - expected.int()).abs().max() <= 1  # not clipped
    floats = Image.fromarray(ramp.astype(np.float32))
    assert torch.equal(decode_image(encoded(floats, "TIFF")), expected)  # [0, 1] scaled
    nan = Image.fromarray(np.full((4, 4), np.nan, dtype=np.float32))
    with pytest.raises(ImageDataError, match="NaN"):
        decode_image(encoded(nan, "TIFF"), "nan.tif")


@pytest.mark.skipif(not (REPO / CIFAR10_DIR).is_dir(), reason="no shared CIFAR-10 data")
def test_ten_real_cifar10_images(monkeypatch):
    monkeypatch.chdir(REPO)
    manifest = cifar10("test")
    assert len(manifest) == 10_000 and len(manifest.labels) == 10
    sample = manifest.sample(10, seed=0)
    images = [sample.load(i) for i in range(10)]
    assert all(im.shape == (3, 32, 32) and im.dtype == torch.uint8 for im in images)
    assert len({im.float().mean().item() for im in images}) == 10


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_ten_real_fashion_mnist_images():
    manifest = fashion_mnist("test")
    assert len(manifest) == 10_000 and set(manifest.labels) == set(FASHION_MNIST_CLASSES)
    images = [manifest.load(i) for i in range(10)]
    assert all(im.shape == (1, 28, 28) for im in images)
    assert manifest[0].label == "ankle boot"  # the first test image, as upstream documents
