"""Collating variable-length items into one padded batch.

Dims: B - items, S - the longest item's length, ``...`` - trailing dims every item shares.

Every batch that crosses a public boundary is ``(B, S, ...)`` padded on the right plus
``lengths (B,)`` int64 (see the architecture notes), whether the items are waveforms, feature
frames or token ids; :func:`pad_sequences` is the one place that builds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence


def pad_sequences(
    seqs: Sequence[Tensor | np.ndarray | Sequence[Any]],
    padding_value: float = 0,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """Right-pad items of different lengths into one batch.

    Args:
        seqs: B items, each a tensor, numpy array or list shaped ``(S_b, ...)``; the trailing
            dims must agree. Tensors must share a device; the batch is made there.
        padding_value: what fills each row beyond its item (0 for audio and token ids; a model
            must never depend on it, so tests may pass junk to prove that).
        dtype: of the batch; by default the common dtype of the non-empty items (an empty
            token list alone would otherwise read as float32), float32 when all are empty.

    Returns:
        ``(padded (B, S, ...), lengths (B,))``: ``S = max(S_b)`` (0 for no items or only empty
        ones), ``padded[b, :S_b]`` is item ``b``, and ``lengths`` is int64 on the batch's device.

    Raises:
        ValueError: an item is a scalar, or the items' trailing dims differ.

    Example:
        >>> audio, lengths = pad_sequences([np.ones(3, np.float32), np.ones(1, np.float32)])
        >>> audio.shape, lengths.tolist()
        (torch.Size([2, 3]), [3, 1])
    """
    items = [torch.as_tensor(s) for s in seqs]
    for b, item in enumerate(items):
        if item.dim() == 0:
            raise ValueError(
                f"item {b} is a scalar; pad_sequences takes items shaped (S, ...), e.g. one "
                "waveform or one list of token ids each"
            )
    if dtype is None:
        dtypes = [item.dtype for item in items if item.numel()]
        dtype = dtypes[0] if dtypes else torch.float32
        for other in dtypes[1:]:
            dtype = torch.promote_types(dtype, other)
    if not items:
        return torch.zeros(0, 0, dtype=dtype), torch.zeros(0, dtype=torch.long)
    trailing = {tuple(item.shape[1:]) for item in items if item.numel()}
    if len(trailing) > 1:
        raise ValueError(
            f"items must agree in every dim after the first, got trailing shapes "
            f"{sorted(trailing)}; pad or project them to one shape first"
        )
    # An empty item may have the wrong trailing shape (``torch.as_tensor([])`` is ``(0,)``).
    rest = trailing.pop() if trailing else tuple(items[0].shape[1:])
    items = [
        item.to(dtype) if item.numel() else item.new_zeros((0, *rest), dtype=dtype)
        for item in items
    ]
    padded = pad_sequence(items, batch_first=True, padding_value=padding_value)  # (B, S, ...)
    lengths = torch.tensor([item.shape[0] for item in items], device=padded.device)  # (B,)
    return padded, lengths
