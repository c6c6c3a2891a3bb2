"""Triton kernels of :mod:`suite.kernels.stream`: one streaming step's attention for many
streams in one launch, split along the cache, with the cache write fused in.

Dims legend: B - streams, H - heads, T - new frames per stream (a chunk), M - cached frames a
query may reach back, C - ring slots per stream (``C >= M + T``), Dh - head width, S - splits.

Program ``(b * H + h, s)`` attends stream ``b``'s new queries (one block of ``T`` rows) to the
``s``-th slice of its keys, in "virtual" order ``j = 0 .. M + T - 1`` at absolute position
``P - M + j`` (``P``: the stream's first new frame): ``j < M`` from the ring (slot
``position % C``), the rest from the new keys. Splitting the keys of few streams over several
programs keeps the GPU busy at small batches (Lean Attention, Sanovar et al., 2024, splits decode
attention along the context the same way); a second kernel merges the slices by their
log-sum-exp. Split 0 also writes the new keys and values to their ring slots: those hold
positions ``P .. P + T - 1``, which no program of the launch reads (the ring holds ``M + T``
frames or more), so the write needs no barrier.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _step_kernel(
    Q, KN, VN, CK, CV, POS, NEW, OUT, OPART, LPART,
    sq_b, sq_t, sq_h, skn_b, skn_t, skn_h, svn_b, svn_t, svn_h,
    sck_b, sck_h, sck_c, scv_b, scv_h, scv_c, so_b, so_t, so_h,
    H, T, D, M, C, per_split, qk_scale, size, stride, back,
    MASK: tl.constexpr, SPLITS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    split = tl.program_id(1)
    b = pid // H
    h = pid % H
    P = tl.load(POS + b)
    n = tl.load(NEW + b)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    q_ok = (offs_m[:, None] < n) & d_ok[None, :]
    q = tl.load(
        Q + b * sq_b + offs_m[:, None] * sq_t + h * sq_h + offs_d[None, :], mask=q_ok, other=0.0
    )
    cq = ((P + offs_m) * stride) // size
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    j_lo = split * per_split
    j_hi = tl.minimum(j_lo + per_split, M + n)
    for n0 in range(j_lo, j_hi, BLOCK_N):
        offs_j = n0 + tl.arange(0, BLOCK_N)
        pos = P - M + offs_j  # (BLOCK_N,) absolute position of each key
        real = (offs_j < j_hi) & (pos >= 0)
        cached = real & (offs_j < M)
        fresh = real & (offs_j >= M)
        slot = tl.where(cached, pos % C, 0)
        t = tl.where(fresh, offs_j - M, 0)
        ck_ptr = CK + b * sck_b + h * sck_h + slot[:, None] * sck_c + offs_d[None, :]
        kn_ptr = KN + b * skn_b + t[:, None] * skn_t + h * skn_h + offs_d[None, :]
        k = tl.load(ck_ptr, mask=cached[:, None] & d_ok[None, :], other=0.0)
        k += tl.load(kn_ptr, mask=fresh[:, None] & d_ok[None, :], other=0.0)
        cv_ptr = CV + b * scv_b + h * scv_h + slot[:, None] * scv_c + offs_d[None, :]
        vn_ptr = VN + b * svn_b + t[:, None] * svn_t + h * svn_h + offs_d[None, :]
        v = tl.load(cv_ptr, mask=cached[:, None] & d_ok[None, :], other=0.0)
        v += tl.load(vn_ptr, mask=fresh[:, None] & d_ok[None, :], other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N)
        ok = (offs_m[:, None] < n) & real[None, :]
        if MASK == 1:
            ck = (tl.maximum(pos, 0) * stride) // size
            diff = cq[:, None] - ck[None, :]
            ok = ok & (diff >= 0) & ((diff <= back) | (back < 0))
        s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    l_safe = tl.where(l_i > 0, l_i, 1.0)
    out = acc / l_safe[:, None]
    if SPLITS == 1:
        o_ptr = OUT + b * so_b + offs_m[:, None] * so_t + h * so_h + offs_d[None, :]
        tl.store(o_ptr, out.to(OUT.dtype.element_ty), mask=q_ok)
    else:
        part = (pid * SPLITS + split).to(tl.int64)
        o_ptr = OPART + part * BLOCK_M * BLOCK_D + offs_m[:, None] * BLOCK_D + offs_d[None, :]
        tl.store(o_ptr, out)
        lse = tl.where(l_i > 0, m_i + tl.log2(l_safe), float("-inf"))
        tl.store(LPART + part * BLOCK_M + offs_m, lse)
    if split == 0:  # the fused cache write: this stream's new frames into their ring slots
        new_slot = (P + offs_m) % C
        w_ok = q_ok & (offs_m[:, None] < T)
        kn = tl.load(
            KN + b * skn_b + offs_m[:, None] * skn_t + h * skn_h + offs_d[None, :], mask=w_ok
        )
        vn = tl.load(
            VN + b * svn_b + offs_m[:, None] * svn_t + h * svn_h + offs_d[None, :], mask=w_ok
        )
        ck_ptr = CK + b * sck_b + h * sck_h + new_slot[:, None] * sck_c + offs_d[None, :]
        cv_ptr = CV + b * scv_b + h * scv_h + new_slot[:, None] * scv_c + offs_d[None, :]
        tl.store(ck_ptr, kn, mask=w_ok)
        tl.store(cv_ptr, vn, mask=w_ok)


@triton.jit
def _merge_kernel(
    OPART, LPART, NEW, OUT, so_b, so_t, so_h, H, D,
    SPLITS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Merge the ``SPLITS`` slices of one (stream, head) by their log-sum-exp."""
    pid = tl.program_id(0)
    b = pid // H
    h = pid % H
    n = tl.load(NEW + b)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    for s in range(SPLITS):
        lse = tl.load(LPART + (pid * SPLITS + s).to(tl.int64) * BLOCK_M + offs_m)
        m = tl.maximum(m, lse)
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    total = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for s in range(SPLITS):
        part = (pid * SPLITS + s).to(tl.int64)
        w = tl.exp2(tl.load(LPART + part * BLOCK_M + offs_m) - m_safe)  # (BLOCK_M,)
        o = tl.load(OPART + part * BLOCK_M * BLOCK_D + offs_m[:, None] * BLOCK_D + offs_d[None, :])
        acc += o * w[:, None]
        total += w
    out = acc / tl.where(total > 0, total, 1.0)[:, None]
    ok = (offs_m[:, None] < n) & (offs_d[None, :] < D)
    o_ptr = OUT + b * so_b + offs_m[:, None] * so_t + h * so_h + offs_d[None, :]
    tl.store(o_ptr, out.to(OUT.dtype.element_ty), mask=ok)
