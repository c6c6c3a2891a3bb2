"""Striding convolutional subsampling, offline and cache-aware streaming.

Dims legend: B - batch (streams), T - input frames, T' - output frames, F - feature bins,
C - channels, D - output width.

As FastConformer's (Rekesh et al., 2023; NeMo's ``dw_striding``): a full 3x3 stride-2
convolution, then depthwise-separable ones, flattened over frequency and mapped to D.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from suite.nn.convolution import causal_stride2_step
from suite.nn.frames import frame_mask, same_value, time_mask


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
        # The convolutions pad frequency; time is padded by the caller of each stage (offline)
        # or comes from the stage's cache (streaming).
        strided = {"kernel_size": 3, "stride": 2, "padding": (0, 1)}
        stages = [nn.Conv2d(1, channels, **strided)]
        for _ in range(self.num_stages - 1):
            stages.append(
                nn.Sequential(
                    nn.Conv2d(channels, channels, groups=channels, **strided),
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
        self.out = nn.Linear(channels * freq, d_model)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Exact ``(B,)`` output lengths: ``ceil(L / 2)`` per stage."""
        for _ in range(self.num_stages):
            lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
        return lengths

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Map ``x (B, T, F)`` with ``lengths (B,)`` to ``(B, T', D)`` and ``(B,)``."""
        pad = (2, 0) if self.causal else (1, 1)  # time padding of every stage's input
        # Padding frames are zeroed before each stage, so that valid outputs see the same zeros
        # as an unpadded input.
        x = x * frame_mask(lengths, x.shape[1])[..., None].to(x.dtype)
        x = F.pad(x, (0, 0, *pad))  # (B, pad[0] + T + pad[1], F)
        # A one-channel image with its channels innermost (the layout of every stage's input):
        # CPU convolutions run the depthwise stages fastest in it.
        x = x.unsqueeze(-1).permute(0, 3, 1, 2)  # (B, 1, pad[0] + T + pad[1], F), a view
        for i, stage in enumerate(self.stages):
            x = stage(x)  # (B, C, ceil(T / 2), ceil(F / 2)) before the ReLU
            lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
            if i + 1 < len(self.stages):
                x = self._next_input(x, lengths, pad)
            else:
                x = F.relu(x) if x.requires_grad else F.relu_(x)  # in place: nothing else reads it
        B, C, T, Fq = x.shape
        x = self.out(x.transpose(1, 2).reshape(B, T, C * Fq))  # (B, T', D)
        return x, lengths

    @staticmethod
    def _next_input(x: Tensor, lengths: Tensor, pad: tuple[int, int]) -> Tensor:
        """A stage's output ``x (B, C, T, F)`` as the next stage's input: the ReLU, padding
        frames zeroed, time padded by ``pad``."""
        if x.requires_grad:
            x = F.relu(x) * frame_mask(lengths, x.shape[2])[:, None, :, None].to(x.dtype)
            return F.pad(x, (0, 0, *pad))
        # Without autograd, the ReLU writes straight into a buffer that holds the padding too
        # (no second copy of a large activation), channels innermost as the stage's output.
        B, C, T, Fq = x.shape
        shape = (B, C, pad[0] + T + pad[1], Fq)
        out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
        out[:, :, : pad[0]] = 0.0
        out[:, :, pad[0] + T :] = 0.0
        torch.clamp(x, min=0.0, out=out[:, :, pad[0] : pad[0] + T])  # the ReLU
        for b, valid in enumerate(lengths.tolist()):
            out[b, :, pad[0] + valid : pad[0] + T] = 0.0
        return out

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
                    h = F.pad(h * time_mask(lengths, h, 2), (0, 0, 0, 1))
                    lengths = lengths + odd
            if h.shape[2] == 0:  # nothing new reaches this stage: later caches are unchanged
                new_cache.extend(cache[i:])
                return h.new_zeros(B, 0, self.out.out_features), lengths, new_cache
            h, out_lengths, stage_cache = causal_stride2_step(
                stage, h, lengths, cache[i], consumed
            )  # (B, C, (T+1)//2, F')
            # in place on the fresh output, as offline (not while recording for backward)
            h = F.relu(h) if h.requires_grad else F.relu_(h)
            new_cache.append(stage_cache)
            # the next stage's inputs so far (a non-causal one's: plus its delay frame)
            consumed = torch.div(consumed + 1, 2, rounding_mode="floor")
            lengths = out_lengths
        _, C, T, Fq = h.shape
        return self.out(h.transpose(1, 2).reshape(B, T, C * Fq)), lengths, new_cache
