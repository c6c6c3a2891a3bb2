"""Building blocks shared by the Conformer-family encoders, offline and cache-aware streaming.

The pieces of FastConformer (``suite.encoders.conformer``) that Squeezeformer
(``suite.encoders.squeezeformer``) reuses: causal conv subsampling, rotary self-attention, the
convolution module, the feed-forward module; each with the ``streaming_forward`` of "Stateful
Conformer with Cache-based Inference for Streaming ASR" (Noroozi et al., 2024), plus the few
per-stream tensor helpers the caches need.

Dims legend: B - batch (streams), T - frames, F - feature bins, C - channels, D - model width,
H - heads, Dh - head width, K - depthwise kernel, M - cached frames.

Streaming layout, shared by every block here: a step processes a *block* of new frames,
``(B, T, D)`` with a ``valid (B, T)`` mask (streams of different ages receive different numbers of
frames) and ``positions (B, T)``, each frame's absolute index in its stream. Caches are
batch-first and hold each stream's newest frames right-aligned, oldest first, so that
``[cache, block]`` is that stream's contiguous recent history. Every operation is causal, so
padding frames after a stream's valid ones never reach a valid output.

What differs from the paper: the attention cache holds keys already rotated by their absolute
frame index (rotary positions, see ``conformer.py``) instead of un-encoded activations, so no
relative-position term has to be recomputed per step.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from suite.kernels.attention import (
    Context,
    attention,
    cached_attention,
    cached_attention_mask,
    check_context,
    masked_attention,
)
from suite.kernels.linear import Linear, linear

NormLayer = Callable[[int], nn.Module]


def dropped(dropout: nn.Dropout, x: Tensor) -> Tensor:
    """``dropout(x)`` while training, else ``x`` without calling the module: an evaluating
    dropout's call costs 5-9 us on these CPUs, and a streaming step of a Conformer made six per
    layer."""
    return dropout(x) if dropout.training else x


def normed(norm: nn.Module, x: Tensor) -> Tensor:
    """``norm(x)``; a LayerNorm through ``F.layer_norm``, without the module call (~1 us, where
    a streaming step's operations take a few each, six times a Conformer layer)."""
    if type(norm) is nn.LayerNorm:
        return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    return norm(x)


def projected(layer: nn.Linear, x: Tensor) -> Tensor:
    """``layer(x)`` without the module call: :func:`~suite.kernels.linear.linear` for the
    encoders' :class:`~suite.kernels.linear.Linear`, ``F.linear`` for a plain ``nn.Linear``."""
    if type(layer) is nn.Linear:
        return F.linear(x, layer.weight, layer.bias)
    return linear(x, layer.weight, layer.bias)


def frame_mask(lengths: Tensor, T: int) -> Tensor:
    """``(B, T)`` bool, True on the first ``lengths[b]`` frames of each item."""
    return torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]


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


def _time_mask(lengths: Tensor, x: Tensor, dim: int) -> Tensor:
    """``frame_mask`` shaped to broadcast against ``x`` whose time axis is ``dim``."""
    shape = [1] * x.dim()
    shape[0], shape[dim] = x.shape[0], x.shape[dim]
    return frame_mask(lengths, x.shape[dim]).view(shape).to(x.dtype)


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
    # usual batched step): a view, no copy. The gathers were a fifth of a 16-stream step.
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
    instead of every step (a 64-stream step of the streaming bench model copied its attention
    caches, 12 MB a layer, in a quarter of its time). A cache from which a step was taken before
    is not written over: stepping again from an old state copies. The result is to be only read.
    ``kept``: how many of ``new``'s frames the next cache ends with (a look-ahead step keeps its
    chunk, not the frames after it, which the next step may then write over); default all.
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


def same_value(values: Tensor | int) -> int | None:
    """The value every item of ``values (B,)`` holds (an ``int`` is its own), else ``None``."""
    if isinstance(values, int):
        return values
    # One read of the few values (a step's streams) instead of an element read, a comparison
    # and a reduction: 0.5-1.3 instead of 8-9 us, and a streaming step asks ~33 times.
    items = values.tolist()
    return items[0] if items and items.count(items[0]) == len(items) else None


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


def causal_stride2_step(
    conv: Callable[[Tensor], Tensor],
    x: Tensor,
    lengths: Tensor,
    cache: Tensor,
    consumed: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """One streaming step of a causal, kernel-3, stride-2 convolution over time (dim 2).

    Offline, output ``t`` sees inputs ``2t - 2 .. 2t`` (two zero frames pad the left). A stream
    that has consumed ``n`` inputs has emitted ``ceil(n / 2)`` outputs; its next output starts
    at input ``n - 2`` when ``n`` is even and ``n - 1`` when odd. So the cache keeps the last
    two inputs, and odd-aged streams drop the older one; rows are shifted per stream so that
    one batched convolution serves streams of every age.

    Args:
        conv: the convolution without time padding, ``(B, C, W, ...) -> (B, C', (W - 1) // 2,
            ...)``.
        x: ``(B, C, T, ...)`` new inputs, time on dim 2; ``T >= 1``.
        lengths: ``(B,)`` valid new inputs per stream.
        cache: ``(B, C, 2, ...)`` each stream's last two inputs (zeros before its start).
        consumed: ``(B,)`` inputs each stream had consumed before this step.

    Returns:
        ``(outputs (B, C', (T + 1) // 2, ...), output lengths (B,), new cache)``.
    """
    T = x.shape[2]
    full = same_value(lengths) == T  # every stream got T frames: no padding to zero
    if not full:
        x = x * _time_mask(lengths, x, 2)
    joined = torch.cat([cache, x], dim=2)  # (B, C, 2 + T, ...)
    new_cache = take(joined, T if full else lengths, 2, dim=2)  # inputs n + L - 2, n + L - 1
    parity = consumed % 2
    total = 2 - parity + lengths  # (B,) frames in each shifted row
    shift = same_value(parity) if full else None
    if shift is not None:  # one shift for all: drop its frames, zeros after the last input
        if shift:
            time_pad = (0, 0) * (x.dim() - 3) + (0, shift)
            joined = F.pad(joined.narrow(2, shift, 2 + T - shift), time_pad)
    else:
        joined = take(joined, parity, joined.shape[2], dim=2)
        joined = joined * _time_mask(total, joined, 2)
    out_lengths = torch.div(total - 1, 2, rounding_mode="floor")
    return conv(joined), out_lengths, new_cache


class ConvSubsampling(nn.Module):
    """Striding convolutions that shorten time (and frequency) by ``factor``, then map to D.

    Each stage is a 3x3 convolution with stride 2 in time and frequency: the first a full
    convolution from one input channel, the others depthwise + pointwise (cheaper, as in the
    paper). Every stage maps ``L`` valid frames to ``ceil(L / 2)`` in both modes: non-causal
    pads one frame on each side, causal pads two frames on the left so that output frame t
    depends on input frames ``<= 2t`` only.

    Both modes stream. Over all stages, causal output frame t sees input frames ``<= 4t`` (at
    4x), so the last three frames of its own window ``4t .. 4t + 3`` reach only later outputs:
    a streamed chunk's last 30 ms of features reach none of that chunk's frames. Non-causal
    output t sees up to ``4t + 3``, exactly its window's end; a stream emits it once that
    frame has arrived, so an encoder whose chunks hold whole windows gets the same latency.

    Args:
        input_dim: F, feature bins per input frame.
        d_model: D, output width.
        channels: C, convolution channels.
        factor: total time reduction, a power of two.
        causal: pad time on the left only; else one frame on each side. Streaming caches the
            last two input frames of each stage either way.
    """

    def __init__(self, input_dim: int, d_model: int, channels: int, factor: int, causal: bool):
        super().__init__()
        if factor < 2 or factor & (factor - 1):
            raise ValueError(f"subsampling_factor must be a power of two >= 2, got {factor}")
        self.num_stages = int(math.log2(factor))
        self.causal = causal
        stages = [nn.Conv2d(1, channels, kernel_size=3, stride=2)]
        for _ in range(self.num_stages - 1):
            stages.append(
                nn.Sequential(
                    nn.Conv2d(channels, channels, kernel_size=3, stride=2, groups=channels),
                    nn.Conv2d(channels, channels, kernel_size=1),
                )
            )
        self.stages = nn.ModuleList(stages)
        # (channels, bins) entering each stage: the streaming cache shapes.
        self.stage_inputs = [(1, input_dim)]
        freq = input_dim
        for _ in range(self.num_stages):
            freq = (freq + 1) // 2
            self.stage_inputs.append((channels, freq))
        self.stage_inputs.pop()
        self.out = Linear(channels * freq, d_model)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Exact ``(B,)`` output lengths: ``ceil(L / 2)`` per stage."""
        for _ in range(self.num_stages):
            lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
        return lengths

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Map ``x (B, T, F)`` with ``lengths (B,)`` to ``(B, T', D)`` and ``(B,)``."""
        x = x.unsqueeze(1)  # (B, 1, T, F)
        # The strided convolutions pad by themselves instead of convolving a padded copy: one
        # bin on each side, and one frame (non-causal) or two (causal: the last output, which
        # alone saw a frame of right padding, is dropped, leaving the outputs of padding two
        # frames on the left). With the in-place ReLU, default-asr's demo batch subsamples in
        # 18-24 ms instead of 35 (fewer fresh 15 MB tensors, whose page faults cost most).
        padding = (2 if self.causal else 1, 1)
        # On the CPU channels-last (oneDNN's layout): default-asr's demo batch subsamples its
        # 3x3 depthwise stage in 2.2 instead of 6.9 ms, the whole greedy transcription 69.7 ->
        # 64.7 ms (torch 2.14, 2 cores). A streaming step's few frames stay contiguous.
        layout = torch.channels_last if x.device.type == "cpu" else torch.contiguous_format
        for i, stage in enumerate(self.stages):
            # Zero padding frames so valid outputs see the same zeros as an unpadded input: in a
            # product for the input (the caller's) and in training (the ReLU's backward reads its
            # output), else in place and only the padding frames (on default-asr's demo batch
            # 15.0 instead of 17.5 ms in all).
            if i == 0 or x.requires_grad:
                x = x * frame_mask(lengths, x.shape[2])[:, None, :, None].to(x.dtype)
            else:
                for b, valid in enumerate(lengths.tolist()):
                    x[b, :, valid:] = 0.0
            x = self._stage(stage, x, padding, self.causal, layout)
            x = F.relu_(x)  # (B, C, ceil(T/2), ceil(F/2)); in place: nothing else reads it
            lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
        B, C, T, Fq = x.shape
        x = self.out(x.transpose(1, 2).reshape(B, T, C * Fq))  # (B, T', D)
        return x, lengths

    @staticmethod
    def _stage(
        stage: nn.Module,
        x: Tensor,
        padding: tuple[int, int],
        drop_last: bool,
        layout: torch.memory_format,
    ) -> Tensor:
        """One stage's convolutions on ``x (B, C, T, F)``, padded by ``(time, frequency)``
        (``drop_last``: without the last output frame), before the ReLU; ``layout`` is the
        convolutions' memory format, which the weights' selects."""
        strided = stage if isinstance(stage, nn.Conv2d) else stage[0]
        weight = strided.weight.to(memory_format=layout)
        x = F.conv2d(x, weight, strided.bias, 2, padding, 1, strided.groups)
        if drop_last:
            x = x[:, :, :-1]
        return x if strided is stage else stage[1](x)  # then the pointwise convolution

    def init_cache(self, batch_size: int, device: torch.device | None = None) -> list[Tensor]:
        """Per stage ``(B, C_s, 2, F_s)`` zeros: the left padding a fresh stream starts with."""
        return [torch.zeros(batch_size, c, 2, f, device=device) for c, f in self.stage_inputs]

    def streaming_forward(
        self,
        x: Tensor,
        lengths: Tensor,
        cache: Sequence[Tensor],
        seen: Tensor,
        final: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Subsample the new frames of each stream.

        A non-causal stage is the causal step on its input delayed by one zero frame (its
        left padding), whose first output is never emitted: it holds back an odd last input
        until the next one arrives, or until ``final`` pads it with the zero frame that
        :meth:`forward` pads the end with.

        Args:
            x: ``(B, T, F)`` new feature frames; ``lengths (B,)`` valid per stream.
            lengths: ``(B,)``.
            cache: from :meth:`init_cache` or the previous step.
            seen: ``(B,)`` input frames each stream consumed before this step.
            final: ``(B,)`` bool, streams that end with this step (``None``: none).

        Returns:
            ``(frames (B, T', D), lengths (B,), new cache)``; concatenated over steps, each
            stream's valid frames equal :meth:`forward` on the whole stream.
        """
        B = x.shape[0]
        h = x.unsqueeze(1)  # (B, 1, T, F)
        delay = 0 if self.causal else 1  # the zero frame a non-causal stage's input starts with
        consumed = seen + delay
        # only a step that ends a stream pads (one read of the flags, not per stage)
        ending = delay and final is not None and same_value(final) is not False
        new_cache: list[Tensor] = []
        for i, stage in enumerate(self.stages):
            if ending:  # an ending stream's odd last input: pad it
                odd = final & ((consumed - delay + lengths) % 2 == 1)
                if same_value(odd) != 0:
                    h = F.pad(h * _time_mask(lengths, h, 2), (0, 0, 0, 1))
                    lengths = lengths + odd
            if h.shape[2] == 0:  # nothing new reaches this stage: later caches are unchanged
                new_cache.extend(cache[i:])
                return h.new_zeros(B, 0, self.out.out_features), lengths, new_cache

            def conv(rows: Tensor, stage: nn.Module = stage) -> Tensor:
                # padded in frequency only; contiguous: channels-last made a 64-stream step at
                # 160 ms 93 -> 99 ms and a one-stream step 13.6 -> 18.0 ms
                out = self._stage(stage, rows, (0, 1), False, torch.contiguous_format)
                # in place on the fresh output, as offline: no second 330 kB tensor at 640 ms
                return F.relu_(out) if not out.requires_grad else F.relu(out)

            h, out_lengths, stage_cache = causal_stride2_step(
                conv, h, lengths, cache[i], consumed
            )  # (B, C, (T+1)//2, F')
            new_cache.append(stage_cache)
            # the next stage's inputs so far (a non-causal one's: plus its delay frame)
            consumed = torch.div(consumed + 1, 2, rounding_mode="floor")
            lengths = out_lengths
        _, C, T, Fq = h.shape
        return self.out(h.transpose(1, 2).reshape(B, T, C * Fq)), lengths, new_cache


def rotate(x: Tensor, positions: Tensor, inv_freq: Tensor) -> Tensor:
    """Rotary position embedding (Su et al., RoFormer), "rotate half" layout.

    Args:
        x: ``(B, H, T, Dh)`` queries or keys; Dh even.
        positions: ``(T,)`` absolute frame index of each row, or ``(B, 1, T)`` per stream (a
            streaming step passes each stream's offsets).
        inv_freq: ``(Dh / 2,)`` rotation frequencies.

    Returns:
        ``x`` rotated, same shape and dtype.
    """
    return apply_rotary(x, *rotary_tables(positions, inv_freq, x.dtype))


def rotary_tables(positions: Tensor, inv_freq: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``(cos, signed_sin)``, each ``(..., T, Dh)``, for :func:`apply_rotary`; queries and keys at
    the same positions share them (computing them once per layer halves the trig work).

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


@dataclass
class StreamStep:
    """What every block of one streaming step shares, built once per step by
    :func:`stream_step` instead of in each layer (on CPU a layer's step is a few dozen small
    operations: one stream's 160 ms chunks of the streaming bench model ran at 206-221 encoder
    frames per second with this, 177-179 without, torch 2.14, 2 cores).

    Attributes:
        keep: ``(B, T, 1)`` 1.0 on real frames and 0.0 on padding, or ``None`` when every new
            frame is real.
        advance: real new frames per stream ``(B,)``, or an ``int`` when every stream got the
            same number (the caches then move forward as views).
        cos: rotary table at the new frames' positions, ``(B, T, 1, 1, Dh)`` fp32.
        sin: signed sine table, the same shape (see :func:`rotary_tables`).
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
    context: tuple[int, int],
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


@dataclass
class Lookahead:
    """Block processing of a ``(left, right, ahead)`` context over whole sequences (Emformer's
    right context, Shi et al., 2021): chunks of ``c = right + 1`` frames, each also seeing the
    ``ahead`` frames after it at every layer. Those frames are computed as copies ("look-ahead
    tokens") placed after the ``T`` frames, one set per chunk, that see only what their chunk
    sees: its ``left // c`` earlier chunks, itself and its own look-ahead tokens. A streaming
    step computes a chunk and its look-ahead frames and keeps only the chunk's in its caches,
    which is the same computation, so a chunk waits for ``c + ahead`` frames in all.

    Attributes:
        source: ``(S,)`` the frame each of the ``S = T + N * ahead`` tokens holds (N chunks).
        positions: ``(S,)`` that frame's position (rotary), equal to ``source`` except past the
            end, where the look-ahead tokens of the last chunk hold no frame.
        mask: ``(B, 1, S, S)`` bool, True where a token may attend to a key token; ``None``
            for a long input, which attends chunk by chunk instead (``blocks``).
        blocks: ``None``, or for a long input (``S`` over ``BLOCKED_FROM`` times a chunk's
            keys) ``(queries (N, Q), keys (N, K), mask (B, 1, N, Q, K))``: each chunk's query
            tokens and the tokens it may attend to (index ``S``: none), so that memory and
            time grow with ``S`` instead of its square.
        taps: ``(S, K)`` index of each token's K depthwise inputs among the tokens, ``S`` for
            a zero (before the first frame).
        valid: ``(B, S, 1)`` 1.0 on tokens that hold a real frame.
    """

    source: Tensor
    positions: Tensor
    mask: Tensor | None
    taps: Tensor
    valid: Tensor
    blocks: tuple[Tensor, Tensor, Tensor] | None = None


# A look-ahead input attends chunk by chunk once its tokens outnumber a chunk's keys this many
# times; below, one dense (S, S) mask is the faster. Measured on `streaming-asr`, encoder
# forward, 2 cores: at (128, 0, 3) (132 keys a chunk) dense / chunk by chunk 366 / 898 ms for 8
# x 4 s, 1717 / 1784 ms for 2 x 32 s, 2207 / 1636 ms for 64 s; at (128, 1, 2) 548 / 492 ms for
# 64 s. Past the switch, memory grows with S instead of its square (180 s: 4.0 -> 1.8 GB).
BLOCKED_FROM = 24


@functools.lru_cache(maxsize=32)
def _lookahead_tokens(
    T: int, left: int, right: int, ahead: int, kernel: int, device: torch.device, dense: bool
) -> tuple[Tensor, Tensor | None, Tensor]:
    """``(frame (S,), allowed (S, S) or None, taps (S, K))`` of :class:`Lookahead`, before
    padding (``allowed`` only if ``dense``)."""
    size = right + 1
    chunks = -(-T // size)
    main = torch.arange(T)
    owner = torch.arange(chunks).repeat_interleave(ahead)  # each look-ahead token's chunk
    frame = torch.cat([main, (owner + 1) * size + torch.arange(ahead).repeat(chunks)])
    chunk = torch.cat([main // size, owner])
    extra = torch.arange(frame.shape[0]) >= T
    allowed = None
    if dense:
        q, k = chunk[:, None], chunk[None, :]  # straight to bool: no (S, S) of int64
        allowed = ~extra[None, :] & (k <= q) & (k >= q - left // size)
        allowed |= extra[None, :] & (k == q)
    # A token's K depthwise inputs are the K frames ending at its own: a chunk's frames from
    # the frames up to it, a look-ahead token's past its chunk from its chunk's look-ahead tokens.
    tap_frame = frame[:, None] - (kernel - 1) + torch.arange(kernel)  # (S, K)
    end = (chunk[:, None] + 1) * size
    copies = T + chunk[:, None] * ahead + (tap_frame - end)
    from_copies = extra[:, None] & (tap_frame >= end)
    taps = torch.where(from_copies, copies, tap_frame)
    # Before the first frame: zeros; past the last (only tokens past the end, which are padding).
    outside = (tap_frame < 0) | (~from_copies & (tap_frame >= T))
    taps = torch.where(outside, frame.shape[0], taps)
    allowed = None if allowed is None else allowed.to(device)
    return frame.to(device), allowed, taps.to(device)


@functools.lru_cache(maxsize=32)
def _lookahead_blocks(
    T: int, left: int, right: int, ahead: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """``(queries (N, Q), keys (N, K))`` of :class:`Lookahead` ``blocks``: per chunk, its
    frames and look-ahead tokens; the ``left // c`` chunks before it, itself and its look-ahead
    tokens. Index ``S`` (a zero token) fills what lies outside the frames."""
    size = right + 1
    chunks = -(-T // size)
    S = T + chunks * ahead
    start = torch.arange(chunks)[:, None] * size
    copies = T + torch.arange(chunks)[:, None] * ahead + torch.arange(ahead)
    own = start + torch.arange(size)
    history = start - (left // size) * size + torch.arange((left // size) * size + size)
    own = torch.where(own < T, own, S)
    history = torch.where((history >= 0) & (history < T), history, S)
    return torch.cat([own, copies], 1).to(device), torch.cat([history, copies], 1).to(device)


def blocked_attention(q: Tensor, k: Tensor, v: Tensor, tokens: Lookahead) -> Tensor:
    """Attention of ``q, k, v (B, H, S, Dh)`` chunk by chunk over ``tokens.blocks``."""
    queries, keys, mask = tokens.blocks  # type: ignore[misc]
    B, H, S, Dh = q.shape

    def pad(x: Tensor) -> Tensor:
        return F.pad(x, (0, 0, 0, 1))  # the zero token at index S

    out = F.scaled_dot_product_attention(
        pad(q)[:, :, queries], pad(k)[:, :, keys], pad(v)[:, :, keys], attn_mask=mask
    )  # (B, H, N, Q, Dh)
    flat = out.reshape(B, H, -1, Dh)  # chunks' queries in order; index S where none
    return q.new_zeros(B, H, S + 1, Dh).index_copy(2, queries.reshape(-1), flat)[:, :, :S]


def lookahead(lengths: Tensor, T: int, context: tuple[int, int, int], kernel: int) -> Lookahead:
    """The :class:`Lookahead` of ``T`` frames of which the first ``lengths[b]`` are valid."""
    left, right, ahead = context
    size = right + 1
    S = T + -(-T // size) * ahead
    dense = S <= BLOCKED_FROM * ((left // size) * size + size + ahead)
    device = lengths.device
    frame, allowed, taps = _lookahead_tokens(T, left, right, ahead, kernel, device, dense)
    valid = frame[None, :] < lengths[:, None]  # (B, S): the last chunk's tokens past the end
    mask, blocks = None, None
    if allowed is not None:
        mask = ((allowed & valid[:, None, :]) | ~valid[:, :, None])[:, None]  # pad rows: all True
    else:
        queries, keys = _lookahead_blocks(T, left, right, ahead, device)
        padded = F.pad(valid, (0, 1))  # the zero token is no key
        block_mask = padded[:, keys][:, :, None, :] | ~padded[:, queries][:, :, :, None]
        blocks = (queries, keys, block_mask[:, None])  # (B, 1, N, Q, K)
    return Lookahead(
        source=frame.clamp(max=T - 1),
        positions=frame,
        mask=mask,
        taps=taps,
        valid=valid[..., None].float(),
        blocks=blocks,
    )


class RotaryAttentionBase(nn.Module):
    """The parts of a pre-norm multi-head self-attention with rotary positions: the input
    normalization, the joint query/key/value projection, the output projection and the rotary
    frequencies. Subclasses write ``forward``: :class:`SelfAttention` here, and the language
    model's causal, KV-cached one (:class:`suite.heads.lm.CausalSelfAttention`).

    Args:
        d_model: D.
        num_heads: H; ``D / H`` must be even for the rotary pairs.
        rope_base: rotary base period.
        norm_layer: the input normalization (Squeezeformer passes a learned scale and bias).
        linear: the projections' class: :class:`suite.kernels.linear.Linear` (an encoder's),
            or ``nn.Linear`` (the language model's, whose few weights stay in cache).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        rope_base: float = 10000.0,
        norm_layer: NormLayer = nn.LayerNorm,
        linear: type[nn.Linear] = Linear,
    ):
        super().__init__()
        if d_model % num_heads or (d_model // num_heads) % 2:
            fit = -(-d_model // (2 * num_heads)) * 2 * num_heads  # the next width that splits
            raise ValueError(
                f"d_model ({d_model}) must split into num_heads ({num_heads}) heads of even "
                f"width for rotary embedding; e.g. d_model={fit} with {num_heads} heads "
                f"(width {fit // num_heads})"
            )
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.norm = norm_layer(d_model)
        self.qkv = linear(d_model, 3 * d_model)
        self.proj = linear(d_model, d_model)
        inv_freq = rope_base ** (
            -torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim
        )
        # Not persistent: derived from the config, so checkpoints do not carry it.
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, T, D = x.shape
        qkv = self.qkv(self.norm(x)).view(B, T, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, H, T, Dh) each
        return q, k, v


class SelfAttention(RotaryAttentionBase):
    """Pre-norm multi-head self-attention with rotary positions, offline and streaming.

    Constructor arguments as :class:`RotaryAttentionBase` (``d_model``, ``num_heads``,
    ``rope_base``, ``norm_layer``).
    """

    def forward(
        self,
        x: Tensor,
        lengths: Tensor,
        context: Context,
        stride: int = 1,
        tokens: Lookahead | None = None,
    ) -> Tensor:
        """``x (B, T, D)`` -> ``(B, T, D)``; pad frames are masked as keys.

        ``stride`` is the full-rate frames per frame of ``x`` (2 in Squeezeformer's middle
        blocks): chunked contexts count full-rate frames. With ``tokens`` (a look-ahead
        context), ``x`` holds its tokens and their mask replaces ``lengths`` and ``context``.
        """
        B, T, D = x.shape
        qkv = self.qkv(self.norm(x)).view(B, T, 3, self.num_heads, self.head_dim)
        positions = torch.arange(T, device=x.device) if tokens is None else tokens.positions
        cos, sin = rotary_tables(positions, self.inv_freq, qkv.dtype)  # (T, Dh)
        # Queries and keys rotated in one pass, before the heads move ahead of time.
        qk = apply_rotary(qkv[:, :, :2], cos[:, None, None], sin[:, None, None])
        q, k = qk.permute(2, 0, 3, 1, 4)  # (B, H, T, Dh) each
        v = qkv[:, :, 2].transpose(1, 2)  # (B, H, T, Dh)
        if tokens is not None:
            keep = tokens.valid[:, None].to(q.dtype)
            if tokens.blocks is None:
                out = masked_attention(q, k, v, tokens.mask, keep)
            else:
                out = blocked_attention(q, k, v, tokens) * keep
        elif stride == 1 or context is None:
            out = attention(q, k, v, lengths, context)  # (B, H, T, Dh)
        else:
            pos = positions.expand(B, T)
            valid = frame_mask(lengths.to(x.device), T)
            out = cached_attention(q, k, v, pos, pos, valid, valid, context, stride)
        return self.proj(out.transpose(1, 2).reshape(B, T, D))

    def streaming_forward(
        self, x: Tensor, step: StreamStep, keys: Tensor, values: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Attend from a block of new frames to ``[cache, block]``.

        Args:
            x: ``(B, T, D)`` new frames.
            step: this step's :class:`StreamStep` (valid frames, positions' rotary tables,
                the mask under the context the streams run with).
            keys: ``(B, H, M, Dh)`` rotated keys of each stream's last M frames, oldest first;
                slots before the stream's first frame (position < 0) are masked.
            values: ``(B, H, M, Dh)``.

        Returns:
            ``(out (B, T, D), keys, values)`` with the caches advanced past the valid frames.
        """
        B, T, D = x.shape
        qkv = projected(self.qkv, normed(self.norm, x)).view(B, T, 3, self.num_heads, self.head_dim)
        cos, sin = step.cos, step.sin
        if cos.dtype != qkv.dtype:
            cos, sin = cos.to(qkv.dtype), sin.to(qkv.dtype)
        qk = apply_rotary(qkv[:, :, :2], cos, sin)  # queries and keys rotated in one pass
        q, k = qk.permute(2, 0, 3, 1, 4)  # (B, H, T, Dh) each
        v = qkv[:, :, 2].transpose(1, 2)
        q = q.contiguous()  # CPU attention on a strided q: 74 us instead of 38 (B=1, T=4)
        # (B, H, M + T, Dh); the next step's caches end past the frames the caches move past
        kept = step.advance if isinstance(step.advance, int) else None
        k_all, v_all = append(keys, k, 2, kept), append(values, v, 2, kept)
        keep = None if step.keep is None else step.keep[:, None].to(q.dtype)  # (B, 1, T, 1)
        out = masked_attention(q, k_all, v_all, step.mask, keep)
        M = step.cache_size  # the cache's newest slot becomes each stream's last real frame
        keys, values = take(k_all, step.advance, M, dim=2), take(v_all, step.advance, M, dim=2)
        return projected(self.proj, out.transpose(1, 2).reshape(B, T, D)), keys, values


class ConvModule(nn.Module):
    """Conformer convolution module: pointwise + GLU, depthwise, LayerNorm, SiLU, pointwise.

    Args:
        d_model: D.
        kernel: K, odd depthwise kernel size.
        causal: pad the depthwise convolution on the left by ``K - 1`` frames, so a frame
            never sees later ones (a streaming cache then holds the last ``K - 1`` frames).
        norm_layer: the input normalization (Squeezeformer passes a learned scale and bias).
    """

    def __init__(
        self, d_model: int, kernel: int, causal: bool, norm_layer: NormLayer = nn.LayerNorm
    ):
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd (e.g. 9), got {kernel}")
        self.kernel = kernel
        self.padding = (kernel - 1, 0) if causal else ((kernel - 1) // 2, (kernel - 1) // 2)
        self.norm_in = norm_layer(d_model)
        self.pointwise_in = Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel, groups=d_model)
        self.norm_mid = nn.LayerNorm(d_model)
        self.pointwise_out = Linear(d_model, d_model)

    def forward(self, x: Tensor, valid: Tensor, tokens: Lookahead | None = None) -> Tensor:
        """``x (B, T, D)`` with ``valid (B, T, 1)`` float frame mask -> ``(B, T, D)``; with
        ``tokens`` (causal only), ``x`` holds its tokens, each convolved with its own taps."""
        x = F.glu(self.pointwise_in(self.norm_in(x)), dim=-1)  # (B, T, D)
        if tokens is not None:
            padded = F.pad(x * valid, (0, 0, 0, 1))  # a zero frame at index T
            weight = self.depthwise.weight[:, 0].t()  # (K, D)
            x = (padded[:, tokens.taps] * weight).sum(2) + self.depthwise.bias
            return self.pointwise_out(F.silu(self.norm_mid(x)))
        x = (x * valid).transpose(1, 2)  # (B, D, T); zeros stand in for padding
        x = self.depthwise(F.pad(x, self.padding)).transpose(1, 2)  # (B, T, D)
        return self.pointwise_out(F.silu(self.norm_mid(x)))

    def streaming_forward(
        self, x: Tensor, step: StreamStep, cache: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Causal mode only: ``x (B, T, D)`` new frames of ``step``, ``cache (B, K - 1, D)``
        the last depthwise inputs -> ``(out (B, T, D), new cache)``."""
        x = F.glu(projected(self.pointwise_in, normed(self.norm_in, x)), dim=-1)  # (B, T, D)
        if step.keep is not None:
            x = x * step.keep.to(x.dtype)
        joined = torch.cat([cache, x], dim=1)  # (B, K - 1 + T, D)
        if joined.shape[0] * x.shape[1] <= 1024:
            # The rows of a streaming step (up to 64 streams of 16 frames): the K taps as one
            # product and a sum over K, channels innermost so both run along D. A oneDNN depthwise
            # call costs a fixed ~140-200 us here: 1 stream of 4 / 16 frames 21 / 24 us against
            # 171 / 160, 64 streams of 4 frames 92 against 325; at 64 x 16 they tie and beyond
            # oneDNN wins (torch 2.14, 2 cores; taps innermost, as before, took 28 / 60 / 401 us).
            taps = joined.unfold(1, self.kernel, 1).transpose(2, 3)  # (B, T, K, D), a view
            weight = self.depthwise.weight[:, 0].t().contiguous()  # (K, D)
            out = (taps * weight).sum(2) + self.depthwise.bias
        else:
            out = self.depthwise(joined.transpose(1, 2)).transpose(1, 2)  # (B, T, D)
        cache = take(joined, step.advance, self.kernel - 1, dim=1)
        return projected(self.pointwise_out, F.silu(normed(self.norm_mid, out))), cache


class FeedForward(nn.Sequential):
    """Pre-norm feed-forward: norm, Linear(D, mult*D), SiLU, dropout, Linear(mult*D, D).

    ``norm_layer`` is the input normalization (LayerNorm; Squeezeformer: scale and bias);
    ``linear`` the layers' class, as in :class:`RotaryAttentionBase`.
    """

    def __init__(
        self,
        d_model: int,
        mult: int,
        dropout: float,
        norm_layer: NormLayer = nn.LayerNorm,
        linear: type[nn.Linear] = Linear,
    ):
        super().__init__(
            norm_layer(d_model),
            linear(d_model, mult * d_model),
            nn.SiLU(),
            nn.Dropout(dropout),
            linear(mult * d_model, d_model),
        )

    def forward(self, x: Tensor) -> Tensor:
        # Functions, not the four module calls (a few microseconds of a streaming step's layer);
        # the SiLU module stays in the sequence, whose indices are the checkpoint keys.
        norm, up, _, dropout, down = self
        return projected(down, dropped(dropout, F.silu(projected(up, normed(norm, x)))))


def as_context(value: Sequence[int] | None) -> Context:
    """A validated, hashable ``(left, right)`` or ``(left, right, ahead)`` (recipes give YAML
    lists; a zero look-ahead is dropped) or ``None``."""
    context = None if value is None else tuple(int(v) for v in value)
    check_context(context)
    if context is not None and len(context) == 3 and context[2] == 0:
        context = context[:2]
    return context


def sample_context(contexts: Sequence[Context], probs: Tensor | None = None) -> Context:
    """One of ``contexts``, drawn with torch's global generator (seeded by the trainer):
    uniformly, or with ``probs`` (one per context, summing to 1)."""
    if probs is None:
        return contexts[int(torch.randint(len(contexts), ()))]
    return contexts[int(torch.multinomial(probs, 1))]


def call_context(encoder: nn.Module, att_context: Sequence[int] | None | str) -> Context:
    """The context one ``forward`` call of a streaming encoder runs with: ``att_context`` when
    given (``None``: full context); for ``"auto"`` one drawn from the encoder's
    ``att_contexts`` in training mode, else its ``att_context``."""
    if att_context != "auto":
        return as_context(att_context)
    if encoder.training and encoder.att_contexts:
        return sample_context(encoder.att_contexts, encoder.att_context_probs)
    return encoder.att_context


def training_contexts(
    att_contexts: Sequence[Sequence[int] | None] | None, probs: Sequence[float] | None
) -> tuple[list[Context] | None, Tensor | None]:
    """An encoder's ``att_contexts`` as contexts and ``att_context_probs`` as a tensor, checked
    (NeMo's names): ``None`` trains with the inference context, and ``None`` probabilities draw
    uniformly."""
    contexts = None if att_contexts is None else [as_context(c) for c in att_contexts]
    if contexts is not None and not contexts:
        raise ValueError("att_contexts must list at least one context, or be None")
    if probs is None:
        return contexts, None
    if contexts is None or len(probs) != len(contexts):
        raise ValueError(
            f"att_context_probs needs one probability per entry of att_contexts, got "
            f"{list(probs)} for {contexts}"
        )
    t = torch.tensor([float(p) for p in probs], dtype=torch.float64)
    if bool((t < 0).any()) or abs(float(t.sum()) - 1.0) > 1e-6:
        raise ValueError(f"att_context_probs must be non-negative and sum to 1, got {list(probs)}")
    return contexts, t


def stream_context(context: Context, causal: bool, who: str) -> tuple[int, ...]:
    """The ``(left, right)`` a stream runs with; explains what makes a model unstreamable."""
    if not causal:
        raise ValueError(
            f"{who} was built with causal=False: its convolutions look at future frames, so "
            "streaming could not match offline results; train (or build) it with causal=True"
        )
    if context is None or context[0] < 0:
        raise ValueError(
            f"{who} streams with a chunked context of finite left size, got att_context="
            f"{context}; pass att_context=(left, right) with left >= 0, e.g. (70, 13) for "
            "14-frame chunks and 5 chunks of history (the context the model was trained with)"
        )
    return context


def cache_frames(context: tuple[int, ...], stride: int = 1) -> int:
    """Frames an attention cache keeps at a layer of ``stride`` full-rate frames per frame.

    Chunked-limited attention reaches back ``left // (right + 1)`` whole chunks; at half the
    frame rate those chunks hold ``ceil(... / 2)`` frames at most.
    """
    left, right = context[:2]
    size = right + 1
    frames = (left // size) * size  # full-rate frames in the reachable earlier chunks
    return (frames + stride - 1) // stride
