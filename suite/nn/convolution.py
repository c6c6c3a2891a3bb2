"""The Conformer convolution module and causal stride-2 convolution steps, offline and streaming.

Dims legend: B - batch (streams), T - frames, D - model width, C - channels, K - depthwise
kernel, S - look-ahead tokens (:mod:`suite.nn.lookahead`).

Causal convolutions stream with a cache of their last inputs ("Stateful Conformer with
Cache-based Inference for Streaming ASR", Noroozi et al., 2024): ``K - 1`` frames for a
depthwise convolution, two for a kernel-3, stride-2 one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from suite.nn import NormLayer
from suite.nn.frames import same_value, take, time_mask
from suite.nn.lookahead import Lookahead
from suite.nn.step import StreamStep

# Outputs (batch x frames) up to which a depthwise convolution takes a product and a sum over
# its taps: a streaming step's few frames per stream, where a convolution kernel's fixed cost
# per call outweighs the arithmetic.
FEW_OUTPUTS = 1024


class DepthwiseConv1d(nn.Conv1d):
    """``nn.Conv1d(D, D, K, groups=D)`` without padding: ``(N, D, W)`` -> ``(N, D, W - K + 1)``.

    The same parameters and checkpoint keys as ``nn.Conv1d``. Up to :data:`FEW_OUTPUTS` outputs
    it computes the K taps as one product and a sum over K, channels innermost so that both run
    along D, instead of calling the convolution kernel.

    Args:
        channels: D.
        kernel: K.
    """

    def __init__(self, channels: int, kernel: int):
        super().__init__(channels, channels, kernel, groups=channels)

    def forward(self, x: Tensor) -> Tensor:
        N, _, W = x.shape
        K = self.kernel_size[0]
        if N * (W - K + 1) > FEW_OUTPUTS:
            return super().forward(x)
        taps = x.transpose(1, 2).unfold(1, K, 1).transpose(2, 3)  # (N, W - K + 1, K, D), a view
        weight = self.weight[:, 0].t().contiguous()  # (K, D)
        return ((taps * weight).sum(2) + self.bias).transpose(1, 2)  # (N, D, W - K + 1)


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
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = DepthwiseConv1d(d_model, kernel)
        self.norm_mid = nn.LayerNorm(d_model)
        self.pointwise_out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, valid: Tensor, tokens: Lookahead | None = None) -> Tensor:
        """``x (B, T, D)`` with ``valid (B, T, 1)`` float frame mask -> ``(B, T, D)``; with
        ``tokens`` (causal only), ``x`` holds its tokens, each convolved with its own taps."""
        x = F.glu(self.pointwise_in(self.norm_in(x)), dim=-1)  # (B, T, D)
        if tokens is not None:
            padded = F.pad(x * valid, (0, 0, 0, 1))  # a zero frame at index S
            windows = padded[:, tokens.taps]  # (B, S, K, D): each token's inputs
            B, S, K, D = windows.shape
            x = self.depthwise(windows.view(B * S, K, D).transpose(1, 2)).reshape(B, S, D)
        else:
            x = (x * valid).transpose(1, 2)  # (B, D, T); zeros stand in for padding
            x = self.depthwise(F.pad(x, self.padding)).transpose(1, 2)  # (B, T, D)
        return self.pointwise_out(F.silu(self.norm_mid(x)))

    def streaming_forward(
        self, x: Tensor, step: StreamStep, cache: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Causal mode only: ``x (B, T, D)`` new frames of ``step``, ``cache (B, K - 1, D)``
        the last depthwise inputs -> ``(out (B, T, D), new cache)``."""
        x = F.glu(self.pointwise_in(self.norm_in(x)), dim=-1)  # (B, T, D)
        if step.keep is not None:
            x = x * step.keep.to(x.dtype)
        joined = torch.cat([cache, x], dim=1)  # (B, K - 1 + T, D)
        out = self.depthwise(joined.transpose(1, 2)).transpose(1, 2)  # (B, T, D)
        cache = take(joined, step.advance, self.kernel - 1, dim=1)
        return self.pointwise_out(F.silu(self.norm_mid(out))), cache


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
        x = x * time_mask(lengths, x, 2)
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
        joined = joined * time_mask(total, joined, 2)
    out_lengths = torch.div(total - 1, 2, rounding_mode="floor")
    return conv(joined), out_lengths, new_cache
