"""End-to-end training: loss falls and WER drops, a SIGKILLed run resumes to the same weights,
and the exported package loads through ``suite.load`` without pickle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from lhotse import CutSet
from safetensors.torch import load_file

import suite
from suite.cli import main
from suite.config import load_recipe
from suite.errors import UserError
from suite.model import load_package
from suite.tasks.asr.evaluation import Scores, by_group, evaluate_cuts, score
from suite.text import normalize_text
from suite.train import Trainer

RECIPE = Path(__file__).resolve().parents[1] / "recipes/asr/espeak_conformer_ctc.yaml"


def tiny_overrides(corpus: Path, out: Path, steps: int, **more: object) -> list[str]:
    """A tiny model on the tiny corpus: char tokens need 4x subsampling to fit CTC."""
    values = {
        "data.corpus_dir": str(corpus),
        "data.max_duration": 40,
        "data.num_workers": 0,
        "data.augment.specaugment": False,
        "model.encoder.preset": "tiny",
        "model.encoder.subsampling_factor": 4,
        "model.tokenizer": {"name": "char"},
        "train.out_dir": str(out),
        "train.max_steps": steps,
        "train.warmup_steps": 10,
        "train.lr": 3e-3,
        "train.val_every": 1000,
        "train.log_every": 5,
        "train.ema_decay": None,
        "train.device": "cpu",
        **more,
    }
    return [f"{k}={json.dumps(v)}" for k, v in values.items()]


@pytest.mark.slow
def test_loss_falls_and_training_wer_drops(tiny_corpus, tmp_path):
    # Eight utterances, seen again and again: enough to see learning in a minute on CPU.
    cuts = CutSet.from_file(tiny_corpus / "espeak_cuts_train.jsonl.gz").subset(first=8)
    cuts.to_file(tmp_path / "train8.jsonl.gz")
    overrides = tiny_overrides(
        tiny_corpus,
        tmp_path / "run",
        steps=120,
        **{"data.train": str(tmp_path / "train8.jsonl.gz")},
    )
    recipe = load_recipe(RECIPE, overrides)
    trainer = Trainer(recipe, progress=False)
    train_cuts = CutSet.from_file(recipe.data.manifest("train")).to_eager()
    before = evaluate_cuts(trainer.model, train_cuts).wer
    package = trainer.train()
    after = evaluate_cuts(load_package(package), train_cuts)

    rows = map(json.loads, (tmp_path / "run/metrics.jsonl").read_text().splitlines())
    logged = [row for row in rows if "loss" in row]
    losses = [row["loss"] for row in logged]
    assert losses[-1] < 0.5 * losses[0], losses
    # Each head's terms are logged beside the total, both means over the log window.
    assert all(row["ctc_loss"] == pytest.approx(row["loss"], rel=1e-6) for row in logged)
    assert before > 0.95
    assert after.wer < 0.8 * before, (before, after.wer)
    assert (tmp_path / "run/config.yaml").is_file()
    assert yaml.safe_load((tmp_path / "run/config.yaml").read_text())["train"]["max_steps"] == 120


def run_cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "suite.cli", "train", str(RECIPE), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tiny_corpus, tmp_path):
    steps = 24
    augment = {
        "data.augment.specaugment": True,
        "data.augment.noise_prob": 0.5,
        "train.ema_decay": 0.9,
    }
    straight = run_cli(
        [
            *tiny_overrides(tiny_corpus, tmp_path / "a", steps, **augment),
            "--save-every",
            "4",
            "--quiet",
        ]
    )
    assert straight.wait(timeout=600) == 0, straight.stdout.read()

    killed = run_cli(
        [
            *tiny_overrides(tiny_corpus, tmp_path / "b", steps, **augment),
            "--save-every",
            "4",
            "--quiet",
        ]
    )
    checkpoints = tmp_path / "b/checkpoints"
    deadline = time.time() + 600
    while not (checkpoints / "step-00000012").is_dir():
        assert killed.poll() is None, killed.stdout.read()
        assert time.time() < deadline
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()

    resumed = run_cli(
        [
            *tiny_overrides(tiny_corpus, tmp_path / "b", steps, **augment),
            "--save-every",
            "4",
            "--quiet",
            "--resume",
        ]
    )
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output
    assert "resumed from" in output

    a = load_file(str(tmp_path / "a/checkpoints/step-00000024/model.safetensors"))
    b = load_file(str(tmp_path / "b/checkpoints/step-00000024/model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    assert not list(checkpoints.glob(".tmp-*"))


def test_a_second_run_into_the_same_folder_needs_resume(tiny_corpus, tmp_path):
    overrides = tiny_overrides(tiny_corpus, tmp_path / "run", steps=2)
    Trainer(load_recipe(RECIPE, overrides), progress=False, save_every=1).train()
    with pytest.raises(UserError, match="already holds a training run; pass --resume"):
        Trainer(load_recipe(RECIPE, overrides), progress=False)


def test_package_loads_and_transcribes_files_and_arrays(tiny_corpus, tmp_path):
    overrides = tiny_overrides(tiny_corpus, tmp_path / "run", steps=2)
    package = Trainer(load_recipe(RECIPE, overrides), progress=False).train()
    assert sorted(p.name for p in package.iterdir()) == [
        "README.md",
        "config.yaml",
        "model.safetensors",
        "tokenizer",
    ]
    asr = suite.load(package)
    cuts = CutSet.from_file(tiny_corpus / "espeak_cuts_train.jsonl.gz").to_eager()
    paths = [c.recording.sources[0].source for c in cuts][:3]
    texts = asr.transcribe(paths)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    audio = [cuts[i].load_audio()[0] for i in range(3)]
    assert asr.transcribe(audio, sample_rate=16000) == texts  # arrays equal files, same order
    assert asr.transcribe(list(reversed(paths))) == list(reversed(texts))


def test_missing_manifest_is_a_clear_error(tmp_path):
    overrides = tiny_overrides(tmp_path / "nowhere", tmp_path / "run", steps=2)
    with pytest.raises(UserError, match="synth-speech"):
        Trainer(load_recipe(RECIPE, overrides), progress=False)


def test_evaluate_reports_seen_and_held_out_voices(tiny_corpus, tmp_path, capsys):
    overrides = tiny_overrides(tiny_corpus, tmp_path / "run", steps=2)
    package = Trainer(load_recipe(RECIPE, overrides), progress=False).train()
    manifest = tiny_corpus / "espeak_cuts_test.jsonl.gz"
    results = tmp_path / "results.jsonl"
    assert main(["evaluate", str(package), str(manifest), "--results", str(results)]) == 0
    printed = capsys.readouterr().out
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    seen = {
        c.id: c.supervisions[0].custom["voice_seen_in_train"] for c in CutSet.from_file(manifest)
    }
    assert {r["id"]: r["voice_seen_in_train"] for r in rows} == seen
    # Batched longest first, reported in the manifest's order, each row with its own reference.
    cuts = list(CutSet.from_file(manifest))
    assert [c.id for c in cuts] != [c.id for c in sorted(cuts, key=lambda c: -c.duration)]
    assert [r["id"] for r in rows] == [c.id for c in cuts]
    assert [r["ref"] for r in rows] == [normalize_text(c.supervisions[0].text) for c in cuts]
    model, seen_lengths = load_package(package), []
    encode = model.encode
    model.encode = lambda features, lengths, **kw: (
        seen_lengths.extend(lengths.tolist()) or encode(features, lengths, **kw)
    )
    assert evaluate_cuts(model, CutSet.from_file(manifest), max_duration=10.0).per_utterance
    assert len(seen_lengths) == len(cuts) and seen_lengths == sorted(seen_lengths, reverse=True)
    assert set(seen.values()) == {True, False}  # the test split holds both kinds of voice
    assert "voices used in training: WER" in printed and "voices held out: WER" in printed
    scores = score([r["ref"] for r in rows], [r["hyp"] for r in rows])
    groups = by_group(
        Scores(scores.wer, scores.cer, len(rows), per_utterance=rows), "voice_seen_in_train"
    )
    assert sum(g.num_utterances for g in groups.values()) == len(rows)
    errors = sum(g.wer * sum(r["words"] for r in g.per_utterance) for g in groups.values())
    assert errors == pytest.approx(scores.wer * sum(r["words"] for r in rows))


def test_evaluate_reports_each_synthesizer_and_the_held_out_one(tiny_corpus, tmp_path, capsys):
    overrides = tiny_overrides(tiny_corpus, tmp_path / "run", steps=1)
    package = Trainer(load_recipe(RECIPE, overrides), progress=False).train()
    cuts = list(CutSet.from_file(tiny_corpus / "espeak_cuts_test.jsonl.gz"))
    for i, cut in enumerate(cuts):  # as a corpus of several engines marks its cuts
        engine = ("espeak", "pico")[i % 2]
        cut.supervisions[0].custom.update(engine=engine, engine_seen_in_train=engine != "pico")
    manifest = tmp_path / "engines.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(manifest)
    assert main(["evaluate", str(package), str(manifest)]) == 0
    printed = capsys.readouterr().out
    assert "engine espeak: WER" in printed and "engine pico (held out of training): WER" in printed
    metrics = suite.registry.create("task", "asr").evaluate(load_package(package), CutSet(cuts))
    assert {"wer_seen_engines", "wer_held_out_engines"} <= metrics.keys()


@pytest.mark.slow
def test_init_from_starts_at_the_package_weights_and_tokenizer(tiny_corpus, tmp_path):
    first = Trainer(
        load_recipe(RECIPE, tiny_overrides(tiny_corpus, tmp_path / "a", steps=3)), progress=False
    ).train()
    # A causal, multi-context model has the same parameters, so it can start from the first.
    overrides = tiny_overrides(
        tiny_corpus,
        tmp_path / "b",
        steps=1,
        **{
            "train.init_from": str(first),
            "model.encoder.causal": True,
            "model.encoder.att_contexts": [None, [16, 1]],
        },
    )
    trainer = Trainer(load_recipe(RECIPE, overrides), progress=False)
    start = load_file(str(first / "model.safetensors"))
    assert all(torch.equal(v, start[k]) for k, v in trainer.model.state_dict().items())
    assert (tmp_path / "b/tokenizer").is_dir()
    assert trainer.tokenizer.encode("hello") == load_package(first).tokenizer.encode("hello")
    streaming = trainer.train()

    # `suite evaluate --context` scores a streaming model at a chunked context.
    manifest = str(tiny_corpus / "espeak_cuts_test.jsonl.gz")
    results = str(tmp_path / "results.jsonl")
    cli = ["evaluate", str(streaming), manifest, "--results", results, "--context", "16", "1"]
    assert main(cli) == 0
    model = load_package(streaming)
    model.encoder.att_context = (16, 1)
    chunked = evaluate_cuts(model, CutSet.from_file(manifest))
    hyps = [json.loads(line)["hyp"] for line in Path(results).read_text().splitlines()]
    assert hyps == [row["hyp"] for row in chunked.per_utterance]
    assert main(["evaluate", str(first), manifest, "--context", "16", "1"]) != 0

    wrong = tiny_overrides(
        tiny_corpus,
        tmp_path / "c",
        steps=1,
        **{"train.init_from": str(first), "model.encoder.d_model": 48},
    )
    with pytest.raises(UserError, match="do not fit this recipe's model"):
        Trainer(load_recipe(RECIPE, wrong), progress=False)

    # A new head on the trained encoder: only the parts named are copied.
    new_head = tiny_overrides(
        tiny_corpus,
        tmp_path / "d",
        steps=1,
        **{
            "train.init_from": str(first),
            "train.init_include": ["frontend", "encoder"],
            "train.freeze": ["frontend", "encoder"],
            "model.heads": {"rnnt": {"name": "rnnt", "predictor": "stateless"}},
            "model.encoder.dropout": 0.1,
        },
    )
    trainer = Trainer(load_recipe(RECIPE, new_head), progress=False)
    state = trainer.model.state_dict()
    encoder = [k for k in start if k.startswith("encoder.")]
    assert encoder and all(torch.equal(state[k], start[k]) for k in encoder)
    assert not any(k.startswith("heads.ctc") for k in state)
    head_before = {k: v.clone() for k, v in state.items() if k.startswith("heads.rnnt")}
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in trainer.model.heads.parameters()}
    trainer._train_mode()
    assert not trainer.model.encoder.training and trainer.model.heads.training  # no dropout
    trainer.train()  # the frozen encoder stays the package's; the new head learns
    state = trainer.model.state_dict()
    assert all(torch.equal(state[k], start[k]) for k in encoder)
    assert any(not torch.equal(state[k], v) for k, v in head_before.items())
    # Dotted names copy a submodule: the CTC head into a hybrid whose RNN-T head starts fresh.
    hybrid = tiny_overrides(
        tiny_corpus,
        tmp_path / "f",
        steps=1,
        **{
            "train.init_from": str(first),
            "train.init_include": ["encoder", "heads.ctc"],
            "model.heads": {"ctc": {"name": "ctc"}, "rnnt": {"name": "rnnt"}},
        },
    )
    state = Trainer(load_recipe(RECIPE, hybrid), progress=False).model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in start.items())
    assert any(k.startswith("heads.rnnt.") for k in state)
    typo = tiny_overrides(tiny_corpus, tmp_path / "e", steps=1, **{"train.freeze": ["encodr"]})
    with pytest.raises(UserError, match="encodr.*its parts: frontend, encoder, heads"):
        Trainer(load_recipe(RECIPE, typo), progress=False)


def test_loss_weights_scale_each_heads_loss(tiny_corpus, tmp_path):
    heads = {"ctc": {"name": "ctc"}, "rnnt": {"name": "rnnt", "predictor": "stateless"}}
    losses = {}
    for weights in ({}, {"ctc": 0.3, "rnnt": 0.7}):
        overrides = tiny_overrides(
            tiny_corpus,
            tmp_path / f"run{len(weights)}",
            steps=1,
            **{"model.heads": heads, "model.loss_weights": weights},
        )
        trainer = Trainer(load_recipe(RECIPE, overrides), progress=False)
        batch = trainer.dataset[
            (CutSet.from_file(trainer.recipe.data.manifest("train")).subset(first=2), 0)
        ]
        trainer.model.eval()
        losses[len(weights)] = {k: v.item() for k, v in trainer.model.loss(batch).items()}
    # Either head of the hybrid decodes; the first listed is the default.
    for head in ("ctc", "rnnt"):
        hyps = trainer.model.recognize(batch.inputs, batch.lengths, head=head)
        assert len(hyps) == 2 and all(isinstance(h.text, str) for h in hyps)
    assert list(trainer.model.heads) == ["ctc", "rnnt"]
    plain, weighted = losses[0], losses[2]
    assert plain["loss"] == pytest.approx(plain["ctc_loss"] + plain["rnnt_loss"])
    expected = 0.3 * weighted["ctc_loss"] + 0.7 * weighted["rnnt_loss"]
    assert weighted["loss"] == pytest.approx(expected)

    bad = tiny_overrides(
        tiny_corpus, tmp_path / "bad", steps=1, **{"model.loss_weights": {"rnnt": 1}}
    )
    with pytest.raises(Exception, match="no head named 'rnnt'"):
        load_recipe(RECIPE, bad)


def test_loading_a_language_model_package_as_a_recognizer_says_so(tmp_path, capsys):
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "config.yaml").write_text("task: lm\nmodel: {d_model: 8}\n")
    with pytest.raises(UserError, match="holds a 'lm' package, not a 'asr' one"):
        load_package(tmp_path, task="asr")
    assert main(["transcribe", str(tmp_path), "a.wav"]) == 2
    assert "holds a 'lm' package, not a 'asr' one" in capsys.readouterr().err
