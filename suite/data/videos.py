"""Video clips as frame sequences: decoding files with PyAV (FFmpeg's libraries), writing small
clips, and the manifests of composed clips (``suite data synth-videos``,
:mod:`suite.data.video_scenes`).

torchvision's own video reader is gone from recent releases, so decoding goes through PyAV
directly (the ``av`` package, FFmpeg built in). Every container and codec FFmpeg reads works:
mp4/h264, avi/mpeg4/msmpeg4/mjpeg/cinepak, mkv/ffv1, webm, animated GIF. A file that is missing,
empty, damaged, truncated, a still image, audio only or not a video at all raises
:class:`VideoDataError` naming the file and what to do.

Dims legend: T - frames, C - channels (3, RGB), H, W - frame height and width in pixels.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from suite.data.manifest_files import JsonlManifest
from suite.data.video_captions import manifest_facts
from suite.errors import UserError
from suite.io import atomic_path

MAX_VALUES = 1 << 28  # decoded floats kept at once (1 GiB); more asks for fewer frames
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".gif")
# Formats FFmpeg opens that are not moving pictures: single images and text drawn as video.
_NOT_VIDEO_FORMATS = ("image2", "tty", "lavfi")
# Codec and pixel format by file suffix for write_video: lossless ffv1 in mkv, else lossy.
_WRITERS = {
    ".mp4": ("libx264", "yuv420p", {"crf": "12", "preset": "medium"}),
    ".avi": ("mjpeg", "yuvj444p", {"q:v": "2"}),
    ".mkv": ("ffv1", "bgr0", {}),  # RGB kept as is: no colour conversion, so exact
}
_FIX = "check the file, or re-encode it (ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4)"


class VideoDataError(UserError, ValueError):
    """A video that cannot be read; the message names the file and the fix."""


# --- reading ----------------------------------------------------------------------------------


def read_video(
    path: str | Path,
    *,
    num_frames: int | None = None,
    max_frames: int | None = None,
    step: int = 1,
    max_values: int = MAX_VALUES,
) -> tuple[Tensor, float]:
    """Decode a video file into frames ``(T, C, H, W)`` float in [0, 1] (RGB) and the rate of
    the frames returned (frames per second; ``0.0`` when the file does not say).

    Args:
        path: the video file.
        num_frames: keep this many frames spread evenly over the whole clip (by time, so a
            long file is decoded once and never held whole; fewer when the clip holds
            fewer); exclusive with ``max_frames`` and ``step``.
        max_frames: keep at most this many frames from the start.
        step: keep every ``step``-th frame (the returned rate is divided by it).
        max_values: refuse to hold more than this many decoded values (``T*C*H*W``).

    Raises:
        VideoDataError: a missing, empty, damaged or truncated file, a file that is not a
            video, or a clip too large to hold; the message says what to do.
    """
    frames, fps = read_video_uint8(
        path, num_frames=num_frames, max_frames=max_frames, step=step, max_values=max_values
    )
    return frames.float().div_(255), fps


def read_video_uint8(
    path: str | Path,
    *,
    num_frames: int | None = None,
    max_frames: int | None = None,
    step: int = 1,
    max_values: int = MAX_VALUES,
) -> tuple[Tensor, float]:
    """:func:`read_video` without the conversion: frames ``uint8 (T, C, H, W)``."""
    av = _av()

    path = _check_file(path)
    if num_frames is not None and (max_frames is not None or step != 1):
        raise VideoDataError("pass num_frames alone, or max_frames and step, not both")
    for name, value in (("num_frames", num_frames), ("max_frames", max_frames), ("step", step)):
        if value is not None and value < 1:
            raise VideoDataError(f"{name} must be at least 1, got {value}")
    with _opened(path) as (container, stream):
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        stated = _duration(container, stream)
        duration = stated or (_measure(path, fps) if num_frames is not None else 0.0)
        targets = None
        if num_frames is not None and duration > 0:
            targets = [(i + 0.5) * duration / num_frames for i in range(num_frames)]
        kept: list[np.ndarray] = []
        decoded, first, last = 0, None, None
        values, size = 0, None
        try:
            for frame in container.decode(stream):
                time = frame.time if frame.time is not None else decoded / (fps or 1)
                first = time if first is None else first
                last = time
                keep = decoded % step == 0
                if targets is not None:
                    keep = bool(targets) and time - first >= targets[0] - 0.5 / (fps or 1)
                    if keep:
                        targets.pop(0)
                decoded += 1
                if not keep:
                    continue
                # (H, W, C); a stream that changes size mid-way is scaled to its first size
                size = size or {"width": frame.width, "height": frame.height}
                array = frame.to_ndarray(format="rgb24", **size)
                values += array.size
                if values > max_values:
                    raise VideoDataError(
                        f"{path} is too long to hold at once ({stream.width}x{stream.height}, "
                        f"over {len(kept)} frames); pass num_frames=, max_frames= or step="
                    )
                kept.append(array)
                if max_frames is not None and len(kept) >= max_frames:
                    break
                if targets is not None and not targets:
                    break
        except av.error.FFmpegError as e:
            raise VideoDataError(
                f"{path} is damaged or truncated: decoding failed after {decoded} frames "
                f"({_reason(e)}); {_FIX}"
            ) from None
        if not kept:
            raise VideoDataError(
                f"{path} has a video stream but no frame decodes (empty or cut off); {_FIX}"
            )
        stopped_early = (max_frames is not None and len(kept) >= max_frames) or (
            targets is not None and not targets
        )
        if not stopped_early and stated > 0 and first is not None and last is not None:
            period = 1 / fps if fps else 0.0
            shortfall = stated - (last - first + period)
            if shortfall > max(2 * period, 0.05 * stated):
                raise VideoDataError(
                    f"{path} is truncated: its header says {stated:.2f} s but frames stop "
                    f"at {last - first + period:.2f} s; {_FIX}"
                )
    if num_frames is not None and duration > 0:
        fps = len(kept) / duration
    frames = torch.from_numpy(np.stack(kept)).permute(0, 3, 1, 2).contiguous()  # (T, C, H, W)
    return frames, fps / step


def video_info(path: str | Path) -> dict[str, Any]:
    """What a video's header says, without decoding: ``width``, ``height``, ``fps``,
    ``frames`` (0 when not stated), ``duration`` (seconds; 0 when not stated), ``codec``,
    ``format``."""
    path = _check_file(path)
    with _opened(path) as (container, s):
        return {
            "width": s.width,
            "height": s.height,
            "fps": float(s.average_rate or s.guessed_rate or 0),
            "frames": int(s.frames or 0),
            "duration": _duration(container, s),
            "codec": s.codec_context.name,
            "format": container.format.name,
        }


@contextmanager
def _opened(path: Path) -> Iterator[tuple[Any, Any]]:
    """The open container and its first video stream, or a teaching error."""
    av = _av()

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise VideoDataError(
            f"cannot open {path} as a video: {_reason(e)}; it is not a container FFmpeg reads "
            f"(mp4, avi, mkv, webm, ...), or its header is damaged or cut off; {_FIX}"
        ) from None
    with container:
        format_name = container.format.name
        if format_name.endswith("_pipe") or format_name in _NOT_VIDEO_FORMATS:
            raise VideoDataError(
                f"{path} is not a video (FFmpeg reads it as '{format_name}': a still image or "
                "text); caption an image as an image, or give a video file"
            )
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["nothing"]
            raise VideoDataError(
                f"{path} holds no video stream (only {', '.join(kinds)}); give a video file"
            )
        yield container, container.streams.video[0]


def _duration(container: Any, stream: Any) -> float:
    """Seconds of the video stream as the header states them, or of the file when it holds
    nothing else (a longer audio track is not video); 0 when unknown."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration and len(container.streams) == 1:
        return container.duration / 1e6
    return 0.0


def _measure(path: Path, fps: float) -> float:
    """Seconds of video, by decoding it once (frames are not converted, nor kept)."""
    av = _av()

    first = last = None
    with _opened(path) as (container, stream):
        try:
            for index, frame in enumerate(container.decode(stream)):
                time = frame.time if frame.time is not None else index / (fps or 1)
                first = time if first is None else first
                last = time
        except av.error.FFmpegError as e:
            raise VideoDataError(f"{path} is damaged or truncated ({_reason(e)}); {_FIX}") from None
    if first is None or last is None:
        return 0.0
    return last - first + (1 / fps if fps else 0.0)


def _check_file(path: Any) -> Path:
    if not isinstance(path, (str, Path)):
        raise VideoDataError(f"expected a video file path, got a {type(path).__name__}")
    path = Path(path)
    if not path.exists():
        raise VideoDataError(f"no video file at {path}; check the path")
    if not path.is_file():
        raise VideoDataError(f"{path} is a folder, not a video file; give one file")
    if path.stat().st_size == 0:
        raise VideoDataError(f"{path} is empty (0 bytes); write or copy the video again")
    return path


def _av() -> Any:
    """PyAV, imported when a video is first read or written."""
    try:
        import av
    except ImportError:
        raise VideoDataError(
            "reading and writing video needs PyAV; install it with `pip install av` (make setup "
            "installs it)"
        ) from None
    return av


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error)


# --- writing ----------------------------------------------------------------------------------


def write_video(path: str | Path, frames: Tensor | np.ndarray, fps: float) -> Path:
    """Write frames to a video file, atomically; the suffix picks the codec: ``.mp4`` (h264,
    4:2:0 chroma, so even sides only), ``.avi`` (motion JPEG) or ``.mkv`` (ffv1, lossless).

    Args:
        path: the file to write.
        frames: ``uint8 (T, H, W, 3)`` array, or a ``(T, C, H, W)`` tensor (uint8, or float
            in [0, 1]) with C = 3.
        fps: frames per second.
    """
    av = _av()

    path = Path(path)
    if path.suffix not in _WRITERS:
        raise VideoDataError(f"cannot write {path}: choose a suffix of {', '.join(_WRITERS)}")
    array = _hwc_uint8(frames)
    _, height, width, _ = array.shape
    codec, pix_fmt, options = _WRITERS[path.suffix]
    if pix_fmt.endswith("420p") and (height % 2 or width % 2):
        raise VideoDataError(f"{path.suffix} needs even frame sides, got {width}x{height}")
    rate = round(fps) if float(fps).is_integer() else _fraction(fps)
    with atomic_path(path) as tmp, av.open(str(tmp), "w") as container:
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for image in array:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _hwc_uint8(frames: Tensor | np.ndarray) -> np.ndarray:
    """Frames -> ``uint8 (T, H, W, 3)``."""
    if isinstance(frames, Tensor):
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise VideoDataError(f"expected frames (T, 3, H, W), got {tuple(frames.shape)}")
        if frames.is_floating_point():
            frames = (frames.clamp(0, 1) * 255).round()
        frames = frames.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    array = np.ascontiguousarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8 or not len(array):
        raise VideoDataError(
            f"expected uint8 frames (T, H, W, 3) with T >= 1, got {array.dtype} "
            f"{tuple(array.shape)}"
        )
    return array


def _fraction(fps: float) -> Any:
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)


# --- composed clips ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipItem:
    """One composed clip of a manifest: its frames, captions and structure.

    Attributes:
        id: unique within the manifest.
        source: the shard's ``.npz`` of frames (or a video file).
        member: the clip's array in an ``.npz`` source.
        fps: frames per second.
        caption: the first caption (a training target).
        captions: every phrasing (references for BLEU/CIDEr/ROUGE).
        objects: each thing's name, kind, colour, size, source images and per-frame box
            (``None`` while it is out of view).
        events: ``{object, name, action, start, end}`` in the order they happen (``action``:
            ``moves_left``/``right``/``up``/``down``, ``appears``, ``disappears``; frames
            ``start`` to ``end`` inclusive).
        novel: the held-out compositions the clip shows (test clips), as facts.
    """

    id: str
    source: str
    member: str | None = None
    fps: float = 0.0
    caption: str = ""
    captions: tuple[str, ...] = ()
    objects: tuple[dict[str, Any], ...] = ()
    events: tuple[dict[str, Any], ...] = ()
    novel: tuple[str, ...] = ()

    def facts(self) -> set[str]:
        """The facts every caption of the clip states (see
        :func:`~suite.data.video_captions.manifest_facts`)."""
        return manifest_facts(self.objects, self.events)


def load_clip(source: str | Path, member: str | None = None) -> Tensor:
    """The frames of a composed clip, ``uint8 (T, C, H, W)``: array ``member`` of an ``.npz``
    shard, or a whole video file when ``member`` is ``None``."""
    if member is None:
        return read_video_uint8(source)[0]
    try:
        archive = _npz(str(source))
        array = archive[member]  # (T, H, W, C)
    except KeyError:
        raise VideoDataError(f"{source} holds no clip {member}") from None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise VideoDataError(
            f"cannot read clip {member} from {source} ({e}); rewrite the shard with "
            "`suite data synth-videos` (delete its .jsonl part to redo it)"
        ) from None
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)


_NPZ: dict[tuple[int, str], Any] = {}  # per process: a forked loader worker opens its own


def _npz(path: str) -> Any:
    key = (os.getpid(), path)
    if key not in _NPZ:
        if not Path(path).is_file():
            raise VideoDataError(f"no clip shard at {path}; run `suite data synth-videos` again")
        _NPZ[key] = np.load(path)
    return _NPZ[key]


class ClipManifest(JsonlManifest[ClipItem]):
    """An immutable list of :class:`ClipItem` read from a ``.jsonl`` manifest; frames decode
    on :meth:`load`."""

    item_type = ClipItem
    error = VideoDataError
    noun, plural, command = "clip", "clips", "synth-videos"

    @classmethod
    def _item(cls, raw: Any) -> ClipItem:
        for name in ("captions", "objects", "events", "novel"):
            raw[name] = tuple(raw.get(name) or ())
        raw["captions"] = raw["captions"] or (raw.get("caption", ""),)
        return ClipItem(**raw)

    def load(self, index: int) -> Tensor:
        """The clip's frames, ``uint8 (T, C, H, W)``."""
        item = self._items[index]
        return load_clip(item.source, item.member)
