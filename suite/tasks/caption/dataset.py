"""Scenes into batches of normalized images and tokenized captions.

Dims legend: B - batch, C/H/W - the frontend's channels and ``input_size``, U - caption tokens.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from suite.data.scenes import SceneManifest
from suite.frontends.image import ImageFrontend
from suite.interfaces import Batch, Tokenizer
from suite.text import normalize_text


def image_tensor(images: Sequence[Tensor], frontend: ImageFrontend) -> Tensor:
    """Images ``(C', H', W')`` (uint8 or float in [0, 1]) -> normalized ``(B, C, H, W)`` at the
    frontend's size and channels."""
    return frontend.normalize(torch.stack([frontend.prepare(image) for image in images]))


def caption_batch(
    scenes: SceneManifest,
    indices: Sequence[int],
    frontend: ImageFrontend,
    tokenizer: Tokenizer,
    seed: int | None = None,
) -> Batch:
    """The scenes at ``indices``: ``inputs (B, C, H, W)``, full ``lengths`` (rows ``H``),
    ``targets (B, U)`` padded with 0 and ``target_lengths``, ``texts`` and ``ids``. Each
    target is one of the scene's phrasings drawn from ``seed`` (its first caption when
    ``None``), so training sees every way of saying a scene."""
    texts, targets, target_lengths = caption_targets(scenes, indices, tokenizer, seed)
    x = image_tensor([scenes.load(i) for i in indices], frontend)  # (B, C, H, W)
    return Batch(
        inputs=x,
        lengths=torch.full((len(texts),), x.shape[-2], dtype=torch.long),
        targets=targets,
        target_lengths=target_lengths,
        texts=texts,
        ids=[scenes[i].id for i in indices],
        prompts=["caption"] * len(texts),
    )


def caption_targets(
    items: Sequence[Any],
    indices: Sequence[int],
    tokenizer: Tokenizer,
    seed: int | None = None,
    normalize: bool = False,
) -> tuple[list[str], Tensor, Tensor]:
    """The caption targets of ``items`` (rows with ``captions`` and ``caption``) at
    ``indices``: the texts, ``targets (B, U)`` padded with 0 and ``target_lengths (B,)``. Each
    text is one of the item's phrasings drawn from ``seed`` (its first when ``None``),
    normalized as the tokenizer reads text when ``normalize``."""
    rng = random.Random(seed) if seed is not None else None
    texts = []
    for i in indices:
        captions = items[i].captions or (items[i].caption,)
        texts.append(captions[rng.randrange(len(captions))] if rng else captions[0])
    if normalize:
        texts = [normalize_text(text) for text in texts]
    ids = [tokenizer.encode(text) for text in texts]
    U = max((len(x) for x in ids), default=0)
    targets = torch.zeros(len(ids), U, dtype=torch.long)
    for row, x in enumerate(ids):
        targets[row, : len(x)] = torch.tensor(x, dtype=torch.long)
    return texts, targets, torch.tensor([len(t) for t in ids], dtype=torch.long)


class CaptionDataset:
    """``dataset[(indices, seed)]`` (or ``dataset[indices]``) is ``make_batch(items, indices,
    frontend, tokenizer, seed)``; in training each batch draws its phrasings from its seed.

    Args:
        items: the split's scenes, sound scenes or clips.
        frontend: the model's frontend (inputs are prepared in the loader).
        tokenizer: the model's tokenizer.
        training: draw a random phrasing per item (else the first caption).
        make_batch: the modality's batch function: :func:`caption_batch` (images, the default),
            ``audio_caption_batch`` or ``video_caption_batch``.
    """

    def __init__(
        self,
        items: Any,
        frontend: Any,
        tokenizer: Tokenizer,
        training: bool,
        make_batch: Callable[..., Batch] = caption_batch,
    ) -> None:
        self.items, self.frontend, self.tokenizer = items, frontend, tokenizer
        self.training, self.make_batch = training, make_batch

    def __getitem__(self, item: Any) -> Batch:
        indices, seed = item if isinstance(item, tuple) else (item, 0)
        return self.make_batch(
            self.items, indices, self.frontend, self.tokenizer, seed if self.training else None
        )
