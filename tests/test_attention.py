"""``suite.kernels.attention`` against a naive softmax reference with a loop-built mask."""

from __future__ import annotations

import math

import pytest
import torch

from suite.kernels.attention import attention, attention_mask, masked_attention


def reference_allowed(T: int, length: int, context: tuple[int, int] | None) -> torch.Tensor:
    """``(T, T)`` bool written frame by frame from the definition (no shared code)."""
    allowed = torch.zeros(T, T, dtype=torch.bool)
    for i in range(length):
        for j in range(length):
            if context is None:
                allowed[i, j] = True
                continue
            left, right = context
            size = right + 1
            qc, kc = i // size, j // size
            back = math.inf if left == -1 else left // size
            allowed[i, j] = kc <= qc and qc - kc <= back
    return allowed


def reference_attention(q, k, v, lengths, context):
    B, H, T, Dh = q.shape
    out = torch.zeros_like(q)
    for b in range(B):
        n = int(lengths[b])
        if n == 0:
            continue
        allowed = reference_allowed(T, n, context)[:n, :n]
        scores = q[b, :, :n] @ k[b, :, :n].transpose(-1, -2) / math.sqrt(Dh)  # (H, n, n)
        scores = scores.masked_fill(~allowed, float("-inf"))
        out[b, :, :n] = scores.softmax(dim=-1) @ v[b, :, :n]
    return out


CONTEXTS = [None, (-1, 0), (4, 1), (2, 2), (0, 3), (-1, 4), (7, 0)]


@pytest.mark.parametrize("context", CONTEXTS)
def test_matches_naive_reference(context):
    torch.manual_seed(0)
    B, H, T, Dh = 3, 2, 11, 8
    q, k, v = (torch.randn(B, H, T, Dh, dtype=torch.float64) for _ in range(3))
    lengths = torch.tensor([11, 7, 1])
    got = attention(q, k, v, lengths, context)
    want = reference_attention(q, k, v, lengths, context)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_padded_rows_are_zero_and_finite():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 6, 4) for _ in range(3))
    lengths = torch.tensor([0, 3])  # an empty item has no valid key at all
    for context in (None, (2, 1)):
        out = attention(q, k, v, lengths, context)
        assert torch.isfinite(out).all()
        assert out[0].abs().sum() == 0 and out[1, :, 3:].abs().sum() == 0


def test_chunk_mask_by_hand():
    # T=6, chunks of 2 frames, one chunk of left context: chunk c sees chunks c-1 and c.
    mask = attention_mask(torch.tensor([6]), 6, (2, 1))[0, 0].int()
    want = torch.tensor(
        [
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 1],
            [0, 0, 1, 1, 1, 1],
        ]
    )
    assert torch.equal(mask, want)


def test_pad_keys_masked_and_pad_rows_open():
    mask = attention_mask(torch.tensor([2]), 4, None)[0, 0]
    assert mask[:2, :2].all() and not mask[:2, 2:].any()
    assert mask[2:].all()  # pad query rows stay finite under softmax


@pytest.mark.parametrize("context", [(-2, 0), (3, -1), (1, 2, 3)])
def test_bad_context_is_explained(context):
    with pytest.raises(ValueError, match="context"):
        attention_mask(torch.tensor([4]), 4, context)


def test_gradients_flow_and_stay_finite():
    q, k, v = (torch.randn(2, 2, 5, 4, requires_grad=True) for _ in range(3))
    attention(q, k, v, torch.tensor([5, 2]), (1, 0)).sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert k.grad[1, :, 2:].abs().sum() == 0  # pad keys receive no gradient


@pytest.mark.parametrize("streams", [1, 64])  # the fused kernel, and the two products
def test_masked_attention_without_a_mask_matches_the_reference(streams):
    """A streaming step's attention when every query sees every key: few queries per stream
    against a cache (in a buffer with room, so the keys are strided), the padding query zeroed."""
    torch.manual_seed(0)
    H, T, S, Dh = 4, 4, 20, 8
    q = torch.randn(streams, H, T, Dh)
    k, v = (torch.randn(streams, H, 2 * S, Dh)[:, :, :S] for _ in range(2))
    keep = torch.ones(streams, 1, T, 1)
    keep[0, :, -1] = 0.0
    got = masked_attention(q, k, v, None, keep)
    want = (q @ k.transpose(-1, -2) / math.sqrt(Dh)).softmax(dim=-1) @ v * keep
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert bool((got[0, :, -1] == 0).all())


@pytest.mark.parametrize("streams", [1, 64])  # the fused kernel, and the two products
def test_masked_attention_with_a_mask_matches_the_reference(streams):
    """A streaming step whose streams are young: masked cache slots, and a padding query that
    sees no key at all, which must come out zero (not NaN)."""
    torch.manual_seed(0)
    H, T, S, Dh = 4, 4, 20, 8
    q = torch.randn(streams, H, T, Dh)
    k, v = (torch.randn(streams, H, 2 * S, Dh)[:, :, :S] for _ in range(2))
    mask = torch.rand(streams, 1, T, S) > 0.5
    mask[..., -T:] |= torch.eye(T, dtype=torch.bool)  # a real query sees itself
    mask[0, :, -1] = False  # the padding query sees nothing
    keep = torch.ones(streams, 1, T, 1)
    keep[0, :, -1] = 0.0
    got = masked_attention(q, k, v, mask, keep)
    scores = (q @ k.transpose(-1, -2) / math.sqrt(Dh)).masked_fill(~mask, float("-inf"))
    want = (scores.softmax(dim=-1) @ v).nan_to_num() * keep
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert bool((got[0, :, -1] == 0).all())
