"""Triton kernels of :mod:`suite.kernels.varlen`: FlashAttention-2 style forward and backward
over variable-length sequences, with the chunked-limited masks built in.

Dims legend: N - tokens (all sequences' rows of one tensor), H - heads, Dh - head width,
B - sequences.

Imported only when a Triton kernel runs (CUDA tensors, or CPU tensors under
``TRITON_INTERPRET=1``): this module needs ``triton``, the rest of ``suite.kernels`` does not.

Each sequence ``b`` is rows ``start[b] .. start[b] + length[b] - 1`` of ``q``, ``k``, ``v``
(each ``(N, H, Dh)`` with any row and head strides): ``start = cu_seqlens[:-1]`` for packed
sequences (FlashAttention's varlen layout), ``start = b * T`` for a padded ``(B, T, H, Dh)`` batch
read in place. Only real rows are read or written, so padding costs nothing but the launch.

Masks (``MASK``), over a frame's index ``p`` within its sequence:

- ``0`` full context: every frame of the sequence;
- ``1`` chunked-limited: chunk ``c(p) = p * stride // size``; a query sees keys with
  ``0 <= c(q) - c(k) <= back`` (``back < 0``: unlimited). Whole key blocks outside that window
  are skipped, so work grows with the window, not the sequence;
- ``2`` table: each row's chunk and a look-ahead flag are read from ``chunks``/``extra`` (the
  tokens of :mod:`suite.nn.lookahead`): a frame key as in ``1``, a look-ahead key only from
  queries of its own chunk. Every key block is visited (the tokens' chunks are not monotonic).

With ``ROTARY``, queries and keys arrive unrotated and are rotated as they are loaded, at their
index within the sequence (rotary positions, :mod:`suite.nn.rotary`'s "rotate half" layout), so
no rotated copy is written; the gradients come out with respect to the rotated ones, and the
caller rotates them back (:func:`suite.kernels.varlen.rotate_rows`).

The softmax runs in base 2 (``exp2``) with the scale folded into the scores, and the forward
keeps each row's log-sum-exp for the backward, as FlashAttention-2 does.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _window(m_lo, m_hi, n, size, stride, back, MASK: tl.constexpr):
    """Key range ``[lo, hi)`` that queries ``m_lo .. m_hi - 1`` may see (all ``n`` unless
    ``MASK == 1``). Integer division truncates in Triton: every numerator here is >= 0 or
    clamped."""
    lo = m_lo * 0
    hi = n
    if MASK == 1:
        c_lo = (m_lo * stride) // size
        c_hi = ((m_hi - 1) * stride) // size
        first = tl.maximum(((c_lo - back) * size + stride - 1) // stride, 0)
        lo = tl.where(back >= 0, first, 0)
        hi = tl.minimum(((c_hi + 1) * size + stride - 1) // stride, n)
    return lo, hi


@triton.jit
def _query_window(n_lo, n_hi, n, size, stride, back, MASK: tl.constexpr):
    """Query range ``[lo, hi)`` that may see keys ``n_lo .. n_hi - 1`` (``MASK == 1``)."""
    lo = n_lo * 0
    hi = n
    if MASK == 1:
        c_lo = (n_lo * stride) // size
        c_hi = ((n_hi - 1) * stride) // size
        lo = (c_lo * size + stride - 1) // stride
        last = tl.minimum(((c_hi + back + 1) * size + stride - 1) // stride, n)
        hi = tl.where(back >= 0, last, n)
    return lo, hi


@triton.jit
def _allowed(
    offs_m, offs_n, n_q, n_k, start, chunks, extra, size, stride, back, MASK: tl.constexpr
):
    """``(BLOCK_M, BLOCK_N)`` bool: query rows ``offs_m`` (real below ``n_q``) may attend to
    key rows ``offs_n`` (real below ``n_k``)."""
    ok = (offs_m[:, None] < n_q) & (offs_n[None, :] < n_k)
    if MASK == 1:
        cq = (offs_m * stride) // size
        ck = (offs_n * stride) // size
        diff = cq[:, None] - ck[None, :]
        ok = ok & (diff >= 0) & ((diff <= back) | (back < 0))
    if MASK == 2:
        cq = tl.load(chunks + start + offs_m, mask=offs_m < n_q, other=0)
        ck = tl.load(chunks + start + offs_n, mask=offs_n < n_k, other=0)
        xk = tl.load(extra + start + offs_n, mask=offs_n < n_k, other=0)
        diff = cq[:, None] - ck[None, :]
        frame_ok = (diff >= 0) & ((diff <= back) | (back < 0))
        ok = ok & tl.where(xk[None, :] != 0, diff == 0, frame_ok)
    return ok


@triton.jit
def _load_rows(ptr, rows, stride_n, head, pos, offs_d, D, row_ok, FREQ, ROTARY: tl.constexpr):
    """``(rows, BLOCK_D)`` of one head; with ``ROTARY``, rotated by ``pos`` ("rotate half":
    ``x * cos + [-x2, x1] * sin`` at angles ``pos * FREQ[d mod D/2]``, in fp32)."""
    d_ok = offs_d < D
    ok = row_ok[:, None] & d_ok[None, :]
    base = ptr + rows[:, None] * stride_n + head
    x = tl.load(base + offs_d[None, :], mask=ok, other=0.0)
    if ROTARY:
        half = D // 2
        first = offs_d < half
        partner = tl.where(first, offs_d + half, offs_d - half)
        x_partner = tl.load(base + partner[None, :], mask=ok, other=0.0)
        freq = tl.load(FREQ + tl.where(first, offs_d, offs_d - half), mask=d_ok, other=0.0)
        angle = pos.to(tl.float32)[:, None] * freq[None, :]
        sign = tl.where(first, -1.0, 1.0)
        rotated = x.to(tl.float32) * tl.cos(angle)
        rotated += x_partner.to(tl.float32) * tl.sin(angle) * sign[None, :]
        x = rotated.to(x.dtype)
    return x


@triton.jit
def _fwd_kernel(
    Q, K, V, O, LSE, STARTS, LENS, CHUNKS, EXTRA, FREQ,
    sq_n, sq_h, sk_n, sk_h, sv_n, sv_h, so_n, so_h, sl_n,
    H, D, qk_scale, size, stride, back,
    MASK: tl.constexpr, ROTARY: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    b = tl.program_id(1) // H
    h = tl.program_id(1) % H
    start = tl.load(STARTS + b)
    n = tl.load(LENS + b)
    m0 = pid_m * BLOCK_M
    if m0 >= n:
        return
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    rows_q = (start + offs_m).to(tl.int64)
    q = _load_rows(Q, rows_q, sq_n, h * sq_h, offs_m, offs_d, D, offs_m < n, FREQ, ROTARY)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    lo, hi = _window(m0, tl.minimum(m0 + BLOCK_M, n), n, size, stride, back, MASK)
    for n0 in range(lo, hi, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        rows_k = (start + offs_n).to(tl.int64)
        kv_ok = (offs_n[:, None] < hi) & d_ok[None, :]
        k = _load_rows(K, rows_k, sk_n, h * sk_h, offs_n, offs_d, D, offs_n < hi, FREQ, ROTARY)
        v = tl.load(V + rows_k[:, None] * sv_n + h * sv_h + offs_d[None, :], mask=kv_ok, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N)
        ok = _allowed(offs_m, offs_n, n, hi, start, CHUNKS, EXTRA, size, stride, back, MASK)
        s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row that has seen no key yet
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    l_safe = tl.where(l_i > 0, l_i, 1.0)
    out = acc / l_safe[:, None]
    tl.store(
        O + rows_q[:, None] * so_n + h * so_h + offs_d[None, :],
        out.to(O.dtype.element_ty),
        mask=(offs_m[:, None] < n) & d_ok[None, :],
    )
    lse = tl.where(l_i > 0, m_i + tl.log2(l_safe), float("inf"))  # base 2; inf: no key seen
    tl.store(LSE + rows_q * sl_n + h, lse, mask=offs_m < n)


@triton.jit
def _bwd_kv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, STARTS, LENS, CHUNKS, EXTRA, FREQ,
    sq_n, sq_h, sk_n, sk_h, sv_n, sv_h, sdo_n, sdo_h, sl_n, sdk_n, sdk_h, sdv_n, sdv_h,
    H, D, qk_scale, sm_scale, size, stride, back,
    MASK: tl.constexpr, ROTARY: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """Gradients of one block of keys and values, over the queries that see them."""
    pid_n = tl.program_id(0)
    b = tl.program_id(1) // H
    h = tl.program_id(1) % H
    start = tl.load(STARTS + b)
    n = tl.load(LENS + b)
    n0 = pid_n * BLOCK_N
    if n0 >= n:
        return
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    rows_k = (start + offs_n).to(tl.int64)
    kv_ok = (offs_n[:, None] < n) & d_ok[None, :]
    k = _load_rows(K, rows_k, sk_n, h * sk_h, offs_n, offs_d, D, offs_n < n, FREQ, ROTARY)
    v = tl.load(V + rows_k[:, None] * sv_n + h * sv_h + offs_d[None, :], mask=kv_ok, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    lo, hi = _query_window(n0, tl.minimum(n0 + BLOCK_N, n), n, size, stride, back, MASK)
    for m0 in range(lo, hi, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        rows_q = (start + offs_m).to(tl.int64)
        q_ok = (offs_m[:, None] < hi) & d_ok[None, :]
        q = _load_rows(Q, rows_q, sq_n, h * sq_h, offs_m, offs_d, D, offs_m < hi, FREQ, ROTARY)
        do = tl.load(
            DO + rows_q[:, None] * sdo_n + h * sdo_h + offs_d[None, :], mask=q_ok, other=0.0
        )
        lse = tl.load(LSE + rows_q * sl_n + h, mask=offs_m < hi, other=float("inf"))
        delta = tl.load(DELTA + rows_q * sl_n + h, mask=offs_m < hi, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N)
        ok = _allowed(offs_m, offs_n, hi, n, start, CHUNKS, EXTRA, size, stride, back, MASK)
        p = tl.where(ok, tl.exp2(s - lse[:, None]), 0.0)
        dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)  # (BLOCK_M, BLOCK_N)
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION)
    dk = dk * sm_scale
    tl.store(
        DK + rows_k[:, None] * sdk_n + h * sdk_h + offs_d[None, :],
        dk.to(DK.dtype.element_ty),
        mask=kv_ok,
    )
    tl.store(
        DV + rows_k[:, None] * sdv_n + h * sdv_h + offs_d[None, :],
        dv.to(DV.dtype.element_ty),
        mask=kv_ok,
    )


@triton.jit
def _bwd_q_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, STARTS, LENS, CHUNKS, EXTRA, FREQ,
    sq_n, sq_h, sk_n, sk_h, sv_n, sv_h, sdo_n, sdo_h, sl_n, sdq_n, sdq_h,
    H, D, qk_scale, sm_scale, size, stride, back,
    MASK: tl.constexpr, ROTARY: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """Gradient of one block of queries, over the keys they see."""
    pid_m = tl.program_id(0)
    b = tl.program_id(1) // H
    h = tl.program_id(1) % H
    start = tl.load(STARTS + b)
    n = tl.load(LENS + b)
    m0 = pid_m * BLOCK_M
    if m0 >= n:
        return
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    rows_q = (start + offs_m).to(tl.int64)
    q_ok = (offs_m[:, None] < n) & d_ok[None, :]
    q = _load_rows(Q, rows_q, sq_n, h * sq_h, offs_m, offs_d, D, offs_m < n, FREQ, ROTARY)
    do = tl.load(DO + rows_q[:, None] * sdo_n + h * sdo_h + offs_d[None, :], mask=q_ok, other=0.0)
    lse = tl.load(LSE + rows_q * sl_n + h, mask=offs_m < n, other=float("inf"))
    delta = tl.load(DELTA + rows_q * sl_n + h, mask=offs_m < n, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    lo, hi = _window(m0, tl.minimum(m0 + BLOCK_M, n), n, size, stride, back, MASK)
    for n0 in range(lo, hi, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        rows_k = (start + offs_n).to(tl.int64)
        kv_ok = (offs_n[:, None] < hi) & d_ok[None, :]
        k = _load_rows(K, rows_k, sk_n, h * sk_h, offs_n, offs_d, D, offs_n < hi, FREQ, ROTARY)
        v = tl.load(V + rows_k[:, None] * sv_n + h * sv_h + offs_d[None, :], mask=kv_ok, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        ok = _allowed(offs_m, offs_n, n, hi, start, CHUNKS, EXTRA, size, stride, back, MASK)
        p = tl.where(ok, tl.exp2(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    dq = dq * sm_scale
    tl.store(
        DQ + rows_q[:, None] * sdq_n + h * sdq_h + offs_d[None, :],
        dq.to(DQ.dtype.element_ty),
        mask=q_ok,
    )
