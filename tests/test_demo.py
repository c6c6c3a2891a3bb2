"""``make demo``: its sentences are open-domain test text no model trained on, its groups are
spoken by what training held out, and it scores every group with both shipped recognizers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from suite.data.engines import DEFAULT_HELD_OUT_ENGINE, get_engine
from suite.data.shared import shared_data_dir
from suite.data.synth import held_out_voices
from suite.data.text_corpus import SOURCE_NAMES, SOURCES, split_of
from suite.demo import DEMO_SENTENCES, GROUPS, open_demo_utterances, run
from suite.text import normalize_text

TEXT = Path(__file__).resolve().parents[1] / "data" / "text"


def test_demo_sentences_are_public_domain_test_text():
    normalized = [normalize_text(s) for _, s in DEMO_SENTENCES]
    assert len(set(normalized)) == len(normalized) >= 20
    licenses = {s.name: s.packages for s in SOURCES}
    for (source, _), text in zip(DEMO_SENTENCES, normalized, strict=True):
        assert source in SOURCE_NAMES, source
        # `suite data text`'s split rule at its defaults (seed 0, 1% dev, 1% test).
        assert split_of(text, 0, 0.01, 0.01) == "test", text
        assert len(text.split()) >= 8
    packages = {licenses[source] for source, _ in DEMO_SENTENCES}
    public_domain = {("sqlite3-doc",), ("dict-jargon",), ("dict-devil",), ("sword-text-web",)}
    assert packages <= public_domain | {("sword-comm-mhcc",)}
    if (TEXT / "summary.json").is_file():  # the licenses as the packages' copyright files say
        summary = json.loads((TEXT / "summary.json").read_text())["sources"]
        for source in {source for source, _ in DEMO_SENTENCES}:
            assert {p["license"] for p in summary[source]["packages"]} == {"public-domain"}


@pytest.mark.skipif(not (TEXT / "test.txt").is_file(), reason="no data/text corpus built here")
def test_demo_sentences_are_in_the_built_corpus_test_split_only():
    normalized = {normalize_text(s) for _, s in DEMO_SENTENCES}
    test = set((TEXT / "test.txt").read_text().splitlines())
    assert normalized <= test
    for split in ("train", "dev"):
        with open(TEXT / f"{split}.txt") as f:
            assert not normalized & {line.rstrip("\n") for line in f}, split


def test_groups_are_spoken_by_held_out_engine_voices_and_real_people(capsys):
    utterances = open_demo_utterances(per_group=1, real=1)
    groups = [u.group for u in utterances]
    pico_missing = get_engine(DEFAULT_HELD_OUT_ENGINE).missing()
    if pico_missing is None:
        assert groups[0] == "held-out engine" and utterances[0].speaker.startswith("pico-")
    else:
        assert "skipping that group" in capsys.readouterr().out
    voice = next(u for u in utterances if u.group == "held-out voice")
    assert voice.speaker in held_out_voices(0)
    if shared_data_dir() is not None:
        real = next(u for u in utterances if u.group == "real")
        assert real.speaker.startswith("cathy") and 2.0 <= len(real.audio) / 16000 <= 8.0
    texts = {normalize_text(s) for _, s in DEMO_SENTENCES}
    for u in utterances:
        assert u.audio.dtype == np.float32 and 0.5 < len(u.audio) / 16000 < 15
        assert np.abs(u.audio).max() > 0.01
        assert u.group == "real" or u.text in texts


@pytest.mark.slow
def test_demo_scores_every_group_offline_and_streaming(capsys):
    wer = run("default-asr", per_group=1, streaming_model="streaming-asr", real=1)
    out = capsys.readouterr().out
    made = [g for g in GROUPS if f"[{g}:" in out]
    assert "held-out voice" in made
    for group in made:
        assert f"  {group}" in out and "streaming WER" in out
    assert "default-asr, WER per group:" in out and 0.0 <= wer
