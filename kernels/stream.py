"""One cache-aware streaming step's attention for many streams: the Triton kernel's API and its
PyTorch reference.

Dims legend: B - streams, T - new frames per stream (at most one chunk), H - heads,
Dh - head width, M - frames a query may reach back (the layer's cache, ``cache_frames``),
C - ring slots per stream.

The layers' own step (:meth:`suite.nn.attention.SelfAttention.streaming_forward`) joins each
stream's right-aligned cache and the new frames, builds a mask, attends, and cuts the next cache
out of the joined frames: several launches and copies per layer. Here the cache is a ring,
``(B, H, C, Dh)`` whose slot ``p % C`` holds the rotated key (or value) of the stream's frame at
absolute position ``p``, so one kernel attends every stream's new queries to its last ``M``
frames plus the new ones, and writes the new frames into their slots: no concatenation, no copy
of the cache, and static shapes (a CUDA graph can replay it, :mod:`suite.kernels.graphs`).
Streams of different ages share a launch: each has its own position and number of new frames.

The mask is the chunked-limited rule over absolute positions, as in
:func:`suite.kernels.attention.cached_attention_mask`: cache slots before a stream's first frame
and padding frames are no keys, and rows of padding frames come out zero.
"""

from __future__ import annotations

import torch
from torch import Tensor

from suite.kernels.attention import Context, no_lookahead
from suite.kernels.varlen import check_inputs, triton_cdiv


def _step_mask_args(context: Context, stride: int) -> tuple[int, int, int]:
    no_lookahead(context, "the streaming attention step")
    if context is None:
        return 0, 1, -1
    left, right = context
    size = right + 1
    return 1, size, (-1 if left < 0 else left // size)


def ring_slots(positions: Tensor, capacity: int) -> Tensor:
    """Ring slot of each absolute position (``positions % capacity``)."""
    return torch.remainder(positions, capacity)


def stream_step_reference(
    q: Tensor,
    k_new: Tensor,
    v_new: Tensor,
    cache_k: Tensor,
    cache_v: Tensor,
    positions: Tensor,
    new_lengths: Tensor,
    cache_frames: int,
    context: Context,
    stride: int = 1,
) -> Tensor:
    """Plain-PyTorch :func:`stream_attention_step` (softmax in fp32); writes the caches too."""
    B, T, H, D = q.shape
    M, C = cache_frames, cache_k.shape[2]
    positions = positions.to(q.device).long()
    new_lengths = new_lengths.to(q.device).long()
    key_pos = positions[:, None] - M + torch.arange(M + T, device=q.device)  # (B, M + T)
    slots = ring_slots(key_pos[:, :M].clamp(min=0), C)  # (B, M)
    gather = slots[:, None, :, None].expand(B, H, M, D)
    keys = torch.cat([cache_k.gather(2, gather), k_new.transpose(1, 2)], 2)  # (B, H, M + T, Dh)
    values = torch.cat([cache_v.gather(2, gather), v_new.transpose(1, 2)], 2)
    t = torch.arange(T, device=q.device)
    q_valid = t[None, :] < new_lengths[:, None]  # (B, T)
    k_valid = (key_pos >= 0) & (key_pos < (positions + new_lengths)[:, None])  # (B, M + T)
    ok = k_valid[:, None, :].expand(B, T, M + T)
    if context is not None:
        left, right = context
        size = right + 1
        q_chunk = torch.div((positions[:, None] + t) * stride, size, rounding_mode="floor")
        k_chunk = torch.div(key_pos.clamp(min=0) * stride, size, rounding_mode="floor")
        diff = q_chunk[:, :, None] - k_chunk[:, None, :]  # (B, T, M + T)
        ok = ok & (diff >= 0)
        if left >= 0:
            ok = ok & (diff <= left // size)
    ok = ok | ~q_valid[:, :, None]  # padding rows: any finite softmax, zeroed below
    scores = q.transpose(1, 2).float() @ keys.float().transpose(-1, -2) * D**-0.5  # (B,H,T,M+T)
    probs = scores.masked_fill(~ok[:, None], float("-inf")).softmax(-1)
    out = (probs @ values.float()).transpose(1, 2) * q_valid[:, :, None, None]  # (B, T, H, Dh)
    write = ring_slots(positions[:, None] + t, C)  # (B, T)
    for b in range(B):  # the cache write: new frames into their slots
        n = int(new_lengths[b])
        cache_k[b, :, write[b, :n]] = k_new[b, :n].transpose(0, 1)
        cache_v[b, :, write[b, :n]] = v_new[b, :n].transpose(0, 1)
    return out.to(q.dtype)


def stream_attention_step(
    q: Tensor,
    k_new: Tensor,
    v_new: Tensor,
    cache_k: Tensor,
    cache_v: Tensor,
    positions: Tensor,
    new_lengths: Tensor,
    cache_frames: int,
    context: Context,
    stride: int = 1,
    num_splits: int | None = None,
) -> Tensor:
    """Attend each stream's new frames to its last ``cache_frames`` frames and themselves, and
    write the new frames' keys and values into the ring caches (Triton, one launch).

    Args:
        q: ``(B, T, H, Dh)`` rotated queries of the new frames (a view of a joint projection
            is read in place).
        k_new: ``(B, T, H, Dh)`` their rotated keys.
        v_new: ``(B, T, H, Dh)`` their values.
        cache_k: ``(B, H, C, Dh)`` ring of rotated keys, ``C >= cache_frames + T``; updated in
            place with the new frames.
        cache_v: ``(B, H, C, Dh)`` ring of values, updated likewise.
        positions: ``(B,)`` int absolute position of each stream's first new frame (the frames
            it has had so far).
        new_lengths: ``(B,)`` int real new frames per stream (0: an idle slot, nothing read or
            written).
        cache_frames: M, how far back a query may reach (``suite.nn.context.cache_frames``).
        context: ``None`` or ``(left, right)`` in full-rate frames.
        stride: full-rate frames per frame of this layer.
        num_splits: programs per (stream, head) along the keys; default: enough to fill the
            GPU when streams are few.

    Returns:
        ``(B, T, H, Dh)``; rows of padding frames are zero. The caller advances ``positions``
        by the frames it commits.
    """
    B, T, H, D = q.shape
    C = cache_k.shape[2]
    if cache_k.shape != (B, H, C, D) or cache_v.shape != cache_k.shape:
        raise ValueError(
            f"expected ring caches (B, H, C, Dh) = ({B}, {H}, C, {D}), got "
            f"{tuple(cache_k.shape)} and {tuple(cache_v.shape)}"
        )
    if C < cache_frames + T:
        raise ValueError(
            f"the ring holds {C} frames per stream, fewer than cache_frames + T = "
            f"{cache_frames} + {T}: new frames would overwrite keys the step reads; make the "
            f"caches with ring_capacity(cache_frames, T) slots"
        )
    if any(x.stride(-1) != 1 for x in (q, k_new, v_new, cache_k, cache_v)):
        raise ValueError("q, k_new, v_new and the caches need a contiguous last (Dh) dimension")
    check_inputs(q, k_new, v_new)
    from suite.kernels import stream_triton as kt

    mask, size, back = _step_mask_args(context, stride)
    block_m = max(16, 1 << (T - 1).bit_length())
    block_d = max(16, 1 << (D - 1).bit_length())
    cpu = q.device.type == "cpu"
    block_n = 16 if cpu else 64
    if num_splits is None:
        num_splits = 1 if cpu else _splits(B * H, cache_frames + T, block_n, q.device)
    keys = cache_frames + T
    per_split = triton_cdiv(triton_cdiv(keys, num_splits), block_n) * block_n  # whole blocks
    num_splits = triton_cdiv(keys, per_split)  # none empty
    positions = positions.to(device=q.device, dtype=torch.int32)
    new_lengths = new_lengths.to(device=q.device, dtype=torch.int32)
    out = torch.zeros(B, T, H, D, dtype=q.dtype, device=q.device)
    if num_splits > 1:
        o_part = torch.empty(B * H * num_splits, block_m, block_d, device=q.device)
        l_part = torch.empty(B * H * num_splits, block_m, device=q.device)
    else:
        o_part = l_part = out
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    warps = {} if cpu else {"num_warps": 4}
    kt._step_kernel[(B * H, num_splits)](
        q, k_new, v_new, cache_k, cache_v, positions, new_lengths, out, o_part, l_part,
        q.stride(0), q.stride(1), q.stride(2), k_new.stride(0), k_new.stride(1), k_new.stride(2),
        v_new.stride(0), v_new.stride(1), v_new.stride(2),
        cache_k.stride(0), cache_k.stride(1), cache_k.stride(2),
        cache_v.stride(0), cache_v.stride(1), cache_v.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        H, T, D, cache_frames, C, per_split, D**-0.5 * kt.LOG2E, size, stride, back,
        MASK=mask, SPLITS=num_splits, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        PRECISION=precision, **warps,
    )  # fmt: skip
    if num_splits > 1:
        kt._merge_kernel[(B * H,)](
            o_part, l_part, new_lengths, out, out.stride(0), out.stride(1), out.stride(2), H, D,
            SPLITS=num_splits, BLOCK_M=block_m, BLOCK_D=block_d, **warps,
        )  # fmt: skip
    return out


def _splits(programs: int, keys: int, block_n: int, device: torch.device) -> int:
    """Splits per (stream, head): up to two programs per SM in all, one key block each at most."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(triton_cdiv(keys, block_n), (2 * sms) // max(programs, 1)))


def ring_capacity(cache_frames: int, chunk: int) -> int:
    """Ring slots per stream for a layer that reaches back ``cache_frames`` frames and takes up
    to ``chunk`` new frames a step (the next multiple of 16, for aligned rows)."""
    return triton_cdiv(cache_frames + chunk, 16) * 16
