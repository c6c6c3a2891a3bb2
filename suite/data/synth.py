"""A synthetic multi-voice English speech corpus from offline synthesizers (``suite data
synth-speech``).

Each utterance is one sentence (from :class:`~suite.data.sentences.SentenceGenerator` or a text
file) spoken by one voice configuration at a random speed and pitch, optionally with additive
noise and synthetic reverb. Audio is 16 kHz mono FLAC; the manifests are lhotse recordings,
supervisions and cuts for the splits train, dev and test.

* **Engines** (:mod:`suite.data.engines`). espeak-ng, a dialect (en-us, en-gb, en-gb-scotland,
  en-029, ...) times a voice variant (+m3, +f2, +klatt, +croak, ...), is the default and alone
  gives the corpus of earlier versions, byte for byte. ``engines`` adds flite, festival and SVOX
  Pico, or ``"all"`` of them that are installed (a missing one is skipped with a warning; one
  named explicitly must be installed). A training utterance draws its engine with
  :data:`ENGINE_WEIGHTS`, then a voice of it.
* **Plan.** Seed -> an endless, index-based sequence of utterance specs (text, engine, voice,
  speed, pitch, augmentation, split). A corpus of ``hours`` is the shortest prefix of that
  sequence whose measured audio reaches ``hours``, so the same seed gives the same corpus, and a
  run with more hours extends a smaller one.
* **Splits.** Sentences are disjoint across splits: a distinct sentence gets its split when first
  seen (about 90/5/5), and a repeated one keeps it; the sentences of a folder that
  ``suite data text`` wrote keep the split of their file (:mod:`suite.data.synth_text`), so
  text held out of a language model's training is held out of the speech too. A seeded tenth
  of espeak-ng's voice configurations is held out of train and dev, and so is one whole engine
  (SVOX Pico by default: its own lineage, where flite and festival share voices and code).
  Test utterances take turns: the held-out engine, a held-out espeak-ng voice, a voice seen in
  training (``engine_seen_in_train``, ``voice_seen_in_train``).
* **Determinism.** libespeak-ng and Pico carry state from one utterance to the next (speaking the
  same text twice gives different samples) and cannot be re-initialized in-process, so each of
  their utterances is synthesized in a fresh ``fork`` of a worker that has loaded the library and
  spoken one fixed warm-up sentence; flite and festival run as a new process per utterance;
  noise is seeded per utterance. Same seed, same bytes, whatever the number of workers or
  interruptions (with the same engine versions).
* **Resume.** Audio is written atomically, so an existing FLAC is complete and is reused; the
  manifests are rebuilt from the plan at the end of every run. ``synth_settings.json`` records
  what fixes the plan (seed, augmentation, text, engines and their versions, a fingerprint of the
  plan's start), and a run with other settings refuses the folder instead of mixing two corpora.

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

from suite.data.effects import SAMPLE_RATE, add_noise, add_reverb, resample
from suite.data.engines import get_engine, resolve_engines
from suite.data.sentences import read_text_file
from suite.data.synth_manifests import write_manifests
from suite.data.synth_text import sentences, text_split_files
from suite.errors import UserError
from suite.io import atomic_path, atomic_write_text
from suite.text import normalize_text

SPLITS = ("train", "dev", "test")
# Bump when the plan or the rendering changes, so old folders are not mixed in. An espeak-only
# corpus keeps version 1 (and its settings, ids and file names): those folders still resume.
PLAN_VERSION = 2
ESPEAK_ONLY_PLAN_VERSION = 1
# A training utterance's engine, drawn with these weights over the engines in use: espeak-ng's
# 367 training voice configurations share half; flite's 4 and festival's 3 voices get 7% each.
ENGINE_WEIGHTS = {"espeak": 0.5, "flite": 0.3, "festival": 0.2, "pico": 0.2}

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
        spoken: what the engine is given: ``text``'s words plus sentence punctuation.
        voice: the voice configuration id (the speaker), e.g. ``en-gb+f3`` or ``flite-slt``.
        rate: speed in words per minute (175 is every engine's normal speed).
        pitch: base pitch on espeak's scale, 0-100 (50 is the voice's own).
        pitch_range: pitch range on espeak's scale, 0-100 (where the engine has one).
        augmentation: what is applied after synthesis: ``noise`` (``white``/``pink``) with
            ``snr_db``, and/or ``rt60`` (reverb); empty for clean audio.
        voice_seen_in_train: whether ``voice`` may occur in train (false for held-out ones).
        engine: the synthesizer (:func:`~suite.data.engines.list_engines`).
        engine_seen_in_train: whether ``engine`` may occur in train (false for the held-out one).
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
    # Fields added after plan version 1; left out of an espeak-only plan's fingerprint.
    engine: str = "espeak"
    engine_seen_in_train: bool = True

    def audio_path(self, out_dir: str | Path) -> Path:
        """Where the FLAC lives: ``OUT/audio/<index // 1000>/<id>.flac``."""
        return Path(out_dir) / "audio" / f"{self.index // 1000:05d}" / f"{self.id}.flac"


def _test_kinds(engines: tuple[str, ...], held_out_engine: str | None) -> tuple[str, ...]:
    """What the test utterances take turns at: ``engine`` (the held-out engine), ``voice`` (a
    held-out espeak-ng voice), ``seen``; an espeak-only plan alternates voice and seen."""
    kinds = ("engine",) if held_out_engine is not None else ()
    voices = "espeak" in engines and held_out_engine != "espeak"
    return kinds + (("voice",) if voices else ()) + ("seen",)


def plan_utterances(
    seed: int,
    text_file: str | Path | None = None,
    augment: bool = True,
    engines: tuple[str, ...] = ("espeak",),
    held_out_engine: str | None = None,
) -> Iterator[UtteranceSpec]:
    """The endless, deterministic sequence of utterance specs for ``seed``.

    Args:
        seed: fixes the sentences, voices, speeds, pitches, augmentations and held-out voices.
        text_file: speak its lines instead of generated sentences.
        augment: add noise and reverb to a fraction of the utterances.
        engines: the synthesizers to use (installed or not: the plan does not look).
        held_out_engine: one of ``engines`` that speaks only test utterances, or ``None``.
    """
    rng = random.Random(f"plan/{seed}")
    unseen = held_out_voices(seed)
    seen = sorted(set(voice_configs()) - set(unseen))
    trained = [name for name in engines if name != held_out_engine]
    weights = [ENGINE_WEIGHTS[name] for name in trained]
    kinds = _test_kinds(engines, held_out_engine)
    prefix = _prefix(engines, held_out_engine)
    tests = 0
    for index, (text, spoken, split) in enumerate(sentences(seed, text_file)):
        kind = "seen"
        if split == "test":
            kind = kinds[tests % len(kinds)]  # take turns, so any test split holds every kind
            tests += 1
        if kind == "engine":
            engine = held_out_engine
        elif kind == "voice" or len(trained) == 1:  # an espeak-only plan draws no engine
            engine = "espeak" if kind == "voice" else trained[0]
        else:
            engine = rng.choices(trained, weights)[0]
        if engine == "espeak":
            voice = rng.choice(unseen if kind == "voice" else seen)
        else:
            voice = rng.choice(get_engine(engine).voices)
        rate = rng.randint(*RATE_RANGE)
        pitch = rng.randint(*PITCH_RANGE)
        pitch_range = rng.randint(*INTONATION_RANGE)
        augmentation: dict[str, Any] = {}
        if augment and rng.random() < AUGMENT_PROBABILITY:
            kind_of_noise = rng.choice(("noise", "reverb", "both"))
            if kind_of_noise in ("noise", "both"):
                augmentation["noise"] = rng.choice(("white", "pink"))
                augmentation["snr_db"] = round(rng.uniform(*SNR_DB_RANGE), 1)
            if kind_of_noise in ("reverb", "both"):
                augmentation["rt60"] = round(rng.uniform(*RT60_RANGE), 2)
        yield UtteranceSpec(
            index=index,
            id=f"{prefix}-s{seed}-{index:08d}",
            split=split,
            text=text,
            spoken=spoken,
            voice=voice,
            rate=rate,
            pitch=pitch,
            pitch_range=pitch_range,
            augmentation=augmentation,
            voice_seen_in_train=kind == "seen",
            engine=engine,
            engine_seen_in_train=kind != "engine",
        )


def _espeak_only(engines: tuple[str, ...], held_out_engine: str | None) -> bool:
    return tuple(engines) == ("espeak",) and held_out_engine is None


def _prefix(engines: tuple[str, ...], held_out_engine: str | None) -> str:
    """Utterance ids and manifest names start with it: ``espeak`` as before for an espeak-only
    corpus, ``synth`` for a mixed one."""
    return "espeak" if _espeak_only(engines, held_out_engine) else "synth"


# -- rendering (runs in the worker processes) ----------------------------------------------------


def _speak(spec: UtteranceSpec) -> tuple[np.ndarray, int]:
    """Speak ``spec`` with its engine: float32 samples and their rate. An in-process engine
    speaks in a forked child, so it starts from the state this worker had after
    :func:`_init_worker`, whatever was spoken before."""
    engine = get_engine(spec.engine)
    args = (spec.spoken, spec.voice, spec.rate, spec.pitch, spec.pitch_range)
    # Windows has no fork: still correct audio there, but history-dependent details.
    if not engine.in_process or not hasattr(os, "fork"):
        return engine.synthesize(*args)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child only speaks, and must never return into the pool's code
        try:
            os.close(read_end)
            try:
                samples, rate = engine.synthesize(*args)
                pcm = (samples * 32768.0).astype(np.int16).tobytes()
                reply = b"ok" + rate.to_bytes(4, "little") + pcm
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
        rate = int.from_bytes(reply[2:6], "little")
        return np.frombuffer(reply[6:], dtype=np.int16).astype(np.float32) / 32768.0, rate
    detail = reply[2:].decode(errors="replace") if reply else f"wait status {status}"
    raise RuntimeError(f"{spec.engine} failed on {spec.id} ({spec.spoken!r}):\n{detail}")


def render(spec: UtteranceSpec, seed: int) -> np.ndarray:
    """Synthesize, resample to 16 kHz and augment one utterance; float32 mono in [-1, 1]."""
    audio, rate = _speak(spec)
    if audio.size == 0:
        raise RuntimeError(f"{spec.engine} produced no audio for {spec.id}: {spec.spoken!r}")
    audio = resample(audio, rate, SAMPLE_RATE)
    rng = np.random.default_rng([seed, spec.index])
    if "rt60" in spec.augmentation:
        audio = add_reverb(audio, spec.augmentation["rt60"], rng)
    if "noise" in spec.augmentation:
        audio = add_noise(audio, spec.augmentation["snr_db"], spec.augmentation["noise"], rng)
    peak = float(np.max(np.abs(audio)))
    if peak > 0.99:  # keep PCM_16 from clipping after noise or reverb
        audio *= 0.95 / peak
    return audio


_init_error: str | None = None  # why this worker's engines failed to load, if they did


def _init_worker(engines: tuple[str, ...]) -> None:
    # Load the in-process engines and warm them up with a fixed utterance (the first one in a
    # process pays for lazy set-up); every fork then starts from this same state, in every worker.
    # A failure is kept for the first task to raise: an initializer that raises makes
    # multiprocessing.Pool start a new worker for ever.
    global _init_error
    try:
        for name in engines:
            if get_engine(name).in_process:
                get_engine(name).load()
    except Exception as e:
        _init_error = f"the {name} engine failed to start in a worker: {type(e).__name__}: {e}"


def _render_task(spec: UtteranceSpec, seed: int, out_dir: str) -> tuple[int, bool]:
    """``(num_samples, synthesized)`` for one utterance, reusing a complete existing FLAC."""
    if _init_error is not None:
        raise UserError(f"{_init_error}; reinstall it ({get_engine(spec.engine).install})")
    path = spec.audio_path(out_dir)
    if path.exists():
        return sf.info(str(path)).frames, False
    audio = render(spec, seed)
    with atomic_path(path) as tmp:
        sf.write(tmp, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return len(audio), True


# -- the corpus ---------------------------------------------------------------------------------


def _file_digest(path: Path) -> str:
    """SHA-256 of a file, or of a text folder's split files (names and contents)."""
    digest = hashlib.sha256()
    files = sorted(text_split_files(path).items()) if path.is_dir() else [("", path)]
    for name, file in files:
        digest.update(name.encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _plan_fingerprint(
    seed: int,
    text_file: str | Path | None,
    augment: bool,
    engines: tuple[str, ...] = ("espeak",),
    held_out_engine: str | None = None,
) -> str:
    head = islice(plan_utterances(seed, text_file, augment, engines, held_out_engine), 64)
    records = [asdict(spec) for spec in head]
    if _espeak_only(engines, held_out_engine):  # as plan version 1 wrote it: still resumes
        for record in records:
            del record["engine"], record["engine_seen_in_train"]
    return hashlib.sha256(json.dumps(records).encode()).hexdigest()[:16]


def _settings(
    seed: int,
    text_file: str | Path | None,
    augment: bool,
    engines: tuple[str, ...],
    held_out_engine: str | None,
) -> dict[str, Any]:
    """What fixes a corpus; an espeak-only one records exactly what plan version 1 did."""
    espeak_only = _espeak_only(engines, held_out_engine)
    settings = {
        "plan_version": ESPEAK_ONLY_PLAN_VERSION if espeak_only else PLAN_VERSION,
        "seed": seed,
        "augment": augment,
        "text_file_sha256": _file_digest(Path(text_file)) if text_file is not None else None,
    }
    if espeak_only:
        settings["espeak_ng"] = get_engine("espeak").version()
    else:
        settings["engines"] = {name: get_engine(name).version() for name in engines}
        settings["held_out_engine"] = held_out_engine
    # Catches changed word lists, voices or plan code that PLAN_VERSION was not bumped for.
    settings["plan_fingerprint"] = _plan_fingerprint(
        seed, text_file, augment, engines, held_out_engine
    )
    return settings


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Refuse to mix two plans in one folder; record this plan's settings for later runs."""
    path = out / "synth_settings.json"
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != settings:
            changed = sorted(
                k for k in settings.keys() | previous.keys() if previous.get(k) != settings.get(k)
            )
            hint = f"--engines {','.join(previous.get('engines', ['espeak']))}"
            if "engines" in previous:
                hint += f" --held-out-engine {previous.get('held_out_engine') or 'none'}"
            raise UserError(
                f"{out} already holds a corpus synthesized with other settings "
                f"({', '.join(changed)} differ: {previous} vs {settings}); to continue it, "
                f"pass its settings ({hint}, ...), pass another --out folder, or delete this "
                "one to start over"
            )
        return
    atomic_write_text(path, json.dumps(settings, indent=2) + "\n")


def _audio_files(out: Path) -> Iterator[Path]:
    audio = out / "audio"
    if audio.is_dir():
        yield from audio.glob("*/*.flac")


def _remove_strays(out: Path, prefix: str, keep: set[str] | None) -> None:
    """Delete temporary files a killed run left behind (``suite.io.atomic_path`` names them
    ``.<name>.<random>``) and, given ``keep``, every FLAC not in it (beyond the corpus's end)."""
    for path in out.glob(f".{prefix}_*.jsonl.gz"):
        path.unlink(missing_ok=True)
    for path in _audio_files(out):
        if path.name.startswith(f".{prefix}-"):
            path.unlink(missing_ok=True)
        elif keep is not None and path.name.startswith(f"{prefix}-") and path.stem not in keep:
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
    if text_file is not None and Path(text_file).is_dir():
        text_split_files(Path(text_file))  # each split's file exists (read when planned)
    elif text_file is not None:
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
    engines: str | list[str] | tuple[str, ...] | None = None,
    held_out_engine: str | None = None,
) -> dict[str, Any]:
    """Synthesize (or finish, or extend) a corpus of ``hours`` of speech in ``out_dir``.

    Writes ``OUT/audio/**.flac`` (16 kHz mono), ``OUT/P_{recordings,supervisions,cuts}_
    {train,dev,test}.jsonl.gz`` (lhotse; ``P`` is ``espeak`` for an espeak-only corpus and
    ``synth`` for a mixed one, which also gets ``synth_cuts_test_unseen_engine.jsonl.gz``, the
    held-out engine's test cuts) and ``OUT/corpus.json`` (a summary).

    Args:
        out_dir: output folder; a re-run reuses the audio already there.
        hours: total audio over all splits; the corpus stops at the first utterance that
            reaches it.
        seed: fixes everything; the same seed gives byte-identical audio and equal manifests.
        text_file: speak the lines of this UTF-8 file instead of generated sentences.
        num_workers: synthesis processes (default: ``os.cpu_count()``).
        augment: add noise and/or reverb to about a third of the utterances.
        engines: the synthesizers (see :func:`resolve_engines`); default espeak-ng only.
        held_out_engine: the engine heard only in test (see :func:`resolve_engines`).

    Returns:
        A summary: ``hours`` per split, ``total_hours``, ``utterances``, ``voice_configs``
        (distinct ones used), ``synthesized`` / ``reused`` utterances, ``wall_seconds``,
        ``real_time_factor`` (wall time / audio time) and ``times_real_time`` (its inverse).

    Raises:
        UserError: for bad arguments, a missing or empty text file, an engine not installed,
            or an ``out_dir`` made with other settings.
    """
    _validate_request(hours, seed, text_file, num_workers)
    engines, held_out_engine = resolve_engines(engines, held_out_engine)
    prefix = _prefix(engines, held_out_engine)
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings(seed, text_file, augment, engines, held_out_engine)
    _check_settings(out, settings)
    _remove_strays(out, prefix, keep=None)
    workers = num_workers or os.cpu_count() or 1
    target = hours * 3600.0

    kept: list[tuple[UtteranceSpec, int]] = []
    total = 0.0
    synthesized = 0
    # spawn, not fork: the workers must not inherit this process's threads (tqdm, torch) when
    # they fork per utterance, and their imports stay small.
    context = multiprocessing.get_context("spawn")
    with (
        context.Pool(workers, initializer=_init_worker, initargs=(engines,)) as pool,
        tqdm(total=round(target), unit="s", desc="synthesizing speech", smoothing=0.1) as bar,
    ):
        specs = plan_utterances(seed, text_file, augment, engines, held_out_engine)
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
    _remove_strays(out, prefix, keep={spec.id for spec, _ in kept})

    summary = write_manifests(out, prefix, kept, seed, settings)
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
        f"{summary['voice_configs']} voice configs of {', '.join(engines)} to {out} in "
        f"{wall:.1f} s "
        f"({summary['times_real_time']}x real time; {synthesized} synthesized, "
        f"{len(kept) - synthesized} reused)"
    )
    return summary
