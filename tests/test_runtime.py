"""Opt-in runtime settings: glibc's malloc keeps freed memory only when asked, and
optimize_for_cpu re-lays linear weights without changing results, parameters or checkpoints."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch
from torch import nn

import suite
from suite.runtime import optimize_for_cpu

GLIBC = platform.libc_ver()[0] == "glibc"


def _run(code: str, env: dict[str, str] | None = None) -> str:
    """``code``'s output in a fresh interpreter whose environment sets no malloc option but
    ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
    done = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **(env or {})}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_malloc_keeps_freed_memory_unless_the_environment_sets_it():
    check = "import suite.runtime as r; print(r.keep_freed_memory(), r.keep_freed_memory())"
    assert _run(check) == "True True"  # applied; the second call answers without redoing it
    assert _run(check, {"MALLOC_TRIM_THRESHOLD_": "0"}) == "False False"
    assert _run(check, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}) == "False False"


def test_loading_and_running_a_model_leave_malloc_alone():
    code = (
        "import numpy, suite, suite.runtime as r; asr = suite.load('default-asr'); "
        "asr.transcribe([numpy.zeros(8000, dtype='float32')], sample_rate=16000); "
        "print(r._applied)"
    )
    assert _run(code) == "None"


def streaming_encoder() -> nn.Module:
    torch.manual_seed(0)
    return suite.create_encoder(
        "conformer", preset="tiny", causal=True, subsampling_factor=4, att_context=(8, 3)
    ).eval()


def test_optimize_for_cpu_keeps_parameters_keys_and_results():
    plain, tuned = streaming_encoder(), streaming_encoder()
    parameters = dict(tuned.named_parameters())
    assert optimize_for_cpu(tuned) is tuned
    assert dict(tuned.named_parameters()) == parameters  # the same Parameter objects
    weight = tuned.layers[0].ff1[1].weight
    assert weight.stride() == (1, weight.shape[0])  # column by column
    for key, value in plain.state_dict().items():
        assert torch.equal(tuned.state_dict()[key], value), key
    x, n = torch.randn(2, 160, 80), torch.tensor([160, 97])
    with torch.no_grad():
        want, got = plain(x, n), tuned(x, n)
        torch.testing.assert_close(got.features, want.features, atol=1e-5, rtol=0)
        states = plain.init_state(1), tuned.init_state(1)
        for piece in x[:1].split(16, dim=1):  # streaming steps: a few rows per linear
            a, s0 = plain.streaming_forward(piece, torch.tensor([16]), states[0])
            b, s1 = tuned.streaming_forward(piece, torch.tensor([16]), states[1])
            states = s0, s1
            torch.testing.assert_close(b.features, a.features, atol=1e-5, rtol=0)


def test_an_optimized_model_trains_and_its_checkpoint_loads_into_a_plain_one(tmp_path):
    from safetensors.torch import load_file, save_file

    model = optimize_for_cpu(streaming_encoder().train())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, n = torch.randn(2, 64, 80), torch.tensor([64, 40])
    model(x, n).features.square().mean().backward()
    optimizer.step()
    weight = model.layers[0].attn.qkv.weight
    assert weight.grad is not None and weight.stride() == (1, weight.shape[0])
    state = {k: v.contiguous() for k, v in model.state_dict().items()}  # as packages save
    save_file(state, tmp_path / "model.safetensors")
    plain = streaming_encoder()
    plain.load_state_dict(load_file(tmp_path / "model.safetensors"))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(x, n).features, model(x, n).features, atol=1e-5, rtol=0)
