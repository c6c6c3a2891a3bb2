"""Per-stream frame helpers: valid-frame masks, per-item windows and growing cache buffers.

Dims legend: B - batch (streams), T - frames, D - width.

Streams of different ages step together in one batch, so each holds its own number of valid
frames; these helpers keep every operation per item without a Python loop over the batch.
Caches are batch-first and hold each stream's newest frames right-aligned, oldest first, so that
``[cache, block]`` is that stream's contiguous recent history.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def frame_mask(lengths: Tensor, T: int) -> Tensor:
    """``(B, T)`` bool, True on the first ``lengths[b]`` frames of each item."""
    return torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]


def time_mask(lengths: Tensor, x: Tensor, dim: int) -> Tensor:
    """:func:`frame_mask` in ``x``'s dtype, shaped to broadcast against ``x`` whose time axis is
    ``dim``."""
    shape = [1] * x.dim()
    shape[0], shape[dim] = x.shape[0], x.shape[dim]
    return frame_mask(lengths, x.shape[dim]).view(shape).to(x.dtype)


def real_rows(valid: Tensor) -> Tensor | None:
    """Indices of the real frames of ``valid (B, T, 1)`` (float or bool) in the flattened
    ``(B * T)`` layout, or ``None`` when no frame is padding (see :func:`on_real_rows`)."""
    flat = valid.reshape(-1)
    if bool(flat.all()):
        return None
    return flat.nonzero()[:, 0]


def on_real_rows(module: nn.Module, x: Tensor, rows: Tensor | None) -> Tensor:
    """``module`` (frame by frame, width-preserving) on the real frames of ``x (B, T, D)``
    only: ``rows`` from :func:`real_rows`; padding frames get zeros (``None``: every frame).

    A batch of utterances of mixed lengths wastes the arithmetic of its padding frames in every
    frame-wise layer; gathered, the feed-forwards (most of a Conformer's work) skip it.
    """
    if rows is None:
        return module(x)
    flat = x.reshape(-1, x.shape[-1])
    out = module(flat.index_select(0, rows))
    return flat.new_zeros(flat.shape).index_copy(0, rows, out).view_as(x)


def same_value(values: Tensor | int) -> int | None:
    """The value every item of ``values (B,)`` holds (an ``int`` is its own), else ``None``."""
    if isinstance(values, int):
        return values
    # One read of the few values (a step's streams) into Python rather than tensor comparisons
    # and a reduction: a streaming step asks this of many small tensors.
    items = values.tolist()
    return items[0] if items and items.count(items[0]) == len(items) else None


def take(x: Tensor, start: Tensor | int, size: int, dim: int) -> Tensor:
    """Per-item windows: ``out[b] = x[b, ..., start[b] : start[b] + size, ...]`` along ``dim``.

    Indices outside ``x`` are clamped to its edge, so the caller masks what lies beyond an
    item's valid frames. This is how a cache keeps "the last M frames" when every stream ends
    at its own frame. An ``int`` start is every item's.
    """
    if size == 0 or x.shape[dim] == 0:
        shape = list(x.shape)
        shape[dim] = size
        return x.new_zeros(shape)
    # Every item's window at the same place inside x (streams that all got a full chunk, the
    # usual batched step): a view instead of a gather.
    first = same_value(start)
    if first is not None and 0 <= first <= x.shape[dim] - size:
        return x.narrow(dim, first, size)
    if isinstance(start, int):
        start = torch.full((x.shape[0],), start, device=x.device)
    index = start[:, None] + torch.arange(size, device=x.device)  # (B, size)
    index = index.clamp(0, x.shape[dim] - 1)
    shape = [1] * x.dim()
    shape[0], shape[dim] = x.shape[0], size
    expanded = list(x.shape)
    expanded[dim] = size
    return x.gather(dim, index.view(shape).expand(expanded))


def append(cache: Tensor, new: Tensor, dim: int, kept: int | None = None) -> Tensor:
    """``torch.cat([cache, new], dim)``, mostly without copying ``cache``.

    A streaming cache is the tail of the previous step's joined frames (:func:`take`: a view).
    Joined frames live in a buffer with room for as many frames again as the cache holds; when
    ``cache`` is a window of such a buffer whose room after it no step has written yet, ``new``
    is written there and the result is a view, so the cache is copied once per that many frames
    instead of every step (many streams' attention caches are large next to a step's new
    frames). A cache from which a step was taken before is not written over: stepping again
    from an old state copies. The result is to be only read. ``kept``: how many of ``new``'s
    frames the next cache ends with (a look-ahead step keeps its chunk, not the frames after it,
    which the next step may then write over); default all.
    """
    size, extra = cache.shape[dim], new.shape[dim]
    kept = extra if kept is None else kept
    storage = cache.untyped_storage()
    # (capacity along dim, frames written, strides) of a buffer made below, kept on its storage.
    capacity, written, stride = getattr(storage, "_suite_frames", (0, -1, None))
    offset = cache.storage_offset()
    if stride is not None and cache.stride() == stride and not new.requires_grad:
        first, within = divmod(offset, stride[dim])
        if within == 0 and written == first + size and written + extra <= capacity:
            shape = list(cache.shape)
            shape[dim] = extra
            cache.as_strided(shape, stride, written * stride[dim]).copy_(new)
            storage._suite_frames = (capacity, written + kept, stride)  # type: ignore[attr-defined]
            shape[dim] = size + extra
            return cache.as_strided(shape, stride, offset)
    shape = list(cache.shape)
    shape[dim] = 2 * size + extra
    buffer = new.new_empty(shape)
    buffer.narrow(dim, 0, size).copy_(cache)
    buffer.narrow(dim, size, extra).copy_(new)
    record = (shape[dim], size + kept, buffer.stride())
    buffer.untyped_storage()._suite_frames = record  # type: ignore[attr-defined]
    return buffer.narrow(dim, 0, size + extra)


def join(a: Tensor, a_lengths: Tensor, b: Tensor, b_lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Per item, the valid frames of ``a (B, Ta, D)`` followed by those of ``b (B, Tb, D)``.

    Returns:
        ``(B, Ta + Tb, D)`` left-aligned and zero beyond each item's total, and the totals
        ``(B,)``.
    """
    width = a.shape[1] + b.shape[1]
    pos = torch.arange(width, device=a.device)[None, :]  # (1, Ta + Tb)
    from_b = take(b, -a_lengths, width, dim=1)  # b shifted right by each item's a-length
    from_a = F.pad(a, (0, 0, 0, b.shape[1]))
    joined = torch.where((pos < a_lengths[:, None])[..., None], from_a, from_b)
    total = a_lengths + b_lengths
    return joined * frame_mask(total, width)[..., None].to(joined.dtype), total


def split_ready(
    pending: Tensor,
    pending_lengths: Tensor,
    new: Tensor,
    new_lengths: Tensor,
    chunk: int,
    final: Tensor,
    ahead: int = 0,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Frames ready for the attention layers: whole chunks (every frame, where ``final``).

    A frame's attention output depends on its whole chunk, so a step may only run the layers
    on complete chunks; the rest waits in ``pending``. Pending frames always start at a chunk
    boundary, so the block a step returns starts at one too, for every stream. With a
    look-ahead of ``ahead`` frames a chunk is ready once the ``ahead`` frames after it have come
    too; those stay pending (they are the next chunk's) and the block shows them after the
    ready frames.

    Args:
        pending: ``(B, chunk - 1 + ahead, D)`` frames left over from earlier steps, left-aligned.
        pending_lengths: ``(B,)``.
        new: ``(B, T, D)`` frames from this step.
        new_lengths: ``(B,)``.
        chunk: attention chunk size in frames.
        final: ``(B,)`` bool, streams that end with this step (their last chunk may be partial).
        ahead: look-ahead frames each chunk sees.

    Returns:
        ``block (B, T', D)``, ``block_lengths (B,)`` (the ready frames; the block holds up to
        ``ahead`` pending frames after them), and the new ``pending``, ``pending_lengths``.
    """
    if same_value(pending_lengths) == 0 and same_value(new_lengths) == new.shape[1]:
        joined, total = new, new_lengths  # nothing pending and no padding: the join is a no-op
    else:
        joined, total = join(pending, pending_lengths, new, new_lengths)  # (B, P + T, D)
    whole = torch.div((total - ahead).clamp(min=0), chunk, rounding_mode="floor") * chunk
    ready = torch.where(final, total, whole)
    rest_lengths = total - ready
    shown = ready + rest_lengths.clamp(max=ahead)  # the ready frames and their look-ahead
    width = int(shown.max()) if shown.numel() else 0
    if same_value(rest_lengths) == 0:  # whole chunks only (a step of a chunk's frames)
        rest = joined.new_zeros(joined.shape[0], chunk - 1 + ahead, joined.shape[2])
    else:
        rest = take(joined, ready, chunk - 1 + ahead, dim=1)  # (B, chunk - 1 + ahead, D)
        rest = rest * frame_mask(rest_lengths, chunk - 1 + ahead)[..., None].to(rest.dtype)
    return joined[:, :width], ready, rest, rest_lengths
