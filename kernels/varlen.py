"""Variable-length self-attention with our masks: the Triton kernel's API and its PyTorch reference.

Dims legend: B - sequences, T - padded frames, N - tokens of all sequences, H - heads,
Dh - head width.

After FlashAttention-2's variable-length kernels (Dao, 2023): sequences are rows of one tensor,
described by ``cu_seqlens`` (``(B + 1,)`` cumulative lengths, FlashAttention's convention), so a
ragged batch costs its real frames only, as in ByteTransformer's padding-free layout (Zhai et
al., 2023). What differs: the chunked-limited masks of :mod:`suite.kernels.attention` are built
into the kernel (full, ``(left, right)`` with a frame ``stride``, and the look-ahead tokens of
:mod:`suite.nn.lookahead` through per-token tables), so no ``(T, T)`` mask is ever made; and a
padded ``(B, T, H, Dh)`` batch, e.g. a view into a layer's joint ``qkv`` projection, is read in
place (:func:`padded_attention`) instead of being packed first.

Rotary positions (:mod:`suite.nn.rotary`) are applied inside when ``inv_freq`` is given:
queries and keys are rotated as the kernel loads them, at each row's index within its sequence,
so the layer writes no rotated copy of its projection; the backward rotates the gradients back.

Every function has the same semantics as :func:`packed_attention_reference`, a loop over
sequences in plain PyTorch that the parity tests compare the kernel with.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from suite.kernels.attention import Context, check_context

MASK_FULL, MASK_CHUNK, MASK_TABLE = 0, 1, 2


def triton_available() -> bool:
    """Whether ``triton`` imports (it ships with CUDA builds of PyTorch on Linux)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpreting() -> bool:
    """Whether Triton kernels run in its CPU interpreter (``TRITON_INTERPRET=1``, which must be
    set before the kernels' module is first imported)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def cu_seqlens(lengths: Tensor) -> Tensor:
    """``(B + 1,)`` int32 cumulative lengths (FlashAttention's ``cu_seqlens``) of ``lengths``."""
    out = torch.zeros(lengths.shape[0] + 1, dtype=torch.int32, device=lengths.device)
    out[1:] = torch.cumsum(lengths, 0)
    return out


def pack(x: Tensor, lengths: Tensor) -> Tensor:
    """The real frames of ``x (B, T, ...)`` as ``(N, ...)``, sequence after sequence."""
    valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]
    return x[valid]


def unpack(x: Tensor, lengths: Tensor, T: int) -> Tensor:
    """Inverse of :func:`pack`: ``(N, ...)`` -> ``(B, T, ...)``, zeros on padding."""
    valid = torch.arange(T, device=x.device)[None, :] < lengths.to(x.device)[:, None]
    out = x.new_zeros(lengths.shape[0], T, *x.shape[1:])
    out[valid] = x
    return out


def _mask_args(context: Context, stride: int, tables: bool) -> tuple[int, int, int]:
    """``(mask kind, chunk size, chunks back)`` of a two-number context (back -1: unlimited)."""
    check_context(context)
    if context is None and not tables:
        return MASK_FULL, 1, -1
    if context is None or len(context) != 2:
        raise ValueError(
            f"variable-length attention takes context None or (left, right); look-ahead "
            f"tokens come with chunks/extra tables and their (left, right), got {context!r}"
        )
    if stride < 1:
        raise ValueError(f"stride must be >= 1 full-rate frames per frame, got {stride}")
    left, right = context
    size = right + 1
    return (MASK_TABLE if tables else MASK_CHUNK), size, (-1 if left < 0 else left // size)


def allowed_keys(
    n: int,
    context: Context = None,
    stride: int = 1,
    chunks: Tensor | None = None,
    extra: Tensor | None = None,
    device: torch.device | None = None,
) -> Tensor:
    """``(n, n)`` bool, True where token ``i`` of one sequence may attend to token ``j``.

    Args:
        n: the sequence's tokens.
        context: ``None`` (full) or ``(left, right)`` in full-rate frames.
        stride: full-rate frames per token (frame ``p`` is in chunk ``p * stride // (right+1)``).
        chunks: ``(n,)`` int each token's chunk, instead of computing it (look-ahead tokens).
        extra: ``(n,)`` bool, look-ahead tokens (keys seen only from their own chunk).
    """
    kind, size, back = _mask_args(context, stride, chunks is not None)
    if kind == MASK_FULL:
        return torch.ones(n, n, dtype=torch.bool, device=device)
    if chunks is None:
        chunks = torch.arange(n, device=device) * stride // size
    diff = chunks[:, None].long() - chunks[None, :].long()  # (n, n) query chunk - key chunk
    ok = diff >= 0
    if back >= 0:
        ok &= diff <= back
    if extra is not None:
        ok = torch.where(extra.bool()[None, :], diff == 0, ok)
    return ok


def packed_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens: Tensor,
    context: Context = None,
    stride: int = 1,
    chunks: Tensor | None = None,
    extra: Tensor | None = None,
    inv_freq: Tensor | None = None,
) -> Tensor:
    """Plain-PyTorch :func:`packed_attention` (a loop over sequences, softmax in fp32).

    Returns:
        ``(N, H, Dh)`` in ``q``'s dtype.
    """
    out = torch.zeros_like(q)
    bounds = cu_seqlens.tolist()
    scale = q.shape[-1] ** -0.5
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if b == a:
            continue
        tables = (None, None) if chunks is None else (chunks[a:b], extra[a:b])
        ok = allowed_keys(b - a, context, stride, *tables, device=q.device)  # (n, n)
        qs, ks, vs = (x[a:b] for x in (q, k, v))  # (n, H, Dh)
        if inv_freq is not None:
            pos = torch.arange(b - a, device=q.device)
            qs, ks = rotate_rows(qs, pos, inv_freq), rotate_rows(ks, pos, inv_freq)
        qs, ks, vs = (x.transpose(0, 1).float() for x in (qs, ks, vs))  # (H, n, Dh)
        scores = (qs @ ks.transpose(-1, -2)) * scale  # (H, n, n)
        probs = scores.masked_fill(~ok, float("-inf")).softmax(-1)
        out[a:b] = (probs @ vs).transpose(0, 1).to(q.dtype)
    return out


def rotate_rows(x: Tensor, positions: Tensor, inv_freq: Tensor, inverse: bool = False) -> Tensor:
    """Rotary embedding of rows ``x (N, H, Dh)`` at ``positions (N,)`` ("rotate half", as
    :func:`suite.nn.rotary.apply_rotary`; angles and products in fp32). ``inverse`` rotates back
    (the transpose: a rotation by minus the angles), which takes a gradient with respect to
    rotated rows to one with respect to the rows."""
    angles = positions.float()[:, None] * inv_freq.float()  # (N, Dh/2)
    cos = torch.cat([angles.cos()] * 2, -1)[:, None]  # (N, 1, Dh)
    sin = angles.sin()
    sin = torch.cat([-sin, sin], -1)[:, None] * (-1.0 if inverse else 1.0)
    xf = x.float()
    return (xf * cos + xf.roll(x.shape[-1] // 2, dims=-1) * sin).to(x.dtype)


class _VarlenAttention(torch.autograd.Function):
    """Triton forward and backward over rows ``starts[b] .. starts[b] + lens[b] - 1``."""

    @staticmethod
    def forward(
        ctx, q, k, v, starts, lens, max_len, chunks, extra, mask, size, stride, back, rotary
    ):
        from suite.kernels import varlen_triton as kt

        out = torch.zeros_like(q, memory_format=torch.contiguous_format)  # (N, H, Dh)
        N, H, D = q.shape
        lse = torch.empty(N, H, dtype=torch.float32, device=q.device)
        cfg = _config(q, backward=False)
        scale = D**-0.5
        chunks = starts if chunks is None else chunks
        extra = starts if extra is None else extra
        inv_freq, positions = rotary if rotary is not None else (lse, None)
        grid = (triton_cdiv(max_len, cfg["BLOCK_M"]), starts.shape[0] * H)
        if max_len > 0:
            kt._fwd_kernel[grid](
                q, k, v, out, lse, starts, lens, chunks, extra, inv_freq,
                q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                out.stride(0), out.stride(1), lse.stride(0),
                H, D, scale * kt.LOG2E, size, stride, back,
                MASK=mask, ROTARY=rotary is not None, **cfg,
            )  # fmt: skip
        ctx.save_for_backward(q, k, v, out, lse, starts, lens, chunks, extra, inv_freq)
        ctx.args = (max_len, mask, size, stride, back, rotary is not None, positions)
        return out

    @staticmethod
    def backward(ctx, dout):
        from suite.kernels import varlen_triton as kt

        q, k, v, out, lse, starts, lens, chunks, extra, inv_freq = ctx.saved_tensors
        max_len, mask, size, stride, back, rotary, positions = ctx.args
        if dout.stride(-1) != 1:
            dout = dout.contiguous()
        N, H, D = q.shape
        delta = (out.float() * dout.float()).sum(-1)  # (N, H), rowsum(dO * O)
        dq, dk, dv = (torch.zeros(x.shape, dtype=x.dtype, device=x.device) for x in (q, k, v))
        cfg = _config(q, backward=True)
        scale = D**-0.5
        common = (H, D, scale * kt.LOG2E, scale, size, stride, back)
        if max_len > 0:
            grid = (triton_cdiv(max_len, cfg["BLOCK_N"]), starts.shape[0] * H)
            kt._bwd_kv_kernel[grid](
                q, k, v, dout, lse, delta, dk, dv, starts, lens, chunks, extra, inv_freq,
                q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                dout.stride(0), dout.stride(1), lse.stride(0),
                dk.stride(0), dk.stride(1), dv.stride(0), dv.stride(1),
                *common, MASK=mask, ROTARY=rotary, **cfg,
            )  # fmt: skip
            grid = (triton_cdiv(max_len, cfg["BLOCK_M"]), starts.shape[0] * H)
            kt._bwd_q_kernel[grid](
                q, k, v, dout, lse, delta, dq, starts, lens, chunks, extra, inv_freq,
                q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                dout.stride(0), dout.stride(1), lse.stride(0), dq.stride(0), dq.stride(1),
                *common, MASK=mask, ROTARY=rotary, **cfg,
            )  # fmt: skip
        if rotary:  # gradients of the rotated q, k -> of the q, k given (rotated back)
            dq = rotate_rows(dq, positions, inv_freq, inverse=True)
            dk = rotate_rows(dk, positions, inv_freq, inverse=True)
        return dq, dk, dv, *([None] * 10)


def triton_cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` of non-negative integers."""
    return -(-a // b)


def _config(q: Tensor, backward: bool) -> dict:
    """Block sizes: small under the interpreter (each block is numpy work), else tiles that fit
    an SM's shared memory at the head width."""
    D = q.shape[-1]
    block_d = max(16, 1 << (D - 1).bit_length())
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    if q.device.type == "cpu":
        return {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_D": block_d, "PRECISION": precision}
    if backward:
        blocks = {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2}
    elif block_d <= 64:
        blocks = {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3}
    else:
        blocks = {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2}
    if q.dtype == torch.float32 and block_d > 64:
        blocks.update(BLOCK_M=64, BLOCK_N=32)  # fp32 tiles take twice the shared memory
    return {**blocks, "BLOCK_D": block_d, "PRECISION": precision}


def check_inputs(q: Tensor, k: Tensor, v: Tensor) -> None:
    """Raise on ``q, k, v`` of different shapes, or off CUDA without the interpreter."""
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(
            f"q, k, v must share one shape, got {tuple(q.shape)}, {tuple(k.shape)}, "
            f"{tuple(v.shape)}"
        )
    if q.device.type != "cuda" and not interpreting():
        raise RuntimeError(
            f"the Triton attention kernels run on CUDA tensors, got {q.device.type}; on the CPU "
            "set TRITON_INTERPRET=1 before importing suite.kernels.varlen_triton (slow: "
            "tests only), or use packed_attention_reference"
        )


def _rows(x: Tensor) -> Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def packed_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens: Tensor,
    max_seqlen: int | None = None,
    context: Context = None,
    stride: int = 1,
    chunks: Tensor | None = None,
    extra: Tensor | None = None,
    inv_freq: Tensor | None = None,
) -> Tensor:
    """Self-attention within each of the packed sequences of ``q, k, v`` (Triton).

    Args:
        q: ``(N, H, Dh)`` queries (rotated, or rotated inside with ``inv_freq``); sequence
            ``b`` is rows ``cu_seqlens[b] .. cu_seqlens[b + 1] - 1``.
        k: ``(N, H, Dh)`` keys.
        v: ``(N, H, Dh)`` values.
        cu_seqlens: ``(B + 1,)`` int cumulative lengths, from 0 (:func:`cu_seqlens`).
        max_seqlen: the longest sequence (read from ``cu_seqlens`` when ``None``: a sync).
        context: ``None`` (full) or ``(left, right)`` chunked-limited, in full-rate frames.
        stride: full-rate frames per row (Squeezeformer's half-rate blocks: 2).
        chunks: ``(N,)`` int32 each token's chunk, for look-ahead tokens
            (:func:`lookahead_tables`); ``context`` then gives ``left`` and ``right``.
        extra: ``(N,)`` int8, 1 on look-ahead tokens; with ``chunks``.
        inv_freq: ``(Dh / 2,)`` rotary frequencies: rotate ``q`` and ``k`` inside the kernel
            at each row's index within its sequence (not with look-ahead tables, whose tokens
            sit at other positions).

    Returns:
        ``(N, H, Dh)``, differentiable in ``q``, ``k`` and ``v``.
    """
    check_inputs(q, k, v)
    mask, size, back = _mask_args(context, stride, chunks is not None)
    cu = cu_seqlens.to(device=q.device, dtype=torch.int32)
    lens = cu[1:] - cu[:-1]
    if max_seqlen is None:
        max_seqlen = int(lens.max()) if lens.numel() else 0
    if chunks is not None:
        chunks = chunks.to(device=q.device, dtype=torch.int32).contiguous()
        extra = extra.to(device=q.device, dtype=torch.int8).contiguous()
    rotary = None
    if inv_freq is not None:
        if chunks is not None:
            raise ValueError("rotary inside the kernel takes no look-ahead tables; rotate first")
        index = torch.arange(q.shape[0], device=q.device)
        first = torch.repeat_interleave(cu[:-1].long(), lens.long(), output_size=q.shape[0])
        rotary = _rotary(inv_freq, q, index - first)
    return _VarlenAttention.apply(
        _rows(q), _rows(k), _rows(v), cu[:-1].contiguous(), lens, max_seqlen, chunks, extra,
        mask, size, stride, back, rotary,
    )  # fmt: skip


def _rotary(inv_freq: Tensor, q: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
    if inv_freq.shape != (q.shape[-1] // 2,) or q.shape[-1] % 2:
        raise ValueError(
            f"inv_freq must be (Dh / 2,) = ({q.shape[-1] // 2},) for an even head width, got "
            f"{tuple(inv_freq.shape)} for Dh = {q.shape[-1]}"
        )
    return inv_freq.to(device=q.device, dtype=torch.float32).contiguous(), positions


def padded_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lengths: Tensor,
    context: Context = None,
    stride: int = 1,
    max_length: int | None = None,
    inv_freq: Tensor | None = None,
) -> Tensor:
    """:func:`packed_attention` of a padded batch, read in place (no packing copy).

    Same results as :func:`suite.kernels.attention.attention` (and, with ``stride``,
    ``cached_attention`` over ``arange`` positions), in the frames-first layout.

    Args:
        q: ``(B, T, H, Dh)`` rotated queries (any strides with the last one 1: a view of a
            joint ``(B, T, 3, H, Dh)`` projection is read as it lies).
        k: ``(B, T, H, Dh)``.
        v: ``(B, T, H, Dh)``.
        lengths: ``(B,)`` valid frames per item.
        context, stride, inv_freq: as in :func:`packed_attention` (rotary at frame index
            ``0 .. T - 1``, as the offline layers place it).
        max_length: ``max(lengths)`` if known (else ``T``: no sync).

    Returns:
        ``(B, T, H, Dh)`` contiguous; rows of padding frames are exactly zero.
    """
    check_inputs(q, k, v)
    B, T, H, D = q.shape
    mask, size, back = _mask_args(context, stride, False)
    lens = lengths.to(device=q.device, dtype=torch.int32)
    starts = torch.arange(B, device=q.device, dtype=torch.int32) * T
    rows = [_rows(x).flatten(0, 1) for x in (q, k, v)]  # (B * T, H, Dh); a view where it can be
    rotary = None
    if inv_freq is not None:
        rotary = _rotary(inv_freq, q, torch.arange(T, device=q.device).repeat(B))
    out = _VarlenAttention.apply(
        *rows, starts, lens, T if max_length is None else max_length, None, None,
        mask, size, stride, back, rotary,
    )  # fmt: skip
    return out.view(B, T, H, D)


def lookahead_tables(
    lengths: Tensor, T: int, context: tuple[int, int, int]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The look-ahead tokens (:func:`suite.nn.lookahead.lookahead`) of a padded batch, packed.

    Token ``s`` of item ``b`` (``S = T + ceil(T / (right + 1)) * ahead`` tokens per item: the
    frames, then each chunk's ``ahead`` look-ahead copies) is kept when the frame it holds is
    below ``lengths[b]``.

    Returns:
        ``index (N,)`` of the kept tokens in the flattened ``(B * S)`` layout, ``cu_seqlens
        (B + 1,)``, ``chunks (N,)`` int32 and ``extra (N,)`` int8 for :func:`packed_attention`
        with ``context[:2]``.
    """
    left, right, ahead = context
    size = right + 1
    n_chunks = -(-T // size)
    device = lengths.device
    main = torch.arange(T, device=device)
    owner = torch.arange(n_chunks, device=device).repeat_interleave(ahead)
    frame = torch.cat(
        [main, (owner + 1) * size + torch.arange(ahead, device=device).repeat(n_chunks)]
    )
    chunk = torch.cat([main // size, owner])  # (S,)
    is_extra = torch.arange(frame.shape[0], device=device) >= T
    valid = frame[None, :] < lengths[:, None]  # (B, S)
    index = valid.flatten().nonzero()[:, 0]
    B = lengths.shape[0]
    chunks = chunk.repeat(B)[index].to(torch.int32)
    return index, cu_seqlens(valid.sum(1)), chunks, is_extra.repeat(B)[index].to(torch.int8)


def flops(
    lengths: Tensor, context: Context = None, stride: int = 1, heads: int = 1, head_dim: int = 64
) -> float:
    """Forward multiply-adds x 2 of the unmasked score and value products of one batch (the
    count TFLOP/s figures use; the backward is 2.5 times it)."""
    total = 0
    for n in lengths.tolist():
        total += int(allowed_keys(int(n), context, stride).sum()) if context is not None else n * n
    return 4.0 * total * heads * head_dim


__all__ = [
    "allowed_keys",
    "cu_seqlens",
    "flops",
    "lookahead_tables",
    "pack",
    "packed_attention",
    "packed_attention_reference",
    "padded_attention",
    "rotate_rows",
    "triton_available",
    "unpack",
]
