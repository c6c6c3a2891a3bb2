"""Damaged checkpoints and bad settings: `--resume` falls back to the newest intact checkpoint
or stops with one clear line, no intact checkpoint is deleted, and settings that cannot work
are refused before anything is written. The runs train the ``lm`` task on generated text."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from suite.cli import main
from suite.tasks.lm import generated_text
from suite.train.checkpoint import damage
from tests.test_llm_adapter import text_manifest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("text")
    texts = generated_text(120, seed=3, excluded=set())
    text_manifest(out / "train.jsonl.gz", texts[:100])
    text_manifest(out / "dev.jsonl.gz", texts[100:])
    return out


def argv(corpus: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [
        "train",
        str(ROOT / "recipes/lm/espeak_text_lm.yaml"),
        f"data.corpus_dir={corpus}",
        "data.train=train.jsonl.gz",
        "data.dev=dev.jsonl.gz",
        "data.generated_sentences=0",
        "data.batch_size=8",
        "model.tokenizer={name: char}",
        "model.lm={d_model: 16, num_layers: 1, num_heads: 2}",
        f"train.out_dir={out}",
        f"train.max_steps={steps}",
        "train.val_every=100",
        "train.log_every=1",
        "train.warmup_steps=1",
        "--save-every",
        "2",
        "--quiet",
        *extra,
    ]


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> Path:
    """A run with checkpoints step-2 and step-4."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(argv(corpus, out, 4)) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "latest",
        "step-00000002",
        "step-00000004",
    ]
    return out


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def zero(path: Path) -> None:
    path.write_bytes(bytes(path.stat().st_size))


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-200:-136] = b"\xff" * 64  # inside the tensors, past the header
    path.write_bytes(bytes(data))


DAMAGES = {
    "model truncated": ("step-00000004/model.safetensors", truncate),
    "model zeroed": ("step-00000004/model.safetensors", zero),
    "model 64 bytes of 0xFF": ("step-00000004/model.safetensors", flip),
    "model deleted": ("step-00000004/model.safetensors", Path.unlink),
    "optimizer truncated": ("step-00000004/optimizer.safetensors", truncate),
    "trainer.json broken": ("step-00000004/trainer.json", truncate),
}


@pytest.mark.parametrize("name", DAMAGES)
def test_resume_falls_back_to_the_newest_intact_checkpoint(corpus, trained, tmp_path, capsys, name):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    where, hurt = DAMAGES[name]
    hurt(run / "checkpoints" / where)
    assert damage(run / "checkpoints/step-00000004") is not None
    assert main(argv(corpus, run, 6, "--resume")) == 0
    err = capsys.readouterr().err
    assert "step-00000004 is damaged" in err and "resumed from" in err
    assert "at step 2" in err
    kept = run / "checkpoints/damaged-step-00000004"
    assert kept.is_dir()  # set aside, never deleted
    assert (run / "checkpoints/latest").read_text().strip() == "step-00000006"


@pytest.mark.parametrize("pointer", ["", "step-00000099\n"])
def test_a_broken_pointer_resumes_from_the_newest_checkpoint(
    corpus, trained, tmp_path, capsys, pointer
):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "checkpoints/latest").write_text(pointer)
    assert main(argv(corpus, run, 6, "--resume")) == 0
    assert "at step 4" in capsys.readouterr().err  # not from step 0
    assert (run / "checkpoints/step-00000006").is_dir()


def test_no_intact_checkpoint_stops_and_keeps_everything(corpus, trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    for step in ("step-00000002", "step-00000004"):
        zero(run / "checkpoints" / step / "model.safetensors")
    assert main(argv(corpus, run, 6, "--resume")) == 2
    err = capsys.readouterr().err
    assert "no intact checkpoint" in err and "Traceback" not in err
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["damaged-step-00000002", "damaged-step-00000004", "latest"]
    # Without --resume the damaged run is not overwritten either.
    assert main(argv(corpus, run, 6)) == 2
    assert "already holds a training run" in capsys.readouterr().err


def test_a_kill_mid_write_leaves_no_temporary_folder(corpus, trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    stale = run / "checkpoints/.tmp-step-00000006-12345"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    assert main(argv(corpus, run, 6, "--resume")) == 0
    assert not stale.exists()


def test_resume_with_another_recipe_is_refused_before_writing(corpus, trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    config = (run / "config.yaml").read_text()
    assert main(argv(corpus, run, 6, "--resume", "train.lr=0.1")) == 2
    err = capsys.readouterr().err
    assert "train.lr: 0.003 -> 0.1" in err and "Traceback" not in err
    assert (run / "config.yaml").read_text() == config
    assert main(argv(corpus, run, 6, "--resume")) == 0  # max_steps may change


def test_steps_that_stay_non_finite_stop_the_run(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        argv(corpus, out, 50, "train.lr=1e30", "train.warmup_steps=0", "train.max_skipped_steps=3")
    )
    err = capsys.readouterr().err
    assert code == 2 and "3 steps in a row had a non-finite" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_gets_one_line(corpus, tmp_path, capsys):
    assert main([*argv(corpus, tmp_path / "run", 4), "train.device=cuda"]) == 2
    assert "no GPU is visible" in capsys.readouterr().err


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lr=-1", "'train.lr' must be > 0"),
        ("train.accum_grad=0", "'train.accum_grad' must be >= 1"),
        ("train.log_every=0", "'train.log_every' must be >= 1"),
        ("train.max_steps=0", "'train.max_steps' must be >= 1"),
        ("train.device=banana", "'train.device' must be auto, cpu, cuda or cuda:N"),
        ("model.lm.d_model=big", "model.lm option 'd_model' takes int, got 'big'"),
        ("data.train=/etc/hostname", "is not a lhotse cut manifest"),
    ],
)
def test_bad_settings_get_one_line(corpus, tmp_path, capsys, override, message):
    assert main([*argv(corpus, tmp_path / "run", 4), override]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run/checkpoints").exists()
