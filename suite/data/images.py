"""Image manifests: which images a split holds, where each one lies, and its label, with
lhotse's conventions: items are immutable, a manifest is validated when it is made (every
source exists, every zip member is there, ids are unique), images are decoded only when read,
and subsets and splits are seeded.

Sources read in place (nothing is unpacked or copied):

* a zip of image files with a CSV of ``path,label`` rows beside it (CIFAR-10 as in
  ``shared/data/images/cifar10``: ``train.zip`` + ``train.csv``);
* idx files (``*-images-idx3-ubyte[.gz]`` with their ``*-labels-idx1-ubyte[.gz]``, as
  Fashion-MNIST from the Debian package ``dataset-fashion-mnist``);
* our own JSON Lines manifest (``.jsonl`` or ``.jsonl.gz``), one :class:`ImageItem` a line, as
  :meth:`ImageManifest.to_jsonl` writes it; relative ``source`` paths are read from the current
  directory, as lhotse's.

Images come out as ``uint8 (C, H, W)`` tensors with the channels they are stored with (1 for
grayscale, 3 for RGB).
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
import os
import random
import struct
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from torch import Tensor

from suite.errors import UserError

CIFAR10_DIR = Path("../shared/data/images/cifar10")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
MAX_PIXELS = 64_000_000  # a decompression bomb, not a photograph


class ImageDataError(UserError, ValueError):
    """A manifest or image that cannot be read; the message names the file and the fix."""


@dataclass(frozen=True)
class ImageItem:
    """One image: where it lies and its label.

    Attributes:
        id: unique within a manifest.
        source: an image file, a zip archive, or an idx images file.
        member: the image's name inside a zip source.
        index: the image's position in an idx source.
        label: the class name, when known.
    """

    id: str
    source: str
    member: str | None = None
    index: int | None = None
    label: str | None = None


class ImageManifest(Sequence[ImageItem]):
    """An immutable, validated list of :class:`ImageItem`; images are decoded on :meth:`load`.

    Args:
        items: the images; ids must be unique.
    """

    def __init__(self, items: Iterable[ImageItem]) -> None:
        self._items = tuple(items)
        seen: set[str] = set()
        for item in self._items:
            if item.id in seen:
                raise ImageDataError(f"image id '{item.id}' appears twice; ids must be unique")
            seen.add(item.id)

    # --- reading sources -----------------------------------------------------------------
    @classmethod
    def from_zip(cls, path: str | Path, labels: str | Path | None = None) -> ImageManifest:
        """The images of a zip archive, in the order of ``labels``: a CSV with a ``path``
        column (the member name) and an optional ``label`` column (default: the ``.csv``
        beside the zip, when there is one; else every image member, labelled by its folder)."""
        path = Path(path)
        names = _zip_names(path)
        csv_path = Path(labels) if labels is not None else path.with_suffix(".csv")
        if labels is None and not csv_path.is_file():
            members = sorted(n for n in names if n.lower().endswith(IMAGE_SUFFIXES))
            items = [ImageItem(_stem(m), str(path), member=m, label=_folder(m)) for m in members]
            return cls(items)
        rows = _csv_rows(csv_path)
        missing = [r["path"] for r in rows if r["path"] not in names]
        if missing:
            raise ImageDataError(
                f"{csv_path} lists {len(missing)} images that {path} does not hold (first: "
                f"{missing[0]}); the CSV's path column must name the zip's members"
            )
        return cls(
            ImageItem(_stem(r["path"]), str(path), member=r["path"], label=r.get("label") or None)
            for r in rows
        )

    @classmethod
    def from_idx(
        cls,
        images: str | Path,
        labels: str | Path | None = None,
        label_names: Sequence[str] | None = None,
    ) -> ImageManifest:
        """The images of an idx3-ubyte file (optionally gzipped), labelled from an idx1-ubyte
        file when given; ``label_names[k]`` names label ``k`` (default: the number)."""
        images = Path(images)
        count = _idx_header(images, expected_dims=3)[0]
        names: list[str | None] = [None] * count
        if labels is not None:
            values = _read_idx(Path(labels), expected_dims=1)
            if len(values) != count:
                raise ImageDataError(
                    f"{labels} holds {len(values)} labels but {images} holds {count} images"
                )
            names = [label_names[v] if label_names else str(v) for v in values.tolist()]
        prefix = images.name.split("-")[0]  # "train", "t10k"
        return cls(
            ImageItem(f"{prefix}-{i:05d}", str(images), index=i, label=names[i])
            for i in range(count)
        )

    @classmethod
    def from_jsonl(cls, path: str | Path) -> ImageManifest:
        """A manifest written by :meth:`to_jsonl`; every source is checked to exist."""
        path = Path(path)
        if not path.is_file():
            raise ImageDataError(f"no image manifest at {path}")
        fields = {f.name for f in dataclasses.fields(ImageItem)}
        items = []
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    raw = json.loads(line)
                    unknown = set(raw) - fields
                    if unknown:
                        raise ValueError(f"unknown keys {sorted(unknown)}")
                    items.append(ImageItem(**raw))
                except (ValueError, TypeError) as e:
                    raise ImageDataError(
                        f"{path}:{number} is not an image item ({e}); a line holds id, source "
                        f"and optionally member, index, label"
                    ) from None
        manifest = cls(items)
        manifest.validate()
        return manifest

    def to_jsonl(self, path: str | Path) -> Path:
        """Write the manifest (gzipped when ``path`` ends in ``.gz``); returns ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "wt") as f:
            for item in self._items:
                row = {k: v for k, v in dataclasses.asdict(item).items() if v is not None}
                f.write(json.dumps(row) + "\n")
        return path

    def validate(self) -> None:
        """Raise unless every source exists and every zip member is in its zip."""
        by_source: dict[str, list[ImageItem]] = {}
        for item in self._items:
            by_source.setdefault(item.source, []).append(item)
        for source, items in by_source.items():
            if not Path(source).is_file():
                raise ImageDataError(f"image source {source} does not exist (item {items[0].id})")
            members = [i.member for i in items if i.member is not None]
            if members:
                names = _zip_names(Path(source))
                missing = [m for m in members if m not in names]
                if missing:
                    raise ImageDataError(f"{source} holds no member {missing[0]}")

    # --- a sequence of items -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> ImageItem: ...

    @overload
    def __getitem__(self, index: slice) -> ImageManifest: ...

    def __getitem__(self, index: int | slice) -> ImageItem | ImageManifest:
        if isinstance(index, slice):
            return ImageManifest(self._items[index])
        return self._items[index]

    def __iter__(self) -> Iterator[ImageItem]:
        return iter(self._items)

    def __repr__(self) -> str:
        return f"ImageManifest({len(self)} images)"

    @property
    def labels(self) -> list[str]:
        """The distinct labels, sorted."""
        return sorted({i.label for i in self._items if i.label is not None})

    def subset(self, indices: Iterable[int]) -> ImageManifest:
        """The items at ``indices``, in that order."""
        return ImageManifest(self._items[i] for i in indices)

    def shuffle(self, seed: int) -> ImageManifest:
        """The items in an order fixed by ``seed``."""
        order = list(range(len(self)))
        random.Random(seed).shuffle(order)
        return self.subset(order)

    def sample(self, count: int, seed: int = 0) -> ImageManifest:
        """``count`` items drawn without replacement by ``seed`` (all when fewer), in manifest
        order."""
        if count >= len(self):
            return self
        return self.subset(sorted(random.Random(seed).sample(range(len(self)), count)))

    def split(self, held: int | float, seed: int = 0) -> tuple[ImageManifest, ImageManifest]:
        """``(rest, held_out)``: ``held`` items (or that fraction of them) drawn by ``seed``;
        both keep manifest order and share no item."""
        count = int(round(held * len(self))) if isinstance(held, float) else int(held)
        if not 0 <= count <= len(self):
            raise ImageDataError(f"cannot hold out {held} of {len(self)} images")
        chosen = set(random.Random(seed).sample(range(len(self)), count))
        rest = [i for i in range(len(self)) if i not in chosen]
        return self.subset(rest), self.subset(sorted(chosen))

    def per_class(self, fraction: float, seed: int = 0) -> ImageManifest:
        """``fraction`` of each label's items (at least one each), drawn by ``seed``, in
        manifest order: the labelled share of a semi-supervised split (e.g. 10% of CIFAR-10's
        training labels, 500 images per class). Every item needs a label."""
        if not 0 < fraction <= 1:
            raise ImageDataError(f"the labelled fraction must be in (0, 1], got {fraction}")
        by_label: dict[str, list[int]] = {}
        for index, item in enumerate(self._items):
            if item.label is None:
                raise ImageDataError(f"image {item.id} has no label; a labelled split needs one")
            by_label.setdefault(item.label, []).append(index)
        rng = random.Random(seed)
        chosen = []
        for label in sorted(by_label):
            indices = by_label[label]
            chosen += rng.sample(indices, max(1, round(fraction * len(indices))))
        return self.subset(sorted(chosen))

    # --- images ---------------------------------------------------------------------------
    def load(self, index: int) -> Tensor:
        """The image of item ``index``, ``uint8 (C, H, W)``."""
        return load_item(self._items[index])


def load_image_manifest(path: str | Path) -> ImageManifest:
    """The manifest of a source path, by its kind: a ``.jsonl[.gz]`` manifest, a ``.zip``
    (with its ``.csv`` beside it), or an idx3-ubyte images file (labels from the idx1-ubyte
    file beside it; Fashion-MNIST's class names for a folder named ``fashion-mnist``)."""
    path = Path(path)
    name = path.name
    if not path.exists():
        raise ImageDataError(
            f"no image data at {path}; expected a .zip of images with a .csv of path,label "
            "rows beside it (CIFAR-10's layout), an idx3-ubyte images file (Fashion-MNIST, "
            "Debian package dataset-fashion-mnist), or a .jsonl(.gz) image manifest"
        )
    if name.endswith((".jsonl", ".jsonl.gz")):
        return ImageManifest.from_jsonl(path)
    if name.endswith(".zip"):
        return ImageManifest.from_zip(path)
    if "idx3-ubyte" in name:
        labels = path.with_name(name.replace("images-idx3", "labels-idx1"))
        names = FASHION_MNIST_CLASSES if "fashion" in path.parent.name else None
        return ImageManifest.from_idx(path, labels if labels.is_file() else None, names)
    raise ImageDataError(
        f"{path} is not image data this suite reads: give a .zip (with a .csv beside it), an "
        "idx3-ubyte file, or a .jsonl(.gz) image manifest"
    )


def cifar10(split: str, root: str | Path = CIFAR10_DIR) -> ImageManifest:
    """CIFAR-10's ``train`` (50,000) or ``test`` (10,000) images, read from the zips."""
    if split not in ("train", "test"):
        raise ImageDataError(f"CIFAR-10 has splits train and test, not '{split}'")
    return ImageManifest.from_zip(Path(root) / f"{split}.zip")


def fashion_mnist(split: str, root: str | Path = FASHION_MNIST_DIR) -> ImageManifest:
    """Fashion-MNIST's ``train`` (60,000) or ``test`` (10,000) 28x28 grayscale images."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ImageDataError(f"Fashion-MNIST has splits train and test, not '{split}'")
    images = Path(root) / f"{prefix}-images-idx3-ubyte.gz"
    if not images.is_file():
        raise ImageDataError(
            f"no Fashion-MNIST at {root}; install it with `apt-get install "
            "dataset-fashion-mnist` or pass root= the folder holding its idx files"
        )
    labels = Path(root) / f"{prefix}-labels-idx1-ubyte.gz"
    return ImageManifest.from_idx(images, labels, FASHION_MNIST_CLASSES)


# --- decoding ---------------------------------------------------------------------------------


def load_item(item: ImageItem) -> Tensor:
    """The image ``item`` points to, ``uint8 (C, H, W)``."""
    if item.index is not None:
        array = _idx_array(item.source)
        if not 0 <= item.index < len(array):
            raise ImageDataError(f"{item.source} has no image {item.index} ({len(array)} held)")
        return torch.from_numpy(array[item.index].copy())[None]  # (1, H, W)
    if item.member is not None:
        try:
            data = _open_zip(item.source).read(item.member)
        except KeyError:
            raise ImageDataError(f"{item.source} holds no member {item.member}") from None
        return decode_image(data, f"{item.source}:{item.member}")
    try:
        data = Path(item.source).read_bytes()
    except OSError as e:
        raise ImageDataError(f"cannot read image {item.source}: {e.strerror}") from None
    return decode_image(data, item.source)


def decode_image(data: bytes, where: str = "image") -> Tensor:
    """Encoded image bytes (JPEG, PNG, ...) -> ``uint8 (C, H, W)``: 1 channel for grayscale,
    3 for colour (an alpha channel or a palette is converted to RGB)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageDataError(f"{where} is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            return from_pil(image, where)
    except UnidentifiedImageError:
        raise ImageDataError(
            f"cannot decode {where}: not an image format PIL reads (PNG, JPEG, ...), or a "
            "broken header"
        ) from None
    except (OSError, Image.DecompressionBombError) as e:
        raise ImageDataError(f"cannot decode {where} as an image: {e}") from None


def from_pil(image: Any, where: str = "the PIL image") -> Tensor:
    """A PIL image -> ``uint8 (C, H, W)`` (1 channel for grayscale modes, else RGB)."""
    if image.width * image.height > MAX_PIXELS:
        raise ImageDataError(
            f"{where} is {image.width}x{image.height}, over {MAX_PIXELS:,} pixels; "
            "downscale it first"
        )
    if image.width * image.height == 0:
        raise ImageDataError(f"{where} is empty (0x0 pixels)")
    if image.mode.startswith(("I", "F")):  # 16-bit, 32-bit integer or float grayscale
        return torch.from_numpy(_wide_to_uint8(np.asarray(image), image.mode, where))[None]
    if image.mode not in ("L", "RGB"):
        image = image.convert("L" if image.mode == "1" else "RGB")
    array = np.asarray(image)
    if array.ndim == 2:
        return torch.from_numpy(array.copy())[None]  # (1, H, W)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()  # (3, H, W)


def _wide_to_uint8(array: np.ndarray, mode: str, where: str) -> np.ndarray:
    """A grayscale image of wider samples -> ``uint8 (H, W)`` by its range, as image viewers
    show it (PIL's own conversion to 8 bits clips, which turns a 16-bit image white and a float
    image in [0, 1] black): 16-bit and wider integers are divided by 257 (65535 -> 255) when
    they exceed 255; floats in [0, 1] are scaled by 255, others clipped to [0, 255]."""
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        raise ImageDataError(f"{where} holds NaN or infinite samples (mode {mode})")
    if mode.startswith("F"):
        if values.min() >= 0.0 and values.max() <= 1.0:
            values = values * 255.0
    elif values.max() > 255:
        values = values / 257.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def read_image(image: Any) -> Tensor:
    """A path, PIL image, ``(H, W[, C])`` array or ``(C, H, W)`` tensor -> ``uint8`` or float
    ``(C, H, W)``, with a teaching error for what cannot be an image."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise ImageDataError(f"no image file at {path}")
        return decode_image(path.read_bytes(), str(path))
    if type(image).__module__.startswith("PIL."):
        return from_pil(image)
    if isinstance(image, np.ndarray):
        if image.ndim == 3 and image.shape[-1] in (1, 3, 4) and image.shape[0] not in (1, 3):
            image = image.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)
        image = torch.from_numpy(np.ascontiguousarray(image))
    if isinstance(image, Tensor):
        if image.dim() == 2:
            image = image[None]
        if image.dim() != 3 or image.numel() == 0:
            raise ImageDataError(
                f"expected an image (C, H, W) or (H, W), got shape {tuple(image.shape)}"
            )
        if image.shape[-1] * image.shape[-2] > MAX_PIXELS:
            raise ImageDataError(f"image of {tuple(image.shape)} is too large; downscale it")
        return image
    raise ImageDataError(
        f"cannot read a {type(image).__name__} as an image; give a path, a PIL image, an "
        "array or a tensor"
    )


# --- per-process caches of open sources (a forked data-loader worker opens its own) ---------

_zips: dict[tuple[int, str], zipfile.ZipFile] = {}
_arrays: dict[tuple[int, str], np.ndarray] = {}


def _open_zip(path: str) -> zipfile.ZipFile:
    key = (os.getpid(), path)
    if key not in _zips:
        try:
            _zips[key] = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as e:
            raise ImageDataError(f"cannot open {path} as a zip archive: {e}") from None
    return _zips[key]


def _zip_names(path: Path) -> set[str]:
    if not path.is_file():
        raise ImageDataError(f"no zip archive at {path}")
    return set(_open_zip(str(path)).namelist())


def _csv_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise ImageDataError(f"no label CSV at {path}")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and "path" not in rows[0]:
        raise ImageDataError(f"{path} has columns {list(rows[0])}; expected a header `path,label`")
    return rows


def _stem(member: str) -> str:
    return member.rsplit(".", 1)[0]


def _folder(member: str) -> str | None:
    parts = member.split("/")
    return parts[-2] if len(parts) > 1 else None


def _idx_open(path: Path):
    if not path.is_file():
        raise ImageDataError(f"no idx file at {path}")
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _idx_header(path: Path, expected_dims: int) -> tuple[int, ...]:
    """The dims of an idx file of unsigned bytes (checked against ``expected_dims``)."""
    try:
        with _idx_open(path) as f:
            head = f.read(4 + 4 * expected_dims)
    except (OSError, EOFError) as e:
        raise ImageDataError(f"cannot read {path}: {e}") from None
    if len(head) < 4 or head[:2] != b"\0\0" or head[2] != 0x08 or head[3] != expected_dims:
        raise ImageDataError(
            f"{path} is not an idx file of {expected_dims}-d unsigned bytes (magic "
            f"{head[:4].hex() or 'missing'}, expected 000008{expected_dims:02x})"
        )
    return struct.unpack(f">{expected_dims}I", head[4:])


def _read_idx(path: Path, expected_dims: int) -> np.ndarray:
    dims = _idx_header(path, expected_dims)
    with _idx_open(path) as f:
        f.seek(4 + 4 * expected_dims)
        data = f.read()
    if len(data) != int(np.prod(dims)):
        raise ImageDataError(f"{path} is truncated: {len(data)} bytes for dims {dims}")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def _idx_array(path: str) -> np.ndarray:
    key = (os.getpid(), path)
    if key not in _arrays:
        _arrays[key] = _read_idx(Path(path), expected_dims=3)  # (N, H, W)
    return _arrays[key]
