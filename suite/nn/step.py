"""What every block of one cache-aware streaming step shares, built once per step.

Dims legend: B - batch (streams), T - new frames, M - cached frames, Dh - head width.

A step processes a *block* of new frames, ``(B, T, D)`` with a ``valid (B, T)`` mask (streams
of different ages receive different numbers of frames) and ``positions (B, T)``, each frame's
absolute index in its stream. Which keys each query may see, how far the caches move and the
rotary tables of the new positions are the same at every layer, so a step computes them once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from suite.kernels.attention import Context, cached_attention_mask
from suite.nn.frames import same_value
from suite.nn.rotary import rotary_tables


@dataclass
class StreamStep:
    """What every block of one streaming step shares (see the module docstring).

    Attributes:
        keep: ``(B, T, 1)`` 1.0 on real frames and 0.0 on padding, or ``None`` when every new
            frame is real.
        advance: real new frames per stream ``(B,)``, or an ``int`` when every stream got the
            same number (the caches then move forward as views).
        cos: rotary table at the new frames' positions, ``(B, T, 1, 1, Dh)`` fp32.
        sin: signed sine table, the same shape (see :func:`~suite.nn.rotary.rotary_tables`).
        mask: ``(B, 1, T, M + T)`` bool mask over the keys ``[cache, block]``, or ``None`` when
            every query may attend to every key (a full chunk of streams past their first M
            frames).
        cache_size: M, the attention cache's frames at this frame rate.
    """

    keep: Tensor | None
    advance: Tensor | int
    cos: Tensor
    sin: Tensor
    mask: Tensor | None
    cache_size: int


def stream_step(
    valid: Tensor,
    positions: Tensor,
    context: Context,
    cache_size: int,
    inv_freq: Tensor,
    stride: int = 1,
    committed: Tensor | None = None,
) -> StreamStep:
    """The :class:`StreamStep` of a block of new frames.

    Args:
        valid: ``(B, T)`` bool, each stream's real new frames.
        positions: ``(B, T)`` absolute frame index of each new frame (contiguous per stream).
        context: ``(left, right)`` chunked-limited context, in full-rate frames.
        cache_size: M, frames in each layer's attention cache (slots before a stream's first
            frame, at negative positions, are masked).
        inv_freq: the layers' rotary frequencies (``RotaryAttentionBase.inv_freq``).
        stride: full-rate frames per frame of this block.
        committed: ``(B,)`` frames the caches move past, when not every valid frame (a
            look-ahead step's chunk, without the look-ahead frames after it).
    """
    M = cache_size
    n = valid.sum(dim=1) if committed is None else committed  # (B,)
    all_real = bool(valid.all())
    if all_real and _sees_every_key(positions, context, M, stride):
        mask = None
    else:
        cache_pos = positions[:, :1] - M + torch.arange(M, device=valid.device)  # (B, M)
        k_pos = torch.cat([cache_pos, positions], dim=1)  # (B, M + T)
        k_valid = torch.cat([cache_pos >= 0, valid], dim=1)
        mask = cached_attention_mask(positions, k_pos, valid, k_valid, context, stride)
        mask = None if bool(mask.all()) else mask
    cos, sin = rotary_tables(positions[:, :, None, None], inv_freq, torch.float32)
    advance = same_value(n)
    return StreamStep(
        keep=None if all_real else valid[..., None].float(),
        advance=n if advance is None else advance,
        cos=cos,
        sin=sin,
        mask=mask,
        cache_size=M,
    )


def _sees_every_key(positions: Tensor, context: Context, cache_size: int, stride: int) -> bool:
    """Whether every query of a block of real frames at ``positions (B, T)`` may attend to every
    key ``[cache, block]`` (the usual step: one whole chunk of each stream, its cache full), read
    from the streams' first positions instead of building the mask (a dozen small operations).
    ``False`` means "build it and see"."""
    if stride != 1:
        return False
    starts = positions[:, 0].tolist()
    if not starts or min(starts) < cache_size:  # cache slots before a stream's start
        return False
    if context is None:
        return True
    size = context[1] + 1
    return (
        positions.shape[1] <= size  # one chunk: no query before a later chunk's keys
        and all(start % size == 0 for start in starts)
        and cache_size <= (context[0] // size) * size  # the cache within every query's window
    )
