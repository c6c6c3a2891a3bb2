"""Attention backends (``sdpa``, ``flex``, ``reference``) agree on CPU, and ``auto`` leaves the
CPU path exactly as it was."""

from __future__ import annotations

import pytest
import torch

import suite
from suite.kernels.backends import resolve, self_attention
from suite.nn.attention import SelfAttention, set_attention_backend

CASES = [(None, 1), ((4, 1), 1), ((-1, 2), 1), ((5, 2), 2), ((0, 0), 1)]


@pytest.mark.parametrize("backend", ["flex", "reference"])
@pytest.mark.parametrize("context,stride", CASES)
def test_backends_agree_with_sdpa(backend, context, stride):
    torch.manual_seed(0)
    B, H, T, D = 3, 2, 19, 8
    # FlexAttention has no backward on the CPU: its gradients are checked on CUDA only.
    grad = backend != "flex"
    q, k, v = (torch.randn(B, H, T, D, requires_grad=grad) for _ in range(3))
    lengths = torch.tensor([19, 7, 0])
    want = self_attention(q, k, v, lengths, context, stride, "sdpa")
    got = self_attention(q, k, v, lengths, context, stride, backend)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert got[2].abs().sum() == 0 and got[1, :, 7:].abs().sum() == 0
    if not grad:
        return
    g = torch.randn_like(want)
    for a, b in zip(
        torch.autograd.grad(got, (q, k, v), g),
        torch.autograd.grad(want, (q, k, v), g),
        strict=True,
    ):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_auto_is_sdpa_on_cpu():
    assert resolve("auto", torch.device("cpu")) == "sdpa"
    torch.manual_seed(0)
    layer = SelfAttention(32, 4).eval()
    assert layer.backend == "auto"
    x, lengths = torch.randn(2, 11, 32), torch.tensor([11, 6])
    with torch.no_grad():
        auto = layer(x, lengths, (4, 1))
        layer.backend = "sdpa"
        sdpa = layer(x, lengths, (4, 1))
    assert torch.equal(auto, sdpa)


def test_set_attention_backend_on_an_encoder():
    torch.manual_seed(0)
    encoder = suite.create_encoder("conformer", preset="tiny", causal=True, att_context=(8, 3))
    encoder.eval()
    x, lengths = torch.randn(2, 64, 80), torch.tensor([64, 40])
    with torch.no_grad():
        want = encoder(x, lengths).features
        set_attention_backend(encoder, "reference")
        layers = [m for m in encoder.modules() if isinstance(m, SelfAttention)]
        assert layers and all(m.backend == "reference" for m in layers)
        got = encoder(x, lengths).features
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match="sdpa"):
        SelfAttention(32, 4, backend="cudnn")
