"""Videos in, captions out: what :class:`~suite.tasks.caption.Captioner` does for a package
whose frontend reads clips (``video``), and how the image and audio captioners tell a video
from what they read.

A video is a file FFmpeg decodes (mp4, avi, mkv, webm, animated GIF, ...; read with
:func:`~suite.data.videos.read_video_uint8`, which keeps the frontend's ``num_frames`` spread
evenly over the whole clip by time) or its frames: a ``(T, H, W, C)`` array or a ``(T, C, H,
W)`` tensor, uint8 or float in [0, 1], as :func:`~suite.data.videos.write_video` takes them; a
``(B, T, ...)`` batch of equal clips is several. A clip longer than the frontend's
``num_frames`` is captioned as a whole from that many frames, as the training clips are.

Dims legend: B - batch (clips), T - frames given, N - frames kept, C/H/W - channels, height and
width.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from suite.data.images import IMAGE_SUFFIXES
from suite.data.videos import VIDEO_SUFFIXES, VideoDataError, read_video_uint8
from suite.errors import UserError
from suite.model import TaskModel
from suite.tasks.caption.audio_pipeline import AUDIO_SUFFIXES, ModalityError

# Suffixes only a video reader takes: an animated GIF is an image to an image captioner.
ONLY_VIDEO_SUFFIXES = tuple(s for s in VIDEO_SUFFIXES if s not in IMAGE_SUFFIXES)
VIDEO_FIX = "or load a video captioner for videos"


def describe_video(item: Any, batched: bool = False) -> str | None:
    """What makes ``item`` a video (a video file's path, frames ``(T, ...)`` of 4 dims, or a
    batch of 5), or ``None``; ``batched``: a 4-D array is a batch of images, not a video."""
    if isinstance(item, (str, Path)) and Path(item).suffix.lower() in ONLY_VIDEO_SUFFIXES:
        return "a video file"
    if isinstance(item, (np.ndarray, Tensor)) and item.ndim >= (5 if batched else 4):
        return f"an array of shape {tuple(item.shape)}, a video's frames"
    return None


def _describe_other(item: Any) -> str | None:
    """What makes ``item`` an image or audio rather than a video, or ``None``."""
    if isinstance(item, (str, Path)):
        suffix = Path(item).suffix.lower()
        if suffix in IMAGE_SUFFIXES and suffix not in VIDEO_SUFFIXES:
            return "an image file"
        if suffix in AUDIO_SUFFIXES:
            return "an audio file"
    elif type(item).__module__.startswith("PIL."):
        return "a PIL image"
    elif isinstance(item, (np.ndarray, Tensor)) and item.ndim == 3:
        return f"an array of shape {tuple(item.shape)}, an image's layout"
    elif isinstance(item, (np.ndarray, Tensor)) and item.ndim in (1, 2):
        return f"an array of shape {tuple(item.shape)}, audio samples"
    return None


def as_video_list(inputs: Any) -> list[Any]:
    """A list of single clips from a path, one clip's frames (4 dims), a batch of clips (5
    dims), or a list of them."""
    if isinstance(inputs, (str, Path)):
        return [inputs]
    if isinstance(inputs, (np.ndarray, Tensor)):
        return list(inputs) if inputs.ndim == 5 else [inputs]
    if isinstance(inputs, (list, tuple)):
        return list(inputs)
    raise UserError(
        f"give a video file, a clip's frames ((T, H, W, C) array or (T, C, H, W) tensor) or a "
        f"list of them, not a {type(inputs).__name__}"
    )


def clip_frames(item: Any, where: str, name: str, num_frames: int) -> Tensor:
    """One clip as frames ``(T, C, H, W)`` (uint8, or float in [0, 1]); a file keeps
    ``num_frames`` spread over it. Raises :class:`ModalityError` for an image or audio,
    :class:`VideoDataError` for a file or array that is not a readable clip."""
    what = _describe_other(item)
    if what:
        raise ModalityError(
            f"{where} is {what}, but {name} captions videos: pass video files (mp4, avi, mkv, "
            "...) or frames as (T, H, W, C) arrays or (T, C, H, W) tensors, or load an image "
            "or audio captioner for those"
        )
    if isinstance(item, (str, Path)):
        return read_video_uint8(item, num_frames=num_frames)[0]
    if isinstance(item, np.ndarray):
        if item.ndim == 4 and item.shape[-1] in (1, 3, 4) and item.shape[1] not in (1, 3):
            item = item.transpose(0, 3, 1, 2)  # (T, H, W, C) -> (T, C, H, W)
        item = torch.from_numpy(np.ascontiguousarray(item))
    if not isinstance(item, Tensor):
        raise VideoDataError(
            f"{where} is a {type(item).__name__}; give a video file path or a clip's frames"
        )
    if item.dim() != 4 or item.shape[0] == 0:
        raise VideoDataError(
            f"{where} has shape {tuple(item.shape)}; a clip is (T, C, H, W) frames, T >= 1"
        )
    if item.is_floating_point():
        if not bool(torch.isfinite(item).all()):
            raise VideoDataError(f"{where} holds NaN or infinite values")
        low, high = float(item.min()), float(item.max())
        if low < 0 or high > 1:
            raise VideoDataError(
                f"{where} is a float clip with values in [{low:g}, {high:g}]; float frames "
                "must lie in [0, 1]: divide 0-255 values by 255, or pass uint8"
            )
    elif item.dtype != torch.uint8:
        raise VideoDataError(f"{where} has dtype {item.dtype}; pass uint8 or float (0-1) frames")
    return item


def caption_videos(
    model: TaskModel, inputs: Any, name: str, batch_size: int, head: str, **options: Any
) -> list[str]:
    """One caption per clip of ``inputs`` (see the module docstring), decoded in batches."""
    items = as_video_list(inputs)
    if not items:
        raise UserError("no videos given; pass a non-empty list")
    frontend = model.frontend
    device = next(model.parameters()).device
    clips = []
    for i, item in enumerate(items):
        where = str(item) if isinstance(item, (str, Path)) else f"video {i}"
        frames = clip_frames(item, where, name, frontend.num_frames)
        try:
            clips.append(frontend.prepare(frames))  # (N, C, H, W)
        except UserError as e:
            raise VideoDataError(f"{where}: {e}") from None
    texts: list[str] = []
    for first in range(0, len(clips), batch_size):
        x, lengths = frontend.batch(clips[first : first + batch_size])  # (B, N, C, H, W)
        hyps = model.recognize(x.to(device), lengths.to(device), head, **options)
        texts += [h.text for h in hyps]
    return texts
