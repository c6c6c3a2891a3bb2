"""The one audio loader: files and in-memory arrays become mono float32 at the model's rate.

Dims legend: S - samples, C - channels.

Every way audio can be wrong (a missing, empty, corrupt or truncated file, NaN/Inf samples, zero
samples, an array whose layout is ambiguous, a sample rate outside 1-384 kHz) is an
:class:`AudioError` whose single message names the file and says how to fix it. Fixable mismatches
(another sample rate, several channels, int16 values in an int64 array) are repaired with a
one-line :class:`AudioWarning` naming the file. A WAV streamed through a pipe (its sizes left at
0xFFFFFFFF or 0) is read to the end of the file.

The dataset reuses :func:`prepare_samples` on what lhotse loads, so the checks live only here.
"""

from __future__ import annotations

import io
import struct
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from suite.errors import UserError

# A 2-D array with one side this small (and the other larger) is read as (C, S) or (S, C);
# anything else is more likely a batch of utterances than a multichannel recording.
MAX_CHANNELS = 8

_CONVERT_HINT = "convert it with `ffmpeg -i IN -ac 1 -ar 16000 OUT.wav`"

# Integer PCM arrays are scaled to [-1, 1) the way soundfile reads integer files. No format or
# device produces int64 PCM: an int64 array is read as int16 when its values fit (_to_float32).
_INT_SCALE = {np.int8: 2**7, np.int16: 2**15, np.int32: 2**31}

# Rates audio can plausibly have been recorded at. Outside them the rate is a mistake (e.g.
# sample_rate=1), and resampling would make hours of audio out of a minute, or nothing of it.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 384_000

# RIFF sizes that streaming writers (ffmpeg or sox into a pipe) leave in place of the real one.
_UNKNOWN_RIFF_SIZES = (0, 0xFFFFFFFF)

# The largest Ogg page: a 27-byte header, 255 lacing values and 255 segments of 255 bytes.
_OGG_MAX_PAGE = 27 + 255 + 255 * 255


class AudioError(UserError, ValueError):
    """Audio that cannot be used as given; the message names the file and the fix."""


class AudioWarning(UserWarning):
    """Audio that was repaired on load (resampled, down-mixed); filter it to silence it."""


def _khz(rate: float) -> str:
    return f"{rate / 1000:g} kHz"


def _warn(message: str) -> None:
    # Point the warning at the first caller outside this module (user code or the dataset).
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, AudioWarning, stacklevel=level)


def check_sample_rate(rate: Any, what: str = "sample_rate", name: str = "the input") -> int:
    """``rate`` as an int, if it is a whole number of Hz within 1-384 kHz.

    Args:
        rate: a sample rate as given (an int, a whole float; a string is refused).
        what: the argument's name, for the message.
        name: what the rate belongs to (a file, "the streamed chunk"), for the message.

    Raises:
        AudioError: ``rate`` is not a number, not whole, or outside 1-384 kHz.
    """
    if isinstance(rate, (float, np.floating)) and float(rate).is_integer():
        rate = int(rate)
    if isinstance(rate, str):
        raise AudioError(
            f"{what} must be a number of Hz, got the string {rate!r} for {name}; "
            f"pass a number, e.g. {what}=16000"
        )
    if not isinstance(rate, (int, np.integer)) or isinstance(rate, bool) or rate <= 0:
        raise AudioError(
            f"{what} must be a positive whole number of Hz, got {rate!r} for {name}; pass the "
            f"rate the audio was recorded at (e.g. {what}=16000)"
        )
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"{what} must lie between {_khz(MIN_SAMPLE_RATE)} and {_khz(MAX_SAMPLE_RATE)}, got "
            f"{int(rate)} Hz for {name}; pass the rate the audio was recorded at "
            f"(e.g. {what}=16000)"
        )
    return int(rate)


def _within_int16(samples: np.ndarray) -> bool:
    """Whether integer ``samples`` are not all zero and all lie in int16's range."""
    low, high = int(samples.min()), int(samples.max())
    return bool(low or high) and -(2**15) <= low and high < 2**15


def _to_float32(samples: np.ndarray, name: str) -> np.ndarray:
    """Floats are cast, integer PCM is scaled to [-1, 1); anything else is an error.

    int64 is no PCM format: it is what ``np.array(list_of_ints)`` gives for int16 samples. Such
    an array is read as int16 PCM when its values fit, with a warning (scaling it as full-range
    int64 would turn any speech into silence), and refused otherwise. Never wider: chunks of one
    stream must not be scaled differently by how loud each is.
    """
    if samples.dtype.kind == "f":
        return samples.astype(np.float32, copy=False)
    if samples.dtype == np.uint8:  # 8-bit PCM is unsigned, centred on 128
        return (samples.astype(np.float32) - 128.0) / 128.0
    for int_type, scale in _INT_SCALE.items():
        if samples.dtype == int_type:
            return (samples.astype(np.float64) / scale).astype(np.float32)
    if samples.dtype == np.int64:
        if not samples.size or not samples.any():
            return np.zeros(samples.shape, np.float32)
        if not _within_int16(samples):
            raise AudioError(
                f"expected PCM samples, got int64 values from {int(samples.min())} to "
                f"{int(samples.max())} in {name}, beyond int16's range; int64 is no PCM format - "
                "pass float32 in [-1, 1], or the integer PCM type it holds "
                "(x.astype(np.int32) for 32-bit PCM)"
            )
        _warn(
            f"{name}: int64 samples read as int16 PCM (every value lies in int16's range); pass "
            "x.astype(np.int16) or float32 in [-1, 1] to skip this"
        )
        return (samples.astype(np.float64) / 2**15).astype(np.float32)
    raise AudioError(
        f"expected float or integer PCM samples, got dtype {samples.dtype} in {name}; "
        "pass a float32 array in [-1, 1] or int16 PCM"
    )


def _channels_first(samples: np.ndarray, name: str) -> np.ndarray:
    """Read a 1-D or 2-D array as ``(C, S)``, refusing layouts that could be either way."""
    if samples.ndim == 1:
        return samples[None]  # (1, S)
    if samples.ndim != 2:
        raise AudioError(
            f"expected a 1-D mono waveform (S,) or 2-D (C, S) / (S, C) audio, got shape "
            f"{tuple(samples.shape)} in {name}; pass one utterance at a time"
        )
    rows, cols = samples.shape
    if rows == 1 or (rows <= MAX_CHANNELS < cols):
        return samples
    if cols == 1 or (cols <= MAX_CHANNELS < rows):
        return samples.T  # (S, C) -> (C, S)
    raise AudioError(
        f"cannot tell channels from samples in an array of shape {tuple(samples.shape)} in "
        f"{name}: neither side is a plausible channel count (1..{MAX_CHANNELS}) next to a "
        "longer time axis; pass a 1-D mono waveform (S,), or (C, S) with few channels, "
        "one utterance at a time"
    )


def prepare_samples(
    samples: np.ndarray,
    sample_rate: int,
    target_sample_rate: int = 16000,
    name: str = "the input array",
    channels_first: bool = True,
) -> np.ndarray:
    """Check and repair decoded audio: down-mix to mono, reject empty/non-finite, resample.

    Args:
        samples: ``(S,)``, or ``(C, S)`` (``channels_first``) / ``(S, C)`` decoded samples.
        sample_rate: rate of ``samples`` in Hz.
        target_sample_rate: rate of the result in Hz.
        name: what the samples came from (a file, a cut); every message names it.
        channels_first: layout of a 2-D ``samples``.

    Returns:
        ``(S,)`` float32 mono samples at ``target_sample_rate``.

    Raises:
        AudioError: zero samples, NaN/Inf samples, an unusable dtype/shape, or a sample rate
            outside 1-384 kHz.
    """
    sample_rate = check_sample_rate(sample_rate, "sample_rate", name)
    samples = _to_float32(np.asarray(samples), name)
    if samples.ndim == 2 and not channels_first:
        samples = samples.T  # (S, C) -> (C, S)
    if samples.ndim == 1:
        samples = samples[None]  # (1, S)
    if samples.ndim != 2:
        raise AudioError(
            f"expected (S,) or (C, S) samples, got shape {tuple(samples.shape)} in {name}; "
            "pass one utterance at a time"
        )
    channels, length = samples.shape
    if length == 0:
        raise AudioError(
            f"expected audio samples, got zero-length audio (0 samples) in {name}; "
            "drop it from the input/manifest or re-export the recording"
        )
    bad = ~np.isfinite(samples)
    if bad.any():
        first = int(np.flatnonzero(bad.any(axis=0))[0])
        raise AudioError(
            f"expected finite samples, got {int(bad.sum())} NaN/Inf values (first at sample "
            f"{first}, {first / sample_rate:.3f} s) in {name}; the audio is corrupt or was "
            "written from a diverged model - re-export it, or clean it with np.nan_to_num"
        )
    if channels > 1:
        _warn(f"{name}: down-mixed {channels} channels to mono by averaging; store mono audio")
        samples = samples.mean(axis=0, keepdims=True)  # (1, S)
    mono = samples[0]  # (S,)
    if sample_rate != target_sample_rate:
        _warn(
            f"{name}: resampled {_khz(sample_rate)} to {_khz(target_sample_rate)}; "
            f"store {_khz(target_sample_rate)} audio to skip this"
        )
        mono = torch.from_numpy(np.ascontiguousarray(mono))
        mono = AF.resample(mono, sample_rate, target_sample_rate).numpy()
    return np.ascontiguousarray(mono, dtype=np.float32)


def _riff_data_chunk(header: bytes) -> tuple[int, int, int] | None:
    """``(offset of the data, size the header gives it, bytes per frame)`` of a RIFF/WAVE file's
    ``data`` chunk, or None when ``header`` is no WAV or the chunk is not within it."""
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return None
    offset, block_align = 12, 0
    while offset + 8 <= len(header):
        chunk_id = header[offset : offset + 4]
        (chunk_size,) = struct.unpack("<I", header[offset + 4 : offset + 8])
        body = offset + 8
        if chunk_id == b"fmt " and body + 14 <= len(header):
            (block_align,) = struct.unpack("<H", header[body + 12 : body + 14])
        if chunk_id == b"data":
            return body, chunk_size, block_align
        offset = body + chunk_size + (chunk_size & 1)  # chunks are padded to even sizes
    return None


def _riff_truncation(path: Path, header: bytes) -> str | None:
    """Why a RIFF/WAVE file is shorter than its header says, or None when it is not.

    libsndfile silently shortens a WAV whose ``data`` chunk claims more bytes than the file holds,
    so ``sf.info(...).frames`` already agrees with what can be read; only the header knows.
    """
    data = _riff_data_chunk(header)
    if data is None:
        return None
    body, chunk_size, block_align = data
    # 0 and 0xFFFFFFFF mark "length unknown" in streamed WAVs; nothing to check.
    if chunk_size in _UNKNOWN_RIFF_SIZES or block_align == 0:
        return None
    available = max(path.stat().st_size - body, 0)
    if available >= chunk_size:
        return None
    return (
        f"header promises {chunk_size // block_align} frames but the file holds "
        f"{available // block_align}"
    )


def _ogg_truncation(path: Path, header: bytes) -> str | None:
    """Why an Ogg file (Vorbis, Opus, FLAC in Ogg) is incomplete, or None when it is not.

    Ogg states no total length up front: a decoder stops at the last whole page and reports
    that many samples, so a cut-off file reads as a shorter, valid one. But a complete stream
    ends on a whole page flagged end-of-stream (RFC 3533), which a cut-off one lacks.
    """
    if header[:4] != b"OggS":
        return None
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - _OGG_MAX_PAGE))
        tail = f.read()
    start = len(tail)
    while (start := tail.rfind(b"OggS", 0, start)) >= 0:
        page = tail[start:]
        if len(page) < 27 or page[4] != 0 or len(page) < 27 + page[26]:
            continue
        body = sum(page[27 : 27 + page[26]])  # the segment table's lacing values
        if 27 + page[26] + body == len(page):  # the last page ends where the file does
            return None if page[5] & 0x04 else "the last Ogg page does not end the stream"
    return "the file ends inside an Ogg page"


def _streamed_wav(path: Path, header: bytes) -> io.BytesIO | None:
    """A streamed WAV (``data`` size 0 or 0xFFFFFFFF: written to a pipe, so never filled in)
    as bytes whose sizes say "to the end of the file", or None for any other file.

    How a decoder reads such a size differs between libsndfile versions and readers (some stop
    at the header's size, some at 0 samples); with the real sizes, every one reads all of it.
    """
    data = _riff_data_chunk(header)
    if data is None or data[1] not in _UNKNOWN_RIFF_SIZES:
        return None
    body = data[0]
    content = bytearray(path.read_bytes())
    size = len(content) - body
    if size <= 0 or len(content) - 8 > 0xFFFFFFFF:  # no samples, or too big to say in RIFF
        return None
    content[4:8] = struct.pack("<I", len(content) - 8)
    content[body - 4 : body] = struct.pack("<I", size)
    return io.BytesIO(bytes(content))


def _decode_error(path: Path, reason: str) -> AudioError:
    return AudioError(
        f"cannot decode audio file {path} ({reason}); it is corrupt or not a supported "
        f"format (wav, flac, ogg, mp3) - re-export it, or {_CONVERT_HINT}"
    )


def _truncated_error(path: Path, detail: str) -> AudioError:
    return AudioError(
        f"audio file {path} is truncated ({detail}); it was probably cut short while copying "
        "or writing - copy or re-export it again"
    )


def check_audio_file(path: str | Path) -> Path:
    """The checks that need no decoding: the file exists, is not empty, and is complete.

    Cheap enough to run before every load (a stat and a short header read). Completeness is
    checked for RIFF/WAVE files, whose header states the data size, and for Ogg files, whose last
    page must end the stream: libsndfile (and lhotse, which pads short reads by up to 0.5 s)
    would otherwise hand back a silently shortened signal.

    Args:
        path: an audio file.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        AudioError: the file is missing, is not a file, is empty, or is a truncated WAV or Ogg.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(
            f"audio file {path} does not exist (working directory {Path.cwd()}); "
            "check the path, or regenerate the manifest that points at it"
        )
    if not path.is_file():
        raise AudioError(f"audio path {path} is not a file; pass the path of one audio file")
    if path.stat().st_size == 0:
        raise AudioError(
            f"audio file {path} is empty (0 bytes); it was never written completely - "
            "re-export or re-download it"
        )
    with open(path, "rb") as f:
        header = f.read(1 << 16)
    truncation = _riff_truncation(path, header) or _ogg_truncation(path, header)
    if truncation:
        raise _truncated_error(path, truncation)
    return path


def read_audio_file(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a file with soundfile after :func:`check_audio_file`.

    Args:
        path: an audio file soundfile can read (wav, flac, ogg, mp3, ...).

    Returns:
        ``(samples (C, S) float32, sample_rate)``, exactly as stored (no resampling, no down-mix).

    Raises:
        AudioError: the file is missing, empty, undecodable, truncated, or holds zero samples.
    """
    path = check_audio_file(path)
    with open(path, "rb") as f:
        header = f.read(1 << 16)
    source: str | io.BytesIO = _streamed_wav(path, header) or str(path)
    try:
        info = sf.info(source)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        reason = str(getattr(e, "error_string", e)).rstrip(".")
        raise _decode_error(path, f"libsndfile: {reason}") from None
    if info.frames == 0:
        raise AudioError(
            f"expected audio samples, got zero-length audio (a valid header with 0 samples) in "
            f"{path}; drop it from the input/manifest, or re-export it if it was cut short"
        )
    if not MIN_SAMPLE_RATE <= info.samplerate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"the header of {path} gives a sample rate of {info.samplerate} Hz, outside "
            f"{_khz(MIN_SAMPLE_RATE)}-{_khz(MAX_SAMPLE_RATE)}; the header is wrong - re-export "
            f"the file, or {_CONVERT_HINT}"
        )
    if isinstance(source, io.BytesIO):
        source.seek(0)
    try:
        samples, sample_rate = sf.read(source, dtype="float32", always_2d=True)  # (S, C)
    except (sf.LibsndfileError, RuntimeError) as e:
        reason = str(getattr(e, "error_string", e)).rstrip(".")
        raise _truncated_error(
            path, f"header promises {info.frames} frames, decoding failed: {reason}"
        ) from None
    if samples.shape[0] < info.frames:
        raise _truncated_error(
            path, f"header promises {info.frames} frames but only {samples.shape[0]} could be read"
        )
    return samples.T, int(sample_rate)  # (C, S)


def load_audio(
    source: str | Path | np.ndarray | torch.Tensor,
    sample_rate: int | None = None,
    target_sample_rate: int = 16000,
    name: str | None = None,
) -> np.ndarray:
    """Load a file or an in-memory waveform as mono float32 at ``target_sample_rate``.

    Args:
        source: a path (str/Path), or a numpy array / torch tensor shaped ``(S,)``, ``(C, S)``
            or ``(S, C)`` (the short side is the channels). Integer arrays are read as PCM
            (int64 ones as int16 when their values fit, with an :class:`AudioWarning`).
        sample_rate: rate of an array ``source`` in Hz (1-384 kHz); required for arrays. Files
            carry their own rate in the header, so it is ignored for paths.
        target_sample_rate: rate of the result in Hz.
        name: what messages call an array ``source`` (default: "the input array"); a file is
            always called by its path.

    Returns:
        ``(S,)`` float32 mono samples at ``target_sample_rate``.

    Raises:
        AudioError: a missing, empty, corrupt or truncated file; NaN/Inf or zero samples; an array
            without ``sample_rate``, with a rate outside 1-384 kHz, or with an ambiguous layout.

    Warns:
        AudioWarning: once per call when audio is resampled or down-mixed to mono, or int64
            samples are read as int16 PCM (and int32 ones that may be int16 PCM).
    """
    target_sample_rate = check_sample_rate(target_sample_rate, "target_sample_rate", "load_audio")
    if isinstance(source, (str, Path)):
        samples, rate = read_audio_file(source)
        return prepare_samples(samples, rate, target_sample_rate, name=str(source))
    name = name or "the input array"
    if isinstance(source, torch.Tensor):
        # bf16/fp16 tensors have no exact numpy twin on every version; fp32 is lossless for them.
        source = source.detach().to("cpu", torch.float32 if source.is_floating_point() else None)
        source = source.numpy()
    if not isinstance(source, np.ndarray):
        raise AudioError(
            f"expected a file path or a numpy array / torch tensor of samples, got "
            f"{type(source).__name__} for {name}; pass a path, or an array with sample_rate=..."
        )
    if sample_rate is None:
        raise AudioError(
            f"expected a sample rate for {name} of shape {tuple(source.shape)}; "
            "pass sample_rate=... (the rate it was recorded at, e.g. sample_rate=16000)"
        )
    sample_rate = check_sample_rate(sample_rate, "sample_rate", name)
    if source.dtype == np.int32 and source.size and _within_int16(source):
        # What np.array(list_of_ints) gives on Windows; as 32-bit PCM it is near silence.
        _warn(
            f"{name}: int32 samples are read as 32-bit PCM, but every value lies in int16's "
            "range, so this is near silence; if they are int16 PCM, pass x.astype(np.int16)"
        )
    samples = _channels_first(_to_float32(source, name), name)  # (C, S)
    return prepare_samples(samples, sample_rate, target_sample_rate, name=name)
