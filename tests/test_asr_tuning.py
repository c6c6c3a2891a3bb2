"""LM fusion tuning (``suite evaluate --tune-lm``): each grid point scores what ``suite evaluate``
scores with those options, the best one is chosen, and ``--write`` makes it the package's
decoding defaults."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from lhotse import CutSet, Recording, SupervisionSegment
from lhotse.cut import MonoCut

import suite
from suite.cli import main
from suite.errors import UserError
from suite.heads.lm import save_lm_package
from suite.model import build_model, load_package, save_package
from suite.tasks.asr.evaluation import evaluate_cuts
from suite.tasks.asr.pipeline import attach_lm
from suite.tasks.asr.tuning import TUNING_CARD_SECTION, tune_lm
from suite.tokenizers import CharTokenizer
from tests.test_ctc_lm import ctc_config, random_lm

TEXTS = ("the cat sat", "a dog ran far", "open the door now", "red sky", "we go home")


def write_manifest(folder: Path, texts=TEXTS, seed: int = 0, customs=(None,)) -> Path:
    """A cuts manifest of one 16 kHz WAV per text (tones and noise of 0.6-1.4 s), plus one
    silent cut; cut ``i``'s supervision carries ``customs[i % len(customs)]`` (e.g. a source)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cuts = []
    for i, text in enumerate((*texts, "silence here")):
        n = int(16000 * rng.uniform(0.6, 1.4))
        t = np.arange(n) / 16000
        audio = 0.2 * np.sin(2 * np.pi * rng.uniform(150, 400) * t) + 0.05 * rng.normal(size=n)
        if text == "silence here":
            audio = np.zeros(n)
        path = folder / f"u{i}.wav"
        sf.write(path, audio.astype(np.float32), 16000)
        recording = Recording.from_file(path, recording_id=f"u{i}")
        supervision = SupervisionSegment(
            f"u{i}", f"u{i}", 0.0, recording.duration, text=text, custom=customs[i % len(customs)]
        )
        cuts.append(
            MonoCut(
                f"u{i}", 0.0, recording.duration, 0, recording=recording, supervisions=[supervision]
            )
        )
    out = folder / "cuts.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(out)
    return out


@pytest.fixture
def fused(tmp_path: Path) -> Path:
    """A tiny character CTC model package with a random LM attached."""
    tokenizer = CharTokenizer()
    torch.manual_seed(0)
    save_package(build_model(ctc_config(), tokenizer), tmp_path / "asr", card="# tiny\n")
    save_lm_package(random_lm(tokenizer.vocab_size), tokenizer, tmp_path / "lm")
    return attach_lm(tmp_path / "asr", tmp_path / "lm", tmp_path / "fused", beam_size=4)


def test_each_grid_point_scores_what_evaluate_scores(fused, tmp_path):
    cuts = CutSet.from_file(write_manifest(tmp_path / "data")).to_eager()
    model = load_package(fused)
    tuning = tune_lm(model, cuts, lm_weights=(0.0, 2.0), length_bonuses=(0.0, 1.5))
    assert [(p.lm_weight, p.length_bonus) for p in tuning.points] == [
        (0.0, 0.0),
        (0.0, 1.5),
        (2.0, 0.0),
        (2.0, 1.5),
    ]
    for p in tuning.points:
        direct = evaluate_cuts(
            model,
            cuts,
            method="beam",
            lm_weight=p.lm_weight,
            length_bonus=p.length_bonus,
            beam_size=4,
        )
        assert (p.wer, p.cer) == (direct.wer, direct.cer)
    greedy = evaluate_cuts(model, cuts, method="greedy")
    assert (tuning.greedy.wer, tuning.greedy.num_utterances) == (greedy.wer, 6)
    assert len({p.cer for p in tuning.points}) > 1  # the LM weight changes what is decoded
    best = tuning.best
    assert all((best.wer, best.cer) <= (p.wer, p.cer) for p in tuning.points)
    table = tuning.table()
    assert table.count("\n") == 3 and f"**{best.wer:.2%}**" in table


def test_write_makes_the_best_point_the_package_default(fused, tmp_path, capsys):
    manifest = write_manifest(tmp_path / "data")
    args = [
        "evaluate",
        str(fused),
        str(manifest),
        "--tune-lm",
        "--lm-weights",
        "0.5,2",
        "--length-bonuses",
        "0,1.5",
    ]
    assert main([*args, "--json"]) == 0
    printed = capsys.readouterr()
    best = json.loads(printed.out)["best"]
    assert "edge of the grid" in printed.err  # two values per axis: the best is on an edge
    assert main([*args, "--write"]) == 0
    out = capsys.readouterr().out
    assert "| 0.5 |" in out and "| 2 |" in out and "best: LM weight" in out
    spec = yaml.safe_load((fused / "config.yaml").read_text())["model"]["heads"]["ctc"]
    assert (spec["lm_weight"], spec["length_bonus"], spec["beam_size"]) == (
        best["lm_weight"],
        best["length_bonus"],
        4,
    )
    assert main([*args, "--write"]) == 0  # a second run replaces the card's section
    card = (fused / "README.md").read_text()
    assert card.startswith("# tiny") and card.count(TUNING_CARD_SECTION) == 1
    assert card.count("## Language model") == 1
    assert f"lm_weight={best['lm_weight']}, length_bonus={best['length_bonus']}" in card

    audio = [
        np.asarray(sf.read(p)[0], dtype=np.float32)
        for p in sorted((tmp_path / "data").glob("u*.wav"))
    ]
    asr = suite.load(fused)
    explicit = asr.transcribe(
        audio, sample_rate=16000, lm_weight=best["lm_weight"], length_bonus=best["length_bonus"]
    )
    assert asr.transcribe(audio, sample_rate=16000) == explicit
    capsys.readouterr()
    assert main(["evaluate", str(fused), str(manifest), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["wer"] == best["wer"]


def test_tuning_refuses_a_model_without_an_lm_and_write_without_tuning(tmp_path):
    tokenizer = CharTokenizer()
    save_package(build_model(ctc_config(), tokenizer), tmp_path / "asr", card="# asr\n")
    cuts = CutSet.from_file(write_manifest(tmp_path / "data", TEXTS[:1])).to_eager()
    with pytest.raises(UserError, match="attach-lm"):
        tune_lm(load_package(tmp_path / "asr"), cuts)
    manifest = str(tmp_path / "data/cuts.jsonl.gz")
    assert main(["evaluate", str(tmp_path / "asr"), manifest, "--write"]) == 2
    assert main(["evaluate", str(tmp_path / "asr"), manifest, "--tune-lm"]) == 2


@pytest.mark.slow
def test_tuning_the_shipped_lm_beats_greedy_on_speech_it_never_heard(tmp_path):
    from suite.demo import open_demo_utterances

    cuts = []
    held_out = [u for u in open_demo_utterances(4, real=0) if u.group == "held-out voice"]
    for i, (text, audio) in enumerate((u.text, u.audio) for u in held_out):
        sf.write(tmp_path / f"d{i}.wav", audio, 16000)
        recording = Recording.from_file(tmp_path / f"d{i}.wav", recording_id=f"d{i}")
        supervision = SupervisionSegment(f"d{i}", f"d{i}", 0.0, recording.duration, text=text)
        cuts.append(
            MonoCut(
                f"d{i}", 0.0, recording.duration, 0, recording=recording, supervisions=[supervision]
            )
        )
    model = suite.load("default-asr").model
    tuning = tune_lm(model, CutSet.from_cuts(cuts), lm_weights=(0.0, 0.7), length_bonuses=(3.5,))
    # The package's own point (0.7, 3.5) on four open-domain sentences in held-out voices.
    assert tuning.best.lm_weight == 0.7 and tuning.best.wer < tuning.greedy.wer
