"""Rotary position embedding (Su et al., "RoFormer", 2021), "rotate half" layout.

Dims legend: B - batch, H - heads, T - positions, Dh - head width (even).

Rotating queries and keys by their absolute positions makes their dot product depend on the
distance alone, with no position-bias term; a streaming cache can then hold keys already
rotated, and a language model may start a sequence at any offset.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rotary_frequencies(head_dim: int, base: float = 10000.0) -> Tensor:
    """``(Dh / 2,)`` rotation frequencies ``base ** (-2i / Dh)``."""
    return base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)


def rotary_tables(positions: Tensor, inv_freq: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``(cos, signed_sin)``, each ``(..., T, Dh)``, for :func:`apply_rotary`; queries and keys at
    the same positions share them, so a layer computes them once for both.

    ``signed_sin`` is ``[-sin, sin]`` over the two halves: "rotate half" (``[-x2, x1]``) is then a
    roll of ``x`` times it, one copy instead of a split, a negation and a concatenation.
    """
    # Angles in fp32: bf16 would lose whole radians at frame indices in the thousands.
    angles = positions.float()[..., None] * inv_freq  # (T, Dh/2) or (B, 1, T, Dh/2)
    sin = angles.sin()
    cos = torch.cat([angles.cos()] * 2, dim=-1)  # (..., T, Dh)
    return cos.to(dtype), torch.cat([-sin, sin], dim=-1).to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x (..., Dh)`` by :func:`rotary_tables` broadcast against it (e.g. ``x (B, H, T,
    Dh)`` with tables ``(T, Dh)``): ``x * cos + [-x2, x1] * sin``."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), sin)


def rotate(x: Tensor, positions: Tensor, inv_freq: Tensor) -> Tensor:
    """Rotary position embedding of ``x``.

    Args:
        x: ``(B, H, T, Dh)`` queries or keys; Dh even.
        positions: ``(T,)`` absolute index of each row, or ``(B, 1, T)`` per stream (a
            streaming step passes each stream's offsets).
        inv_freq: ``(Dh / 2,)`` rotation frequencies (:func:`rotary_frequencies`).

    Returns:
        ``x`` rotated, same shape and dtype.
    """
    return apply_rotary(x, *rotary_tables(positions, inv_freq, x.dtype))
