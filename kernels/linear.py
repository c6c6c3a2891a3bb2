"""The encoders' linear layers: ``F.linear``, oriented for a few rows on the CPU.

``linear(x, weight, bias)`` equals ``F.linear``. On the CPU with 2-4 rows (one stream's chunk in
a streaming step at 160 ms) it computes ``weight @ x.T`` instead of ``x @ weight.T``, the same
product, which MKL's sgemm runs faster in that orientation when the weight is not already in the
core's cache (an encoder reads each layer's weights once per step): a 704 x 176 weight among 64
others, 2-4 rows: 86-91 us instead of 166-182; 1 row 141 vs 135 (torch 2.14, 2 cores of an AVX
machine). A weight reused at once (a small LM's, every call) is faster with ``F.linear``, so
the LM keeps ``nn.Linear``. One stream at 160 ms chunks (4 rows), medians of 20 shuffled passes:
the streaming bench model 21.7 -> 17.2 ms per chunk, ``streaming-asr`` 12.9 -> 12.1. At 8 / 16
rows (320 / 640 ms; 20 shuffled pairs) the first gained 8% / 2% and the second lost 2% / 5%: its
10 MB of weights stay in this CPU's 32 MB L3, where ``F.linear`` is faster, as for the LM. So
more rows keep ``F.linear``.
Autograd goes through either path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Rows (the product of x's leading dimensions) for which ``weight @ x.T`` is used.
FEW_ROWS = range(2, 5)


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
