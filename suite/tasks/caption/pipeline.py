"""What :func:`suite.load` gives for a ``caption`` package: images, audio or videos in,
captions out.

The package's frontend says what the model reads: the ``image`` frontend images, an audio
frontend (``fbank``) audio (:mod:`suite.tasks.caption.audio_pipeline`: files or arrays, long
recordings window by window with timestamps), the ``video`` frontend clips
(:mod:`suite.tasks.caption.video_pipeline`: video files or frame arrays). An input of another
modality is refused with one message naming it and the modality the model expects.

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
from suite.frontends.video import VideoFrontend
from suite.model import TaskModel
from suite.tasks.caption.audio_pipeline import (
    AUDIO_SUFFIXES,
    WINDOW,
    CaptionSegment,
    ModalityError,
    caption_audio,
)
from suite.tasks.caption.video_pipeline import VIDEO_FIX, caption_videos, describe_video

__all__ = ["AUDIO_SUFFIXES", "CaptionSegment", "Captioner", "ModalityError", "model_modality"]


def model_modality(model: TaskModel) -> str:
    """``"video"`` for a model whose frontend reads clips (the ``video`` frontend),
    ``"audio"`` for one that reads samples (it has a ``sample_rate``), else ``"image"``."""
    if isinstance(model.frontend, VideoFrontend):
        return "video"
    return "audio" if hasattr(model.frontend, "sample_rate") else "image"


def _refuse_audio(item: Any, where: str, name: str, batched: bool = False) -> None:
    """A :class:`ModalityError` for an audio file or a 1-D array, or a video (a video file,
    frames of 4 dims; of 5 when ``batched``), given to the image captioner ``name``."""
    what = None
    if isinstance(item, (str, Path)) and Path(item).suffix.lower() in AUDIO_SUFFIXES:
        what = "an audio file"
    elif isinstance(item, (np.ndarray, Tensor)) and item.ndim == 1:
        what = f"a 1-D array of {item.shape[0]} values (audio samples?)"
    video = describe_video(item, batched)
    if what or video:
        fix = VIDEO_FIX if video else "or load an audio captioner for audio"
        raise ModalityError(
            f"{where} is {what or video}, but {name} captions images: pass image files, PIL "
            f"images or (H, W[, C]) arrays, {fix}"
        )


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


def prepare_images(model: TaskModel, images: Any, who: str) -> Tensor:
    """``images`` (see :class:`Captioner`) as the normalized ``(B, C, H, W)`` batch ``model``'s
    image frontend reads, on its device; ``who`` names the model in errors (an audio array
    given to an image model, an unreadable file, a float image outside [0, 1], ...)."""
    if isinstance(images, (np.ndarray, Tensor)):
        _refuse_audio(images, "the input array", who, batched=True)
    items = as_image_list(images)
    if not items:
        raise UserError("no images given; pass a non-empty list")
    frontend = model.frontend
    tensors = []
    for i, image in enumerate(items):
        where = str(image) if isinstance(image, (str, Path)) else f"image {i}"
        _refuse_audio(image, where, who)
        tensor = _one_image(image, where)
        try:
            tensors.append(frontend.prepare(tensor))
        except UserError as e:
            raise ImageDataError(f"{where}: {e}") from None
    device = next(model.parameters()).device
    return frontend.normalize(torch.stack(tensors).to(device))


class Captioner:
    """Captions images, audio or videos with a ``caption`` package's model (:attr:`modality`).

    Audio is a file path (wav, flac, ...) or an array of samples (with ``sample_rate``), or a
    list of them; see :meth:`caption`. Videos are file paths (mp4, avi, mkv, ...) or frames,
    ``(T, H, W, C)`` arrays or ``(T, C, H, W)`` tensors (uint8, or float in [0, 1]), or one
    ``(B, T, ...)`` batch, or a list of them (:mod:`~suite.tasks.caption.video_pipeline`).
    Images are paths, PIL images, ``(H, W[, C])`` arrays or ``(C, H, W)`` tensors (uint8, or
    float in [0, 1]), or one ``(B, C, H, W)`` batch; grayscale and RGB are converted to the
    model's channels and every image (or frame) is resized to its ``input_size``.

    Args:
        model: the loaded task model (image, audio or video frontend, encoder, AED or
            LLM-adapter head).
        name: where it was loaded from (shown in messages).
    """

    def __init__(self, model: TaskModel, name: str = "") -> None:
        self.model, self.name = model, name
        self.modality = model_modality(model)

    @property
    def _who(self) -> str:
        return f"this {self.modality} captioner" + (f" ({self.name})" if self.name else "")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def prepare(self, images: Any) -> Tensor:
        """Normalized ``(B, C, H, W)`` on the model's device."""
        return prepare_images(self.model, images, self._who)

    @torch.inference_mode()
    def caption(
        self,
        images: Any,
        head: str | None = None,
        method: str = "greedy",
        beam_size: int = 4,
        batch_size: int = 32,
        sample_rate: int | None = None,
        timestamps: bool = False,
        window: float = WINDOW,
        **options: Any,
    ) -> list[Any]:
        """One caption per image, recording or video, in order.

        A recording longer than ``window`` seconds is captioned window by window: its caption
        is the windows' captions joined by ``"; "``, or with ``timestamps=True`` the list of
        its :class:`CaptionSegment` (``start``, ``end`` in seconds, ``text``); every recording
        gives such a list then, one segment when it is short.

        Args:
            images: images, audio or videos (see the class docstring), as the model reads.
            head: which head decodes (default: the first).
            method: ``"greedy"`` or ``"beam"`` (batched, with the head's KV cache).
            beam_size: hypotheses kept per image by ``"beam"``.
            batch_size: images (or audio windows, or videos) encoded and decoded at once.
            sample_rate: the rate of audio arrays (files carry their own); resampled to the
                model's.
            timestamps: audio only: return each recording's windows with their times.
            window: audio only: seconds per captioned window.
            options: more of the head's decoding options (e.g. ``length_penalty``).

        Raises:
            ModalityError: an input of another modality than the model reads (an image given
                to an audio captioner, a video to an image one, ...).
            VideoDataError: a video file that is missing, empty, damaged or not a video.
        """
        if self.modality == "video":
            if timestamps:
                raise UserError("timestamps=True is for audio captioners; this one reads videos")
            self.model.eval()
            name = self._head(head, options)
            return caption_videos(
                self.model,
                images,
                self._who,
                batch_size,
                name,
                method=method,
                beam_size=beam_size,
                **options,
            )
        if self.modality == "audio":
            segments = self.caption_windows(
                images, sample_rate, window, head, method, beam_size, batch_size, **options
            )
            if timestamps:
                return segments
            return ["; ".join(s.text for s in windows) for windows in segments]
        if timestamps:
            raise UserError("timestamps=True is for audio captioners; this one reads images")
        return [
            h.text for h in self.hypotheses(images, head, method, beam_size, batch_size, **options)
        ]

    @torch.inference_mode()
    def caption_windows(
        self,
        audio: Any,
        sample_rate: int | None = None,
        window: float = WINDOW,
        head: str | None = None,
        method: str = "greedy",
        beam_size: int = 4,
        batch_size: int = 32,
        **options: Any,
    ) -> list[list[CaptionSegment]]:
        """Each recording's :class:`CaptionSegment` list (see :meth:`caption`)."""
        if self.modality != "audio":
            raise ModalityError(
                f"{self._who} captions {self.modality}s, not audio; load an audio captioner"
            )
        self.model.eval()
        name = self._head(head, options)
        return caption_audio(
            self.model,
            audio,
            sample_rate,
            self._who,
            window,
            batch_size,
            name,
            method=method,
            beam_size=beam_size,
            **options,
        )

    def _head(self, head: str | None, options: dict[str, Any]) -> str:
        name = head or next(iter(self.model.heads))
        if name not in self.model.heads:
            raise UserError(f"no head '{name}'; this model's heads: {', '.join(self.model.heads)}")
        if "caption" in getattr(self.model.heads[name], "task_ids", {}):
            options.setdefault("task", "caption")  # an AED head that also knows other tasks
        return name

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
        """As :meth:`caption` for images, with the heads'
        :class:`~suite.interfaces.Hypothesis` (tokens, score)."""
        if self.modality != "image":
            raise UserError(
                f"hypotheses() takes images; {self._who} reads {self.modality} (caption())"
            )
        self.model.eval()
        x = self.prepare(images)  # (B, C, H, W)
        name = self._head(head, options)
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
        if self.modality == "audio":
            size = f"{self.model.frontend.sample_rate} Hz audio"
        elif self.modality == "video":
            frames = self.model.frontend.num_frames
            size = "x".join(map(str, self.model.frontend.input_size)) + f" px, {frames} frames"
        else:
            size = "x".join(map(str, self.model.frontend.input_size)) + " px"
        params = sum(p.numel() for p in self.model.parameters())
        where = self.name or "model"
        return f"Captioner({where}: {size}, heads {heads}, {params / 1e6:.1f}M parameters)"
