"""Masked multi-head self-attention: the one attention function every encoder calls.

Dims legend: B - batch, H - heads, T - frames, Dh - head width.

``attention(q, k, v, lengths, context)`` is the seam where fused GPU kernels will plug in later:
its inputs are plain tensors and integers (no module state), so a Triton kernel can replace the
body and be checked against this reference with the same tests (``tests/test_attention.py``).

Context follows "Stateful Conformer with Cache-based Inference" (Noroozi et al., 2024),
chunked-limited variant: with ``context=(left, right)`` frames are cut into chunks of
``right + 1`` frames; a frame sees every frame of its own chunk plus ``left // (right + 1)``
earlier chunks (all of them when ``left == -1``). Unlike a sliding window, the look-ahead of a
frame is bounded by its chunk's right edge, so stacking layers does not grow it.

``cached_attention`` is the same rule written over explicit frame positions, for queries and keys
that are not one shared ``0..T-1`` range: a streaming step whose keys are a cache of earlier frames
followed by the new block, or a layer running at a lower frame rate (Squeezeformer's middle
blocks), whose frame ``j`` belongs to the chunk of its first full-rate frame ``j * stride``.

A context may name a third number, ``(left, right, ahead)``: each chunk also sees the ``ahead``
frames after it at every layer, as Emformer's right context (Shi et al., 2021), computed as
copies that see only the chunk's window. That is block processing, not a mask over one sequence:
:mod:`suite.nn.lookahead` builds it; the functions here take two-number contexts
(:func:`no_lookahead`).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

Context = tuple[int, ...] | None  # None, (left, right) or (left, right, ahead)


def check_context(context: Context) -> None:
    """Raise a ``ValueError`` that says how to fix a malformed attention context."""
    if context is None:
        return
    if len(context) not in (2, 3):
        raise ValueError(
            f"attention context must be (left, right), (left, right, ahead) or None, got "
            f"{context!r}"
        )
    left, right = context[:2]
    ahead = lookahead_frames(context)
    if (
        not all(isinstance(v, int) for v in context)
        or left < -1
        or right < 0
        or ahead < 0
        or (ahead and left < 0)
    ):
        raise ValueError(
            f"attention context (left, right[, ahead]) needs integers left >= -1 (-1 = "
            f"unlimited; >= 0 with a look-ahead), right >= 0 and ahead >= 0, got {context!r}; "
            "e.g. (70, 13) for 14-frame chunks with 5 chunks back, or (128, 1, 2) for 2-frame "
            "chunks that each see 2 frames ahead"
        )


def lookahead_frames(context: Context) -> int:
    """The look-ahead frames of a context: its third number, else 0."""
    return context[2] if context is not None and len(context) == 3 else 0


def no_lookahead(context: Context, who: str = "a chunk mask") -> Context:
    """``context``, checked, or a ``ValueError`` if it looks ahead, where only ``(left, right)``
    chunking is built (a mask over one sequence, or an encoder without block processing)."""
    check_context(context)
    if lookahead_frames(context):
        raise ValueError(
            f"{who} takes no look-ahead contexts (block processing is built for the Conformer: "
            f"suite.nn.lookahead), got {context!r}; use (left, right)"
        )
    return context


@functools.lru_cache(maxsize=32)
def _chunk_mask(T: int, left: int, right: int, device: torch.device) -> Tensor:
    """``(T, T)`` bool, True where query frame i may attend to key frame j (cached: the same
    few (T, context) pairs recur every step, and building the mask is O(T^2))."""
    chunk = torch.arange(T, device=device) // (right + 1)  # (T,) chunk index of each frame
    diff = chunk[:, None] - chunk[None, :]  # (T, T) query chunk minus key chunk
    allowed = diff >= 0  # never a later chunk
    if left >= 0:
        allowed &= diff <= left // (right + 1)
    return allowed


def attention_mask(lengths: Tensor, T: int, context: Context = None) -> Tensor:
    """Boolean attention mask for ``T`` frames of which the first ``lengths[b]`` are valid.

    Args:
        lengths: ``(B,)`` int64 valid frames per item.
        T: padded number of frames.
        context: ``None`` for full context, or ``(left, right)`` chunked-limited context in
            frames (``left == -1`` is unlimited left context).

    Returns:
        ``(B, 1, T, T)`` bool, True where query i may attend to key j. Pad keys are masked.
        Rows of pad queries are left all True so the softmax over them stays finite;
        :func:`attention` zeros their outputs.
    """
    no_lookahead(context)
    frames = torch.arange(T, device=lengths.device)
    valid = frames[None, :] < lengths[:, None]  # (B, T)
    mask = valid[:, None, None, :]  # (B, 1, 1, T) pad keys masked
    if context is not None:
        mask = mask & _chunk_mask(T, context[0], context[1], lengths.device)  # (B, 1, T, T)
    else:
        mask = mask.expand(-1, -1, T, -1)
    return mask | ~valid[:, None, :, None]  # pad query rows: all True


def attention(q: Tensor, k: Tensor, v: Tensor, lengths: Tensor, context: Context = None) -> Tensor:
    """Scaled dot-product self-attention over padded sequences.

    Args:
        q: ``(B, H, T, Dh)`` queries (already position-encoded, e.g. rotary).
        k: ``(B, H, T, Dh)`` keys.
        v: ``(B, H, T, Dh)`` values.
        lengths: ``(B,)`` int64 valid frames per item; frames ``>= lengths[b]`` are padding.
        context: ``None`` for full context, or ``(left, right)`` chunked-limited context in
            frames: a frame sees its own chunk of ``right + 1`` frames plus
            ``left // (right + 1)`` earlier chunks; ``left == -1`` means unlimited left.

    Returns:
        ``(B, H, T, Dh)`` attention outputs; rows of padded frames are exactly zero.
    """
    B, H, T, Dh = q.shape
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(
            f"q, k, v must share one (B, H, T, Dh) shape, got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if lengths.shape != (B,):
        raise ValueError(f"lengths must be ({B},) for a batch of {B}, got {tuple(lengths.shape)}")
    lengths = lengths.to(q.device)
    valid = torch.arange(T, device=q.device)[None, :] < lengths[:, None]  # (B, T)
    if context is None:
        # Every query sees the same keys: a (B, 1, 1, T) key mask broadcasts and never builds
        # (B, 1, T, T). An empty item opens all its keys so that its softmax stays finite.
        mask = (valid | (lengths == 0)[:, None])[:, None, None, :]
    else:
        mask = attention_mask(lengths, T, context)  # (B, 1, T, T)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, Dh)
    return out * valid[:, None, :, None].to(out.dtype)


def cached_attention_mask(
    q_pos: Tensor,
    k_pos: Tensor,
    q_valid: Tensor,
    k_valid: Tensor,
    context: Context,
    stride: int = 1,
) -> Tensor:
    """Boolean mask for queries and keys at explicit per-item frame positions.

    Args:
        q_pos: ``(B, Tq)`` int64 absolute position of each query at this layer's frame rate.
        k_pos: ``(B, Tk)`` int64 absolute position of each key.
        q_valid: ``(B, Tq)`` bool, False on padding queries.
        k_valid: ``(B, Tk)`` bool, False on padding keys and empty cache slots.
        context: ``None`` (every valid key) or ``(left, right)`` in full-rate frames.
        stride: full-rate frames per position (2 for a layer at half the frame rate); the frame
            at position ``p`` belongs to chunk ``p * stride // (right + 1)``.

    Returns:
        ``(B, 1, Tq, Tk)`` bool, True where a query may attend to a key. Rows of padding
        queries are all True so the softmax over them stays finite.
    """
    no_lookahead(context)
    allowed = k_valid[:, None, :]  # (B, 1, Tk)
    if context is not None:
        left, right = context[:2]
        size = right + 1
        q_chunk = torch.div(q_pos * stride, size, rounding_mode="floor")  # (B, Tq)
        k_chunk = torch.div(k_pos * stride, size, rounding_mode="floor")  # (B, Tk)
        diff = q_chunk[:, :, None] - k_chunk[:, None, :]  # (B, Tq, Tk)
        allowed = allowed & (diff >= 0)
        if left >= 0:
            allowed = allowed & (diff <= left // size)
    allowed = allowed | ~q_valid[:, :, None]  # (B, Tq, Tk); padding query rows: all True
    return allowed[:, None]


def cached_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_pos: Tensor,
    k_pos: Tensor,
    q_valid: Tensor,
    k_valid: Tensor,
    context: Context,
    stride: int = 1,
) -> Tensor:
    """Chunked-limited attention between frames at explicit positions (see the module notes).

    With ``q_pos == k_pos == arange(T)`` and ``stride == 1`` this equals :func:`attention`;
    a streaming step passes keys ``[cache, block]`` and queries ``block`` instead.

    Args:
        q: ``(B, H, Tq, Dh)`` queries (already position-encoded).
        k: ``(B, H, Tk, Dh)`` keys.
        v: ``(B, H, Tk, Dh)`` values.
        q_pos, k_pos, q_valid, k_valid, context, stride: as in :func:`cached_attention_mask`.

    Returns:
        ``(B, H, Tq, Dh)``; rows of padding queries are exactly zero.
    """
    if k.shape != v.shape or k.shape[:2] != q.shape[:2] or k.shape[3] != q.shape[3]:
        raise ValueError(
            f"expected q (B, H, Tq, Dh) and k, v (B, H, Tk, Dh), got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    mask = cached_attention_mask(q_pos, k_pos, q_valid, k_valid, context, stride)
    return masked_attention(q, k, v, mask, q_valid[:, None, :, None].to(q.dtype))


def masked_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, keep: Tensor | None
) -> Tensor:
    """:func:`cached_attention` with its mask already built (a streaming step builds it once
    for all its layers).

    Args:
        q, k, v: as in :func:`cached_attention`.
        mask: ``(B, 1, Tq, Tk)`` bool from :func:`cached_attention_mask`, or ``None`` when every
            query may attend to every key.
        keep: ``(B, 1, Tq, 1)`` 1 on real queries and 0 on padding ones, or ``None`` (all real).

    Returns:
        ``(B, H, Tq, Dh)``; rows of padding queries are exactly zero.
    """
    B, H, Tq, Dh = q.shape
    if q.device.type == "cpu" and B * H >= 64 and Tq <= 16:
        # Many short blocks of queries (a batched streaming step): on the CPU two batched
        # products and a softmax beat the fused kernel, whose fixed cost per block dominates
        # there. Masked keys get the lowest finite score, not -inf: a query that sees no key
        # (padding, zeroed by ``keep``) then averages instead of making NaN.
        scores = torch.matmul(q, k.transpose(-1, -2)).mul_(Dh**-0.5)  # (B, H, Tq, Tk)
        if mask is not None:
            scores.masked_fill_(~mask, torch.finfo(scores.dtype).min)
        out = torch.matmul(scores.softmax(dim=-1), v)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, Tq, Dh)
    return out if keep is None else out * keep
