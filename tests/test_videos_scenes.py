"""The clip composer: clips are deterministic per seed and for any number of workers, resume
after an interruption and refuse other settings; the motion the metadata states is the motion
of the pixels; every caption states exactly the clip's facts; train clips never show a held-out
composition and every test clip shows one; object images come from the right source split."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from suite.cli import main as cli
from suite.data.video_captions import (
    ACTIONS,
    caption_clip_facts,
    events_correct,
    held_out_events,
    manifest_facts,
)
from suite.data.video_scenes import (
    MOVE,
    VideoConfig,
    compose_clip,
    write_videos,
)
from suite.data.videos import ClipManifest, VideoDataError
from suite.errors import UserError

SHAPES_ONLY = {"sources": ["shape"]}


def clips(split: str, count: int, **config: object) -> list[tuple[np.ndarray, dict]]:
    cfg = VideoConfig(**{**SHAPES_ONLY, **config})  # type: ignore[arg-type]
    held = held_out_events(cfg.names(), cfg.composition_seed)
    return [compose_clip(i, split, cfg, held, None) for i in range(count)]


def test_same_seed_same_clip_other_seed_other_clip() -> None:
    a, b = clips("train", 6), clips("train", 6)
    for (frames_a, fields_a), (frames_b, fields_b) in zip(a, b, strict=True):
        assert np.array_equal(frames_a, frames_b) and fields_a == fields_b
    other = clips("train", 6, seed=1)
    assert not any(np.array_equal(x[0], y[0]) for x, y in zip(a, other, strict=True))
    frames, fields = a[0]
    assert frames.shape == (12, 48, 48, 3) and frames.dtype == np.uint8
    assert fields["fps"] == 8.0 and len(set(fields["captions"])) == len(fields["captions"])


def centroids(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: the centroid ``(x, y)`` of the bright shape pixels (the background is dark,
    every shape colour has a channel over 150) and how many there are."""
    mask = frames.max(axis=-1) > 110  # (T, S, S)
    count = mask.sum(axis=(1, 2))
    ys, xs = np.mgrid[: frames.shape[1], : frames.shape[2]]
    with np.errstate(invalid="ignore"):
        cx = (mask * xs).sum(axis=(1, 2)) / count
        cy = (mask * ys).sum(axis=(1, 2)) / count
    return np.stack([cx, cy], axis=-1), count


def test_metadata_motion_is_pixel_motion() -> None:
    steps = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
    seen = set()
    for frames, fields in clips("train", 60):
        objects, events = fields["objects"], fields["events"]
        if len(objects) == 1:  # one thing: the bright pixels are its pixels
            centre, count = centroids(frames)
            boxes = objects[0]["boxes"]
            offsets = []  # of the shape's centroid from its box's centre (a triangle's is low)
            for t, box in enumerate(boxes):
                if box is None:
                    assert count[t] == 0
                else:
                    assert count[t] > 10
                    assert box[0] <= centre[t][0] < box[2] and box[1] <= centre[t][1] < box[3]
                    offsets.append(centre[t] - ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
            assert np.ptp(offsets, axis=0).max() < 1.0  # the pixels move as the boxes do
        for event in events:
            seen.add(event["action"])
            boxes = objects[event["object"]]["boxes"]
            start, end = boxes[event["start"]], boxes[event["end"]]
            if event["action"].startswith("moves_"):
                dx, dy = steps[event["action"].split("_")[1]]
                moved = np.subtract(end[:2], start[:2])
                assert np.allclose(moved, np.multiply((dx, dy), MOVE * 48), atol=1.01)
                for other, o in enumerate(objects):  # everything else stands still
                    if other != event["object"]:
                        span = o["boxes"][event["start"] : event["end"] + 1]
                        assert len({tuple(b) for b in span if b}) <= 1
            else:
                shown = [b is not None for b in boxes[event["start"] : event["end"] + 1]]
                after = event["action"] == "appears"
                assert shown[0] != after and shown[-1] == after
                assert shown == sorted(shown, reverse=not after)  # switches once
    assert seen == set(ACTIONS)


def test_captions_state_exactly_the_facts() -> None:
    phrasings = 0
    for _, fields in clips("train", 40) + clips("test", 20):
        facts = manifest_facts(fields["objects"], fields["events"])
        assert {f"event {e['name']} {e['action']}" for e in fields["events"]} <= facts
        for caption in fields["captions"]:
            assert caption_clip_facts(caption) == facts, caption
        phrasings += len(fields["captions"])
    assert phrasings >= 60 * 4


def test_events_correct_scores_direction_object_and_order() -> None:
    reference = caption_clip_facts("a small truck moves left then a red cat appears")
    assert events_correct("first a truck goes left then a cat shows up", reference)
    assert events_correct("a blue cat comes into view after a truck slides left", reference)
    assert not events_correct("a truck moves right then a cat appears", reference)
    assert not events_correct("a ship moves left then a cat appears", reference)
    assert not events_correct("a cat appears then a truck moves left", reference)
    assert not events_correct("a truck moves left", reference)
    one = caption_clip_facts("a green star appears and then moves down")
    assert one == caption_clip_facts("in this clip a green star shows up before it drops")
    assert "order star appears star moves_down" in one


def test_held_out_compositions_only_in_test() -> None:
    cfg = VideoConfig(sources=["shape"])
    held = held_out_events(cfg.names(), 0)
    assert len(held["event"]) == len(cfg.names()) and len(held["sequence"]) == 3
    in_pairs = [a for fact in held["sequence"] for a in fact.split()[1:]]
    assert sorted(in_pairs) == sorted(ACTIONS)  # each action in one held-out pair
    held_all = set(held["event"]) | set(held["sequence"])
    for split in ("train", "dev"):
        for _, fields in clips(split, 80):
            assert not manifest_facts(fields["objects"], fields["events"]) & held_all
            assert fields["novel"] == []
    kinds = set()
    for _, fields in clips("test", 60):
        facts = manifest_facts(fields["objects"], fields["events"])
        assert fields["novel"] and set(fields["novel"]) <= facts & held_all
        kinds |= {f.split()[0] for f in fields["novel"]}
    assert kinds == {"event", "sequence"}
    assert held_out_events(cfg.names(), 1) != held


def test_write_is_parallel_resumable_and_refuses_other_settings(tmp_path: Path) -> None:
    counts = {"train": 9, "dev": 2, "test": 3}
    config = VideoConfig(sources=["shape"], counts=counts, shard_size=4)
    one, two = tmp_path / "one", tmp_path / "two"
    manifests = write_videos(one, config, jobs=1, log=lambda _: None)
    write_videos(two, config, jobs=2, log=lambda _: None)
    for split, path in manifests.items():
        text = path.read_text()
        assert text == (two / f"{split}.jsonl").read_text().replace(str(two), str(one))
        manifest = ClipManifest.from_jsonl(path)
        assert len(manifest) == counts[split]
        for k, item in enumerate(manifest):
            assert manifest.load(k).shape == (12, 3, 48, 48)
            assert all(caption_clip_facts(c) == item.facts() for c in item.captions)
    frames = {k: v.copy() for k, v in np.load(one / "train" / "00001.npz").items()}
    (one / "train" / "00001.jsonl").unlink()  # as if killed before the part was written
    (one / "train" / "00001.npz").unlink()
    write_videos(one, config, jobs=1, log=lambda _: None)
    again = np.load(one / "train" / "00001.npz")
    assert all(np.array_equal(frames[k], again[k]) for k in frames)
    changed = VideoConfig(sources=["shape"], counts=counts, shard_size=4, seed=3)
    with pytest.raises(VideoDataError, match="other settings"):
        write_videos(one, changed, log=lambda _: None)


def test_cli_writes_mp4_clips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "clips"
    cli(
        f"data synth-videos --out {out} --count 12 --seed 2 --sources shape --format mp4 "
        "--frames 8 --size 32 --jobs 1".split()
    )
    manifest = ClipManifest.from_jsonl(out / "train.jsonl")
    assert len(manifest) == 11 and len(ClipManifest.from_jsonl(out / "test.jsonl")) == 1
    assert not (out / "dev.jsonl").exists()  # 5% of 12 is no clip
    item = manifest[0]
    assert item.source.endswith(".mp4") and item.member is None and item.fps == 8.0
    frames = manifest.load(0)
    assert frames.shape == (8, 3, 32, 32) and frames.dtype == torch.uint8
    assert json.loads((out / "videos.json").read_text())["format"] == "mp4"
    with pytest.raises(VideoDataError, match="32-128 pixels"):
        write_videos(tmp_path / "odd", VideoConfig(size=33, format="mp4"))


def fake_fashion(folder: Path, per_class: int = 2) -> Path:
    """Fashion-MNIST's idx layout with ``per_class`` random images of each class per split."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        count = 10 * per_class
        pixels = rng.integers(60, 256, (count, 28, 28), dtype=np.uint8)
        labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">4B3I", 0, 0, 8, 3, count, 28, 28) + pixels.tobytes())
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">4BI", 0, 0, 8, 1, count) + labels.tobytes())
    return folder


def test_object_images_come_from_the_split_of_their_clips(tmp_path: Path) -> None:
    fashion = fake_fashion(tmp_path / "fashion")
    config = VideoConfig(
        sources=["fashion_mnist"],
        fashion_mnist_dir=str(fashion),
        counts={"train": 8, "dev": 0, "test": 6},
        shard_size=8,
    )
    manifests = write_videos(tmp_path / "out", config, log=lambda _: None)
    for split, prefix in (("train", "train-"), ("test", "t10k-")):
        images = [
            i
            for item in ClipManifest.from_jsonl(manifests[split])
            for o in item.objects
            for i in o["images"]
        ]
        assert images and all(i.startswith(prefix) for i in images)
    missing = VideoConfig(sources=["fashion_mnist"], fashion_mnist_dir=str(tmp_path / "nope"))
    with pytest.raises(UserError, match="no Fashion-MNIST at"):
        write_videos(tmp_path / "none", missing, log=lambda _: None)
