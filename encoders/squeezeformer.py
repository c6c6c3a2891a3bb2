"""Squeezeformer encoder, offline and cache-aware streaming.

Implements "Squeezeformer: An Efficient Transformer for Automatic Speech Recognition" (Kim et al.,
NeurIPS 2022), with the causal, chunked-context streaming of "Stateful Conformer with Cache-based
Inference for Streaming ASR" (Noroozi et al., 2024) that the paper does not cover.

Dims legend: B - batch (streams), T - input frames, T' - encoder frames (T / 4), T'' - reduced
frames (ceil(T' / 2)), F - input feature bins, D - model width, H - heads, Dh - head width,
K - depthwise kernel, M - cached frames.

As in the paper:
    * Depthwise-separable subsampling: a 3x3 stride-2 convolution, then a depthwise 3x3 stride-2
      plus pointwise convolution (4x in time, 40 ms frames).
    * Temporal U-Net: before block ``reduce_at`` (default: the middle) a stride-2 depthwise +
      pointwise convolution halves the frame rate (80 ms); before block ``recover_at``
      (default: the last) the frames are repeated 2x, projected, and added to the activations
      saved before the reduction (the skip connection).
    * The simplified block: MF/CF structure (MHA, FF, Conv, FF), each module followed by its
      residual add and a post-LayerNorm; each module's input is scaled by a learned per-channel
      scale and bias in place of a pre-LayerNorm ("scaled residuals"). Full-step FF residuals.

What differs:
    * Rotary positions (as in ``conformer.py``) instead of relative positional encoding; the
      attention, rotary, convolution and feed-forward modules are those of ``suite.nn``, given
      :class:`ScaleBias` as their input normalization.
    * The convolution module keeps the Conformer's GLU (the paper unifies it to Swish) and
      LayerNorm instead of BatchNorm (batch statistics break padding invariance and streaming).
    * Time reduction kernel 3 (NeMo uses 5); with ``causal=True`` it pads two frames on the left,
      so reduced frame ``j`` sees full-rate frames ``2j - 2 .. 2j`` and streams with a two-frame
      cache. Upsampling maps full-rate frame ``t`` to reduced frame ``t // 2``, which is causal.
    * Chunked-limited attention in the reduced blocks counts full-rate frames: reduced frame
      ``j`` belongs to the chunk of full-rate frame ``2j``. No frame then sees past its chunk's
      right edge, any chunk size works (odd ones too), and a chunk's frames are ready when its
      full-rate frames are, so streaming equals offline exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from suite.encoders.cache_aware import CacheAwareEncoder, ConformerState, LayerCache
from suite.kernels.attention import Context
from suite.nn.attention import SelfAttention
from suite.nn.convolution import ConvModule, causal_stride2_step
from suite.nn.feedforward import FeedForward
from suite.nn.frames import frame_mask, take
from suite.nn.step import StreamStep
from suite.registry import register_encoder


class ScaleBias(nn.Module):
    """Learned per-channel ``x * weight + bias``: Squeezeformer's stand-in for a pre-LayerNorm.

    Args:
        d_model: D.
    """

    def __init__(self, d_model: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight + self.bias


class SqueezeformerBlock(nn.Module):
    """Squeezeformer block: MHA, FF, Conv, FF, each ``LayerNorm(x + module(scale * x + bias))``.

    Args:
        d_model: D.
        num_heads: H.
        ff_mult: feed-forward expansion.
        conv_kernel: K.
        dropout: dropout on every residual branch and inside the feed-forwards.
        causal: causal depthwise convolution.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        ff_mult: int,
        conv_kernel: int,
        dropout: float,
        causal: bool,
    ):
        super().__init__()
        self.attn = SelfAttention(d_model, num_heads, norm_layer=ScaleBias)
        self.norm_attn = nn.LayerNorm(d_model)
        self.ff1 = FeedForward(d_model, ff_mult, dropout, norm_layer=ScaleBias)
        self.norm_ff1 = nn.LayerNorm(d_model)
        self.conv = ConvModule(d_model, conv_kernel, causal, norm_layer=ScaleBias)
        self.norm_conv = nn.LayerNorm(d_model)
        self.ff2 = FeedForward(d_model, ff_mult, dropout, norm_layer=ScaleBias)
        self.norm_ff2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def _feed_forwards_after(self, x: Tensor, conv: Tensor) -> Tensor:
        x = self.norm_conv(x + self.dropout(conv))
        return self.norm_ff2(x + self.dropout(self.ff2(x)))

    def forward(
        self, x: Tensor, lengths: Tensor, valid: Tensor, context: Context, stride: int = 1
    ) -> Tensor:
        """``x (B, T, D)``, ``lengths (B,)``, ``valid (B, T, 1)`` -> ``(B, T, D)``.

        ``stride``: full-rate frames per frame of ``x`` (2 inside the U-Net's reduced part).
        """
        x = self.norm_attn(x + self.dropout(self.attn(x, lengths, context, stride)))
        x = self.norm_ff1(x + self.dropout(self.ff1(x)))
        return self._feed_forwards_after(x, self.conv(x, valid))

    def streaming_forward(
        self, x: Tensor, step: StreamStep, cache: LayerCache
    ) -> tuple[Tensor, LayerCache]:
        """One block on new frames ``x (B, T, D)`` of ``step``; ``cache`` is ``(keys, values,
        conv)`` as in :class:`SqueezeformerState`."""
        keys, values, conv = cache
        out, keys, values = self.attn.streaming_forward(x, step, keys, values)
        x = self.norm_attn(x + self.dropout(out))
        x = self.norm_ff1(x + self.dropout(self.ff1(x)))
        out, conv = self.conv.streaming_forward(x, step, conv)
        return self._feed_forwards_after(x, out), (keys, values, conv)


class TimeReduction(nn.Module):
    """Halve the frame rate: depthwise conv (kernel 3, stride 2) then a pointwise projection.

    ``L`` valid frames become ``ceil(L / 2)``; causal mode pads two frames on the left, so
    reduced frame ``j`` sees frames ``2j - 2 .. 2j``, otherwise ``2j - 1 .. 2j + 1``.

    Args:
        d_model: D.
        causal: pad on the left only (streaming caches the last two input frames).
    """

    def __init__(self, d_model: int, causal: bool):
        super().__init__()
        self.padding = (2, 0) if causal else (1, 1)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size=3, stride=2, groups=d_model)
        self.pointwise = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``x (B, T, D)``, ``lengths (B,)`` -> ``(B, ceil(T / 2), D)``, ``(B,)``."""
        x = (x * frame_mask(lengths, x.shape[1])[..., None].to(x.dtype)).transpose(1, 2)
        x = self.depthwise(F.pad(x, self.padding)).transpose(1, 2)  # (B, T'', D)
        return self.pointwise(x), torch.div(lengths + 1, 2, rounding_mode="floor")

    def streaming_forward(
        self, x: Tensor, lengths: Tensor, cache: Tensor, consumed: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Causal mode only. ``x (B, T, D)`` new frames (``T >= 1``), ``lengths (B,)``,
        ``cache (B, D, 2)`` the last two inputs, ``consumed (B,)`` inputs before this step ->
        ``(reduced (B, (T + 1) // 2, D), lengths (B,), new cache)``."""
        out, out_lengths, cache = causal_stride2_step(
            self.depthwise, x.transpose(1, 2), lengths, cache, consumed
        )  # (B, D, T'')
        return self.pointwise(out.transpose(1, 2)), out_lengths, cache


class TimeRecovery(nn.Module):
    """Restore the frame rate: full-rate frame ``t`` gets reduced frame ``t // 2``, projected.

    Args:
        d_model: D.
    """

    def __init__(self, d_model: int):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, T: int) -> Tensor:
        """``x (B, T'', D)`` -> ``(B, T, D)`` (projecting before repeating: same values)."""
        return self.proj(x).repeat_interleave(2, dim=1)[:, :T]

    def streaming_forward(
        self, x: Tensor, lengths: Tensor, cache: Tensor, offsets: Tensor, T: int
    ) -> tuple[Tensor, Tensor]:
        """Upsample a step's reduced frames to its ``T`` full-rate frames.

        Args:
            x: ``(B, T'', D)`` new reduced frames; stream ``b``'s first is reduced frame
                ``ceil(offsets[b] / 2)``.
            lengths: ``(B,)`` valid reduced frames.
            cache: ``(B, 1, D)`` the projection of each stream's previous reduced frame; an
                odd-aged stream's first full-rate frame ``2j + 1`` still belongs to it.
            offsets: ``(B,)`` full-rate frames emitted before this step.
            T: full-rate frames in this step.

        Returns:
            ``((B, T, D), new cache)``.
        """
        joined = torch.cat([cache, self.proj(x)], dim=1)  # (B, 1 + T'', D), [0] = previous
        first = torch.div(offsets + 1, 2, rounding_mode="floor")  # (B,) reduced index of x[:, 0]
        frames = offsets[:, None] + torch.arange(T, device=x.device)  # (B, T) full-rate index
        index = torch.div(frames, 2, rounding_mode="floor") - first[:, None] + 1  # into joined
        index = index.clamp(0, joined.shape[1] - 1)[..., None].expand(-1, -1, joined.shape[2])
        return joined.gather(1, index), take(joined, lengths, 1, dim=1)


@dataclass
class SqueezeformerState(ConformerState):
    """What :meth:`Squeezeformer.streaming_forward` carries between steps, for B streams.

    The fields of :class:`ConformerState` (per-layer ``keys``/``values``/``conv``; the blocks
    inside the U-Net run at half the frame rate, so their attention caches hold
    ``ceil(M / 2)`` frames), plus:

    Attributes:
        reduce: ``(B, D, 2)`` the time reduction's last two input frames.
        recover: ``(B, 1, D)`` the projection of each stream's newest reduced frame.
    """

    reduce: Tensor
    recover: Tensor


@register_encoder(
    "squeezeformer",
    presets={
        # Tests and smoke runs: 0.49M parameters.
        "tiny": {
            "d_model": 64,
            "num_layers": 4,
            "num_heads": 2,
            "conv_kernel": 15,
            "subsampling_channels": 64,
        },
        # Squeezeformer-XS widths (d_model 144, 4 heads) with 12 blocks instead of 16: 6.1M
        # parameters, the same package budget (< 25 MB fp32 with a CTC head) as conformer
        # "small". 64 subsampling channels as there: the convolutions on 100 frames/s are
        # memory-bound on CPU.
        "small": {
            "d_model": 144,
            "num_layers": 12,
            "num_heads": 4,
            "subsampling_channels": 64,
        },
    },
)
class Squeezeformer(CacheAwareEncoder):
    """Squeezeformer: 4x depthwise-separable subsampling, then a Temporal U-Net of blocks.

    Args:
        input_dim: F, feature bins per input frame.
        d_model: D, model width; also ``output_dim``.
        num_layers: number of blocks (at least 2).
        num_heads: attention heads; ``d_model / num_heads`` must be even (rotary pairs).
        ff_mult: feed-forward expansion factor.
        conv_kernel: K, odd depthwise kernel of the convolution module.
        subsampling_factor: time reduction of the front convolutions, a power of two.
        subsampling_channels: channels of the subsampling convolutions (default D).
        dropout: dropout on residual branches, inside feed-forwards and after subsampling.
        causal: make every time convolution causal; needed for streaming.
        causal_subsampling: ``False`` pads the subsampling symmetrically in a causal model
            (see :class:`~suite.encoders.cache_aware.CacheAwareEncoder`). ``None``: as
            ``causal``.
        att_context: ``None`` (full context) or ``(left, right)`` chunked-limited context in
            encoder (full-rate) frames, used at inference and streaming; defaults to the first
            of ``att_contexts`` when those are given.
        att_contexts: contexts to train with, one drawn per training-mode ``forward`` call.
        att_context_probs: how often each of ``att_contexts`` is drawn (``None``: uniformly).
        reduce_at: index of the first block at half rate (default ``num_layers // 2 - 1``, the
            paper's 7 of 16).
        recover_at: index of the first block back at full rate (default: the last block).
    """

    runs_lookahead = False  # block processing is built for the Conformer only

    def __init__(
        self,
        input_dim: int = 80,
        d_model: int = 144,
        num_layers: int = 16,
        num_heads: int = 4,
        ff_mult: int = 4,
        conv_kernel: int = 31,
        subsampling_factor: int = 4,
        subsampling_channels: int | None = None,
        dropout: float = 0.1,
        causal: bool = False,
        causal_subsampling: bool | None = None,
        att_context: Sequence[int] | None = None,
        att_contexts: Sequence[Sequence[int] | None] | None = None,
        att_context_probs: Sequence[float] | None = None,
        reduce_at: int | None = None,
        recover_at: int | None = None,
    ):
        super().__init__(
            input_dim,
            d_model,
            subsampling_factor,
            subsampling_channels,
            dropout,
            causal,
            causal_subsampling,
            att_context,
            att_contexts,
            att_context_probs,
        )
        self.reduce_at = max(num_layers // 2 - 1, 0) if reduce_at is None else reduce_at
        self.recover_at = num_layers - 1 if recover_at is None else recover_at
        if not 0 <= self.reduce_at < self.recover_at < num_layers:
            raise ValueError(
                f"the Temporal U-Net needs 0 <= reduce_at < recover_at < num_layers, got "
                f"reduce_at={self.reduce_at}, recover_at={self.recover_at}, num_layers="
                f"{num_layers}; use num_layers >= 2 and leave both unset for the paper's layout"
            )
        self.layers = nn.ModuleList(
            SqueezeformerBlock(d_model, num_heads, ff_mult, conv_kernel, dropout, causal)
            for _ in range(num_layers)
        )
        self.reduce = TimeReduction(d_model, causal)
        self.recover = TimeRecovery(d_model)

    def layer_stride(self, index: int) -> int:
        """2 for the blocks inside the U-Net (half the frame rate), else 1."""
        return 2 if self.reduce_at <= index < self.recover_at else 1

    def run_blocks(self, x: Tensor, lengths: Tensor, context: Context) -> Tensor:
        """The U-Net of blocks on subsampled frames ``x (B, T', D)`` with ``lengths (B,)``,
        padding frames zeroed at the end."""
        valid = frame_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)  # (B, T', 1)
        stride = 1
        for i, layer in enumerate(self.layers):
            if i == self.reduce_at:
                skip, skip_lengths, skip_valid = x, lengths, valid
                x, lengths = self.reduce(x, lengths)  # (B, T'', D)
                valid = frame_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)
                stride = 2
            if i == self.recover_at:
                x = skip + self.recover(x, skip.shape[1])  # (B, T', D)
                lengths, valid, stride = skip_lengths, skip_valid, 1
            x = layer(x, lengths, valid, context, stride)
        return x * valid

    def init_state(
        self, batch_size: int, device: Any = None, att_context: Sequence[int] | None = None
    ) -> SqueezeformerState:
        """The state of ``batch_size`` fresh streams (see
        :meth:`~suite.encoders.cache_aware.CacheAwareEncoder.init_state`)."""
        fields = self._fresh_state(batch_size, device, att_context)
        device, D = fields["seen"].device, self.output_dim
        return SqueezeformerState(
            **fields,
            reduce=torch.zeros(batch_size, D, 2, device=device),
            recover=torch.zeros(batch_size, 1, D, device=device),
        )

    def stream_blocks(
        self,
        block: Tensor,
        n: Tensor,
        pending: Tensor,
        state: SqueezeformerState,
        caches: list[LayerCache],
    ) -> tuple[Tensor, dict[str, Any]]:
        """The U-Net on a step's ready frames (see
        :meth:`~suite.encoders.cache_aware.CacheAwareEncoder.stream_blocks`); also advances
        the state's ``reduce`` and ``recover`` caches."""
        reduce, recover = state.reduce, state.recover
        T = block.shape[1]
        if T == 0:
            return block, {"reduce": reduce, "recover": recover}
        offsets = state.offsets
        step = full_rate = self._step(state, frame_mask(n, T), offsets)
        for i, layer in enumerate(self.layers):
            if i == self.reduce_at:
                skip = block
                block, n_reduced, reduce = self.reduce.streaming_forward(
                    block, n, reduce, offsets
                )  # (B, T'', D)
                first = torch.div(offsets + 1, 2, rounding_mode="floor")  # reduced offsets
                step = self._step(state, frame_mask(n_reduced, block.shape[1]), first, 2)
            if i == self.recover_at:
                up, recover = self.recover.streaming_forward(block, n_reduced, recover, offsets, T)
                block, step = skip + up, full_rate  # (B, T', D)
            block, caches[i] = layer.streaming_forward(block, step, caches[i])
        if full_rate.keep is not None:
            block = block * full_rate.keep.to(block.dtype)
        return block, {"reduce": reduce, "recover": recover}
