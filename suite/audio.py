"""The one audio loader: files and in-memory arrays become mono float32 at the model's rate.

Dims legend: S - samples, C - channels.

Every way audio can be wrong (a missing, empty, corrupt or truncated file, NaN/Inf samples, zero
samples, an array whose layout is ambiguous) is an :class:`AudioError` whose single message names
the file and says how to fix it. Fixable mismatches (another sample rate, several channels) are
repaired with a one-line :class:`AudioWarning` naming the file.

The dataset reuses :func:`prepare_samples` on what lhotse loads, so the checks live only here.
"""

from __future__ import annotations

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

# Integer PCM arrays are scaled to [-1, 1) the way soundfile reads integer files.
_INT_SCALE = {np.int8: 2**7, np.int16: 2**15, np.int32: 2**31, np.int64: 2**63}


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


def _check_rate(rate: Any, what: str, name: str) -> int:
    if isinstance(rate, (float, np.floating)) and float(rate).is_integer():
        rate = int(rate)
    if not isinstance(rate, (int, np.integer)) or isinstance(rate, bool) or rate <= 0:
        raise AudioError(
            f"{what} must be a positive whole number of Hz (e.g. 16000), got {rate!r} for {name}"
        )
    return int(rate)


def _to_float32(samples: np.ndarray, name: str) -> np.ndarray:
    """Floats are cast, integer PCM is scaled to [-1, 1); anything else is an error."""
    if samples.dtype.kind == "f":
        return samples.astype(np.float32, copy=False)
    if samples.dtype == np.uint8:  # 8-bit PCM is unsigned, centred on 128
        return (samples.astype(np.float32) - 128.0) / 128.0
    for int_type, scale in _INT_SCALE.items():
        if samples.dtype == int_type:
            return (samples.astype(np.float64) / scale).astype(np.float32)
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
        AudioError: zero samples, NaN/Inf samples, or an unusable dtype/shape.
    """
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


def _riff_truncation(path: Path, header: bytes) -> str | None:
    """Why a RIFF/WAVE file is shorter than its header says, or None when it is not.

    libsndfile silently shortens a WAV whose ``data`` chunk claims more bytes than the file holds,
    so ``sf.info(...).frames`` already agrees with what can be read; only the header knows.
    """
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return None
    file_size = path.stat().st_size
    offset, block_align = 12, 0
    while offset + 8 <= len(header):
        chunk_id = header[offset : offset + 4]
        (chunk_size,) = struct.unpack("<I", header[offset + 4 : offset + 8])
        body = offset + 8
        if chunk_id == b"fmt " and body + 14 <= len(header):
            (block_align,) = struct.unpack("<H", header[body + 12 : body + 14])
        if chunk_id == b"data":
            # 0 and 0xFFFFFFFF mark "length unknown" in streamed WAVs; nothing to check.
            if chunk_size in (0, 0xFFFFFFFF) or block_align == 0:
                return None
            available = max(file_size - body, 0)
            if available >= chunk_size:
                return None
            return (
                f"header promises {chunk_size // block_align} frames but the file holds "
                f"{available // block_align}"
            )
        offset = body + chunk_size + (chunk_size & 1)  # chunks are padded to even sizes
    return None


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
    checked for RIFF/WAVE files, whose header states the data size: libsndfile (and lhotse, which
    pads short reads by up to 0.5 s) would otherwise hand back a silently shortened signal.

    Args:
        path: an audio file.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        AudioError: the file is missing, is not a file, is empty, or is a truncated WAV.
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
    truncation = _riff_truncation(path, header)
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
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        reason = str(getattr(e, "error_string", e)).rstrip(".")
        raise _decode_error(path, f"libsndfile: {reason}") from None
    if info.frames == 0:
        raise AudioError(
            f"expected audio samples, got zero-length audio (a valid header with 0 samples) in "
            f"{path}; drop it from the input/manifest, or re-export it if it was cut short"
        )
    try:
        samples, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)  # (S, C)
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
) -> np.ndarray:
    """Load a file or an in-memory waveform as mono float32 at ``target_sample_rate``.

    Args:
        source: a path (str/Path), or a numpy array / torch tensor shaped ``(S,)``, ``(C, S)``
            or ``(S, C)`` (the short side is the channels). Integer arrays are read as PCM.
        sample_rate: rate of an array ``source`` in Hz; required for arrays. Files carry their
            own rate in the header, so it is ignored for paths.
        target_sample_rate: rate of the result in Hz.

    Returns:
        ``(S,)`` float32 mono samples at ``target_sample_rate``.

    Raises:
        AudioError: a missing, empty, corrupt or truncated file; NaN/Inf or zero samples; an array
            without ``sample_rate`` or with an ambiguous layout.

    Warns:
        AudioWarning: once per call when audio is resampled or down-mixed to mono.
    """
    target_sample_rate = _check_rate(target_sample_rate, "target_sample_rate", "load_audio")
    if isinstance(source, (str, Path)):
        samples, rate = read_audio_file(source)
        return prepare_samples(samples, rate, target_sample_rate, name=str(source))
    name = "the input array"
    if isinstance(source, torch.Tensor):
        # bf16/fp16 tensors have no exact numpy twin on every version; fp32 is lossless for them.
        source = source.detach().to("cpu", torch.float32 if source.is_floating_point() else None)
        source = source.numpy()
    if not isinstance(source, np.ndarray):
        raise AudioError(
            f"expected a file path or a numpy array / torch tensor of samples, got "
            f"{type(source).__name__}; pass a path, or an array with sample_rate=..."
        )
    if sample_rate is None:
        raise AudioError(
            f"expected a sample rate for {name} of shape {tuple(source.shape)}; "
            "pass sample_rate=... (the rate it was recorded at, e.g. sample_rate=16000)"
        )
    sample_rate = _check_rate(sample_rate, "sample_rate", name)
    samples = _channels_first(_to_float32(source, name), name)  # (C, S)
    return prepare_samples(samples, sample_rate, target_sample_rate, name=name)
