"""The ``codec`` task end to end on a tiny model: a recipe trains through the shared trainer
(the loss falls, the adversaries join after the recipe's warm-up), the package loads with
``suite.load`` as a codec that encodes at a bitrate, decodes and streams, and the CLI writes and
reads ``.sca`` files, refusing broken ones with one clear message."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile
import torch
from lhotse import Recording, RecordingSet

import suite
from suite.audio import AudioWarning
from suite.cli import main
from suite.config import load_recipe
from suite.train.trainer import train

SR = 16000


def _voice(seconds: float, seed: int) -> np.ndarray:
    """A buzzy vowel-like tone with a moving pitch, and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    pitch = 120 + 40 * rng.random() + 20 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    wave = sum(np.sin(k * phase) / k for k in range(1, 8)) * 0.2
    return (wave + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny codec trained for a few steps; returns ``(run folder, corpus folder)``."""
    root = tmp_path_factory.mktemp("codec")
    corpus = root / "corpus"
    (corpus / "audio").mkdir(parents=True)
    recordings = []
    for i in range(6):
        path = corpus / "audio" / f"u{i}.wav"
        soundfile.write(path, _voice(1.0 + 0.2 * i, i), SR)
        recordings.append(Recording.from_file(path, recording_id=f"u{i}"))
    RecordingSet.from_recordings(recordings).to_file(corpus / "recordings.jsonl.gz")
    recipe_path = root / "tiny.yaml"
    recipe_path.write_text(
        f"""task: codec
data:
  corpus_dir: {corpus}
  train: recordings.jsonl.gz
  dev: recordings.jsonl.gz
  batch_size: 2
  segment: 0.5
  augment: {{specaugment: false}}
model:
  codec: {{name: seanet, preset: tiny, adversarial_start: 6}}
train:
  out_dir: {root / "run"}
  max_steps: 10
  lr: 3.0e-3
  warmup_steps: 0
  val_every: 10
  log_every: 1
  device: cpu
"""
    )
    torch.manual_seed(0)
    train(load_recipe(recipe_path), progress=False)
    return root / "run", corpus


def test_a_recipe_trains_the_codec_through_the_shared_trainer(trained):
    run, _ = trained
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [line for line in lines if "mel" in line]
    assert len(steps) == 10
    assert np.mean([s["mel"] for s in steps[-3:]]) < np.mean([s["mel"] for s in steps[:3]])
    assert all("disc" not in s for s in steps[:6]) and all("disc" in s for s in steps[6:])
    assert any(k.endswith("_perplexity") for k in steps[0])
    dev = [line for line in lines if "dev_mel_distance" in line]
    assert dev and "dev_si_sdr_1.2kbps" in dev[-1]
    # Evaluation-mode codebook use, per stage and the worst stage's.
    assert 1.0 <= dev[-1]["dev_perplexity_min"] <= dev[-1]["dev_q0_perplexity"] <= 64
    assert 0.0 <= dev[-1]["dev_q3_unused"] <= dev[-1]["dev_unused_max"] < 1.0
    assert (run / "model" / "model.safetensors").is_file()


def test_the_package_loads_as_a_codec_that_encodes_decodes_and_streams(trained):
    run, _ = trained
    codec = suite.load(run / "model")
    assert codec.bitrates == pytest.approx([0.3, 0.6, 0.9, 1.2])
    audio = _voice(0.77, 9)
    encoded = codec.encode(audio, sample_rate=SR, bitrate=0.6)
    assert encoded.codes.shape == (2, -(-len(audio) // 320)) and encoded.kbps == 0.6
    decoded = codec.decode(encoded)
    assert decoded.shape == audio.shape and decoded.dtype == np.float32
    # Another rate is resampled; a too-low bitrate says which exist.
    with pytest.warns(AudioWarning, match="resampled"):
        assert codec.encode(audio[::2], sample_rate=8000).codes.shape[0] == 4
    with pytest.raises(suite.errors.UserError, match="0.3, 0.6"):
        codec.encode(audio, sample_rate=SR, bitrate=0.1)
    # A session chunk by chunk gives the whole file's codes and samples.
    with codec.stream(bitrate=0.6) as session:
        parts = [session.encode(audio[i : i + 500]) for i in range(0, len(audio), 500)]
        parts.append(session.finish())
        codes = torch.cat(parts, -1)
        assert torch.equal(codes, encoded.codes)
        samples = np.concatenate([session.decode(codes[:, i : i + 2]) for i in range(0, 39, 2)])
    whole = codec.decode(encoded.codes)
    assert np.abs(samples - whole).max() < 1e-4


def test_the_cli_encodes_to_sca_and_back_and_refuses_broken_files(trained, tmp_path, capsys):
    run, corpus = trained
    wav = corpus / "audio" / "u1.wav"
    sca, out = tmp_path / "u1.sca", tmp_path / "u1.wav"
    model = str(run / "model")
    assert main(["codec", "encode", str(wav), str(sca), "--kbps", "0.6", "--model", model]) == 0
    assert sca.stat().st_size == 32 + 60 * 2 * 6 // 8  # 1.2 s: 60 frames of two 6-bit codes
    assert main(["codec", "decode", str(sca), str(out), "--model", model]) == 0
    audio, rate = soundfile.read(out)
    assert rate == SR and len(audio) == int(1.2 * SR)
    capsys.readouterr()
    sca.write_bytes(sca.read_bytes()[:-4])
    assert main(["codec", "decode", str(sca), str(out), "--model", model]) == 2
    err = capsys.readouterr().err
    assert "truncated" in err and len(err.strip().splitlines()) == 1
    assert main(["codec", "decode", str(wav), str(out), "--model", model]) == 2
    assert "not a .sca" in capsys.readouterr().err
