"""The encoders' linear layers: ``F.linear``, oriented for a few rows on the CPU.

``linear(x, weight, bias)`` equals ``F.linear``. On the CPU with 2-16 rows (one stream's chunk in
a streaming step: 4 / 8 / 16 frames at 160 / 320 / 640 ms) it computes ``weight @ x.T`` instead
of ``x @ weight.T``, the same product, which MKL's sgemm runs faster in that orientation when
the weight is not already in the core's cache, as in an encoder that reads each layer's weights
once per step and does not fit in the cache whole: a 704 x 176 weight among 64 others, 4 / 8 /
16 rows: 63 / 90 / 133 us instead of 169 / 121 / 180 (the output transposed back not included);
1 row 141 vs 135 (torch 2.14, 2 cores of an AVX2 machine with 32 MB of L3). In the streaming
bench model (23 MB of weights; per-chunk lockstep A/B against ``F.linear`` above 4 rows, one
stream): 8 / 16 rows 15% / 7% less time per chunk; ``streaming-asr``, whose 10 MB of weights
stay in L3, 2% / 0% more, as ``F.linear`` is the faster on a weight already in cache. The LM,
whose small weights are reused at once, keeps ``nn.Linear``. More rows keep ``F.linear``
(4 streams x 16 frames: 6-10% slower this way).
Autograd goes through either path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Rows (the product of x's leading dimensions) for which ``weight @ x.T`` is used.
FEW_ROWS = range(2, 17)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear``: ``x (..., K)``, ``weight (N, K)``, ``bias (N,)`` or None -> ``(..., N)``."""
    # Cheap checks first: every layer of a streaming step calls this eight times, and building
    # a device object (``x.device.type``) alone took ~1 us of Python per call.
    width = x.shape[-1]
    if not x.is_cpu or x.dtype is not torch.float32 or width == 0:
        return F.linear(x, weight, bias)
    rows = x.numel() // width
    if rows not in FEW_ROWS:
        return F.linear(x, weight, bias)
    flat = x.reshape(rows, width)
    if bias is None:
        out = torch.mm(weight, flat.t())
    else:
        out = torch.addmm(bias[:, None], weight, flat.t())  # (N, rows)
    return out.t().contiguous().view(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` that runs :func:`linear` (the same parameters and checkpoint keys)."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
