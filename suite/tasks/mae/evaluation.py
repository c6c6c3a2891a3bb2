"""Evaluation of masked-autoencoder pretraining: the reconstruction loss on held-out images
under fixed masks, and a grid of reconstructions written as a PNG.

Dims legend: B - batch, C/H/W - image channels/height/width.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from suite.data.images import ImageManifest
from suite.encoders.mae import MaskedAutoencoder
from suite.io import atomic_path
from suite.tasks.mae.dataset import image_batch

GRID_COLUMNS = ("original", "masked", "reconstruction", "reconstruction + visible")
GRID_PADDING = 2


@torch.no_grad()
def reconstruction_loss(
    model: MaskedAutoencoder,
    items: ImageManifest,
    batch_size: int = 64,
    seed: int = 0,
) -> float:
    """The mean loss over ``items`` with masks drawn from ``seed`` (the same every call)."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for start in range(0, len(items), batch_size):
        indices = range(start, min(start + batch_size, len(items)))
        images = image_batch(items, indices, model.frontend).inputs.to(device)
        total += float(model(images, generator=generator).loss) * len(indices)
        count += len(indices)
    return total / max(count, 1)


@torch.no_grad()
def reconstruction_grid(
    model: MaskedAutoencoder, images: Tensor, seed: int = 0, scale: int | None = None
) -> Tensor:
    """One row per image of :data:`GRID_COLUMNS`, un-normalized: ``(3, H', W')`` in [0, 1].

    Args:
        model: the masked autoencoder (with its frontend, to undo the normalization).
        images: normalized ``(B, C, H, W)``.
        seed: the masks' seed.
        scale: pixels per image pixel (default: tiles of at least 64 pixels).
    """
    from torchvision.utils import make_grid

    out = model(images, generator=torch.Generator().manual_seed(seed))
    recon = model.reconstruct(images, out)  # (B, C, H, W), normalized space
    hidden = model.mask_image(images, out.mask)  # 1 where hidden
    show = model.frontend.unnormalize
    original, predicted = show(images), show(recon)
    masked = original * (1 - hidden) + 0.5 * hidden  # hidden patches grey
    pasted = original * (1 - hidden) + predicted * hidden
    tiles = torch.stack([original, masked, predicted, pasted], dim=1).flatten(0, 1)  # (4B, ...)
    if tiles.shape[1] == 1:
        tiles = tiles.expand(-1, 3, -1, -1)
    scale = scale or max(1, -(-64 // images.shape[-2]))
    tiles = tiles.repeat_interleave(scale, -2).repeat_interleave(scale, -1)
    return make_grid(tiles.float().cpu(), nrow=len(GRID_COLUMNS), padding=GRID_PADDING, pad_value=1)


def write_png(image: Tensor, path: str | Path) -> Path:
    """Write ``image (3, H, W)`` in [0, 1] as a PNG (atomically); returns ``path``."""
    from PIL import Image

    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")
    return Path(path)


def grid_size(num_images: int, height: int, width: int, scale: int) -> tuple[int, int]:
    """``(H', W')`` of :func:`reconstruction_grid` for ``num_images`` of ``height x width``."""
    pad = GRID_PADDING
    return (
        num_images * (height * scale + pad) + pad,
        len(GRID_COLUMNS) * (width * scale + pad) + pad,
    )
