"""Composed scenes for image captioning: canvases holding 1-4 real object images and
procedural shapes, each scene with captions in varied phrasings and the structured facts they
state, so that a captioner's attribute accuracy can be scored exactly.

A scene holds one or two *groups*; a group is ``count`` (1-3) copies of one thing: a CIFAR-10
image, a Fashion-MNIST image (class names from their labels) or a shape (circle, square,
triangle, star, diamond), with attributes:

* colour: a shape's fill, or a tint laid over an object image (a tinted image is named by its
  colour, "a red cat"; an untinted one keeps its own colours and is named without one);
* size: ``small``, ``large`` or medium (no word), a fraction of the canvas;
* count: "a", "two", "three".

Two groups stand in a relation: ``left of`` (separated side by side, with a gap of at least an
eighth of the canvas), ``above`` (likewise, vertically) or ``next to`` (single objects almost
touching, either side). Captions phrase the same scene several ways ("a small truck to the left
of a red circle", "a red circle to the right of a small truck", "there are two cats above a
sneaker"); every caption states every fact, and :func:`caption_facts` reads them back from any
caption of this grammar (the captioner's too).

Facts (strings, see :func:`scene_facts`): ``object truck``, ``count truck 2``, ``colour circle
red``, ``size truck small``, ``relation truck left_of circle`` (``right of`` and ``below`` are
stated as their converse; ``next to`` in name order).

Held-out compositions: from the composition seed, one colour per thing, one size for a fifth of
the things and about 8% of the (thing, relation, thing) triples are never shown in ``train`` or
``dev`` scenes; every ``test`` scene holds at least one of them (listed in its ``novel``
field). Object images come from CIFAR-10's and Fashion-MNIST's training splits for ``train``
scenes (less a seeded 10% of each class, kept for ``dev``) and from their test splits for
``test`` scenes.

Output (``write_scenes``): per split, shards of ``shard_size`` scenes written by worker
processes, each a zip of PNGs (or a folder of them) plus its part of the manifest, written
atomically; a rerun skips the shards already complete (resumable; two runs over one folder write
identical shards), then ``SPLIT.jsonl`` joins the parts (and ``SPLIT.images.jsonl`` lists the
images alone, an image manifest the ``mae`` task reads). A scene depends only on ``(seed,
split, index)``, so the result is the same for any number of workers. Manifest lines follow
:mod:`suite.data.images`: ``id``, ``source`` (relative paths from the current directory),
``member``, plus ``caption``, ``captions``, ``objects``, ``relations``, ``novel``.

Dims legend: S - canvas side in pixels; boxes are ``(x0, y0, x1, y1)`` pixel bounds.
"""

from __future__ import annotations

import io
import json
import random
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from suite.data.images import (
    CIFAR10_DIR,
    FASHION_MNIST_DIR,
    ImageDataError,
    ImageItem,
    ImageManifest,
    cifar10,
    fashion_mnist,
    load_item,
)
from suite.data.scene_captions import (
    CIFAR10_CLASSES,
    COLOURS,
    FASHION_CLASSES,
    FASHION_LABELS,
    RELATIONS,
    SHAPES,
    SceneGroup,
    caption_facts,
    held_out_compositions,
    kind_of,
    phrasings,
    scene_facts,
)
from suite.data.scene_manifest import SceneItem, SceneManifest
from suite.data.shards import check_settings, write_shards
from suite.io import atomic_path, atomic_write_text

SIZES = {"small": 0.22, None: 0.32, "large": 0.44}  # side as a fraction of the canvas
KINDS = ("cifar10", "fashion_mnist", "shape")
SPLITS = ("train", "dev", "test")

# --- composing --------------------------------------------------------------------------------


@dataclass
class SceneConfig:
    """What a scene set is made of; saved as ``OUT/scenes.json`` and checked on resume.

    Attributes:
        size: canvas side S in pixels.
        seed: scenes' seed.
        composition_seed: which compositions are held out of training.
        sources: which kinds of things appear (``cifar10``, ``fashion_mnist``, ``shape``).
        shard_size: scenes per shard (zip and manifest part).
        format: ``zip`` (a zip of PNGs per shard) or ``folder`` (PNG files).
        counts: scenes per split.
        cifar10_dir: CIFAR-10's zips and CSVs.
        fashion_mnist_dir: Fashion-MNIST's idx files.
    """

    size: int = 64
    seed: int = 0
    composition_seed: int = 0
    sources: list[str] = field(default_factory=lambda: list(KINDS))
    shard_size: int = 1000
    format: str = "zip"
    counts: dict[str, int] = field(
        default_factory=lambda: {"train": 20000, "dev": 500, "test": 1000}
    )
    cifar10_dir: str = str(CIFAR10_DIR)
    fashion_mnist_dir: str = str(FASHION_MNIST_DIR)

    def names(self) -> list[str]:
        out = []
        for kind, names in (("cifar10", CIFAR10_CLASSES), ("fashion_mnist", FASHION_CLASSES)):
            if kind in self.sources:
                out += names
        return out + (list(SHAPES) if "shape" in self.sources else [])

    def check(self) -> None:
        unknown = sorted(set(self.sources) - set(KINDS))
        if unknown or not self.sources:
            raise ImageDataError(
                f"unknown scene sources {unknown or self.sources}; choose from {', '.join(KINDS)}"
            )
        if self.format not in ("zip", "folder"):
            raise ImageDataError(f"format must be zip or folder, got {self.format!r}")
        if not 32 <= self.size <= 512:
            raise ImageDataError(f"canvas size must be 32-512 pixels, got {self.size}")
        if self.shard_size < 1 or any(c < 0 for c in self.counts.values()):
            raise ImageDataError("shard_size must be >= 1 and scene counts >= 0")


class ObjectPool:
    """Object images by class for one split of scenes, read lazily from the sources."""

    def __init__(self, config: SceneConfig, split: str) -> None:
        self.by_name: dict[str, list[ImageItem]] = {}
        source_split = "test" if split == "test" else "train"
        if "cifar10" in config.sources:
            items = cifar10(source_split, config.cifar10_dir)
            self._add(items, split, lambda label: label)
        if "fashion_mnist" in config.sources:
            items = fashion_mnist(source_split, config.fashion_mnist_dir)
            self._add(items, split, FASHION_LABELS.get)

    def _add(self, items: ImageManifest, split: str, name_of: Any) -> None:
        by_name: dict[str, list[ImageItem]] = {}
        for item in items:
            name = name_of(item.label)
            if name is not None:
                by_name.setdefault(name, []).append(item)
        for name, pool in by_name.items():
            if split != "test" and len(pool) > 1:  # dev scenes use images train never does
                held = set(
                    random.Random(f"dev/{name}").sample(range(len(pool)), len(pool) // 10 or 1)
                )
                pool = [x for i, x in enumerate(pool) if (i in held) == (split == "dev")]
            self.by_name[name] = pool

    def draw(self, name: str, rng: random.Random) -> ImageItem:
        pool = self.by_name.get(name)
        if not pool:
            raise ImageDataError(f"no source images of class '{name}' for these scenes")
        return pool[rng.randrange(len(pool))]


def _sample_groups(
    rng: random.Random, names: list[str], held: dict[str, set[str]], split: str
) -> tuple[list[SceneGroup], list[tuple[int, str, int]], list[str]]:
    """Draw the scene's structure (no boxes yet): train and dev scenes avoid every held-out
    composition; test scenes hold at least one."""
    held_all = set().union(*held.values())
    forced = None
    if split == "test":
        forced = rng.choice(sorted(k for k, v in held.items() if v))
        forced_fact = rng.choice(sorted(held[forced]))
    for _ in range(1000):
        two = rng.random() < 0.65 or forced == "relation"
        counts = [rng.choice([1, 1, 1, 2, 2, 3])]
        if two:
            counts.append(rng.choice([1, 1, 1, 2, 2, 3][: 6 if counts[0] == 1 else 5]))
            while sum(counts) > 4:
                counts[1] -= 1
        rel = rng.choice(RELATIONS) if two else None
        picked = [rng.choice(names) for _ in counts]
        if forced == "relation":
            a, rel, b = _split_rel(forced_fact)
            picked = [a, b]
            if rel == "next to" and rng.random() < 0.5:
                picked.reverse()
        if rel == "next to":
            counts = [1, 1]
        groups = []
        for i, (name, count) in enumerate(zip(picked, counts, strict=True)):
            colour = rng.choice(list(COLOURS)) if name in SHAPES or rng.random() < 0.5 else None
            size = rng.choice(["small", None, "large"])
            if count == 3 and size == "large":
                size = None
            if forced in ("colour", "size") and i == 0:
                name, value = _name_value(forced_fact)
                if forced == "colour":
                    colour = value
                else:
                    size = value
                    count = min(count, 2) if value == "large" else count
            groups.append(SceneGroup(name, kind_of(name), colour, size, count))
        relations = [(0, rel, 1)] if rel else []
        facts = scene_facts(groups, relations)
        novel = sorted(facts & held_all)
        if (split == "test") == bool(novel):
            return groups, relations, novel
    raise RuntimeError("could not draw a scene; too many compositions held out")


def _split_rel(fact: str) -> tuple[str, str, str]:
    """``relation A R B`` -> ``(A, R, B)`` with multi-word names."""
    body = fact.split(" ", 1)[1]
    for rel in RELATIONS:
        token = f" {rel.replace(' ', '_')} "
        if token in body:
            a, b = body.split(token)
            return a, rel, b
    raise ValueError(fact)


def _name_value(fact: str) -> tuple[str, str]:
    """``colour N V`` or ``size N V`` -> ``(N, V)``."""
    body = fact.split(" ", 1)[1]
    name, _, value = body.rpartition(" ")
    return name, value


def _place(
    rng: random.Random, groups: list[SceneGroup], rel: str | None, S: int
) -> list[list[tuple[int, int, int, int]]] | None:
    """Boxes for every copy of every group, or ``None`` when this draw does not fit."""
    sides = []
    for g in groups:
        base = SIZES[g.size] * S
        sides.append([max(4, round(base * rng.uniform(0.92, 1.08))) for _ in range(g.count)])
    gap = S // 8
    if rel == "next to":
        a, b = sides[0][0], sides[1][0]
        if a + b + 3 > S:  # two large things side by side on a small canvas
            return None
        x = rng.randrange(0, S - a - b - 3 + 1)
        ya = rng.randrange(0, S - a + 1)
        yb = min(max(0, ya + (a - b) // 2 + rng.randint(-2, 2)), S - b)
        touch = rng.randint(1, 3)
        if rng.random() < 0.5:  # either group on the left
            xa, xb = x, x + a + touch
        else:
            xa, xb = x + b + touch, x
        return [[(xa, ya, xa + a, ya + a)], [(xb, yb, xb + b, yb + b)]]
    if rel is None:
        regions = [(0, 0, S, S)]
    elif rel == "left of":
        half = (S - gap) // 2
        regions = [(0, 0, half, S), (S - half, 0, S, S)]
    else:
        half = (S - gap) // 2
        regions = [(0, 0, S, half), (0, S - half, S, S)]
    out = []
    for group_sides, (x0, y0, x1, y1) in zip(sides, regions, strict=True):
        boxes: list[tuple[int, int, int, int]] = []
        for side in group_sides:
            if side > x1 - x0 or side > y1 - y0:
                return None
            for _ in range(60):
                x = rng.randrange(x0, x1 - side + 1)
                y = rng.randrange(y0, y1 - side + 1)
                box = (x, y, x + side, y + side)
                if all(_apart(box, other, 1) for other in boxes):
                    boxes.append(box)
                    break
            else:
                return None
        out.append(boxes)
    if rel in ("left of", "above"):  # the relation must be the obvious reading of the layout
        (ax, ay), (bx, by) = (_centre(b) for b in out)
        along, across = (bx - ax, abs(by - ay)) if rel == "left of" else (by - ay, abs(bx - ax))
        if across > 0.5 * along:
            return None
    return out


def _apart(a: tuple[int, ...], b: tuple[int, ...], gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _centre(boxes: list[tuple[int, int, int, int]]) -> tuple[float, float]:
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    return (x0 + x1) / 2, (y0 + y1) / 2


def _shape_mask(shape: str, side: int) -> np.ndarray:
    """``(side, side)`` float alpha of a shape, drawn at 4x and downsampled (antialiased)."""
    from PIL import Image, ImageDraw

    big = side * 4
    image = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(image)
    m = big * 0.06
    if shape == "circle":
        draw.ellipse((m, m, big - m, big - m), fill=255)
    elif shape == "square":
        draw.rectangle((m * 1.5, m * 1.5, big - m * 1.5, big - m * 1.5), fill=255)
    elif shape == "triangle":
        draw.polygon([(big / 2, m), (big - m, big - m), (m, big - m)], fill=255)
    elif shape == "diamond":
        draw.polygon([(big / 2, m), (big - m, big / 2), (big / 2, big - m), (m, big / 2)], fill=255)
    else:  # star: five points
        r_out, r_in, c = big / 2 - m, (big / 2 - m) * 0.45, big / 2
        points = []
        for k in range(10):
            r = r_out if k % 2 == 0 else r_in
            angle = -np.pi / 2 + k * np.pi / 5
            points.append((c + r * np.cos(angle), c + 1.05 * r * np.sin(angle) + m * 0.5))
        draw.polygon(points, fill=255)
    image = image.resize((side, side), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.float32) / 255


def _object_patch(
    group: SceneGroup, item: ImageItem | None, side: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``(side, side, 3)`` colours and ``(side, side)`` alpha of one copy."""
    from PIL import Image

    tint = np.array(COLOURS[group.colour], np.float32) if group.colour else None
    if group.kind == "shape":
        assert tint is not None
        shade = np.clip(tint + rng.normal(0, 8, 3), 0, 255)
        return np.broadcast_to(shade, (side, side, 3)).copy(), _shape_mask(group.name, side)
    assert item is not None
    image = load_item(item)  # uint8 (C, h, w)
    array = image.permute(1, 2, 0).numpy()
    pil = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    pil = pil.resize((side, side), Image.Resampling.BILINEAR)
    pixels = np.asarray(pil, dtype=np.float32)
    if pixels.ndim == 2:  # Fashion-MNIST: grey on black; its brightness is its shape
        alpha = np.clip(pixels / 40, 0, 1)
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    else:
        alpha = np.ones((side, side), np.float32)
    if tint is not None:
        lum = pixels.mean(axis=-1, keepdims=True) / 255
        pixels = np.clip((0.25 + 0.95 * lum) * tint, 0, 255)
    return pixels, alpha


def render_scene(
    groups: list[SceneGroup], pool: ObjectPool | None, S: int, rng: random.Random
) -> tuple[np.ndarray, list[SceneGroup]]:
    """The canvas ``(S, S, 3) uint8`` and the groups with their source images filled in."""
    nrng = np.random.default_rng(rng.getrandbits(64))
    base = nrng.uniform(15, 55) + nrng.normal(0, 6, 3)
    canvas = np.clip(base + nrng.normal(0, 4, (S, S, 3)), 0, 255).astype(np.float32)
    out = []
    for g in groups:
        images = []
        for x0, y0, x1, y1 in g.boxes:
            item = pool.draw(g.name, rng) if g.kind != "shape" and pool is not None else None
            if g.kind != "shape" and item is None:
                raise ImageDataError(f"scene needs '{g.name}' images but no source was given")
            pixels, alpha = _object_patch(g, item, x1 - x0, nrng)
            region = canvas[y0:y1, x0:x1]
            canvas[y0:y1, x0:x1] = region * (1 - alpha[..., None]) + pixels * alpha[..., None]
            if item is not None:
                images.append(item.id)
        out.append(SceneGroup(g.name, g.kind, g.colour, g.size, g.count, g.boxes, tuple(images)))
    return np.clip(canvas, 0, 255).round().astype(np.uint8), out


def compose_scene(
    index: int,
    split: str,
    config: SceneConfig,
    held: dict[str, set[str]],
    pool: ObjectPool | None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Scene ``index`` of ``split``: its image ``(S, S, 3) uint8`` and manifest fields (no
    source). Depends only on ``(config.seed, split, index)``."""
    rng = random.Random(f"scene/{config.seed}/{split}/{index}")
    names = config.names()
    for _ in range(200):
        groups, relations, novel = _sample_groups(rng, names, held, split)
        rel = relations[0][1] if relations else None
        boxes = _place(rng, groups, rel, config.size)
        if boxes is not None:
            break
    else:
        raise RuntimeError(f"scene {split}/{index} did not fit a {config.size} px canvas")
    groups = [
        SceneGroup(g.name, g.kind, g.colour, g.size, g.count, tuple(b))
        for g, b in zip(groups, boxes, strict=True)
    ]
    image, groups = render_scene(groups, pool, config.size, rng)
    captions = phrasings(groups, relations)
    rng.shuffle(captions)
    fields = {
        "caption": captions[0],
        "captions": captions[:6],
        "objects": [asdict(g) for g in groups],
        "relations": [list(r) for r in relations],
        "novel": novel,
    }
    return image, fields


# --- writing ----------------------------------------------------------------------------------


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


_POOLS: dict[tuple[str, str], ObjectPool] = {}


def object_pool(config: SceneConfig, split: str) -> ObjectPool | None:
    """The object images of `split`'s scenes (None when the scenes hold shapes only), read once
    per process and settings."""
    if not set(config.sources) - {"shape"}:
        return None
    key = (json.dumps(asdict(config), sort_keys=True), split)
    if key not in _POOLS:
        _POOLS[key] = ObjectPool(config, split)
    return _POOLS[key]


def write_shard(out: str, config: SceneConfig, split: str, shard: int) -> Path:
    """Write shard ``shard`` of ``split`` (its PNGs, then its manifest part, atomically) unless
    it is complete already; returns the manifest part."""
    out_dir = Path(out) / split
    part = out_dir / f"{shard:05d}.jsonl"
    if part.is_file():
        return part
    comps = load_compositions(Path(out))
    held = {k: set(v) for k, v in comps.items()}
    pool = object_pool(config, split)
    start = shard * config.shard_size
    stop = min(start + config.shard_size, config.counts[split])
    lines = []
    if config.format == "zip":
        source = out_dir / f"{shard:05d}.zip"
        with atomic_path(source) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
            for index in range(start, stop):
                image, fields = compose_scene(index, split, config, held, pool)
                scene_id = f"{split}-{index:06d}"
                archive.writestr(f"{scene_id}.png", _png(image))
                lines.append({"id": scene_id, "source": str(source), "member": f"{scene_id}.png"})
                lines[-1].update(fields)
    else:
        for index in range(start, stop):
            image, fields = compose_scene(index, split, config, held, pool)
            scene_id = f"{split}-{index:06d}"
            path = out_dir / f"{shard:05d}" / f"{scene_id}.png"
            with atomic_path(path) as tmp:
                tmp.write_bytes(_png(image))
            lines.append({"id": scene_id, "source": str(path), **fields})
    atomic_write_text(part, "".join(json.dumps(line) + "\n" for line in lines))
    return part


def load_compositions(out: Path) -> dict[str, list[str]]:
    return json.loads((out / "compositions.json").read_text())


def write_scenes(
    out: str | Path,
    config: SceneConfig | None = None,
    jobs: int = 1,
    log: Any = print,
) -> dict[str, Path]:
    """Compose every split's scenes into ``out`` (see the module docstring); returns each
    split's manifest path. Shards already written by an earlier run with the same settings
    are kept."""
    config = config or SceneConfig()
    config.check()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out / "scenes.json", asdict(config), "scenes", ImageDataError)
    comps = held_out_compositions(config.names(), config.composition_seed)
    atomic_write_text(out / "compositions.json", json.dumps(comps, indent=2) + "\n")
    for split in SPLITS:  # a missing source fails here, before workers start
        if config.counts.get(split):
            object_pool(config, split)
    manifests = write_shards(out, config, config.counts, config.shard_size, write_shard, jobs)
    for split, path in manifests.items():
        # The images alone, as an image manifest (for the mae task: pretraining on the scenes).
        SceneManifest.from_jsonl(path).images().to_jsonl(out / f"{split}.images.jsonl")
        log(f"{path}: {config.counts[split]} scenes")
    return manifests


def add_composition_arguments(
    cli: Any, *, formats: Sequence[str], shard_size: int, unit: str
) -> None:
    """Add the options ``synth-scenes`` and ``synth-videos`` share (seeds, sources, storage,
    sharding, workers, source folders) to the sub-command parser ``cli``;
    :func:`composition_settings` turns them into config fields.

    Args:
        cli: the sub-command's ``argparse`` parser.
        formats: the ``--format`` choices, the default first.
        shard_size: the default ``--shard-size``.
        unit: what a shard holds, in the help ("scenes").
    """
    cli.add_argument("--seed", type=int, default=0)
    cli.add_argument(
        "--composition-seed", type=int, default=0, help="which compositions are held out"
    )
    cli.add_argument(
        "--sources",
        default=",".join(KINDS),
        help=f"comma-separated kinds of things: {', '.join(KINDS)} (default: all)",
    )
    cli.add_argument("--format", choices=list(formats), default=formats[0])
    cli.add_argument("--shard-size", type=int, default=shard_size, help=f"{unit} per shard")
    cli.add_argument("--jobs", type=int, default=None, help="worker processes (default: cores)")
    cli.add_argument("--cifar10-dir", default=str(CIFAR10_DIR))
    cli.add_argument("--fashion-mnist-dir", default=str(FASHION_MNIST_DIR))


def composition_settings(args: Any) -> dict[str, Any]:
    """The config fields (of :class:`SceneConfig` or ``VideoConfig``) that the options of
    :func:`add_composition_arguments` set, from parsed ``args``."""
    return {
        "seed": args.seed,
        "composition_seed": args.composition_seed,
        "sources": [s for s in args.sources.split(",") if s],
        "shard_size": args.shard_size,
        "format": args.format,
        "cifar10_dir": args.cifar10_dir,
        "fashion_mnist_dir": args.fashion_mnist_dir,
    }


def add_command(data_commands: Any) -> None:
    """Add ``suite data synth-scenes`` to the ``suite data`` sub-command parser."""
    import os

    cli = data_commands.add_parser(
        "synth-scenes",
        help="compose captioned scenes of CIFAR-10 / Fashion-MNIST objects and shapes",
    )
    cli.add_argument("--out", required=True, help="output folder (zips of PNGs + SPLIT.jsonl)")
    cli.add_argument("--train", type=int, default=20000, help="training scenes")
    cli.add_argument("--dev", type=int, default=500, help="dev scenes (seen compositions)")
    cli.add_argument("--test", type=int, default=1000, help="test scenes (held-out compositions)")
    cli.add_argument("--size", type=int, default=64, help="canvas side in pixels")
    add_composition_arguments(cli, formats=("zip", "folder"), shard_size=1000, unit="scenes")

    def run(args: Any) -> None:
        config = SceneConfig(
            size=args.size,
            counts={"train": args.train, "dev": args.dev, "test": args.test},
            **composition_settings(args),
        )
        write_scenes(args.out, config, jobs=args.jobs or os.cpu_count() or 1)

    cli.set_defaults(func=run)


__all__ = [
    "SceneConfig",
    "SceneGroup",
    "SceneItem",
    "SceneManifest",
    "caption_facts",
    "compose_scene",
    "held_out_compositions",
    "phrasings",
    "scene_facts",
    "write_scenes",
]
