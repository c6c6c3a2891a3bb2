"""The scene composer: scenes are deterministic for any number of workers and resume after an
interruption; every caption states exactly the scene's facts; train scenes never show a
held-out composition and every test scene shows one; object images come from the right source
split; the layout matches the relation the captions state."""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from suite.cli import main as cli
from suite.data.images import ImageDataError, ImageManifest, load_image_manifest
from suite.data.scene_captions import (
    CIFAR10_CLASSES,
    FASHION_CLASSES,
    SHAPES,
    caption_facts,
    held_out_compositions,
)
from suite.data.scenes import SceneConfig, SceneManifest, write_scenes

FASHION_LABELS = (
    "t-shirt trouser pullover dress coat sandal shirt sneaker bag ankle_boot".replace("_", " ")
).split(" ")


def fake_sources(folder: Path, per_class: int = 2) -> tuple[Path, Path]:
    """CIFAR-10's layout (zips + CSVs, the ten class names) and Fashion-MNIST's idx files,
    with ``per_class`` random images of each class per split."""
    rng = np.random.default_rng(0)
    cifar, fashion = folder / "cifar10", folder / "fashion-mnist"
    cifar.mkdir(parents=True)
    fashion.mkdir(parents=True)
    for split in ("train", "test"):
        rows = ["path,label"]
        with zipfile.ZipFile(cifar / f"{split}.zip", "w") as z:
            for name in CIFAR10_CLASSES:
                for i in range(per_class):
                    member = f"{split}/{name}/{i:04d}.png"
                    buffer = io.BytesIO()
                    pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                    Image.fromarray(pixels).save(buffer, "PNG")
                    z.writestr(member, buffer.getvalue())
                    rows.append(f"{member},{name}")
        (cifar / f"{split}.csv").write_text("\n".join(rows) + "\n")
        prefix = "train" if split == "train" else "t10k"
        count = 10 * per_class
        pixels = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
        with gzip.open(fashion / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">4B3I", 0, 0, 8, 3, count, 28, 28) + pixels.tobytes())
        with gzip.open(fashion / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">4BI", 0, 0, 8, 1, count) + labels.tobytes())
    return cifar, fashion


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> tuple[Path, Path]:
    return fake_sources(tmp_path_factory.mktemp("sources"))


def config(sources: tuple[Path, Path], **options) -> SceneConfig:
    counts = options.pop("counts", {"train": 24, "dev": 6, "test": 12})
    return SceneConfig(
        counts=counts,
        shard_size=5,
        cifar10_dir=str(sources[0]),
        fashion_mnist_dir=str(sources[1]),
        **options,
    )


def snapshot(out: Path) -> dict[str, bytes]:
    """Every manifest line's content and every PNG, by name (sources made relative)."""
    files = {}
    for split in ("train", "dev", "test"):
        text = (out / f"{split}.jsonl").read_text().replace(str(out), "OUT")
        files[f"{split}.jsonl"] = text.encode()
        for path in sorted((out / split).glob("*.zip")):
            with zipfile.ZipFile(path) as z:
                files.update({f"{split}/{n}": z.read(n) for n in z.namelist()})
    return files


@pytest.fixture(scope="module")
def scenes(sources, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scenes")
    write_scenes(out, config(sources), jobs=1, log=lambda _: None)
    return out


def test_same_scenes_for_any_number_of_workers_and_after_resuming(scenes, sources, tmp_path):
    parallel = tmp_path / "parallel"
    write_scenes(parallel, config(sources), jobs=2, log=lambda _: None)
    assert snapshot(parallel) == snapshot(scenes)
    # An interrupted run: one shard lost its manifest part (a half-written zip may remain).
    (parallel / "train" / "00002.jsonl").unlink()
    (parallel / "train" / "00002.zip").write_bytes(b"half")
    (parallel / "test.jsonl").unlink()
    write_scenes(parallel, config(sources), jobs=1, log=lambda _: None)
    assert snapshot(parallel) == snapshot(scenes)
    with pytest.raises(ImageDataError, match="other settings.*seed"):
        write_scenes(parallel, config(sources, seed=1), log=lambda _: None)


def test_every_caption_states_exactly_the_scene_facts(scenes):
    for split in ("train", "dev", "test"):
        manifest = SceneManifest.from_jsonl(scenes / f"{split}.jsonl")
        for item in manifest:
            facts = item.facts()
            assert item.caption == item.captions[0] and len(set(item.captions)) > 1
            for caption in item.captions:
                assert caption_facts(caption) == facts, caption
    wrong = caption_facts("two small red circles to the right of a cat")
    assert "relation cat left_of circle" in wrong and "count circle 2" in wrong
    assert "colour circle blue" not in wrong
    assert caption_facts("a circle a circle beside the") == {"object circle", "count circle 1"}


def test_held_out_compositions_appear_only_in_test(scenes):
    held = set().union(*held_out_compositions(SceneConfig().names(), 0).values())
    for split in ("train", "dev"):
        for item in SceneManifest.from_jsonl(scenes / f"{split}.jsonl"):
            assert not item.facts() & held and not item.novel
    kinds = set()
    for item in SceneManifest.from_jsonl(scenes / "test.jsonl"):
        assert item.novel and set(item.novel) == item.facts() & held
        kinds |= {fact.split()[0] for fact in item.novel}
    assert kinds == {"colour", "size", "relation"}
    # Each colour is held out for some things and seen with the others.
    comps = held_out_compositions(SceneConfig().names(), 0)
    assert len(comps["colour"]) == len(SceneConfig().names())
    assert {c.split()[-1] for c in comps["colour"]} == {
        "red",
        "green",
        "blue",
        "yellow",
        "purple",
        "orange",
    }


def test_object_images_come_from_the_split_s_source(scenes):
    used = {}
    for split in ("train", "dev", "test"):
        used[split] = set()
        for item in SceneManifest.from_jsonl(scenes / f"{split}.jsonl"):
            for group in item.objects:
                assert group["name"] in (*CIFAR10_CLASSES, *FASHION_CLASSES, *SHAPES)
                assert len(group["boxes"]) == group["count"]
                if group["kind"] != "shape":
                    assert len(group["images"]) == group["count"]
                used[split] |= set(group.get("images", ()))
    assert all(i.startswith(("train/", "train-")) for i in used["train"] | used["dev"])
    assert all(i.startswith(("test/", "t10k-")) for i in used["test"])
    assert not used["train"] & used["dev"]


def test_layout_matches_the_relation(scenes):
    S = SceneConfig().size
    for split in ("train", "test"):
        for item in SceneManifest.from_jsonl(scenes / f"{split}.jsonl"):
            boxes = [g["boxes"] for g in item.objects]
            assert 1 <= sum(len(b) for b in boxes) <= 4
            assert all(0 <= v <= S for group in boxes for box in group for v in box)
            for a, rel, b in item.relations:
                A, B = boxes[a], boxes[b]
                if rel == "left of":
                    assert max(x[2] for x in A) + S // 8 <= min(x[0] for x in B)
                elif rel == "above":
                    assert max(x[3] for x in A) + S // 8 <= min(x[1] for x in B)
                else:
                    (ax0, _, ax1, _), (bx0, _, bx1, _) = A[0], B[0]
                    assert 1 <= max(bx0 - ax1, ax0 - bx1) <= 3


def test_manifest_reads_as_images_and_the_cli_writes_folders(scenes, tmp_path, capsys):
    manifest = SceneManifest.from_jsonl(scenes / "test.jsonl")
    images = manifest.images()
    assert isinstance(images, ImageManifest) and images[0].label == manifest[0].caption
    assert tuple(images.load(0).shape) == (3, 64, 64) == tuple(manifest.load(0).shape)
    written = load_image_manifest(scenes / "test.images.jsonl")  # what the mae task reads
    assert [i.id for i in written] == [i.id for i in images]
    out = tmp_path / "cli"
    argv = ["data", "synth-scenes", "--out", str(out), "--train", "3", "--dev", "1"]
    argv += ["--test", "2", "--sources", "shape", "--format", "folder", "--size", "48"]
    assert cli([*argv, "--jobs", "1"]) == 0
    shown = SceneManifest.from_jsonl(out / "train.jsonl")
    assert len(shown) == 3 and shown[0].member is None
    assert tuple(shown.load(2).shape) == (3, 48, 48)
    assert cli([*argv[:4], "--sources", "shape,photos"]) == 2
    assert "unknown scene sources ['photos']" in capsys.readouterr().err
    with pytest.raises(ImageDataError, match="synth-scenes"):
        SceneManifest.from_jsonl(tmp_path / "none.jsonl")
