"""Which implementation runs a layer's masked self-attention: ``backend="auto" | "sdpa" |
"flex" | "reference" | "triton"``.

Dims legend: B - batch, H - heads, T - frames, Dh - head width.

All of them compute :func:`suite.kernels.attention.attention` (``stride == 1``) or
``cached_attention`` over ``0..T-1`` positions (``stride > 1``, a half-rate layer), with rows
of padding frames exactly zero:

- ``"sdpa"``: those functions as they are, ``F.scaled_dot_product_attention`` with a boolean mask;
- ``"flex"``: FlexAttention (``torch.nn.attention.flex_attention``) with the same rule as a
  block mask (compiled on CUDA, PyTorch's unfused path elsewhere);
- ``"reference"``: the softmax written out over a dense mask, in the inputs' dtype;
- ``"triton"``: :func:`suite.kernels.varlen.padded_attention`, the packed variable-length
  kernel reading the padded batch in place (CUDA; on the CPU under ``TRITON_INTERPRET=1``);
- ``"auto"``: ``"triton"`` when the tensors are on CUDA and ``triton`` imports, else
  ``"sdpa"``, so CPU results stay those of the SDPA path.
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor

from suite.kernels.attention import Context, attention, attention_mask, cached_attention

BACKENDS = ("auto", "sdpa", "flex", "reference", "triton")


def check_backend(backend: str) -> str:
    """``backend``, or a ``ValueError`` naming the choices."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
    return backend


@functools.lru_cache(maxsize=1)
def _triton_ok() -> bool:
    from suite.kernels.varlen import triton_available

    return triton_available()


def resolve(backend: str, device: torch.device) -> str:
    """The backend ``backend`` runs as on ``device`` (``"auto"`` made concrete)."""
    if backend != "auto":
        return backend
    return "triton" if device.type == "cuda" and _triton_ok() else "sdpa"


def self_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lengths: Tensor,
    context: Context,
    stride: int = 1,
    backend: str = "auto",
) -> Tensor:
    """Masked self-attention of a padded batch through ``backend``.

    Args:
        q: ``(B, H, T, Dh)`` rotated queries (a view of frames-first storage is best for
            ``"triton"``, which reads it in place).
        k: ``(B, H, T, Dh)``.
        v: ``(B, H, T, Dh)``.
        lengths: ``(B,)`` valid frames per item.
        context: ``None`` or ``(left, right)`` in full-rate frames.
        stride: full-rate frames per frame.
        backend: one of :data:`BACKENDS`.

    Returns:
        ``(B, H, T, Dh)``; rows of padding frames are exactly zero.
    """
    backend = resolve(check_backend(backend), q.device)
    if backend == "triton":
        from suite.kernels.varlen import padded_attention

        heads_last = [x.transpose(1, 2) for x in (q, k, v)]  # (B, T, H, Dh) views
        return padded_attention(*heads_last, lengths, context, stride).transpose(1, 2)
    if backend == "sdpa":
        if stride == 1 or context is None:
            return attention(q, k, v, lengths, context)
        B, _, T, _ = q.shape
        pos = torch.arange(T, device=q.device).expand(B, T)
        valid = pos < lengths.to(q.device)[:, None]
        return cached_attention(q, k, v, pos, pos, valid, valid, context, stride)
    if backend == "flex":
        return _flex(q, k, v, lengths, context, stride)
    return _reference(q, k, v, lengths, context, stride)


def _chunk_rule(context: Context, stride: int):
    """``(query frame, key frame) -> allowed`` of a context, on integer tensors."""
    if context is None:
        return lambda i, j: torch.ones_like(i - j, dtype=torch.bool)
    left, right = context
    size = right + 1

    def allowed(i: Tensor, j: Tensor) -> Tensor:
        diff = (i * stride) // size - (j * stride) // size
        ok = diff >= 0
        return ok & (diff <= left // size) if left >= 0 else ok

    return allowed


def _reference(q: Tensor, k: Tensor, v: Tensor, lengths: Tensor, context: Context, stride: int):
    B, H, T, Dh = q.shape
    lengths = lengths.to(q.device)
    if stride == 1:
        mask = attention_mask(lengths, T, context)  # (B, 1, T, T), pad rows all True
    else:
        frames = torch.arange(T, device=q.device)
        valid = frames[None, :] < lengths[:, None]
        rule = _chunk_rule(context, stride)(frames[:, None], frames[None, :])  # (T, T)
        mask = (rule[None] & valid[:, None, :]) | ~valid[:, :, None]
        mask = mask[:, None]
    mask = mask | (lengths == 0)[:, None, None, None]  # an empty item: finite, zeroed below
    scores = (q @ k.transpose(-1, -2)) * Dh**-0.5  # (B, H, T, T)
    probs = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    keep = torch.arange(T, device=q.device)[None, :] < lengths[:, None]  # (B, T)
    return (probs @ v) * keep[:, None, :, None].to(q.dtype)


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    # Default dynamism: a new length compiles once more, then shapes are symbolic, so batches
    # of every length do not each recompile.
    return torch.compile(flex_attention)


def flex_block_mask(lengths: Tensor, T: int, context: Context, stride: int = 1):
    """FlexAttention's ``BlockMask`` of :func:`self_attention`'s rule over padded batches."""
    from torch.nn.attention.flex_attention import create_block_mask

    lengths = lengths.to(torch.int64)
    rule = _chunk_rule(context, stride)

    def mask_mod(b, h, i, j):
        return (j < lengths[b]) & (i < lengths[b]) & rule(i, j)

    return create_block_mask(mask_mod, lengths.shape[0], None, T, T, device=lengths.device)


def _flex(q: Tensor, k: Tensor, v: Tensor, lengths: Tensor, context: Context, stride: int):
    from torch.nn.attention.flex_attention import flex_attention

    B, H, T, Dh = q.shape
    lengths = lengths.to(q.device)
    block_mask = flex_block_mask(lengths, T, context, stride)
    if q.is_cuda:
        out = _compiled_flex()(q, k, v, block_mask=block_mask)  # (B, H, T, Dh); no key: 0
    else:
        with warnings.catch_warnings():  # uncompiled is slow, and the point off CUDA is parity
            warnings.simplefilter("ignore", UserWarning)
            out = flex_attention(q, k, v, block_mask=block_mask)
    keep = torch.arange(T, device=q.device)[None, :] < lengths[:, None]
    return out * keep[:, None, :, None].to(out.dtype)
