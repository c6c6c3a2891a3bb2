"""A synthetic multi-voice English speech corpus from espeak-ng (``suite data synth-speech``).

Each utterance is one sentence (from :class:`~suite.data.sentences.SentenceGenerator` or a text
file) spoken by one voice configuration, a dialect (en-us, en-gb, en-gb-scotland, en-029, ...)
times a voice variant (+m3, +f2, +klatt, +croak, ...), at a random speed and pitch, optionally
with additive noise and synthetic reverb. Audio is 16 kHz mono FLAC; the manifests are lhotse
recordings, supervisions and cuts for the splits train, dev and test.

* **Plan.** Seed -> an endless, index-based sequence of utterance specs (text, voice, speed,
  pitch, augmentation, split). A corpus of ``hours`` is the shortest prefix of that sequence
  whose measured audio reaches ``hours``, so the same seed gives the same corpus, and a run with
  more hours extends a smaller one.
* **Splits.** Sentences are disjoint across splits: a distinct sentence gets its split when first
  seen (about 90/5/5), and a repeated one keeps it. A seeded tenth of the voice configurations is
  held out of train and dev; half of the test utterances use them (``voice_seen_in_train``).
* **Determinism.** libespeak-ng carries state from one utterance to the next (speaking the same
  text twice gives a few samples' difference) and cannot be re-initialized in-process, so every
  utterance is synthesized in a fresh ``fork`` of a worker that has loaded the library and
  spoken one fixed warm-up sentence; noise is seeded per utterance. Same seed, same bytes,
  whatever the number of workers or interruptions (with the same espeak-ng version).
* **Resume.** Audio is written atomically, so an existing FLAC is complete and is reused; the
  manifests are rebuilt from the plan at the end of every run. ``synth_settings.json`` records
  what fixes the plan (seed, augmentation, text, espeak-ng version, a fingerprint of the plan's
  start), and a run with other settings refuses the folder instead of mixing two corpora.

Workers are started with ``spawn``: a script calling :func:`synthesize_corpus` needs the usual
``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import random
import time
import traceback
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm import tqdm

from suite.data.espeak import INSTALL_HINT, Espeak, find_library
from suite.data.espeak import version as espeak_version
from suite.data.sentences import SentenceGenerator, read_text_file, speakable
from suite.errors import UserError
from suite.io import atomic_path, atomic_write_text
from suite.text import normalize_text

SAMPLE_RATE = 16000
SPLITS = ("train", "dev", "test")
PLAN_VERSION = 1  # bump when the plan or the rendering changes, so old folders are not mixed in

# Dialect label (the speaker id prefix) -> espeak-ng voice name.
DIALECTS = {
    "en-us": "en-us",
    "en-gb": "en",
    "en-gb-scotland": "en-gb-scotland",
    "en-029": "en-029",
    "en-gb-x-rp": "en-gb-x-rp",
    "en-gb-x-gbclan": "en-gb-x-gbclan",
    "en-gb-x-gbcwmd": "en-gb-x-gbcwmd",
    "en-us-nyc": "en-us-nyc",
}
# espeak-ng voice variants (``espeak-ng --voices=variant``). Whispering, robotic and novelty
# variants (whisper, whisperf, robosoft*, UniRobot, Demonic, Tweaky, announcer, ...) are left
# out: they are hard to understand even for people.
VARIANTS = (
    "m1 m2 m3 m4 m5 m6 m7 m8 f1 f2 f3 f4 f5 klatt klatt2 klatt3 klatt4 croak Andy Annie Alex "
    "Alicia Andrea adam anika aunty belinda benjamin caleb david ed edward Gene iven john Lee "
    "linda max Mike Michael norbert paul quincy rob robert steph travis victor zac grandma "
    "grandpa"
).split()
HELD_OUT_FRACTION = 0.1
RATE_RANGE = (130, 210)  # words per minute
PITCH_RANGE = (30, 70)  # espeak base pitch, 50 = the voice's normal
INTONATION_RANGE = (30, 80)  # espeak pitch range, 50 = normal
AUGMENT_PROBABILITY = 0.35
SNR_DB_RANGE = (5.0, 30.0)
RT60_RANGE = (0.2, 0.8)  # seconds for the impulse response to decay by 60 dB
_WINDOW_PER_WORKER = 4  # in-flight utterances per worker: keeps workers busy, bounds overshoot


def voice_configs() -> list[str]:
    """Every voice configuration id, ``"{dialect}+{variant}"`` (e.g. ``"en-gb-scotland+f3"``)."""
    return [f"{dialect}+{variant}" for dialect in DIALECTS for variant in VARIANTS]


def espeak_voice(config: str) -> str:
    """The espeak-ng voice name for a configuration id (``"en-gb+f3"`` -> ``"en+f3"``)."""
    dialect, _, variant = config.partition("+")
    return f"{DIALECTS[dialect]}+{variant}"


def held_out_voices(seed: int) -> list[str]:
    """The configurations used only in the test split, a fixed seeded sample of all of them."""
    configs = voice_configs()
    k = max(1, round(HELD_OUT_FRACTION * len(configs)))
    return sorted(random.Random(f"held-out/{seed}").sample(configs, k))


@dataclass(frozen=True)
class UtteranceSpec:
    """Everything needed to render one utterance; a pure function of the seed and the index.

    Attributes:
        index: position in the plan.
        id: recording, supervision and cut id.
        split: ``train``, ``dev`` or ``test``.
        text: the transcript (:func:`~suite.text.normalize_text` output).
        spoken: what espeak-ng is given: ``text``'s words plus sentence punctuation.
        voice: the voice configuration id (the speaker).
        rate: speed in words per minute.
        pitch: espeak base pitch (0-100).
        pitch_range: espeak pitch range (0-100).
        augmentation: what is applied after synthesis: ``noise`` (``white``/``pink``) with
            ``snr_db``, and/or ``rt60`` (reverb); empty for clean audio.
        voice_seen_in_train: whether ``voice`` may occur in train (false for held-out ones).
    """

    index: int
    id: str
    split: str
    text: str
    spoken: str
    voice: str
    rate: int
    pitch: int
    pitch_range: int
    augmentation: dict[str, Any] = field(default_factory=dict)
    voice_seen_in_train: bool = True

    def audio_path(self, out_dir: str | Path) -> Path:
        """Where the FLAC lives: ``OUT/audio/<index // 1000>/<id>.flac``."""
        return Path(out_dir) / "audio" / f"{self.index // 1000:05d}" / f"{self.id}.flac"


def _split_of(distinct_index: int) -> str:
    # 1 in 20 distinct sentences to test and 1 in 20 to dev (~90/5/5); test comes first so
    # that even a tiny corpus has a test split.
    slot = distinct_index % 20
    return "test" if slot == 0 else "dev" if slot == 10 else "train"


def _sentences(seed: int, text_file: str | Path | None) -> Iterator[tuple[str, str, str]]:
    """Distinct ``(text, spoken, split)`` in plan order. A text file is cycled once used up:
    later passes repeat its sentences (with new voices), each in the split it was given."""
    source = SentenceGenerator(seed) if text_file is None else read_text_file(text_file)
    seen: set[str] = set()
    first_pass: list[tuple[str, str, str]] = []
    for raw in source:
        spoken = speakable(raw)
        text = normalize_text(spoken)
        if not text or text in seen:
            continue
        item = (text, spoken, _split_of(len(seen)))
        seen.add(text)
        if text_file is not None:
            first_pass.append(item)
        yield item
    if not first_pass:
        raise UserError(
            f"text file {text_file} holds no text to speak (no line has a word after "
            "normalization); give it one sentence per line, or leave --text out"
        )
    while True:
        yield from first_pass


def plan_utterances(
    seed: int, text_file: str | Path | None = None, augment: bool = True
) -> Iterator[UtteranceSpec]:
    """The endless, deterministic sequence of utterance specs for ``seed``.

    Args:
        seed: fixes the sentences, voices, speeds, pitches, augmentations and held-out voices.
        text_file: speak its lines instead of generated sentences.
        augment: add noise and reverb to a fraction of the utterances.
    """
    rng = random.Random(f"plan/{seed}")
    unseen = held_out_voices(seed)
    seen = sorted(set(voice_configs()) - set(unseen))
    tests = 0
    for index, (text, spoken, split) in enumerate(_sentences(seed, text_file)):
        held_out = False
        if split == "test":
            held_out = tests % 2 == 0  # alternate, so any test split holds both kinds
            tests += 1
        voice = rng.choice(unseen if held_out else seen)
        rate = rng.randint(*RATE_RANGE)
        pitch = rng.randint(*PITCH_RANGE)
        pitch_range = rng.randint(*INTONATION_RANGE)
        augmentation: dict[str, Any] = {}
        if augment and rng.random() < AUGMENT_PROBABILITY:
            kind = rng.choice(("noise", "reverb", "both"))
            if kind in ("noise", "both"):
                augmentation["noise"] = rng.choice(("white", "pink"))
                augmentation["snr_db"] = round(rng.uniform(*SNR_DB_RANGE), 1)
            if kind in ("reverb", "both"):
                augmentation["rt60"] = round(rng.uniform(*RT60_RANGE), 2)
        yield UtteranceSpec(
            index=index,
            id=f"espeak-s{seed}-{index:08d}",
            split=split,
            text=text,
            spoken=spoken,
            voice=voice,
            rate=rate,
            pitch=pitch,
            pitch_range=pitch_range,
            augmentation=augmentation,
            voice_seen_in_train=not held_out,
        )


# -- rendering (runs in the worker processes) ----------------------------------------------------


def _fft_size(n: int) -> int:
    # numpy's FFT is fastest on sizes with small prime factors; powers of two are simplest.
    return 1 << max(0, n - 1).bit_length()


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling by zero-padded FFT (what ``scipy.signal.resample`` does).

    The signal is padded with silence first so that its end does not wrap onto its start.
    Numpy only, to keep the worker processes small: scipy's import alone costs most of a second.
    """
    if source_rate == target_rate:
        return audio.astype(np.float32)
    n = len(audio)
    g = math.gcd(source_rate, target_rate)
    up, down = target_rate // g, source_rate // g
    padded = -(-(n + down) // down) * down  # room for the wrap-around, whole periods of `down`
    m = padded // down * up
    spectrum = np.fft.rfft(audio, padded)
    keep = min(len(spectrum), m // 2 + 1)
    out = np.fft.irfft(spectrum[:keep], m) * (m / padded)
    return out[: round(n * up / down)].astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, color: str, rng: np.random.Generator) -> np.ndarray:
    """``audio`` plus white or pink (1/f) Gaussian noise at ``snr_db`` (over the whole signal)."""
    noise = rng.standard_normal(len(audio))
    if color == "pink":
        spectrum = np.fft.rfft(noise)
        spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1.0))
        noise = np.fft.irfft(spectrum, n=len(audio))
    speech_power = float(np.mean(audio**2)) or 1e-8
    noise_power = float(np.mean(noise**2)) or 1e-8
    scale = math.sqrt(speech_power / (noise_power * 10 ** (snr_db / 10)))
    return (audio + scale * noise).astype(np.float32)


def add_reverb(
    audio: np.ndarray, rt60: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """``audio`` convolved with a synthetic room response: a direct path plus exponentially
    decaying Gaussian noise that falls by 60 dB in ``rt60`` seconds. Keeps half the tail and
    the dry signal's RMS."""
    n = max(1, int(rt60 * sample_rate))
    t = np.arange(n) / sample_rate
    response = rng.standard_normal(n) * np.exp(-math.log(1000.0) * t / rt60)
    response *= 0.5 / np.linalg.norm(response)
    response[0] += 1.0
    size = _fft_size(len(audio) + n - 1)
    wet = np.fft.irfft(np.fft.rfft(audio, size) * np.fft.rfft(response, size), size)
    wet = wet[: len(audio) + n // 2]
    dry_rms = math.sqrt(float(np.mean(audio**2)) or 1e-8)
    wet_rms = math.sqrt(float(np.mean(wet**2)) or 1e-8)
    return (wet * (dry_rms / wet_rms)).astype(np.float32)


def _speak_in_fresh_fork(spec: UtteranceSpec) -> np.ndarray:
    """Speak ``spec`` in a forked child, so libespeak-ng starts from the state this worker had
    after :func:`_init_worker`, whatever was spoken before; float32 at espeak's rate."""
    espeak = Espeak.get()
    args = (spec.spoken, espeak_voice(spec.voice), spec.rate, spec.pitch, spec.pitch_range)
    if not hasattr(os, "fork"):  # Windows: still correct audio, but history-dependent details
        return espeak.synthesize(*args)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child only speaks, and must never return into the pool's code
        try:
            os.close(read_end)
            try:
                samples = espeak.synthesize(*args)
                reply = b"ok" + (samples * 32768.0).astype(np.int16).tobytes()
            except BaseException:
                reply = b"er" + traceback.format_exc().encode()
            with os.fdopen(write_end, "wb") as f:
                f.write(reply)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        reply = f.read()
    _, status = os.waitpid(pid, 0)
    if reply[:2] == b"ok":
        return np.frombuffer(reply[2:], dtype=np.int16).astype(np.float32) / 32768.0
    detail = reply[2:].decode(errors="replace") if reply else f"wait status {status}"
    raise RuntimeError(f"espeak-ng failed on {spec.id} ({spec.spoken!r}):\n{detail}")


def render(spec: UtteranceSpec, seed: int) -> np.ndarray:
    """Synthesize, resample to 16 kHz and augment one utterance; float32 mono in [-1, 1]."""
    audio = _speak_in_fresh_fork(spec)
    if audio.size == 0:
        raise RuntimeError(f"espeak-ng produced no audio for {spec.id}: {spec.spoken!r}")
    audio = resample(audio, Espeak.get().sample_rate, SAMPLE_RATE)
    rng = np.random.default_rng([seed, spec.index])
    if "rt60" in spec.augmentation:
        audio = add_reverb(audio, spec.augmentation["rt60"], rng)
    if "noise" in spec.augmentation:
        audio = add_noise(audio, spec.augmentation["snr_db"], spec.augmentation["noise"], rng)
    peak = float(np.max(np.abs(audio)))
    if peak > 0.99:  # keep PCM_16 from clipping after noise or reverb
        audio *= 0.95 / peak
    return audio


def _init_worker() -> None:
    # Load the library and warm it up with a fixed utterance (the first one in a process pays
    # for lazy set-up); every fork then starts from this same state, in every worker.
    Espeak.get().synthesize("warm up", "en-us", 175, 50)


def _render_task(spec: UtteranceSpec, seed: int, out_dir: str) -> tuple[int, bool]:
    """``(num_samples, synthesized)`` for one utterance, reusing a complete existing FLAC."""
    path = spec.audio_path(out_dir)
    if path.exists():
        return sf.info(str(path)).frames, False
    audio = render(spec, seed)
    with atomic_path(path) as tmp:
        sf.write(tmp, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return len(audio), True


# -- the corpus ---------------------------------------------------------------------------------


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _plan_fingerprint(seed: int, text_file: str | Path | None, augment: bool) -> str:
    head = islice(plan_utterances(seed, text_file, augment), 64)
    return hashlib.sha256(json.dumps([asdict(spec) for spec in head]).encode()).hexdigest()[:16]


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Refuse to mix two plans in one folder; record this plan's settings for later runs."""
    path = out / "synth_settings.json"
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != settings:
            changed = sorted(
                k for k in settings.keys() | previous.keys() if previous.get(k) != settings.get(k)
            )
            raise UserError(
                f"{out} already holds a corpus synthesized with other settings "
                f"({', '.join(changed)} differ: {previous} vs {settings}); pass another --out "
                "folder, or delete this one to start over"
            )
        return
    atomic_write_text(path, json.dumps(settings, indent=2) + "\n")


def _audio_files(out: Path) -> Iterator[Path]:
    audio = out / "audio"
    if audio.is_dir():
        yield from audio.glob("*/*.flac")


def _remove_strays(out: Path, keep: set[str] | None) -> None:
    """Delete temporary files a killed run left behind (``suite.io.atomic_path`` names them
    ``.<name>.<random>``) and, given ``keep``, every FLAC not in it (beyond the corpus's end)."""
    for path in out.glob(".espeak_*.jsonl.gz"):
        path.unlink(missing_ok=True)
    for path in _audio_files(out):
        if path.name.startswith(".espeak-"):
            path.unlink(missing_ok=True)
        elif keep is not None and path.name.startswith("espeak-") and path.stem not in keep:
            path.unlink(missing_ok=True)


def _validate_request(
    hours: float, seed: int, text_file: str | Path | None, num_workers: int | None
) -> None:
    if not (isinstance(hours, (int, float)) and math.isfinite(hours) and hours > 0):
        raise UserError(f"hours must be a positive number, got {hours!r}; pass e.g. --hours 1")
    if not isinstance(seed, int) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}; e.g. --seed 0")
    if num_workers is not None and num_workers < 1:
        raise UserError(f"num_workers must be at least 1, got {num_workers}; e.g. --jobs 2")
    if find_library() is None:
        raise UserError(f"libespeak-ng was not found; {INSTALL_HINT}")
    if text_file is not None:
        lines = read_text_file(text_file)
        if not any(normalize_text(line) for line in lines):
            raise UserError(
                f"text file {text_file} holds no text to speak (it is empty, or no line has a "
                "word after normalization); give it one sentence per line, or leave --text out"
            )


def synthesize_corpus(
    out_dir: str | Path,
    hours: float,
    seed: int,
    text_file: str | Path | None = None,
    num_workers: int | None = None,
    augment: bool = True,
) -> dict[str, Any]:
    """Synthesize (or finish, or extend) a corpus of ``hours`` of speech in ``out_dir``.

    Writes ``OUT/audio/**.flac`` (16 kHz mono), ``OUT/espeak_{recordings,supervisions,cuts}_
    {train,dev,test}.jsonl.gz`` (lhotse) and ``OUT/corpus.json`` (a summary).

    Args:
        out_dir: output folder; a re-run reuses the audio already there.
        hours: total audio over all splits; the corpus stops at the first utterance that
            reaches it.
        seed: fixes everything; the same seed gives byte-identical audio and equal manifests.
        text_file: speak the lines of this UTF-8 file instead of generated sentences.
        num_workers: synthesis processes (default: ``os.cpu_count()``).
        augment: add noise and/or reverb to about a third of the utterances.

    Returns:
        A summary: ``hours`` per split, ``total_hours``, ``utterances``, ``voice_configs``
        (distinct ones used), ``synthesized`` / ``reused`` utterances, ``wall_seconds``,
        ``real_time_factor`` (wall time / audio time) and ``times_real_time`` (its inverse).

    Raises:
        UserError: for bad arguments, a missing or empty text file, espeak-ng not installed,
            or an ``out_dir`` made with other settings.
    """
    _validate_request(hours, seed, text_file, num_workers)
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "plan_version": PLAN_VERSION,
        "seed": seed,
        "augment": augment,
        "text_file_sha256": _file_digest(Path(text_file)) if text_file is not None else None,
        "espeak_ng": espeak_version(),
        # Catches changed word lists, voices or plan code that PLAN_VERSION was not bumped for.
        "plan_fingerprint": _plan_fingerprint(seed, text_file, augment),
    }
    _check_settings(out, settings)
    _remove_strays(out, keep=None)
    workers = num_workers or os.cpu_count() or 1
    target = hours * 3600.0

    kept: list[tuple[UtteranceSpec, int]] = []
    total = 0.0
    synthesized = 0
    # spawn, not fork: the workers must not inherit this process's threads (tqdm, torch) when
    # they fork per utterance, and their imports stay small.
    context = multiprocessing.get_context("spawn")
    with (
        context.Pool(workers, initializer=_init_worker) as pool,
        tqdm(total=round(target), unit="s", desc="synthesizing speech", smoothing=0.1) as bar,
    ):
        specs = plan_utterances(seed, text_file, augment)
        pending: deque = deque()
        while True:
            while total < target and len(pending) < workers * _WINDOW_PER_WORKER:
                spec = next(specs)
                pending.append((spec, pool.apply_async(_render_task, (spec, seed, str(out)))))
            if not pending:
                break
            spec, result = pending.popleft()
            samples, fresh = result.get()
            if total >= target:  # in flight when the corpus became complete: removed below
                continue
            kept.append((spec, samples))
            synthesized += fresh
            seconds = samples / SAMPLE_RATE
            bar.update(min(round(total + seconds), round(target)) - round(total))
            total += seconds
    _remove_strays(out, keep={spec.id for spec, _ in kept})

    summary = _write_manifests(out, kept, seed, settings)
    wall = time.perf_counter() - start
    summary.update(
        out_dir=str(out),
        synthesized=synthesized,
        reused=len(kept) - synthesized,
        wall_seconds=round(wall, 2),
        real_time_factor=round(wall / total, 5),
        times_real_time=round(total / wall, 1),
    )
    tqdm.write(
        f"wrote {summary['total_hours']:.3f} h in {summary['utterances']} utterances from "
        f"{summary['voice_configs']} voice configs to {out} in {wall:.1f} s "
        f"({summary['times_real_time']}x real time; {synthesized} synthesized, "
        f"{len(kept) - synthesized} reused)"
    )
    return summary


def _write_manifests(
    out: Path, kept: list[tuple[UtteranceSpec, int]], seed: int, settings: dict[str, Any]
) -> dict[str, Any]:
    """Write the lhotse manifests of every split and ``corpus.json``; return the summary."""
    # lhotse (and torch with it) is only needed here, so the workers never import it.
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    by_split: dict[str, list[tuple[UtteranceSpec, int]]] = {split: [] for split in SPLITS}
    for spec, samples in kept:
        by_split[spec.split].append((spec, samples))
    hours: dict[str, float] = {}
    counts: dict[str, int] = {}
    for split, items in by_split.items():
        recordings, supervisions = [], []
        for spec, samples in items:
            recording = Recording.from_file(spec.audio_path(out).resolve(), recording_id=spec.id)
            if recording.num_samples != samples or recording.sampling_rate != SAMPLE_RATE:
                raise RuntimeError(f"{spec.audio_path(out)} does not match its plan; delete it")
            recordings.append(recording)
            supervisions.append(
                SupervisionSegment(
                    id=spec.id,
                    recording_id=spec.id,
                    start=0.0,
                    duration=recording.duration,
                    channel=0,
                    text=spec.text,
                    language="en",
                    speaker=spec.voice,
                    custom={
                        "voice": espeak_voice(spec.voice),
                        "rate": spec.rate,
                        "pitch": spec.pitch,
                        "pitch_range": spec.pitch_range,
                        "augmentation": spec.augmentation,
                        "voice_seen_in_train": spec.voice_seen_in_train,
                    },
                )
            )
        recording_set = RecordingSet.from_recordings(recordings)
        supervision_set = SupervisionSet.from_segments(supervisions)
        cuts = CutSet.from_manifests(recordings=recording_set, supervisions=supervision_set)
        for name, manifest in (
            ("recordings", recording_set),
            ("supervisions", supervision_set),
            ("cuts", cuts),
        ):
            with atomic_path(out / f"espeak_{name}_{split}.jsonl.gz", suffix=".jsonl.gz") as tmp:
                manifest.to_file(tmp)
        hours[split] = round(sum(s for _, s in items) / SAMPLE_RATE / 3600, 4)
        counts[split] = len(items)

    unseen = held_out_voices(seed)
    used = sorted({spec.voice for spec, _ in kept})
    corpus = {
        "description": "synthetic multi-voice English speech (espeak-ng), suite data synth-speech",
        "settings": settings,
        "sample_rate": SAMPLE_RATE,
        "hours": hours,
        "total_hours": round(sum(s for _, s in kept) / SAMPLE_RATE / 3600, 4),
        "utterances": counts,
        "voice_configs": {
            "all": len(voice_configs()),
            "held_out": unseen,
            "used": len(used),
            "used_seen": len(set(used) - set(unseen)),
            "used_unseen": len(set(used) & set(unseen)),
        },
        "manifests": {
            split: {
                k: f"espeak_{k}_{split}.jsonl.gz" for k in ("recordings", "supervisions", "cuts")
            }
            for split in SPLITS
        },
    }
    atomic_write_text(out / "corpus.json", json.dumps(corpus, indent=2) + "\n")
    return {
        "hours": hours,
        "total_hours": corpus["total_hours"],
        "utterances": len(kept),
        "utterances_per_split": counts,
        "voice_configs": len(used),
    }
