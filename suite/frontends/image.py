"""The image frontend: resize and normalize images for an image encoder (torchvision v2).

Dims legend: B - batch, C - channels, H/W - height/width.

Images arrive as ``uint8`` (0-255) or float (0-1) tensors, one ``(C, H, W)`` or ``(H, W)`` at a
time (:meth:`ImageFrontend.prepare`, which also converts grayscale and RGB into the encoder's
channels) or batched ``(B, C, H, W)`` (``forward``). The output is float, resized to
``input_size`` (unless ``resize=False``, for encoders that take variable sizes) and normalized
per channel with ``mean``/``std`` (ImageNet's by default, as timm's models expect);
:meth:`ImageFrontend.unnormalize` undoes that for display.
"""

from __future__ import annotations

import torch
from torch import Tensor

from suite.errors import UserError
from suite.interfaces import Frontend
from suite.registry import register_frontend

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageError(UserError, ValueError):
    """An image the frontend cannot take; the message says what was expected."""


def _pair(size: int | list[int] | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if len(size) != 2 or not all(isinstance(s, int) for s in size):
        raise ImageError(f"input_size must be one int or [H, W], got {size!r}")
    return int(size[0]), int(size[1])


@register_frontend("image")
class ImageFrontend(Frontend):
    """Images -> the normalized ``(B, C, H, W)`` floats an image encoder reads.

    Args:
        input_size: ``H`` and ``W`` the encoder is built for (one int for square images).
        channels: channels the encoder reads: 3 (RGB) or 1 (grayscale).
        mean: per-channel mean subtracted (default: ImageNet's; its average for 1 channel).
        std: per-channel standard deviation divided by (default: ImageNet's, likewise).
        resize: resize every image to ``input_size``; ``False`` keeps each batch's own size
            (for encoders that take variable sizes).
    """

    def __init__(
        self,
        input_size: int | list[int] = 32,
        channels: int = 3,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        resize: bool = True,
    ) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ImageError(f"channels must be 3 (RGB) or 1 (grayscale), got {channels}")
        self.input_size = _pair(input_size)
        self.channels = channels
        self.resize = resize
        mean = list(mean) if mean is not None else list(IMAGENET_MEAN)
        std = list(std) if std is not None else list(IMAGENET_STD)
        if channels == 1 and mean == list(IMAGENET_MEAN):
            mean = [sum(mean) / 3]
        if channels == 1 and std == list(IMAGENET_STD):
            std = [sum(std) / 3]
        if len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise ImageError(
                f"mean and std need {channels} values (std > 0), got mean={mean}, std={std}"
            )
        # Not saved with the weights: they are the recipe's numbers, rebuilt from the config.
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def prepare(self, image: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """One image ``(C, H, W)`` or ``(H, W)``, uint8 or float in [0, 1] -> float
        ``(channels, H', W')`` in [0, 1] at ``size`` (default: ``input_size`` when resizing,
        else its own size); grayscale becomes RGB (copied) or RGB grayscale (luminance)."""
        import torchvision.transforms.v2.functional as TF  # here: importing it takes seconds

        if image.dim() == 2:
            image = image[None]
        if image.dim() != 3 or image.numel() == 0:
            raise ImageError(
                f"expected one image (C, H, W) or (H, W), got shape {tuple(image.shape)}"
            )
        image = _to_float(image)
        C = image.shape[0]
        if C == 4:
            raise ImageError("got an RGBA image (4 channels); drop the alpha channel first")
        if C == self.channels:
            pass
        elif C == 1 and self.channels == 3:
            image = image.expand(3, -1, -1)
        elif C == 3 and self.channels == 1:
            image = TF.rgb_to_grayscale(image)
        else:
            raise ImageError(
                f"expected images with 1 or 3 channels (this frontend gives {self.channels}), "
                f"got {C}"
            )
        size = size or (self.input_size if self.resize else None)
        if size is not None and tuple(image.shape[-2:]) != tuple(size):
            image = TF.resize(image, list(size), antialias=True).clamp(0, 1)
        return image.contiguous()

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x (B, C, H, W)`` uint8 or float in [0, 1] -> normalized float ``(B, C, H', W')``
        and ``lengths`` (unchanged; full rows ``H'`` when ``None``)."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ImageError(
                f"the image frontend takes (B, {self.channels}, H, W), got {tuple(x.shape)}; "
                "use prepare() on single images of other channel counts"
            )
        import torchvision.transforms.v2.functional as TF

        x = _to_float(x)
        if self.resize and tuple(x.shape[-2:]) != self.input_size:
            x = TF.resize(x, list(self.input_size), antialias=True).clamp(0, 1)
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[-2], dtype=torch.long, device=x.device)
        return self.normalize(x), lengths

    def normalize(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` in [0, 1] -> normalized."""
        return (x - self.mean) / self.std

    def unnormalize(self, x: Tensor) -> Tensor:
        """Normalized ``(B, C, H, W)`` -> [0, 1] (clamped), for display."""
        return (x * self.std + self.mean).clamp(0, 1)


def _to_float(image: Tensor) -> Tensor:
    if image.dtype == torch.uint8:
        return image.float() / 255
    if not image.is_floating_point():
        raise ImageError(f"expected uint8 (0-255) or float (0-1) images, got {image.dtype}")
    return image.float()
