"""Process settings for fast CPU inference.

PyTorch keeps no cache of freed memory on the CPU: every operation's output is a fresh
``malloc``. glibc serves a block over its mmap threshold (128 KB at first, raised to the size of
the largest block freed, up to 32 MB) with a fresh ``mmap``, and returns the free top of its heap
to the system once it exceeds the trim threshold (twice the mmap threshold). An encoder's
activations are blocks of several to tens of MB per batch, so the pages of most of them are
faulted in again on every call. PyTorch's CPU performance guide advises another allocator
(jemalloc, tcmalloc) for this; :func:`keep_freed_memory` gets the same effect from glibc itself
by raising both thresholds, so freed activations are reused by the next batch. The cost: the
process keeps up to ``TRIM_THRESHOLD`` of freed memory instead of returning it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameters (glibc's malloc.h) and the values set.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest: blocks up to 32 MB come from the heap
TRIM_THRESHOLD = 512 * 1024 * 1024  # free heap top kept before it goes back to the system
TOP_PAD = 64 * 1024 * 1024  # heap growth per request, so growing is rare

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep and reuse freed memory (see the module docstring); once per process.

    Measured with ``default-asr`` on 2 cores, five processes each way, alternating: the 32
    sentences of ``suite bench transcribe`` (batches of 16), RTFx medians greedy 188 -> 242,
    with the LM 109 -> 123; ``suite evaluate`` on the test split (batches of 200 s, whose
    largest blocks are over 32 MB and still mapped afresh), three each: greedy 166-171 ->
    168-180, with the LM 92-101 -> 102-104.

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
