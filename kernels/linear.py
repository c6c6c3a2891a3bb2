"""The encoders' linear layers: ``F.linear``, oriented for a few rows on CPUs with small caches.

``linear(x, weight, bias)`` equals ``F.linear``. On the CPU with 2-16 rows (one stream's chunk in
a streaming step: 4 / 8 / 16 frames at 160 / 320 / 640 ms) it may compute ``weight @ x.T``
instead of ``x @ weight.T``, the same product, which MKL's sgemm runs faster in that orientation
when the weight comes from memory rather than the cache, as in an encoder that reads each
layer's weights once per step and does not fit in the cache whole. On an AVX2 machine with
32 MB of L3 (torch 2.14, 2 cores): a 704 x 176 weight among 64 others, 4 / 8 / 16 rows: 63 / 90
/ 133 us instead of 169 / 121 / 180 (the output transposed back not included); the streaming
bench model (23 MB of weights, stepped beside two Emformers of the same size), 8 / 16 rows 15% /
7% less time per chunk; ``streaming-asr``, whose 10 MB of weights stay in L3, 2% / 0% more.

On a CPU whose last-level cache holds the weights it is the other way round: an AVX-512 machine
with 480 MB of L3 (torch 2.14, 2 cores) ran the streaming bench model's chunks against
Emformer's at 0.79 / 0.83 / 0.86 of its speed at 4 / 8 / 16 rows this way, at 1.02 / 1.02 /
0.97 with ``F.linear`` and at 1.03 / 1.06 / 0.99 with ``F.linear`` on column-major weights
(:class:`Linear`; ``suite bench streaming``'s comparison at matched size, stepped chunk by
chunk). So the orientation is chosen by the last-level cache: below :data:`TRANSPOSED_BELOW`
(or where sysfs does not tell), ``weight @ x.T``; else ``F.linear``. More rows keep
``F.linear`` either way (4 streams x 16 frames: 6-10% slower this way). The LM, whose small
weights are reused at once, keeps ``nn.Linear``. Autograd goes through either path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Rows (the product of x's leading dimensions) for which ``weight @ x.T`` may be used.
FEW_ROWS = range(2, 17)
# A last-level cache at least this large holds an encoder's weights: F.linear everywhere.
TRANSPOSED_BELOW = 64 * 2**20
CPU_CACHE = Path("/sys/devices/system/cpu/cpu0/cache")


def last_level_cache_bytes() -> int | None:
    """The largest cache of CPU 0 that Linux's sysfs lists, in bytes, or ``None``."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    sizes = []
    for path in CPU_CACHE.glob("index*/size"):
        try:
            text = path.read_text().strip()
            sizes.append(int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text))
        except (OSError, ValueError, IndexError):  # unreadable, or not a size
            continue
    return max(sizes) if sizes else None


# Whether the few-row path runs on this machine (read once; tests set it to cover both paths).
_cache = last_level_cache_bytes()
TRANSPOSED = _cache is None or _cache < TRANSPOSED_BELOW


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear``: ``x (..., K)``, ``weight (N, K)``, ``bias (N,)`` or None -> ``(..., N)``."""
    # Cheap checks first: every layer of a streaming step calls this eight times, and building
    # a device object (``x.device.type``) alone took ~1 us of Python per call.
    width = x.shape[-1]
    if not TRANSPOSED or not x.is_cpu or x.dtype is not torch.float32 or width == 0:
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
    """``nn.Linear`` that runs :func:`linear` (the same parameters, shapes and checkpoint keys).

    Where :func:`linear` uses ``F.linear`` (:data:`TRANSPOSED` off), the ``(N, K)`` weight lies
    in memory column by column (strides ``(1, N)``: a view of a contiguous ``(K, N)``), so
    ``F.linear``'s ``x @ weight.T`` multiplies by a contiguous matrix, which MKL's sgemm runs
    faster with few rows and no slower with many: 704 x 176, 4 / 8 / 16 rows 9.3 / 12.0 / 19.2
    instead of 17.9 / 20.7 / 28.2 us; a layer's eight weights (of 64, 8 or 16 rows): 27% / 25%
    less time; 512 or 4096 rows, forward or forward and backward, per weight shape: from 4%
    slower to 6% faster (torch 2.14, 2 cores of an AVX-512 machine). Saving takes
    ``.contiguous()`` copies, as safetensors wants; loading copies into the weight as it lies.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not TRANSPOSED:
            self.weight = nn.Parameter(self.weight.detach().t().contiguous().t())

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
