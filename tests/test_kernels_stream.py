"""The streaming attention step (ring caches, many streams, fused cache write) against its
PyTorch reference, and streamed chunk by chunk against offline chunked-limited attention.

Triton cases run on CUDA, or on the CPU under ``TRITON_INTERPRET=1`` in a child process
(:func:`test_interpreter_parity`; the variable must be set before the kernels are defined).
"""

from __future__ import annotations

import random

import pytest
import torch

from suite.kernels.attention import attention
from suite.kernels.stream import ring_capacity, stream_attention_step, stream_step_reference
from suite.kernels.testing import CUDA, DEVICE, INTERPRET, interpreter_parity
from suite.kernels.varlen import triton_available
from suite.nn.context import cache_frames

runs_triton = pytest.mark.skipif(
    not triton_available() or not (INTERPRET or CUDA),
    reason="Triton kernels need CUDA, or TRITON_INTERPRET=1 (test_interpreter_parity)",
)


@pytest.mark.skipif(INTERPRET or CUDA or not triton_available(), reason="runs the cases directly")
def test_interpreter_parity():
    """Every Triton case of this file under ``TRITON_INTERPRET=1``, in a child process."""
    interpreter_parity(__file__)


@runs_triton
@pytest.mark.parametrize("seed", range(6))
def test_step_matches_reference(seed):
    """Streams of every age (fresh, cache partly filled, long running, idle), any split."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    right = rng.randint(0, 4)
    size = right + 1
    left = rng.choice([-1, size * rng.randint(0, 4), rng.randint(0, 12)])
    context = rng.choice([(left, right), (left, right), None])
    stride = rng.choice([1, 2]) if context is not None else 1
    M = cache_frames(context, stride) if context is not None and left >= 0 else rng.randint(1, 20)
    B, T, H, D = 4, rng.randint(1, 8), 2, rng.choice([8, 12])
    C = ring_capacity(M, T)
    positions = torch.tensor([0, rng.randint(1, M + 1), rng.randint(M, 200), rng.randint(0, 50)])
    new = torch.tensor([T, rng.randint(1, T), rng.randint(0, T), 0])
    qkv = torch.randn(B, T, 3, H, D, device=DEVICE)
    q, k, v = qkv.unbind(2)  # strided views, as a layer's joint projection holds them
    caches = [torch.randn(B, H, C, D, device=DEVICE) for _ in range(2)]
    ref_caches = [c.clone() for c in caches]
    splits = rng.choice([1, 2, 3])
    got = stream_attention_step(q, k, v, *caches, positions, new, M, context, stride, splits)
    want = stream_step_reference(q, k, v, *ref_caches, positions, new, M, context, stride)
    what = f"context {context} stride {stride} M {M} T {T} splits {splits}"
    assert (got - want).abs().max().item() <= 1e-4, what
    assert got[3].abs().sum() == 0, "an idle stream's rows are zero"
    for c, r in zip(caches, ref_caches, strict=True):
        assert torch.equal(c, r), f"cache write, {what}"


@runs_triton
@pytest.mark.parametrize("context", [(6, 2), (8, 3)])
def test_streamed_chunks_equal_offline_attention(context):
    """Three streams of different lengths stepped chunk by chunk in one batch (each with its
    own position; finished streams idle) give the offline chunked-limited attention."""
    torch.manual_seed(5)
    H, D = 1, 8
    lengths = [14, 9, 4]
    B, T_max = len(lengths), max(lengths)
    size = context[1] + 1
    M = cache_frames(context)
    q, k, v = (torch.randn(B, T_max, H, D, device=DEVICE) for _ in range(3))
    L = torch.tensor(lengths, device=DEVICE)
    want = attention(*(x.transpose(1, 2) for x in (q, k, v)), L, context).transpose(1, 2)
    C = ring_capacity(M, size)
    caches = [torch.zeros(B, H, C, D, device=DEVICE) for _ in range(2)]
    got = torch.zeros_like(want)
    for start in range(0, T_max, size):
        positions = torch.full((B,), start, device=DEVICE)
        new = (L - start).clamp(0, size)
        block = slice(start, start + size)
        pad = size - q[:, block].shape[1]
        chunk = [torch.nn.functional.pad(x[:, block], (0, 0, 0, 0, 0, pad)) for x in (q, k, v)]
        out = stream_attention_step(*chunk, *caches, positions, new, M, context)
        got[:, block] = out[:, : size - pad]
    assert (got - want).abs().max().item() <= 1e-4


def test_ring_too_small_teaches():
    q = torch.zeros(1, 4, 1, 8)
    cache = torch.zeros(1, 1, 10, 8)
    with pytest.raises(ValueError, match="ring_capacity"):
        stream_attention_step(q, q, q, cache, cache, torch.tensor([0]), torch.tensor([4]), 8, None)


def test_reference_writes_new_frames_to_their_slots():
    B, T, H, D, M = 1, 3, 1, 2, 4
    C = ring_capacity(M, T)
    k = torch.arange(T * D, dtype=torch.float32).view(B, T, H, D) + 1
    caches = [torch.zeros(B, H, C, D) for _ in range(2)]
    stream_step_reference(k, k, k, *caches, torch.tensor([C - 1]), torch.tensor([2]), M, None)
    assert torch.equal(caches[0][0, 0, C - 1], k[0, 0, 0]) and torch.equal(
        caches[0][0, 0, 0], k[0, 1, 0]
    )
    assert caches[0][0, 0, 1].abs().sum() == 0  # the padding frame is not written


@runs_triton
def test_layer_ring_step_equals_offline_layer():
    """``SelfAttention.ring_step`` chunk by chunk equals the layer run offline."""
    from suite.nn.attention import SelfAttention

    torch.manual_seed(6)
    context, size, T = (6, 2), 3, 10
    layer = SelfAttention(16, 2).to(DEVICE).eval()
    lengths = torch.tensor([T, 5], device=DEVICE)
    x = torch.randn(2, T, 16, device=DEVICE)
    M = cache_frames(context)
    caches = [torch.zeros(2, 2, ring_capacity(M, size), 8, device=DEVICE) for _ in range(2)]
    real = (torch.arange(T, device=DEVICE) < lengths[:, None])[..., None]  # (B, T, 1)
    with torch.no_grad():
        want = layer(x, lengths, context) * real
        got = torch.zeros_like(want)
        for start in range(0, T, size):
            chunk = x[:, start : start + size]
            width = chunk.shape[1]
            chunk = torch.nn.functional.pad(chunk, (0, 0, 0, size - width))
            new = (lengths - start).clamp(0, size)
            positions = torch.full((2,), start, device=DEVICE)
            out = layer.ring_step(chunk, positions, new, *caches, M, context)
            got[:, start : start + width] = out[:, :width]
    assert (got * real - want).abs().max().item() <= 1e-4
