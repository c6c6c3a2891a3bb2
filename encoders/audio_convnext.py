"""ConvNeXt over log-mel spectrograms: the audio encoder of CoNeTTE-style captioners.

After CoNeTTE (Labbé et al. 2023, "CoNeTTE: An efficient Audio Captioning system leveraging
multiple datasets with Task Embedding"), whose encoder is a ConvNeXt (Liu et al. 2022) run on
the log-mel spectrogram as a one-channel image, its last map averaged over frequency into one
token per time step for a transformer decoder. The blocks are timm's ``ConvNeXtBlock``; the
stem, downsampling and pooling are written here so that the time axis is padding-aware: every
map is zeroed past each item's frames at its own resolution, so an item's tokens are the same
in any batch as alone (the contract tests check it). What differs from CoNeTTE: no AudioSet
pretraining (the encoder trains from scratch with the captioner), and small widths for CPU.

The spectrogram is padded to a multiple of the total stride in time and frequency before the
stem, so that every 2 x 2 downsampling window is whole; an item of ``n`` frames gives
``ceil(n / stride)`` tokens (``stride = patch_size * 2 ** (stages - 1)``).

Dims legend: B - batch, T - input frames, F - mel bins, C - channels of a stage, f/t - a map's
frequency rows and time columns, D - ``output_dim`` (the last stage's width).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from suite.interfaces import Encoder, EncoderOutput
from suite.nn.frames import time_mask
from suite.registry import register_encoder


def _ceil_div(a: Tensor, b: int) -> Tensor:
    return -(-a // b)


@register_encoder(
    "audio_convnext",
    presets={
        # Tests: 16 bins, stride 16, 10k parameters.
        "tiny": {"input_dim": 16, "dims": [8, 16, 16, 32], "depths": [1, 1, 1, 1], "patch_size": 2},
        # 32 mel bins, stride 32 (640 ms tokens at a 20 ms hop), 1.0M parameters: a training
        # step of 16 ten-second scenes takes about 2 s on 2 CPU cores (64 bins at a 10 ms hop
        # and ConvNeXt-Atto's block counts: 10 s).
        "small": {"dims": [32, 64, 128, 256], "depths": [1, 1, 2, 1], "patch_size": 4},
    },
)
class AudioConvNextEncoder(Encoder):
    """Log-mel ``(B, T, F)`` -> ConvNeXt stages over ``(B, C, f, t)`` -> mean over frequency
    -> LayerNorm -> tokens ``(B, ceil(T / stride), D)``.

    Args:
        input_dim: F, mel bins of the frontend.
        dims: widths per stage; the last is ``output_dim``.
        depths: ConvNeXt blocks per stage.
        patch_size: the stem's patch (time and frequency); later stages halve both.
        kernel_size: the blocks' depthwise kernel.
        drop_path_rate: stochastic depth, rising linearly to this over the blocks.
        ls_init_value: the blocks' layer-scale initial value (timm's default).
    """

    def __init__(
        self,
        input_dim: int = 32,
        dims: Sequence[int] = (32, 64, 128, 256),
        depths: Sequence[int] = (1, 1, 2, 1),
        patch_size: int = 4,
        kernel_size: int = 7,
        drop_path_rate: float = 0.0,
        ls_init_value: float = 1e-6,
    ) -> None:
        from timm.layers import LayerNorm2d
        from timm.models.convnext import ConvNeXtBlock

        super().__init__()
        if len(dims) != len(depths) or not dims:
            raise ValueError(f"dims and depths need one entry per stage, got {dims} and {depths}")
        self.input_dim = int(input_dim)
        self.output_dim = int(dims[-1])
        self.stride = patch_size * 2 ** (len(dims) - 1)
        self.scales = [patch_size * 2**i for i in range(len(dims))]  # each stage's time stride
        self.stem = nn.Sequential(
            nn.Conv2d(1, dims[0], patch_size, stride=patch_size), LayerNorm2d(dims[0])
        )
        self.downsample = nn.ModuleList(
            nn.Sequential(LayerNorm2d(dims[i - 1]), nn.Conv2d(dims[i - 1], dims[i], 2, stride=2))
            for i in range(1, len(dims))
        )
        rates = [drop_path_rate * i / max(sum(depths) - 1, 1) for i in range(sum(depths))]
        self.stages = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
            first = sum(depths[:i])
            self.stages.append(
                nn.ModuleList(
                    ConvNeXtBlock(
                        dim,
                        kernel_size=kernel_size,
                        ls_init_value=ls_init_value,
                        drop_path=rates[first + j],
                    )
                    for j in range(depth)
                )
            )
        self.norm = nn.LayerNorm(self.output_dim)

    @property
    def layers(self) -> nn.ModuleList:
        """Every block: the units FSDP shards one by one (``suite.train``)."""
        return nn.ModuleList(block for stage in self.stages for block in stage)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return _ceil_div(lengths, self.stride)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> EncoderOutput:
        """``x (B, T, F)`` and frame ``lengths (B,)`` -> tokens ``(B, ceil(T/stride), D)`` and
        their ``lengths``."""
        if x.dim() != 3 or x.shape[-1] != self.input_dim:
            raise ValueError(
                f"audio_convnext takes log-mel features (B, T, {self.input_dim}), got "
                f"{tuple(x.shape)}; set input_dim to the frontend's n_mels"
            )
        B, T, Fd = x.shape
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=x.device)
        lengths = lengths.to(x.device).long()
        s = self.stride
        x = x * time_mask(lengths, x, 1)
        x = F.pad(x, (0, -Fd % s, 0, -T % s)).transpose(1, 2).unsqueeze(1)  # (B, 1, F', T')
        h = self.stem(x)  # (B, C, f, t)
        for i, blocks in enumerate(self.stages):
            if i:
                h = self.downsample[i - 1](h)
            valid = _ceil_div(lengths, self.scales[i])
            h = h * time_mask(valid, h, 3)
            for block in blocks:
                h = block(h) * time_mask(valid, h, 3)
        tokens = self.norm(h.mean(dim=2).transpose(1, 2))  # (B, t, D)
        out_lengths = self.output_lengths(lengths)
        return EncoderOutput(tokens * time_mask(out_lengths, tokens, 1), out_lengths)
