"""What :func:`suite.load` gives for a ``caption`` package: images in, captions out.

Dims legend: B - batch, C/H/W - the frontend's channels and ``input_size``, T - encoder tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from suite.data.images import ImageDataError, read_image
from suite.errors import UserError
from suite.model import TaskModel


def _one_image(image: Any, where: str) -> Tensor:
    """``image`` as ``(C, H, W)`` uint8 or float in [0, 1], or a teaching error naming it."""
    if isinstance(image, np.ndarray) and not image.flags.writeable:
        image = image.copy()  # np.asarray(PIL image) is read-only; torch warns on those
    try:
        tensor = read_image(image)
    except ImageDataError as e:
        raise ImageDataError(f"{where}: {e}") from None
    if tensor.is_floating_point():
        if not bool(torch.isfinite(tensor).all()):
            raise ImageDataError(f"{where} holds NaN or infinite values")
        low, high = float(tensor.min()), float(tensor.max())
        if low < 0 or high > 1:
            raise ImageDataError(
                f"{where} is a float image with values in [{low:g}, {high:g}]; float images "
                "must lie in [0, 1]: divide 0-255 values by 255, or pass uint8"
            )
    elif tensor.dtype != torch.uint8:
        raise ImageDataError(
            f"{where} has dtype {tensor.dtype}; pass uint8 (0-255) or float (0-1) images"
        )
    return tensor


def as_image_list(images: Any) -> list[Any]:
    """A list of single images from what a user may pass: a list (or tuple) of paths, PIL
    images, arrays or tensors; one path; or a batch ``(B, C, H, W)`` tensor or ``(B, H, W, C)``
    array."""
    if isinstance(images, (str, Path)):
        return [images]
    if isinstance(images, Tensor) and images.dim() == 4:
        return list(images.unbind(0))
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    if isinstance(images, (list, tuple)):
        return list(images)
    raise UserError(
        f"give a list of images (paths, PIL images, arrays or tensors) or a batch tensor "
        f"(B, C, H, W), not a single {type(images).__name__}; wrap one image in a list"
    )


class Captioner:
    """Captions images with a ``caption`` package's model.

    Images are paths, PIL images, ``(H, W[, C])`` arrays or ``(C, H, W)`` tensors (uint8, or
    float in [0, 1]), or one ``(B, C, H, W)`` batch; grayscale and RGB are converted to the
    model's channels and every image is resized to its ``input_size``.

    Args:
        model: the loaded task model (image frontend, encoder, AED or LLM-adapter head).
        name: where it was loaded from (shown in messages).
    """

    def __init__(self, model: TaskModel, name: str = "") -> None:
        self.model, self.name = model, name

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def prepare(self, images: Any) -> Tensor:
        """Normalized ``(B, C, H, W)`` on the model's device."""
        items = as_image_list(images)
        if not items:
            raise UserError("no images given; pass a non-empty list")
        frontend = self.model.frontend
        tensors = []
        for i, image in enumerate(items):
            where = str(image) if isinstance(image, (str, Path)) else f"image {i}"
            tensor = _one_image(image, where)
            try:
                tensors.append(frontend.prepare(tensor))
            except UserError as e:
                raise ImageDataError(f"{where}: {e}") from None
        return frontend.normalize(torch.stack(tensors).to(self.device))

    @torch.inference_mode()
    def caption(
        self,
        images: Any,
        head: str | None = None,
        method: str = "greedy",
        beam_size: int = 4,
        batch_size: int = 32,
        **options: Any,
    ) -> list[str]:
        """One caption per image, in order.

        Args:
            images: see the class docstring.
            head: which head decodes (default: the first).
            method: ``"greedy"`` or ``"beam"`` (batched, with the head's KV cache).
            beam_size: hypotheses kept per image by ``"beam"``.
            batch_size: images encoded and decoded at once.
            options: more of the head's decoding options (e.g. ``length_penalty``).
        """
        return [
            h.text for h in self.hypotheses(images, head, method, beam_size, batch_size, **options)
        ]

    @torch.inference_mode()
    def hypotheses(
        self,
        images: Any,
        head: str | None = None,
        method: str = "greedy",
        beam_size: int = 4,
        batch_size: int = 32,
        **options: Any,
    ) -> list[Any]:
        """As :meth:`caption`, with the heads' :class:`~suite.interfaces.Hypothesis` (tokens,
        score)."""
        self.model.eval()
        x = self.prepare(images)  # (B, C, H, W)
        name = head or next(iter(self.model.heads))
        if name not in self.model.heads:
            raise UserError(f"no head '{name}'; this model's heads: {', '.join(self.model.heads)}")
        if "caption" in getattr(self.model.heads[name], "task_ids", {}):
            options.setdefault("task", "caption")  # an AED head that also knows other tasks
        out = []
        for start in range(0, x.shape[0], batch_size):
            chunk = x[start : start + batch_size]
            lengths = torch.full((chunk.shape[0],), chunk.shape[-2], dtype=torch.long)
            out += self.model.recognize(
                chunk, lengths.to(chunk.device), name, method=method, beam_size=beam_size, **options
            )
        return out

    def __repr__(self) -> str:
        heads = ", ".join(self.model.heads)
        size = "x".join(map(str, self.model.frontend.input_size))
        params = sum(p.numel() for p in self.model.parameters())
        where = self.name or "model"
        return f"Captioner({where}: {size} px, heads {heads}, {params / 1e6:.1f}M parameters)"
