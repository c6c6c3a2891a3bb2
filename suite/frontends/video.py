"""The video frontend: pick a clip's frames and resize and normalize them for a video encoder.

Dims legend: B - batch, N - frames kept (at most ``num_frames``), T - frames given, C - channels,
H/W - height/width.

A clip arrives as ``(T, C, H, W)`` frames, uint8 (0-255) or float (0-1). :meth:`VideoFrontend.
prepare` keeps at most ``num_frames`` of them, evenly spread over the clip (a clip with fewer
keeps all: its ``lengths`` entry counts them), and resizes each with the image frontend it holds
(:class:`~suite.frontends.image.ImageFrontend`, same channels rules); ``forward`` normalizes a
padded batch ``(B, N, C, H, W)``. Encoders of videos (``patch_video``) are told ``num_frames``,
``img_size`` and ``in_chans`` by :func:`suite.model.encoder_inputs`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from suite.frontends.image import ImageError, ImageFrontend
from suite.interfaces import Frontend
from suite.registry import register_frontend


def frame_indices(total: int, count: int) -> list[int]:
    """``min(total, count)`` frame indices spread evenly over ``total`` frames (the middle of
    each of ``count`` equal spans, as :func:`~suite.data.videos.read_video` picks by time)."""
    if total <= count:
        return list(range(total))
    return [int((i + 0.5) * total / count) for i in range(count)]


@register_frontend("video")
class VideoFrontend(Frontend):
    """Clips -> the normalized ``(B, N, C, H, W)`` floats a video encoder reads.

    Args:
        num_frames: the most frames kept per clip (N), evenly spread over it.
        input_size: frame ``H`` and ``W`` the encoder is built for (one int for square frames).
        channels: channels the encoder reads: 3 (RGB) or 1 (grayscale).
        mean: per-channel mean subtracted (default: ImageNet's, as the image frontend).
        std: per-channel standard deviation divided by (likewise).
    """

    def __init__(
        self,
        num_frames: int = 8,
        input_size: int | list[int] = 32,
        channels: int = 3,
        mean: list[float] | None = None,
        std: list[float] | None = None,
    ) -> None:
        super().__init__()
        if num_frames < 1:
            raise ImageError(f"num_frames must be at least 1, got {num_frames}")
        self.num_frames = num_frames
        self.image = ImageFrontend(input_size, channels, mean, std)
        self.input_size, self.channels = self.image.input_size, channels

    def prepare(self, frames: Tensor) -> Tensor:
        """One clip ``(T, C, H, W)``, uint8 or float in [0, 1] -> float ``(N, channels, H',
        W')`` in [0, 1] at ``input_size``, ``N = min(T, num_frames)``."""
        if frames.dim() != 4 or frames.shape[0] == 0:
            raise ImageError(
                f"expected one clip of frames (T, C, H, W) with T >= 1, got shape "
                f"{tuple(frames.shape)}"
            )
        kept = frame_indices(frames.shape[0], self.num_frames)
        return torch.stack([self.image.prepare(frames[t]) for t in kept])

    def batch(self, clips: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Prepared clips ``(N_i, C, H, W)`` -> normalized ``(B, N, C, H, W)``, zeros past
        each clip's frames, and its frame ``lengths (B,)``."""
        lengths = torch.tensor([len(c) for c in clips], dtype=torch.long)
        C, (H, W) = self.channels, self.input_size
        x = torch.zeros(len(clips), int(lengths.max()), C, H, W)  # (B, N, C, H, W)
        for row, clip in enumerate(clips):
            x[row, : len(clip)] = self.image.normalize(clip)
        return x, lengths

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x (B, N, C, H, W)`` uint8 or float in [0, 1] -> normalized float ``(B, N, C, H',
        W')`` and ``lengths`` (unchanged; all ``N`` frames when ``None``)."""
        if x.dim() != 5 or x.shape[2] != self.channels:
            raise ImageError(
                f"the video frontend takes (B, N, {self.channels}, H, W), got {tuple(x.shape)}"
            )
        B, N = x.shape[:2]
        frames = self.image(x.flatten(0, 1))[0]  # (B*N, C, H', W'), normalized
        if lengths is None:
            lengths = torch.full((B,), N, dtype=torch.long, device=x.device)
        return frames.unflatten(0, (B, N)), lengths

    def normalize(self, x: Tensor) -> Tensor:
        """``(B, N, C, H, W)`` in [0, 1] -> normalized."""
        return self.image.normalize(x.flatten(0, 1)).unflatten(0, x.shape[:2])
