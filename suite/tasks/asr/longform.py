"""Long audio in chunks: files read block by block and split at pauses, so that transcribing an
hour takes the memory of ten minutes (``suite bench longform``: peak RSS 954 MB vs 928 MB).

Why pauses and not fixed windows with overlap: the shipped models were trained on single
sentences, and they recognize a sentence best alone. Measured with ``default-asr`` on 40
espeak-ng sentences (2.6 min) joined by 0.05-0.6 s gaps, WER with its LM (greedy): each sentence
alone 1.6% (13.1%); cut every 10 s regardless of content 9.8% (26.4%), every 30 s 15.8%
(27.6%); cut at pauses as here 1.8% (17.1%). So a chunk ends at the first pause of at least
:data:`MIN_PAUSE` seconds after :data:`MIN_CHUNK` seconds, and at the quietest point of its
second half when :data:`MAX_CHUNK` seconds pass without one (continuous speech or music; a word
may be cut there). Chunks never overlap, so texts and word times join without merging.

Why not the streaming model chunk by chunk: it needs a model trained for streaming (causal,
chunked contexts) and is less accurate than a full-context model at the same size; splitting
works with any model and decodes the chunks in batches.

A pause is a run of 10 ms frames quieter than ``max(level - 35 dB, noise + (level - noise) / 4)``,
where ``level`` and ``noise`` are the 95th and 10th percentiles of the frame energies (dB) of
the audio in view (at most :data:`MAX_CHUNK` + :data:`MIN_CHUNK` seconds): 35 dB under speech
on clean recordings, and a quarter of the way from the noise floor to speech on noisy ones.

Dims legend: S - samples, C - channels, N - 10 ms frames.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from suite.audio import (
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    AudioError,
    AudioWarning,
    check_audio_file,
    prepare_samples,
    read_audio_file,
)

MIN_PAUSE = 0.15  # seconds of quiet that end a chunk; stop closures inside words are shorter
MIN_CHUNK = 1.0  # seconds before the first pause that may end a chunk
MAX_CHUNK = 20.0  # seconds after which a chunk ends at its quietest point
PAUSE_BELOW_LEVEL_DB = 35.0
BLOCK_SECONDS = 10.0  # read from a file at a time
# Padded audio decoded at once: a batch adds the frontend's and encoder's activations to memory,
# and they grow with its padded length, so a bound in seconds, not in chunks, keeps the peak the
# same whatever the chunks' lengths.
BATCH_SECONDS = 30.0

_malloc_trim: Any = None  # glibc's malloc_trim once looked up, False where there is none


@dataclass(frozen=True)
class LongFile:
    """A file too long to decode at once, checked but not yet read.

    Attributes:
        path: the file.
        sample_rate: its rate in Hz.
        frames: its samples per channel.
        channels: its channel count.
    """

    path: Path
    sample_rate: int
    frames: int
    channels: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def open_input(
    source: str | Path | np.ndarray | torch.Tensor,
    sample_rate: int | None,
    target_sample_rate: int,
    name: str,
    long_seconds: float,
) -> np.ndarray | LongFile:
    """An input as ``(S,)`` float32 samples at ``target_sample_rate``, or, for a file longer
    than ``long_seconds``, a :class:`LongFile` to read in blocks with :func:`chunks`.

    Raises:
        AudioError: what :func:`~suite.audio.load_audio` raises for the input.
    """
    from suite.audio import load_audio

    if not isinstance(source, (str, Path)):
        return load_audio(source, sample_rate, target_sample_rate, name=name)
    path = check_audio_file(source)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        info = None  # read_audio_file explains what is wrong with it
    if (
        info is None
        or not MIN_SAMPLE_RATE <= info.samplerate <= MAX_SAMPLE_RATE
        or info.frames / info.samplerate <= long_seconds
    ):  # short, or read_audio_file says what is wrong with it
        samples, rate = read_audio_file(path)
        return prepare_samples(samples, rate, target_sample_rate, name=name)
    return LongFile(path, int(info.samplerate), int(info.frames), int(info.channels))


def _file_blocks(long: LongFile, name: str) -> Iterator[np.ndarray]:
    """The file's samples as mono ``(S,)`` float32 blocks at its own rate."""
    block = int(BLOCK_SECONDS * long.sample_rate)
    read = 0
    try:
        with sf.SoundFile(str(long.path)) as f:
            while True:
                samples = f.read(block, dtype="float32", always_2d=True)  # (S, C)
                if not len(samples):
                    break
                read += len(samples)
                yield samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    except (sf.LibsndfileError, RuntimeError) as e:
        reason = str(getattr(e, "error_string", e)).rstrip(".")
        raise AudioError(
            f"{name} could not be decoded after {read / long.sample_rate:.1f} s "
            f"(libsndfile: {reason}); the file is corrupt or truncated - re-export it"
        ) from None
    if read < long.frames:
        raise AudioError(
            f"{name} is truncated: its header promises {long.frames} samples but only {read} "
            "could be read; re-export or re-download it"
        )


def pause_cut(audio: np.ndarray, sample_rate: int, final: bool) -> int | None:
    """Where the next chunk of ``audio (S,)`` ends (samples), or ``None`` to read more first.

    The middle of the first pause centred at least :data:`MIN_CHUNK` seconds in; when ``audio``
    holds :data:`MAX_CHUNK` seconds without one, its quietest 100 ms in the second half; ``final``
    says that nothing follows ``audio``. A cut leaves at least :data:`MIN_CHUNK` seconds after
    it (unless ``audio`` is shorter), so no chunk is a sliver.
    """
    hop = sample_rate // 100
    n = len(audio) // hop
    if n == 0:
        return len(audio) if final else None
    limit = min(len(audio), int(MAX_CHUNK * sample_rate))
    energy = np.square(audio[: n * hop].astype(np.float64)).reshape(n, hop).mean(axis=1)
    db = 10 * np.log10(energy + 1e-12)  # (N,)
    level, noise = np.percentile(db, 95), np.percentile(db, 10)
    quiet = db < max(level - PAUSE_BELOW_LEVEL_DB, noise + (level - noise) / 4)
    edges = np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    for a, b in zip(starts, ends, strict=True):
        cut = (a + b) // 2 * hop
        if b - a < MIN_PAUSE * 100 or cut < MIN_CHUNK * sample_rate:
            continue
        if cut > limit or cut > len(audio) - MIN_CHUNK * sample_rate:
            break
        return cut
    if len(audio) < int((MAX_CHUNK + MIN_CHUNK) * sample_rate):
        return len(audio) if final else None
    first, last = limit // (2 * hop), limit // hop
    smooth = np.convolve(energy, np.ones(10) / 10, mode="same")[first:last]  # 100 ms average
    return (first + int(np.argmin(smooth))) * hop


def split_at_pauses(
    blocks: Iterable[np.ndarray], sample_rate: int
) -> Iterator[tuple[int, np.ndarray]]:
    """``(start sample, chunk (S,))`` of consecutive chunks of the audio given as ``blocks``
    (mono, any lengths), cut by :func:`pause_cut`; memory stays within two chunks and a
    block."""
    buffer = np.zeros(0, dtype=np.float32)
    start = 0
    blocks = iter(blocks)
    final = False
    while not final or len(buffer):
        if not final and len(buffer) < (MAX_CHUNK + MIN_CHUNK) * sample_rate:
            block = next(blocks, None)
            if block is None:
                final = True
            else:
                buffer = np.concatenate([buffer, block])
            continue
        cut = pause_cut(buffer, sample_rate, final) or len(buffer)  # None: not with a full buffer
        yield start, buffer[:cut].copy()  # not a view: it would keep the buffer alive
        start += cut
        buffer = buffer[cut:]


def chunks(
    source: np.ndarray | LongFile, target_sample_rate: int, name: str
) -> Iterator[tuple[float, np.ndarray]]:
    """``(start seconds, chunk (S,) float32 at target_sample_rate)`` of a long input.

    A file is read block by block and each chunk resampled on its own (cuts fall in pauses,
    so the chunk edges carry no speech to smear); it warns once when it down-mixes or
    resamples.

    Raises:
        AudioError: the file cannot be decoded further, or holds NaN/Inf samples (named with
            the second where they are).
    """
    if isinstance(source, np.ndarray):
        block = int(BLOCK_SECONDS * target_sample_rate)
        rate = target_sample_rate
        blocks = (source[i : i + block] for i in range(0, len(source), block))
    else:
        rate, blocks = source.sample_rate, _file_blocks(source, name)
        changes, store = [], []
        if source.channels > 1:
            changes.append(f"down-mixed {source.channels} channels to mono by averaging")
            store.append("mono")
        if rate != target_sample_rate:
            changes.append(f"resampled {rate / 1000:g} kHz to {target_sample_rate / 1000:g} kHz")
            store.append(f"{target_sample_rate / 1000:g} kHz")
        if changes:
            warnings.warn(
                f"{name}: {' and '.join(changes)}; store {' '.join(store)} audio to skip this",
                AudioWarning,
                stacklevel=3,
            )
    for start, chunk in split_at_pauses(blocks, rate):
        where = f"{name} at {start / rate:.1f}-{(start + len(chunk)) / rate:.1f} s"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AudioWarning)  # warned once above
            yield start / rate, prepare_samples(chunk, rate, target_sample_rate, name=where)


def release_freed_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere
    nothing), between batches of a long input.

    Without it the resident size creeps up while a long file is decoded, though the live heap
    does not: measured with ``default-asr`` over two passes of a 10 min file, live memory stayed
    at 155 MB while free fragments grew from 28 to 210 MB, and the resident size with them; with
    it the resident size between batches stayed within 5 MB. It returns only what is free, so
    the next batch faults those pages in again (a few ms against a batch's seconds).
    """
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
            _malloc_trim.argtypes, _malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        except (OSError, AttributeError, TypeError):  # not glibc
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)
