"""Images of a manifest into batches of normalized images for masked-autoencoder pretraining.

Dims legend: B - batch, C/H/W - the frontend's channels and ``input_size``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from suite.config import Recipe
from suite.data.images import ImageManifest, load_image_manifest
from suite.errors import UserError
from suite.frontends.image import ImageFrontend
from suite.interfaces import Batch

Augment = Callable[[Tensor], Tensor]


def image_batch(
    manifest: ImageManifest,
    indices: Sequence[int],
    frontend: ImageFrontend,
    augment: Augment | None = None,
    seed: int = 0,
) -> Batch:
    """The images at ``indices`` as a :class:`~suite.interfaces.Batch`: ``inputs (B, C, H, W)``
    normalized by ``frontend``, full ``lengths`` (rows ``H``), ``ids``. ``augment`` (on one
    float image in [0, 1], ending at ``input_size``) draws from ``seed`` alone."""
    images = []
    with torch.random.fork_rng(devices=[]):  # torchvision draws from the global generator
        torch.manual_seed(seed)
        for i in indices:
            image = manifest.load(i)  # uint8 (C', H', W')
            if augment is None:
                images.append(frontend.prepare(image))
            else:
                own = tuple(image.shape[-2:])
                images.append(augment(frontend.prepare(image, size=own)))
    sizes = {tuple(im.shape) for im in images}
    if len(sizes) > 1:
        raise UserError(
            f"images of different sizes {sorted(sizes)} cannot share a batch; let the image "
            "frontend resize them (model.frontend.resize=true)"
        )
    x = frontend.normalize(torch.stack(images))  # (B, C, H, W)
    lengths = torch.full((len(images),), x.shape[-2], dtype=torch.long)
    return Batch(inputs=x, lengths=lengths, ids=[manifest[i].id for i in indices])


def mae_augment(size: tuple[int, int], min_scale: float = 0.35) -> Augment:
    """MAE's pretraining augmentation: a random resized crop (area ``min_scale``-1) and a
    horizontal flip. MAE's 0.2 suits 224 px ImageNet; 32 px images keep more of the object."""
    import torchvision.transforms.v2 as T

    return T.Compose(
        [
            T.RandomResizedCrop(list(size), scale=(min_scale, 1.0), antialias=True),
            T.RandomHorizontalFlip(),
        ]
    )


def image_split(recipe: Recipe, split: str, held_out: int, task: str) -> ImageManifest | None:
    """The images of ``split`` (``None`` for a missing dev or test source). When ``data.dev``
    names the training source itself, the dev split is a seeded sample of ``held_out`` training
    images, and training never sees them (so checkpoints are never chosen on test images)."""
    data = recipe.data
    path = data.single_manifest(split, task)
    shared = split in ("train", "dev") and data.manifest("dev") == data.manifest("train")
    if split != "train" and not path.exists():
        return None
    items = load_image_manifest(path)
    if not shared:
        return items
    rest, held = items.split(min(held_out, len(items) // 2), seed=0)
    return rest if split == "train" else held


class ImageDataset:
    """``dataset[(indices, seed)]`` (or ``dataset[indices]``) is a batch of the manifest's
    images, augmented in training.

    Args:
        manifest: the split's images.
        frontend: the model's image frontend (resize, channels, normalization).
        training: augment (random resized crop, flip) with the batch's seed.
    """

    def __init__(self, manifest: ImageManifest, frontend: ImageFrontend, training: bool) -> None:
        self.manifest, self.frontend = manifest, frontend
        self.augment = mae_augment(frontend.input_size) if training else None

    def __getitem__(self, item: Any) -> Batch:
        indices, seed = item if isinstance(item, tuple) else (item, 0)
        return image_batch(self.manifest, indices, self.frontend, self.augment, seed)
