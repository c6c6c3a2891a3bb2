"""Sound scenes (``suite data synth-sounds``, :mod:`suite.data.sounds`): a few short scenes.

Procedural scenes run everywhere; the ESC-10 parts skip without the shared data pack and the
speech parts without espeak-ng.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import soundfile as sf

from suite.data.engines import get_engine
from suite.data.sounds import (
    CLASSES,
    FOLDS,
    SoundConfig,
    SoundDataError,
    caption_facts,
    compose_sound_scene,
    default_esc10_dir,
    held_out_pairs,
    phrasings,
    score_caption,
    write_sounds,
)

COUNTS = {"train": 4, "dev": 2, "test": 3}


def procedural(**kwargs) -> SoundConfig:
    return SoundConfig(esc10=False, speech=False, shard_size=2, counts=dict(COUNTS), **kwargs)


def rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_scenes_are_written_deterministically_and_resume(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    manifests = write_sounds(a, procedural(), jobs=1, log=lambda _: None)
    write_sounds(b, procedural(), jobs=2, log=lambda _: None)
    assert set(manifests) == set(COUNTS)
    for split, count in COUNTS.items():
        lines = rows(manifests[split])
        assert len(lines) == count
        assert [r["id"] for r in lines] == [f"{split}-{i:06d}" for i in range(count)]
        for r, other in zip(lines, rows(b / f"{split}.jsonl"), strict=True):
            audio, rate = sf.read(r["source"], dtype="float32")
            assert rate == 16000 and abs(len(audio) / rate - r["duration"]) < 1e-3
            assert 5.0 <= r["duration"] <= 10.0
            assert sf.read(other["source"], dtype="float32")[0].tolist() == audio.tolist()
            assert {k: v for k, v in r.items() if k != "source"} == {
                k: v for k, v in other.items() if k != "source"
            }
    # A rerun keeps the shards (no rewrite); other settings are refused with what differs.
    shard = a / "train" / "00000.jsonl"
    stamp = shard.stat().st_mtime_ns
    write_sounds(a, procedural(), log=lambda _: None)
    assert shard.stat().st_mtime_ns == stamp
    with pytest.raises(SoundDataError, match="seed differ"):
        write_sounds(a, procedural(seed=1), log=lambda _: None)


def test_events_captions_and_held_out_pairs():
    config = procedural()
    held = set(held_out_pairs(config.classes(), 0))
    for split in ("train", "dev", "test"):
        for index in range(6):
            audio, f = compose_sound_scene(index, split, config, held)
            assert len(audio) == int(f["duration"] * 16000) and abs(audio).max() <= 0.99 + 1e-6
            # Held-out pairs: in every test scene, in no other.
            assert bool(f["novel"]) == (split == "test")
            # Events: one per occurrence (the background once), inside the scene, in order.
            groups = [(g["class"], g["count"]) for g in f["groups"]]
            fg = [e for e in f["events"] if e["class"] != f["background"]]
            assert [e["class"] for e in fg] == [c for c, n in groups for _ in range(n)]
            assert all(a["offset"] <= b["onset"] for a, b in zip(fg, fg[1:], strict=False))
            assert all(0 <= e["onset"] < e["offset"] <= f["duration"] for e in f["events"])
            # Every phrasing states every fact, and reads back.
            assert f["caption"] == f["captions"][0]
            assert sorted(f["captions"]) == sorted(phrasings(groups, f["background"]))
            for caption in f["captions"]:
                facts = caption_facts(caption)
                assert facts == {"foreground": groups, "background": f["background"]}, caption


def test_caption_facts_read_the_grammar_and_skip_unknown_phrases():
    facts = caption_facts("While rain falls, a dog barks twice, then a man speaks.")
    assert facts == {
        "foreground": [("dog_bark", 2), ("man_speech", 1)],
        "background": "rain",
    }
    assert caption_facts("a device beeps three times after someone knocks") == {
        "foreground": [("knock", 1), ("beep", 3)],
        "background": None,
    }
    assert caption_facts("a tuba plays")["foreground"] == []


def test_score_caption_measures_recall_precision_counts_and_order():
    fields = {"groups": [{"class": "dog_bark", "count": 2}, {"class": "man_speech", "count": 1}]}
    fields["background"] = "rain"
    perfect = score_caption("while rain falls, a dog barks twice, then a man speaks", fields)
    assert perfect == {"recall": 1.0, "precision": 1.0, "counts": 1.0, "order": 1.0}
    swapped = score_caption("a man speaks, then a dog barks three times while wind blows", fields)
    assert swapped == {"recall": 2 / 3, "precision": 2 / 3, "counts": 0.5, "order": 0.0}


def test_bad_settings_get_teaching_errors(tmp_path):
    with pytest.raises(SoundDataError, match="min_seconds <= max_seconds"):
        write_sounds(tmp_path, procedural(min_seconds=6, max_seconds=5))
    with pytest.raises(SoundDataError, match="no ESC-10 index"):
        write_sounds(tmp_path, SoundConfig(speech=False, esc10_dir=str(tmp_path)))


@pytest.mark.skipif(default_esc10_dir() is None, reason="the shared data pack's ESC-10 is absent")
def test_esc10_clips_come_from_the_split_folds_and_are_credited():
    config = SoundConfig(speech=False, esc10_dir=str(default_esc10_dir()))
    held = set(held_out_pairs(config.classes(), 0))
    seen = 0
    for split in ("train", "test"):
        for index in range(6):
            _, f = compose_sound_scene(index, split, config, held)
            clips = [e["clip"] for e in f["events"] if e["source"] == "esc10"]
            assert {c["path"] for c in f["credits"]} == set(clips)
            for credit in f["credits"]:
                fold = int(credit["path"].split("/")[-1].split("-")[0])
                assert fold in FOLDS[split]
                assert credit["clip_license"] and credit["author"]
            seen += len(clips)
    assert seen > 0


@pytest.mark.slow
@pytest.mark.skipif(get_engine("espeak").missing() is not None, reason="espeak-ng is absent")
def test_speech_snippets_and_the_cli(tmp_path):
    config = SoundConfig(esc10=False)
    held = set(held_out_pairs(config.classes(), 0))
    speech = [n for n, c in CLASSES.items() if c.source == "speech"]
    found = False
    for index in range(40):
        _, f = compose_sound_scene(index, "train", config, held)
        if any(e["class"] in speech for e in f["events"]):
            found = True
            break
    assert found
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "suite.cli", "data", "synth-sounds", "--out", str(out)]
    cmd += ["--train", "2", "--dev", "1", "--test", "1", "--no-esc10", "--jobs", "1"]
    subprocess.run(cmd, check=True, capture_output=True)
    assert len(rows(out / "train.jsonl")) == 2
