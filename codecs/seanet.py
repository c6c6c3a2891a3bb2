"""Causal SEANet encoder and decoder (SoundStream, EnCodec) that also run chunk by chunk.

Dims legend: B - batch, C - channels, S - audio samples, T - latent frames, D - latent width.

Every convolution is causal: a strided convolution pads ``(k - 1) * dilation - (stride - 1)``
zeros on the left (EnCodec's causal padding), so frame ``t`` ends at the last sample of its hop;
a transposed convolution drops the ``k - stride`` samples past the end, which only later frames
complete. Streaming keeps, per convolution, the inputs the next output still needs (or, for a
transposed convolution, the partial sums of the samples later frames add to), so concatenated
``step`` outputs equal the whole-signal ``forward`` (up to float rounding). State is a nested
list mirroring the module tree: a convolution's is ``[buffer]``, an activation's ``[]``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

State = list[Any]  # nested lists of tensors, mirroring the module tree


class CausalConv1d(nn.Module):
    """A weight-normalized causal ``Conv1d`` (``kernel_size >= stride``).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: taps.
        stride: hop between outputs (input length divisible by it: ``L // stride`` outputs).
        dilation: tap spacing.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.conv = weight_norm(
            nn.Conv1d(in_channels, out_channels, kernel_size, stride, dilation=dilation)
        )
        self.span = (kernel_size - 1) * dilation + 1  # inputs one output reads
        self.stride = stride
        self.pad = self.span - stride

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (self.pad, 0)))  # (B, C_in, L) -> (B, C_out, L // stride)

    def init_state(self, batch: int, device: Any = None, dtype: Any = None) -> State:
        """``[(B, C_in, pad)]`` zeros: the left padding the first output reads."""
        return [torch.zeros(batch, self.conv.in_channels, self.pad, device=device, dtype=dtype)]

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """New inputs ``(B, C_in, L)`` -> the outputs they complete; keeps the inputs later
        outputs still read."""
        x = torch.cat([state[0], x], -1)
        n = (x.shape[-1] - self.span) // self.stride + 1 if x.shape[-1] >= self.span else 0
        if n <= 0:
            return x.new_zeros(x.shape[0], self.conv.out_channels, 0), [x]
        y = self.conv(x[..., : (n - 1) * self.stride + self.span])
        return y, [x[..., n * self.stride :]]


class CausalConvTranspose1d(nn.Module):
    """A weight-normalized causal ``ConvTranspose1d``: ``T`` frames -> ``T * stride`` samples.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: taps (``>= stride``).
        stride: upsampling factor.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.conv = weight_norm(nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride))
        self.stride, self.tail = stride, kernel_size - stride

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)  # (B, C_out, (T - 1) * stride + kernel)
        return y[..., : y.shape[-1] - self.tail]

    def init_state(self, batch: int, device: Any = None, dtype: Any = None) -> State:
        """``[(B, C_out, kernel - stride)]`` zeros: partial sums of samples not yet complete."""
        return [torch.zeros(batch, self.conv.out_channels, self.tail, device=device, dtype=dtype)]

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        n = x.shape[-1] * self.stride
        if n == 0:
            return x.new_zeros(x.shape[0], self.conv.out_channels, 0), state
        y = F.conv_transpose1d(x, self.conv.weight, None, self.stride)  # no bias: added once
        y = torch.cat([y[..., : self.tail] + state[0], y[..., self.tail :]], -1)
        bias = self.conv.bias[:, None] if self.conv.bias is not None else 0
        return y[..., :n] + bias, [y[..., n:]]


class Activation(nn.Module):
    """A pointwise activation with the streaming interface (no state)."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def init_state(self, batch: int, device: Any = None, dtype: Any = None) -> State:
        return []

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        return self.fn(x), state


class FrameRMSNorm(nn.Module):
    """Each frame ``(B, C, T)`` divided by its root mean square over the channels: per frame,
    so chunked and whole-file outputs agree, and training and evaluation too."""

    def __init__(self, epsilon: float = 1e-5) -> None:
        super().__init__()
        self.epsilon = epsilon

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + self.epsilon)


class StreamingSequential(nn.ModuleList):
    """Layers applied in order, offline (``forward``) or chunk by chunk (``step``)."""

    def forward(self, x: Tensor) -> Tensor:
        for layer in self:
            x = layer(x)
        return x

    def init_state(self, batch: int, device: Any = None, dtype: Any = None) -> State:
        return [layer.init_state(batch, device, dtype) for layer in self]

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        new = []
        for layer, s in zip(self, state, strict=True):
            x, s = layer.step(x, s)
            new.append(s)
        return x, new


class ResidualUnit(nn.Module):
    """SEANet's residual unit: ``x + conv1x1(elu(conv_k_dilated(elu(x))))``; stride-1 causal
    convolutions keep the length, so the skip lines up in streaming too."""

    def __init__(self, channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        super().__init__()
        hidden = max(channels // 2, 1)
        self.block = StreamingSequential(
            [
                Activation(nn.ELU()),
                CausalConv1d(channels, hidden, kernel_size, dilation=dilation),
                Activation(nn.ELU()),
                CausalConv1d(hidden, channels, 1),
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)

    def init_state(self, batch: int, device: Any = None, dtype: Any = None) -> State:
        return self.block.init_state(batch, device, dtype)

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        y, state = self.block.step(x, state)
        return x + y, state


class SEANetEncoder(StreamingSequential):
    """Waveform ``(B, 1, S)`` -> latent ``(B, D, S // hop)``, ``hop = prod(ratios)``.

    Args:
        channels: width of the first convolution; doubled at each downsampling.
        latent_dim: D.
        ratios: downsampling factors, first to last (EnCodec's 16 kHz: ``[2, 4, 5, 8]``).
        dilations: one residual unit per dilation before each downsampling.
        kernel_size: the first and last convolutions' taps.
        latent_norm: end with :class:`FrameRMSNorm`, so the latent's scale is bounded (trained
            without it, nothing bounds it: l2-normalized codes and the decoder adapt to any).
    """

    def __init__(
        self,
        channels: int = 32,
        latent_dim: int = 128,
        ratios: tuple[int, ...] = (2, 4, 5, 8),
        dilations: tuple[int, ...] = (1, 3, 9),
        kernel_size: int = 7,
        latent_norm: bool = False,
    ) -> None:
        layers: list[nn.Module] = [CausalConv1d(1, channels, kernel_size)]
        width = channels
        for ratio in ratios:
            layers += [ResidualUnit(width, 3, d) for d in dilations]
            layers += [Activation(nn.ELU()), CausalConv1d(width, width * 2, 2 * ratio, ratio)]
            width *= 2
        layers += [Activation(nn.ELU()), CausalConv1d(width, latent_dim, 3)]
        if latent_norm:
            layers.append(Activation(FrameRMSNorm()))
        super().__init__(layers)


class SEANetDecoder(StreamingSequential):
    """Latent ``(B, D, T)`` -> waveform ``(B, 1, T * hop)``, mirroring :class:`SEANetEncoder`.

    Args:
        channels: width of the last stage; the first is ``channels * 2 ** len(ratios)``.
        latent_dim: D.
        ratios: upsampling factors, first to last (the encoder's reversed).
        dilations: one residual unit per dilation after each upsampling.
        kernel_size: the first and last convolutions' taps.
    """

    def __init__(
        self,
        channels: int = 32,
        latent_dim: int = 128,
        ratios: tuple[int, ...] = (8, 5, 4, 2),
        dilations: tuple[int, ...] = (1, 3, 9),
        kernel_size: int = 7,
    ) -> None:
        width = channels * 2 ** len(ratios)
        layers: list[nn.Module] = [CausalConv1d(latent_dim, width, kernel_size)]
        for ratio in ratios:
            layers += [
                Activation(nn.ELU()),
                CausalConvTranspose1d(width, width // 2, 2 * ratio, ratio),
            ]
            width //= 2
            layers += [ResidualUnit(width, 3, d) for d in dilations]
        layers += [Activation(nn.ELU()), CausalConv1d(width, 1, kernel_size)]
        super().__init__(layers)
