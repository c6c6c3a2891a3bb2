"""Opt-in process and model settings for fast CPU inference.

Nothing here runs unless called: the library never changes the process's allocator or a model's
weights by itself.

:func:`keep_freed_memory`: PyTorch keeps no cache of freed memory on the CPU, so every
operation's output is a fresh ``malloc``. glibc serves a block over its mmap threshold (128 KB
at first, raised to the size of the largest block freed, up to 32 MB) with a fresh ``mmap``, and
returns the free top of its heap to the system once it exceeds the trim threshold (twice the mmap
threshold). An encoder's activations are blocks of several to tens of MB per batch, so the pages
of most of them would be faulted in again on every call. PyTorch's CPU performance guide advises
another allocator (jemalloc, tcmalloc) for this; :func:`keep_freed_memory` gets the same effect
from glibc itself by raising both thresholds, so freed activations are reused by the next batch.
The cost: the process keeps up to ``TRIM_THRESHOLD`` of freed memory instead of returning it.

:func:`optimize_for_cpu`: a one-time re-layout of a model's linear weights for the few rows of a
streaming step (see its docstring).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import torch
from torch import nn

# mallopt parameters (glibc's malloc.h) and the values set.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest: blocks up to 32 MB come from the heap
TRIM_THRESHOLD = 512 * 1024 * 1024  # free heap top kept before it goes back to the system
TOP_PAD = 64 * 1024 * 1024  # heap growth per request, so growing is rare

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep and reuse freed memory (see the module docstring); once per
    process, and only when called: it changes the whole process's allocator, so it is the
    application's choice (``suite bench`` makes it, to measure what a tuned server runs).

    Returns:
        Whether the settings are in force: False off glibc, and when the environment already
        configures malloc (``MALLOC_*_`` variables or ``GLIBC_TUNABLES``), which is then left
        as the user set it.
    """
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


def _apply() -> bool:
    if "GLIBC_TUNABLES" in os.environ or any(
        name.startswith("MALLOC_") and name.endswith("_") for name in os.environ
    ):
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):  # no C library found, or not glibc
        return False
    settings = (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (_M_TOP_PAD, TOP_PAD),
    )
    return all(mallopt(param, value) == 1 for param, value in settings)


def optimize_for_cpu(model: nn.Module) -> nn.Module:
    """Store the weight of every float32 CPU ``nn.Linear`` in ``model`` column by column.

    ``F.linear`` computes ``x @ weight.T``; with the ``(out, in)`` weight laid out column by
    column (strides ``(1, out)``: the transpose of a contiguous ``(in, out)`` matrix) that is a
    product with a contiguous matrix, which CPU sgemm kernels run faster for the few rows of a
    streaming step (a chunk's frames of one or a few streams) and about as fast for many rows.
    Opt-in and done once, when asked: the model stays plain modules, nothing depends on the
    machine, and the results equal the original layout's within fp32 rounding.

    The parameters stay the same objects (optimizers, hooks and tied weights keep them) with the
    same shapes and state-dict keys; saving already makes contiguous copies (safetensors wants
    them), and loading a state dict copies into the weights as they lie. Modules added later are
    not re-laid.

    Args:
        model: any module; call it after loading the weights.

    Returns:
        ``model``, re-laid in place.
    """
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, nn.Linear):
                continue
            weight = module.weight
            if weight.device.type == "cpu" and weight.dtype == torch.float32:
                weight.data = weight.data.t().contiguous().t()
    return model
