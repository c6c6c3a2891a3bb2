"""The one trainer under torchrun on CPU (gloo, 2 processes): DDP and FSDP2 step exactly as one
process accumulating the ranks' batches, a rank killed with SIGKILL resumes exactly, and a
checkpoint written by 2 processes resumes in 1.

The runs train the ``lm`` task on a few hundred generated sentences (its text manifests carry
no audio), which takes seconds per run.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from suite.tasks.lm import generated_text
from tests.test_llm_adapter import text_manifest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("text")
    texts = generated_text(400, seed=7, excluded=set())
    text_manifest(out / "train.jsonl.gz", texts[:360])
    text_manifest(out / "dev.jsonl.gz", texts[360:])
    return out


def args(
    corpus: Path, out: Path, steps: int, *extra: str, d_model: int = 32, dropout: float = 0.0
) -> list[str]:
    """``suite train`` arguments for the lm recipe on ``corpus``. Dropout draws from each
    rank's own generator, so only runs without it equal one process accumulating batches."""
    return [
        str(ROOT / "recipes/lm/espeak_text_lm.yaml"),
        f"data.corpus_dir={corpus}",
        "data.train=train.jsonl.gz",
        "data.dev=dev.jsonl.gz",
        "data.generated_sentences=0",
        "data.batch_size=8",
        "model.tokenizer={name: char}",
        f"model.lm={{d_model: {d_model}, num_layers: 2, num_heads: 2, dropout: {dropout}}}",
        f"train.out_dir={out}",
        f"train.max_steps={steps}",
        f"train.val_every={steps}",
        "train.log_every=1",
        "train.warmup_steps=2",
        "train.ema_decay=0.9",
        "--quiet",
        *extra,
    ]


def start(argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "suite.cli", "train", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run(argv: list[str]) -> str:
    proc = start(argv)
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, output
    return output


def losses(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [row["loss"] for row in map(json.loads, lines) if "loss" in row]


def final(run_dir: Path) -> dict[str, torch.Tensor]:
    latest = (run_dir / "checkpoints/latest").read_text().strip()
    return load_file(str(run_dir / "checkpoints" / latest / "model.safetensors"))


def assert_close_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)


@pytest.fixture(scope="module")
def single(corpus, tmp_path_factory) -> Path:
    """One process accumulating two batches of 8: the ranks' two batches of each step."""
    out = tmp_path_factory.mktemp("single") / "run"
    run(args(corpus, out, 6, "train.accum_grad=2"))
    return out


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_step_as_one_process_accumulating_their_batches(
    corpus, single, tmp_path, strategy
):
    out = tmp_path / "run"
    run(args(corpus, out, 6, f"train.strategy={strategy}", "--nproc", "2"))
    assert losses(out) == pytest.approx(losses(single), rel=1e-5)
    assert losses(out)[-1] < losses(out)[0]
    assert_close_weights(final(out), final(single), atol=1e-5)
    # Rank 0 alone writes: one log, one package, one set of checkpoints.
    assert (out / "model/model.safetensors").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step-00000006"]


@pytest.mark.slow
def test_sigkill_of_one_rank_then_resume_continues_exactly(corpus, tmp_path):
    steps = 60
    common = ["--nproc", "2", "--save-every", "10"]
    straight = tmp_path / "straight"
    run(args(corpus, straight, steps, *common, d_model=96, dropout=0.1))

    killed = tmp_path / "killed"
    proc = start(args(corpus, killed, steps, *common, d_model=96, dropout=0.1))
    deadline = time.time() + 300
    while not (killed / "checkpoints/step-00000020").is_dir():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline
        time.sleep(0.02)
    launcher = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
    ranks = subprocess.run(
        ["pgrep", "-P", launcher.stdout.split()[0]], capture_output=True, text=True
    ).stdout.split()
    assert len(ranks) == 2
    os.kill(int(ranks[1]), signal.SIGKILL)
    assert proc.wait(timeout=120) != 0  # torchrun stops the other rank and fails
    assert not (killed / "model").exists() or steps > 20

    output = run(args(corpus, killed, steps, *common, "--resume", d_model=96, dropout=0.1))
    assert "resumed from" in output
    assert_close_weights(final(killed), final(straight), atol=0)
    assert losses(killed)[-5:] == losses(straight)[-5:]


def test_a_checkpoint_of_two_ranks_resumes_in_one_process(corpus, tmp_path):
    out = tmp_path / "run"
    run(args(corpus, out, 4, "--nproc", "2", "train.strategy=fsdp"))
    saved = final(out)
    output = run(args(corpus, out, 8, "--resume"))
    assert "resumed from" in output and "step 4" in output
    after = final(out)
    assert (out / "checkpoints/latest").read_text().strip() == "step-00000008"
    assert any(not torch.equal(saved[k], after[k]) for k in saved)  # it trained on
    assert losses(out)[-1] < losses(out)[0]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_speech_recipe_trains_and_validates_under_torchrun(tiny_corpus, tmp_path, strategy):
    from tests.test_train import RECIPE, tiny_overrides

    out = tmp_path / "run"
    more = {"train.val_every": 4, "train.ema_decay": 0.9, "train.strategy": strategy}
    output = run([str(RECIPE), *tiny_overrides(tiny_corpus, out, 8, **more), "--nproc", "2"])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "dev_wer" in r] == [4, 8]
    assert all(math.isfinite(r["loss"]) for r in rows if "loss" in r)
    assert (out / "model/model.safetensors").is_file() and "model package" in output
