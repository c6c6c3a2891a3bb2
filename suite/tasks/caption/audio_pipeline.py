"""Audio in, captions out: what :class:`~suite.tasks.caption.Captioner` does for a package
whose frontend reads audio (log-mel), window by window for long recordings.

A recording longer than one window (:data:`WINDOW`, the longest scenes the models train on)
is cut into consecutive windows of that length (a last piece shorter than half a window joins
the one before it), each captioned alone; the windows of every input are decoded together in
batches.

Dims legend: B - batch (windows), S - samples, T - feature frames, F - mel bins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from suite.audio import AudioError, load_audio
from suite.data.images import IMAGE_SUFFIXES
from suite.errors import UserError
from suite.model import TaskModel
from suite.tasks.caption.audio_data import features, restore_commas

WINDOW = 10.0  # seconds
MIN_SECONDS = 0.1
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aiff", ".aif")


class CaptionSegment(NamedTuple):
    """One window of a recording: ``start`` and ``end`` in seconds, and its caption."""

    start: float
    end: float
    text: str


class ModalityError(UserError, ValueError):
    """An input of another modality than the model reads (an image for an audio captioner)."""


def as_audio_list(inputs: Any) -> list[Any]:
    """A list of single recordings from a path, one array or tensor (``(S,)``, or channels
    and samples), or a list of them."""
    if isinstance(inputs, (str, Path, np.ndarray, torch.Tensor)):
        return [inputs]
    if isinstance(inputs, (list, tuple)):
        return list(inputs)
    raise UserError(
        f"give an audio file, an array of samples (with sample_rate=...) or a list of them, "
        f"not a {type(inputs).__name__}"
    )


def refuse_image(item: Any, where: str, name: str) -> None:
    """Raise a :class:`ModalityError` when ``item`` is an image (a path with an image suffix,
    a PIL image, an array of 3 dims or of uint8) or a video (a video file, frames of 4 dims)
    given to the audio captioner ``name``."""
    from suite.tasks.caption.video_pipeline import VIDEO_FIX, describe_video

    video = describe_video(item)
    if video:
        raise ModalityError(
            f"{where} is {video}, but {name} captions audio: pass audio files (wav, flac, ...) "
            f"or arrays of samples with sample_rate=..., {VIDEO_FIX}"
        )
    what = None
    if isinstance(item, (str, Path)) and Path(item).suffix.lower() in IMAGE_SUFFIXES:
        what = "an image file"
    elif type(item).__module__.startswith("PIL."):
        what = "a PIL image"
    elif isinstance(item, (np.ndarray, torch.Tensor)) and item.ndim == 3:
        what = f"an array of shape {tuple(item.shape)}, an image's layout"
    elif isinstance(item, np.ndarray) and item.dtype == np.uint8:
        what = "a uint8 array (image pixels)"
    if what:
        raise ModalityError(
            f"{where} is {what}, but {name} captions audio: pass audio files (wav, flac, ...) "
            "or arrays of samples with sample_rate=..., or load an image captioner for images"
        )


def windows(samples: int, rate: int, window: float) -> list[tuple[int, int]]:
    """``[(start, end)]`` sample ranges of consecutive ``window``-second pieces of a
    recording of ``samples``; a last piece under half a window joins the one before."""
    step = max(1, int(round(window * rate)))
    bounds = [(start, min(start + step, samples)) for start in range(0, samples, step)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < step / 2:
        bounds[-2:] = [(bounds[-2][0], samples)]
    return bounds


def caption_audio(
    model: TaskModel,
    inputs: Any,
    sample_rate: int | None,
    name: str,
    window: float,
    batch_size: int,
    head: str,
    **options: Any,
) -> list[list[CaptionSegment]]:
    """Each input's windows with their captions (see the module docstring)."""
    items = as_audio_list(inputs)
    if not items:
        raise UserError("no audio given; pass a non-empty list")
    if window <= MIN_SECONDS:
        raise UserError(f"window must be longer than {MIN_SECONDS} s, got {window}")
    rate = model.frontend.sample_rate
    pieces: list[tuple[int, float, float, np.ndarray]] = []  # (input, start s, end s, samples)
    for i, item in enumerate(items):
        where = str(item) if isinstance(item, (str, Path)) else f"input {i}"
        refuse_image(item, where, name)
        audio = load_audio(item, sample_rate, rate, name=where)
        if len(audio) < MIN_SECONDS * rate:
            raise AudioError(
                f"{where} lasts {len(audio) / rate:.3f} s; captions need at least "
                f"{MIN_SECONDS} s of audio"
            )
        for start, end in windows(len(audio), rate, window):
            pieces.append((i, start / rate, end / rate, audio[start:end]))
    texts: list[str] = []
    for first in range(0, len(pieces), batch_size):
        chunk = pieces[first : first + batch_size]
        x, lengths = features([p[3] for p in chunk], model.frontend)  # (B, T, F), (B,)
        hyps = model.recognize(x, lengths, head, **options)
        texts += [restore_commas(h.text) for h in hyps]
    out: list[list[CaptionSegment]] = [[] for _ in items]
    for (i, start, end, _), text in zip(pieces, texts, strict=True):
        out[i].append(CaptionSegment(round(start, 3), round(end, 3), text))
    return out
