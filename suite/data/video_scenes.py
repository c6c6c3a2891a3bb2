"""Composed clips for video captioning: short clips (8-32 frames, 32-128 px) where the things
of the image scenes (:mod:`suite.data.scenes`: CIFAR-10 and Fashion-MNIST objects, tinted or
not, and coloured shapes) move left, right, up or down, appear or disappear, one event after
another, with captions in varied phrasings ("a small truck moves left then a red cat appears")
and the facts they state, so that a captioner's motion direction, object and order can be
scored exactly (:func:`~suite.data.video_captions.events_correct`).

A clip holds one thing doing one or two things in turn ("a cat appears then moves left"), or
two things doing one each. The clip's frames are cut into one phase per event: a thing moves a
third of the canvas over its phase, or appears or disappears in the middle of it, while every
other thing stands still. Things never overlap, and nothing leaves the canvas.

Held-out compositions (:func:`~suite.data.video_captions.held_out_events`): one action per
thing and three ordered pairs of actions are never shown in ``train`` or ``dev`` clips; every
``test`` clip shows at least one (listed in its ``novel`` field). Object images come from the
sources' training splits for ``train`` and ``dev`` clips (dev keeps its own tenth of each
class) and from their test splits for ``test`` clips, as for the image scenes.

Output (``write_videos``): per split, shards of ``shard_size`` clips written by worker
processes through the shared sharded writer (:mod:`suite.data.shards`): an ``.npz`` of
``uint8 (T, H, W, 3)`` arrays (lossless; or a folder of mp4 files) and its part of the
manifest, each written atomically; a rerun skips finished shards, and a clip depends only on
``(seed, split, index)``, so any number of workers writes the same bytes. ``SPLIT.jsonl``
lines are :class:`~suite.data.videos.ClipItem` fields; read them with
:class:`~suite.data.videos.ClipManifest`.

Dims legend: T - frames, S - canvas side in pixels; boxes are ``(x0, y0, x1, y1)`` pixel bounds.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from suite.data.images import CIFAR10_DIR, FASHION_MNIST_DIR
from suite.data.scene_captions import COLOURS, SHAPES, SceneGroup, kind_of
from suite.data.scenes import (
    KINDS,
    SIZES,
    SceneConfig,
    _object_patch,
    add_composition_arguments,
    composition_settings,
    object_pool,
)
from suite.data.shards import SPLITS, check_settings, write_shards
from suite.data.video_captions import (
    ACTIONS,
    ClipEvent,
    clip_facts,
    held_out_events,
    phrasings,
)
from suite.data.videos import VideoDataError, write_video
from suite.io import atomic_path, atomic_write_text

MOVE = 0.35  # how far a thing moves over its phase, as a fraction of the canvas
_STEPS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}

Box = tuple[int, int, int, int]


@dataclass
class VideoConfig:
    """What a clip set is made of; saved as ``OUT/videos.json`` and checked on resume.

    Attributes:
        size: canvas side S in pixels.
        frames: frames per clip T.
        fps: frames per second written with the clips.
        seed: clips' seed.
        composition_seed: which compositions are held out of training.
        sources: which kinds of things appear (``cifar10``, ``fashion_mnist``, ``shape``).
        shard_size: clips per shard.
        format: ``npz`` (lossless arrays, one file per shard) or ``mp4`` (h264 files).
        counts: clips per split.
        cifar10_dir: CIFAR-10's zips and CSVs.
        fashion_mnist_dir: Fashion-MNIST's idx files.
    """

    size: int = 48
    frames: int = 12
    fps: float = 8.0
    seed: int = 0
    composition_seed: int = 0
    sources: list[str] = field(default_factory=lambda: list(KINDS))
    shard_size: int = 500
    format: str = "npz"
    counts: dict[str, int] = field(
        default_factory=lambda: {"train": 10000, "dev": 500, "test": 1000}
    )
    cifar10_dir: str = str(CIFAR10_DIR)
    fashion_mnist_dir: str = str(FASHION_MNIST_DIR)

    def scenes(self) -> SceneConfig:
        """The image-scene settings whose things and object images the clips use."""
        return SceneConfig(
            sources=list(self.sources),
            cifar10_dir=self.cifar10_dir,
            fashion_mnist_dir=self.fashion_mnist_dir,
        )

    def names(self) -> list[str]:
        return self.scenes().names()

    def check(self) -> None:
        unknown = sorted(set(self.sources) - set(KINDS))
        if unknown or not self.sources:
            raise VideoDataError(
                f"unknown clip sources {unknown or self.sources}; choose from {', '.join(KINDS)}"
            )
        if self.format not in ("npz", "mp4"):
            raise VideoDataError(f"format must be npz or mp4, got {self.format!r}")
        if not 32 <= self.size <= 128 or (self.format == "mp4" and self.size % 2):
            raise VideoDataError(
                f"canvas size must be 32-128 pixels (even for mp4), got {self.size}"
            )
        if not 8 <= self.frames <= 32:
            raise VideoDataError(f"frames per clip must be 8-32, got {self.frames}")
        if self.fps <= 0 or self.shard_size < 1 or any(c < 0 for c in self.counts.values()):
            raise VideoDataError("fps must be > 0, shard_size >= 1 and clip counts >= 0")


# --- composing --------------------------------------------------------------------------------


def _valid(events: list[tuple[int, str]]) -> bool:
    """A thing appears only before anything else it does, disappears only after, and never
    does the same thing twice in a row."""
    for k, (obj, action) in enumerate(events):
        own = [a for o, a in events if o == obj]
        if action == "appears" and own[0] != "appears" or own.count(action) > 1:
            return False
        if action == "disappears" and own[-1] != "disappears":
            return False
        if k and events[k - 1] == (obj, action):
            return False
    return True


def _sample_structure(
    rng: random.Random, names: list[str], held: dict[str, list[str]], split: str
) -> tuple[list[SceneGroup], list[tuple[int, str]], list[str]]:
    """Draw things and events (no motion yet): train and dev clips avoid every held-out
    composition; test clips hold at least one."""
    held_all = {f for facts in held.values() for f in facts}
    forced = None
    if split == "test":
        kind = rng.choice(sorted(k for k, v in held.items() if v))
        forced = (kind, rng.choice(held[kind]))
    for _ in range(1000):
        two_things = rng.random() < 0.5
        picked = rng.sample(names, 2 if two_things else 1)
        if two_things:  # one event each, either first
            events = [(0, rng.choice(ACTIONS)), (1, rng.choice(ACTIONS))]
        else:
            events = [(0, rng.choice(ACTIONS)) for _ in range(rng.choice((1, 2)))]
        if forced is not None and forced[0] == "event":
            name, action = forced[1][len("event ") :].rsplit(" ", 1)
            picked = [name] + [n for n in picked if n != name][: len(picked) - 1]
            k = 0 if two_things else rng.randrange(len(events))
            events[k] = (0, action)
        elif forced is not None:  # an ordered pair of actions
            a, b = forced[1].split()[1:]
            events = [(0, a), (1 if two_things else 0, b)]
        if two_things and rng.random() < 0.5:
            events.reverse()
        if not _valid(events):
            continue
        groups = []
        for name in picked:
            colour = rng.choice(list(COLOURS)) if name in SHAPES or rng.random() < 0.5 else None
            groups.append(SceneGroup(name, kind_of(name), colour, rng.choice(["small", None]), 1))
        clip_events = [ClipEvent(o, a) for o, a in events]
        novel = sorted(clip_facts(groups, clip_events) & held_all)
        if (split == "test") == bool(novel):
            return groups, events, novel
    raise RuntimeError("could not draw a clip; too many compositions held out")


def _timeline(
    rng: random.Random, groups: list[SceneGroup], events: list[tuple[int, str]], S: int, T: int
) -> tuple[list[list[Box | None]], list[ClipEvent]] | None:
    """Each thing's box in each frame (``None`` while out of view) and the events with their
    frames, or ``None`` when this draw leaves the canvas or makes things overlap."""
    sides = [max(4, round(SIZES[g.size] * S * rng.uniform(0.92, 1.08))) for g in groups]
    bounds = np.linspace(0, T, len(events) + 1).round().astype(int)
    pos = [[rng.uniform(0, S - side), rng.uniform(0, S - side)] for side in sides]
    # A thing that appears is out of view until it does.
    visible = [[a for o, a in events if o == i][0] != "appears" for i in range(len(groups))]
    boxes: list[list[Box]] = [[] for _ in groups]  # where each thing is, in view or not
    shown: list[list[bool]] = [[] for _ in groups]
    timed = []
    for k, (obj, action) in enumerate(events):
        t0, t1 = int(bounds[k]), int(bounds[k + 1])  # the event's frames: t0 .. t1-1
        timed.append(ClipEvent(obj, action, t0, t1 - 1))
        start = list(pos[obj])
        for t in range(t0, t1):
            if action.startswith("moves_"):
                dx, dy = _STEPS[action.split("_")[1]]
                f = (t - t0) / max(1, t1 - 1 - t0)
                pos[obj] = [start[0] + dx * MOVE * S * f, start[1] + dy * MOVE * S * f]
            elif t == t0 + (t1 - t0) // 2:  # appears or disappears mid-phase
                visible[obj] = action == "appears"
            for i, side in enumerate(sides):
                x, y = round(pos[i][0]), round(pos[i][1])
                if not (0 <= x <= S - side and 0 <= y <= S - side):
                    return None
                boxes[i].append((x, y, x + side, y + side))
                shown[i].append(visible[i])
    if len(groups) == 2 and not all(
        _apart(a, b, 2) for a, b in zip(boxes[0], boxes[1], strict=True)
    ):
        return None
    track = [
        [box if on else None for box, on in zip(bs, ss, strict=True)]
        for bs, ss in zip(boxes, shown, strict=True)
    ]
    return track, timed


def _box_at(track: list[Box | None]) -> Box:
    return next(b for b in track if b is not None)


def _apart(a: Box, b: Box, gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def render_clip(
    groups: list[SceneGroup],
    track: list[list[Box | None]],
    pool: Any,
    S: int,
    rng: random.Random,
) -> tuple[np.ndarray, list[str | None]]:
    """The frames ``uint8 (T, S, S, 3)`` over a still, noisy background, and each thing's
    source image id (``None`` for a shape)."""
    nrng = np.random.default_rng(rng.getrandbits(64))
    base = nrng.uniform(15, 55) + nrng.normal(0, 6, 3)
    background = np.clip(base + nrng.normal(0, 4, (S, S, 3)), 0, 255).astype(np.float32)
    patches, images = [], []
    for g, boxes in zip(groups, track, strict=True):
        x0, _, x1, _ = _box_at(boxes)
        item = pool.draw(g.name, rng) if g.kind != "shape" and pool is not None else None
        if g.kind != "shape" and item is None:
            raise VideoDataError(f"clip needs '{g.name}' images but no source was given")
        patches.append(_object_patch(g, item, x1 - x0, nrng))  # (side, side, 3), (side, side)
        images.append(item.id if item is not None else None)
    frames = np.empty((len(track[0]), S, S, 3), np.uint8)
    for t in range(len(frames)):
        canvas = background.copy()
        for (pixels, alpha), boxes in zip(patches, track, strict=True):
            if boxes[t] is None:
                continue
            x0, y0, x1, y1 = boxes[t]
            region = canvas[y0:y1, x0:x1]
            canvas[y0:y1, x0:x1] = region * (1 - alpha[..., None]) + pixels * alpha[..., None]
        frames[t] = np.clip(canvas, 0, 255).round().astype(np.uint8)
    return frames, images


def compose_clip(
    index: int, split: str, config: VideoConfig, held: dict[str, list[str]], pool: Any
) -> tuple[np.ndarray, dict[str, Any]]:
    """Clip ``index`` of ``split``: its frames ``uint8 (T, S, S, 3)`` and manifest fields (no
    id or source). Depends only on ``(config.seed, split, index)``."""
    rng = random.Random(f"clip/{config.seed}/{split}/{index}")
    names = config.names()
    for _ in range(200):
        groups, events, novel = _sample_structure(rng, names, held, split)
        for _ in range(50):
            placed = _timeline(rng, groups, events, config.size, config.frames)
            if placed is not None:
                break
        if placed is not None:
            break
    else:
        raise RuntimeError(f"clip {split}/{index} did not fit a {config.size} px canvas")
    track, timed = placed
    frames, images = render_clip(groups, track, pool, config.size, rng)
    captions = phrasings(groups, timed, rng)
    objects = []
    for g, boxes, image in zip(groups, track, images, strict=True):
        objects.append(
            {
                "name": g.name,
                "kind": g.kind,
                "colour": g.colour,
                "size": g.size,
                "images": [image] if image else [],
                "boxes": [list(b) if b else None for b in boxes],
            }
        )
    fields = {
        "fps": config.fps,
        "caption": captions[0],
        "captions": captions,
        "objects": objects,
        "events": [{**asdict(e), "name": groups[e.object].name} for e in timed],
        "novel": novel,
    }
    return frames, fields


# --- writing ----------------------------------------------------------------------------------


def write_shard(out: str, config: VideoConfig, split: str, shard: int) -> Path:
    """Write shard ``shard`` of ``split`` (its clips, then its manifest part, atomically) unless
    it is complete already; returns the manifest part."""
    out_dir = Path(out) / split
    part = out_dir / f"{shard:05d}.jsonl"
    if part.is_file():
        return part
    held = json.loads((Path(out) / "compositions.json").read_text())
    pool = object_pool(config.scenes(), split)
    start = shard * config.shard_size
    stop = min(start + config.shard_size, config.counts[split])
    lines, arrays = [], {}
    for index in range(start, stop):
        frames, fields = compose_clip(index, split, config, held, pool)
        clip_id = f"{split}-{index:06d}"
        if config.format == "npz":
            arrays[clip_id] = frames
            source, member = out_dir / f"{shard:05d}.npz", clip_id
        else:
            source, member = out_dir / f"{shard:05d}" / f"{clip_id}.mp4", None
            write_video(source, frames, config.fps)
        lines.append({"id": clip_id, "source": str(source), "member": member, **fields})
    if config.format == "npz":
        with atomic_path(out_dir / f"{shard:05d}.npz") as tmp:
            np.savez_compressed(tmp, **arrays)
    atomic_write_text(part, "".join(json.dumps(line) + "\n" for line in lines))
    return part


def write_videos(
    out: str | Path,
    config: VideoConfig | None = None,
    jobs: int = 1,
    log: Any = print,
) -> dict[str, Path]:
    """Compose every split's clips into ``out`` (see the module docstring); returns each
    split's manifest path. Shards written by an earlier run with the same settings are kept."""
    config = config or VideoConfig()
    config.check()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out / "videos.json", asdict(config), "clips", VideoDataError)
    held = held_out_events(config.names(), config.composition_seed)
    atomic_write_text(out / "compositions.json", json.dumps(held, indent=2) + "\n")
    for split in SPLITS:  # a missing source fails here, before workers start
        if config.counts.get(split):
            object_pool(config.scenes(), split)
    manifests = write_shards(out, config, config.counts, config.shard_size, write_shard, jobs)
    for split, path in manifests.items():
        log(f"{path}: {config.counts[split]} clips")
    return manifests


def add_command(data_commands: Any) -> None:
    """Add ``suite data synth-videos`` to the ``suite data`` sub-command parser."""
    import os

    cli = data_commands.add_parser(
        "synth-videos",
        help="compose captioned clips of moving, appearing and disappearing objects and shapes",
    )
    cli.add_argument("--out", required=True, help="output folder (shards + SPLIT.jsonl)")
    cli.add_argument(
        "--count",
        type=int,
        default=None,
        help="clips in all: 85%% train, 5%% dev, 10%% test (instead of --train/--dev/--test)",
    )
    cli.add_argument("--train", type=int, default=10000, help="training clips")
    cli.add_argument("--dev", type=int, default=500, help="dev clips (seen compositions)")
    cli.add_argument("--test", type=int, default=1000, help="test clips (held-out compositions)")
    cli.add_argument("--size", type=int, default=48, help="canvas side in pixels")
    cli.add_argument("--frames", type=int, default=12, help="frames per clip")
    cli.add_argument("--fps", type=float, default=8.0, help="frames per second")
    add_composition_arguments(cli, formats=("npz", "mp4"), shard_size=500, unit="clips")

    def run(args: Any) -> None:
        counts = {"train": args.train, "dev": args.dev, "test": args.test}
        if args.count is not None:
            dev, test = args.count // 20, args.count // 10
            counts = {"train": args.count - dev - test, "dev": dev, "test": test}
        config = VideoConfig(
            size=args.size,
            frames=args.frames,
            fps=args.fps,
            counts=counts,
            **composition_settings(args),
        )
        write_videos(args.out, config, jobs=args.jobs or os.cpu_count() or 1)

    cli.set_defaults(func=run)
