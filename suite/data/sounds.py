"""Sound scenes for audio captioning: 5-10 s mixtures of real ESC-10 clips, procedural events
and short spoken phrases, each with captions in varied phrasings and the structured events they
state, so that a captioner's event recall, precision and order can be scored exactly.

A scene (5-10 s; longer only when its spoken phrases need it) holds one or two *foreground
groups* in sequence and, half of the time, a *background* texture under them. A group is
``count`` (1-3) occurrences of one countable sound (a dog bark, a beep, a knock, a man
speaking, ...); a background is one texture (rain, wind, an engine hum, ...) spanning most of
the scene. Captions say what, how many, in what order and what goes on at the same time
("while rain falls, a dog barks twice, then a man speaks"; the background is stated as lasting
through the whole sequence, not overlapping one part of it); every caption
states every fact, and :func:`caption_facts` reads them back from any caption of this grammar
(:func:`score_caption` scores a model's caption against a scene with them).

Sounds (:data:`CLASSES`): ESC-10 clips (``source: esc10``; the shared pack, one loud window of
a countable clip per occurrence, a long stretch of a texture clip), procedural ones
(``procedural``: tones, beeps, sirens, chirps, clicks, knocks, engine hum, wind and rain
textures) and espeak-ng phrases (``speech``: a few words, a male or female voice). Loudness
varies per group (gain in dB, recorded); occurrences of a group are spaced by random gaps;
the background may be louder or quieter than the foreground.

Held out: from the composition seed, about 12% of the unordered class pairs never meet in a
``train`` or ``dev`` scene; every ``test`` scene holds one (its ``novel`` field). ESC-10 clips
come from folds 1-3 for ``train``, fold 4 for ``dev`` and fold 5 for ``test`` (held-out
recordings). Without the shared pack (or with ``esc10=False``) scenes use the procedural and
spoken sounds only; without espeak-ng, no speech.

Output (:func:`write_sounds`): per split, shards of ``shard_size`` scenes, each scene a 16 kHz
FLAC and each shard's manifest part written atomically; a rerun skips complete shards, then
``SPLIT.jsonl`` joins the parts. A scene depends only on ``(seed, split, index)``, so any
number of workers writes the same files. Manifest lines: ``id``, ``source`` (the FLAC's path),
``duration``, ``sampling_rate``, ``caption``, ``captions``, ``events`` (``class``, ``onset``,
``offset`` in seconds, ``source``, ``gain_db``, ``clip`` for ESC-10), ``groups``, ``novel``,
``credits`` (ESC-10 clips with author and license).

Dims legend: S - samples at :data:`SAMPLE_RATE`.
"""

from __future__ import annotations

import json
import random
import re
import zlib
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from suite.data.shards import check_settings, write_shards
from suite.data.shared import shared_data_dir
from suite.errors import UserError
from suite.io import atomic_path, atomic_write_text

SAMPLE_RATE = 16000
SPLITS = ("train", "dev", "test")
FOLDS = {"train": (1, 2, 3), "dev": (4,), "test": (5,)}
HELD_OUT_FRACTION = 0.12


@dataclass(frozen=True)
class SoundClass:
    """One kind of sound: what a caption calls it and how it is made.

    Attributes:
        name: the class name (ESC-10's label for its classes).
        phrase: the caption clause, present tense ("a dog barks").
        source: ``esc10``, ``procedural`` or ``speech``.
        texture: a background that lasts (rain) rather than a countable event (a bark).
    """

    name: str
    phrase: str
    source: str
    texture: bool = False


CLASSES = {
    c.name: c
    for c in [
        SoundClass("dog_bark", "a dog barks", "esc10"),
        SoundClass("rooster", "a rooster crows", "esc10"),
        SoundClass("baby_cry", "a baby cries", "esc10"),
        SoundClass("person_sneeze", "someone sneezes", "esc10"),
        SoundClass("rain", "rain falls", "esc10", texture=True),
        SoundClass("sea_waves", "waves wash ashore", "esc10", texture=True),
        SoundClass("helicopter", "a helicopter flies", "esc10", texture=True),
        SoundClass("chainsaw", "a chainsaw runs", "esc10", texture=True),
        SoundClass("fire_crackling", "a fire crackles", "esc10", texture=True),
        SoundClass("clock_tick", "a clock ticks", "esc10", texture=True),
        SoundClass("tone", "a tone sounds", "procedural"),
        SoundClass("beep", "a device beeps", "procedural"),
        SoundClass("chirp", "a bird chirps", "procedural"),
        SoundClass("knock", "someone knocks", "procedural"),
        SoundClass("click", "something clicks", "procedural"),
        SoundClass("siren", "a siren wails", "procedural", texture=True),
        SoundClass("engine", "an engine hums", "procedural", texture=True),
        SoundClass("wind", "wind blows", "procedural", texture=True),
        SoundClass("drizzle", "light rain patters", "procedural", texture=True),
        SoundClass("man_speech", "a man speaks", "speech"),
        SoundClass("woman_speech", "a woman speaks", "speech"),
    ]
}
COUNT_WORDS = {1: "once", 2: "twice", 3: "three times"}
PHRASES = [
    "the cat sat down",
    "good morning",
    "look over there",
    "please close the door",
    "it is time to go",
    "hello again",
    "where are you",
    "that was close",
]


class SoundDataError(UserError):
    """Bad settings or inputs for sound scenes; the message says what to change."""


@dataclass
class SoundConfig:
    """What :func:`write_sounds` makes. Plain values only (saved as the folder's settings).

    Attributes:
        seed: scene seed (a scene depends on ``(seed, split, index)`` only).
        composition_seed: which class pairs are held out for ``test``.
        min_seconds / max_seconds: scene duration range.
        esc10: use the shared pack's ESC-10 clips (an error when asked for and absent).
        speech: include espeak-ng phrases (an error when asked for and not installed).
        shard_size: scenes per shard (per manifest part).
        counts: scenes per split.
        esc10_dir: the folder holding ``esc10.jsonl`` (default: the shared pack's
            ``noise/sounds``).
    """

    seed: int = 0
    composition_seed: int = 0
    min_seconds: float = 5.0
    max_seconds: float = 10.0
    esc10: bool = True
    speech: bool = True
    shard_size: int = 500
    counts: dict[str, int] = field(default_factory=lambda: {"train": 5000, "dev": 200, "test": 500})
    esc10_dir: str = ""

    def check(self) -> None:
        if not 1.0 <= self.min_seconds <= self.max_seconds:
            raise SoundDataError(
                f"scene durations need 1 <= min_seconds <= max_seconds, got "
                f"{self.min_seconds}..{self.max_seconds}"
            )
        unknown = sorted(set(self.counts) - set(SPLITS))
        if unknown:
            raise SoundDataError(f"unknown splits {unknown}; splits are {', '.join(SPLITS)}")
        if self.shard_size < 1:
            raise SoundDataError(f"shard_size must be >= 1, got {self.shard_size}")

    def classes(self) -> list[str]:
        skip = {"esc10"} if not self.esc10 else set()
        if not self.speech:
            skip.add("speech")
        return sorted(n for n, c in CLASSES.items() if c.source not in skip)


# --- Sources ----------------------------------------------------------------------------------


def default_esc10_dir() -> Path | None:
    root = shared_data_dir()
    path = root / "noise" / "sounds" if root is not None else None
    return path if path is not None and (path / "esc10.jsonl").is_file() else None


@lru_cache(maxsize=4)
def esc10_clips(directory: str) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """ESC-10's clip records by ``(label, fold)``, from ``directory/esc10.jsonl``."""
    index = Path(directory) / "esc10.jsonl"
    if not index.is_file():
        raise SoundDataError(
            f"no ESC-10 index at {index}; pass esc10_dir (--esc10-dir) pointing at the shared "
            "pack's noise/sounds folder, or esc10=False (--no-esc10) for procedural sounds only"
        )
    clips: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for line in index.read_text().splitlines():
        row = json.loads(line)
        clips.setdefault((row["label"], int(row["fold"])), []).append(row)
    return clips


@lru_cache(maxsize=64)
def _read_clip(path: str) -> np.ndarray:
    import soundfile as sf

    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise SoundDataError(f"{path} is at {rate} Hz; ESC-10 in the shared pack is 16 kHz")
    return audio[:, 0].copy()


def _loud_window(audio: np.ndarray, seconds: float) -> np.ndarray:
    """The ``seconds`` of ``audio`` with the most energy (one bark, one crow)."""
    n = min(len(audio), int(seconds * SAMPLE_RATE))
    power = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
    start = int(np.argmax(power[n:] - power[:-n]))  # energy of each window of n samples
    return audio[start : start + n]


def _fade(x: np.ndarray, seconds: float = 0.02) -> np.ndarray:
    n = min(len(x) // 2, int(seconds * SAMPLE_RATE))
    if n:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        x = x.copy()
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def _normalize(x: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0
    return (x / rms * 0.1).astype(np.float32) if rms > 1e-6 else x.astype(np.float32)


def _procedural(name: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A procedural sound of ``seconds`` (textures) or its own short length (events)."""
    sr = SAMPLE_RATE
    if name == "tone":
        t = np.arange(int(rng.uniform(0.4, 0.8) * sr)) / sr
        return np.sin(2 * np.pi * rng.uniform(300, 900) * t)
    if name == "beep":
        t = np.arange(int(rng.uniform(0.1, 0.2) * sr)) / sr
        return np.sign(np.sin(2 * np.pi * rng.uniform(1000, 2500) * t)) * 0.5
    if name == "chirp":  # a rising then falling whistle
        t = np.arange(int(rng.uniform(0.15, 0.3) * sr)) / sr
        f = rng.uniform(2500, 4000) + 1500 * np.sin(np.pi * t / t[-1])
        return np.sin(2 * np.pi * np.cumsum(f) / sr)
    if name in ("knock", "click"):  # damped resonances, a knock lower and longer
        low = name == "knock"
        t = np.arange(int((0.15 if low else 0.03) * sr)) / sr
        f = rng.uniform(150, 300) if low else rng.uniform(2000, 5000)
        decay = np.exp(-t * (40 if low else 300))
        noise = rng.standard_normal(len(t)) * (0.3 if low else 1.0)
        return (np.sin(2 * np.pi * f * t) + noise) * decay
    t = np.arange(int(seconds * sr)) / sr
    if name == "siren":  # a two-tone wail
        f = 700 + 300 * np.sin(2 * np.pi * rng.uniform(0.3, 0.8) * t)
        return np.sin(2 * np.pi * np.cumsum(f) / sr)
    if name == "engine":  # harmonics of a firing rate, with a slow wobble
        f0 = rng.uniform(30, 60) * (1 + 0.03 * np.sin(2 * np.pi * 0.5 * t))
        phase = 2 * np.pi * np.cumsum(f0) / sr
        return sum(np.sin(k * phase) / k for k in range(1, 8)) + 0.1 * rng.standard_normal(len(t))
    noise = rng.standard_normal(len(t))
    if name == "wind":  # low-passed noise, slowly swelling
        smooth = np.convolve(noise, np.ones(40) / 40, mode="same")
        return smooth * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * t))
    if name == "drizzle":  # a hiss with sparse drops
        drops = (rng.random(len(t)) < 0.002) * rng.standard_normal(len(t)) * 8
        return np.diff(noise, prepend=0.0) * 0.3 + drops
    raise SoundDataError(f"no procedural sound '{name}'")


def _speak(name: str, rng: np.random.Generator) -> np.ndarray:
    from suite.data.engines import get_engine

    engine = get_engine("espeak")
    variant = ("m" if name == "man_speech" else "f") + str(int(rng.integers(1, 5)))
    phrase = PHRASES[int(rng.integers(len(PHRASES)))]
    audio, rate = engine.synthesize(phrase, f"en-us+{variant}", 170, 50, 50)
    if rate != SAMPLE_RATE:
        import torch
        import torchaudio.functional as AF

        audio = AF.resample(torch.from_numpy(audio), rate, SAMPLE_RATE).numpy()
    return audio


def _make(
    name: str, seconds: float, rng: np.random.Generator, split: str, config: SoundConfig
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """One occurrence of ``name`` (RMS 0.1) and, for ESC-10, the clip's record."""
    cls = CLASSES[name]
    if cls.source == "procedural":
        return _normalize(_fade(_procedural(name, seconds, rng).astype(np.float32))), None
    if cls.source == "speech":
        return _normalize(_fade(_speak(name, rng))), None
    clips = [
        c for fold in FOLDS[split] for c in esc10_clips(config.esc10_dir).get((name, fold), [])
    ]
    clip = clips[int(rng.integers(len(clips)))]
    # Paths in the index are relative to the pack's noise/ folder, the index's parent.
    audio = _read_clip(str(Path(config.esc10_dir).parent / clip["path"]))
    length = seconds if cls.texture else rng.uniform(0.5, 1.0)
    return _normalize(_fade(_loud_window(audio, length), 0.05)), clip


# --- Composition --------------------------------------------------------------------------------


def held_out_pairs(classes: list[str], seed: int) -> list[str]:
    """The class pairs (``"a+b"``, names sorted) only ``test`` scenes hold."""
    pairs = [f"{a}+{b}" for i, a in enumerate(classes) for b in classes[i + 1 :]]
    k = max(1, round(HELD_OUT_FRACTION * len(pairs)))
    return sorted(random.Random(f"sounds/{seed}").sample(pairs, k))


def _pairs(names: list[str]) -> set[str]:
    return {"+".join(sorted((a, b))) for i, a in enumerate(names) for b in names[i + 1 :]}


def _sample_plan(
    rng: random.Random, classes: list[str], split: str, held: set[str]
) -> tuple[list[tuple[str, int]], str | None]:
    """Foreground groups ``[(class, count)]`` and the background class (or ``None``)."""
    events = [c for c in classes if not CLASSES[c].texture]
    textures = [c for c in classes if CLASSES[c].texture]
    for _ in range(1000):
        if split == "test":  # start from a held-out pair, so every test scene holds one
            pair = rng.choice(sorted(held)).split("+")
            a, b = (CLASSES[p].texture for p in pair)
            if a and b:
                continue
            if a or b:
                background = pair[0] if a else pair[1]
                fg = [pair[1] if a else pair[0]]
                if rng.random() < 0.4:
                    fg.append(rng.choice(events))
            else:
                background = rng.choice(textures) if rng.random() < 0.5 else None
                fg = rng.sample(pair, 2)
        else:
            background = rng.choice(textures) if rng.random() < 0.5 else None
            fg = rng.sample(events, rng.choice([1, 2]))
        names = fg + ([background] if background else [])
        if len(set(names)) < len(names):
            continue
        if (split == "test") != bool(_pairs(names) & held):
            continue
        return [(c, rng.choice([1, 1, 2, 2, 3])) for c in fg], background
    raise SoundDataError(f"could not compose a {split} scene from classes {classes}")


def _clause(name: str, count: int) -> str:
    phrase = CLASSES[name].phrase
    return phrase if count == 1 or CLASSES[name].texture else f"{phrase} {COUNT_WORDS[count]}"


def phrasings(groups: list[tuple[str, int]], background: str | None) -> list[str]:
    """Every caption of a scene: each states every group with its count, the order and the
    background."""
    clauses = [_clause(c, n) for c, n in groups]
    if len(clauses) == 1:
        seqs = [clauses[0]]
    else:
        a, b = clauses
        seqs = [f"{a}, then {b}", f"{a} and then {b}", f"first {a}, then {b}", f"{b} after {a}"]
    if background is None:
        return seqs
    bg = CLASSES[background].phrase
    out = []
    for s in seqs:
        out += [f"{s} while {bg}", f"while {bg}, {s}", f"{bg} as {s}"]
    return out


_COUNT_RE = "|".join(COUNT_WORDS.values())


def caption_facts(caption: str) -> dict[str, Any]:
    """The events a caption of this grammar states: ``{"foreground": [(class, count), ...]``
    in the order they happen, ``"background": class or None}``; phrases it does not know are
    skipped (so recall and precision of a model's caption can be scored)."""
    text = " ".join(caption.lower().replace(".", " ").split())
    background, clause = None, text
    m = re.match(r"^while (.+?), (.+)$", text)
    if m:
        background, clause = m.group(1), m.group(2)
    elif " while " in text:
        clause, background = text.rsplit(" while ", 1)
    elif " as " in text:
        background, clause = text.split(" as ", 1)
    order = clause
    if " after " in clause and " then " not in clause:  # "b after a": a happened first
        later, earlier = clause.split(" after ", 1)
        order = f"{earlier} then {later}"
    parts = re.split(r",? (?:and )?then ", order.removeprefix("first "))
    by_phrase = {c.phrase: n for n, c in CLASSES.items()}
    foreground = []
    for part in parts:
        m = re.match(rf"^(.+?)(?: ({_COUNT_RE}))?$", part.strip())
        if m and m.group(1) in by_phrase:
            count = {w: k for k, w in COUNT_WORDS.items()}.get(m.group(2) or "once", 1)
            foreground.append((by_phrase[m.group(1)], count))
    bg = by_phrase.get(background.strip()) if background else None
    return {"foreground": foreground, "background": bg}


def score_caption(caption: str, fields: dict[str, Any]) -> dict[str, float]:
    """How well ``caption`` states a scene (its manifest ``fields``): event ``recall`` (the
    scene's classes named), ``precision`` (named classes that are in the scene), ``counts``
    (foreground counts right, of the scene's groups) and ``order`` (1.0 when the named
    foreground classes come in the scene's order; scenes of one group always score 1.0)."""
    facts = caption_facts(caption)
    named = [c for c, _ in facts["foreground"]] + [facts["background"] or ""]
    named = [c for c in named if c]
    groups = [(g["class"], g["count"]) for g in fields["groups"]]
    truth = [c for c, _ in groups] + ([fields["background"]] if fields["background"] else [])
    recall = sum(c in named for c in truth) / len(truth)
    precision = sum(c in truth for c in set(named)) / len(set(named)) if named else 0.0
    said = dict(facts["foreground"])
    counts = sum(said.get(c) == n for c, n in groups) / len(groups)
    in_order = [c for c, _ in facts["foreground"] if c in dict(groups)]
    order = float(len(groups) < 2 or in_order == [c for c, _ in groups])
    return {"recall": recall, "precision": precision, "counts": counts, "order": order}


def _seed(*parts: Any) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def compose_sound_scene(
    index: int, split: str, config: SoundConfig, held: set[str]
) -> tuple[np.ndarray, dict[str, Any]]:
    """Scene ``index`` of ``split``: audio ``(S,)`` float32 and its manifest fields."""
    rng = random.Random(_seed(config.seed, split, index))
    nrng = np.random.default_rng(_seed(config.seed, split, index, "audio"))
    groups, background = _sample_plan(rng, config.classes(), split, held)
    # Foreground occurrences first: the scene is long enough for them (rarely past
    # max_seconds, with three long spoken phrases).
    occurrences = [
        (name, gain, _make(name, 1.0, nrng, split, config))
        for name, count in groups
        for gain in [rng.uniform(-3, 3)]
        for _ in range(count)
    ]
    total = sum(len(x) for _, _, (x, _) in occurrences)
    seconds = round(rng.uniform(config.min_seconds, config.max_seconds), 2)
    seconds = max(seconds, round(total / SAMPLE_RATE + 0.5, 2))
    S = int(seconds * SAMPLE_RATE)
    mix = np.zeros(S, np.float32)
    events, credits = [], []

    def add(x: np.ndarray, start: int, name: str, gain_db: float, clip: dict | None) -> None:
        x = x[: S - start] * np.float32(10 ** (gain_db / 20))
        mix[start : start + len(x)] += x
        events.append(
            {
                "class": name,
                "onset": round(start / SAMPLE_RATE, 3),
                "offset": round((start + len(x)) / SAMPLE_RATE, 3),
                "source": CLASSES[name].source,
                "gain_db": round(gain_db, 1),
                **({"clip": clip["path"]} if clip else {}),
            }
        )
        if clip and clip["path"] not in {c["path"] for c in credits}:
            credits.append({k: clip[k] for k in ("path", "author", "source_url", "clip_license")})

    if background:  # most of the scene, from a random start
        length = rng.uniform(0.7, 0.95) * seconds
        x, clip = _make(background, length, nrng, split, config)
        start = int(rng.uniform(0, seconds - len(x) / SAMPLE_RATE) * SAMPLE_RATE)
        add(x, max(0, start), background, rng.uniform(-14, -4), clip)
    # Foreground groups in order, each occurrence after the last, with gaps.
    slack = max(0, S - total - int(0.2 * SAMPLE_RATE))
    gaps = np.array([rng.random() for _ in range(len(occurrences) + 1)])
    gaps = (gaps / gaps.sum() * slack).astype(int)
    at = int(gaps[0])
    for (name, gain, (x, clip)), gap in zip(occurrences, gaps[1:], strict=True):
        add(x, at, name, gain, clip)
        at += len(x) + int(gap)
    peak = float(np.abs(mix).max())
    if peak > 0.99:  # leave headroom without changing relative loudness
        mix *= 0.99 / peak
    captions = phrasings(groups, background)
    order = list(range(len(captions)))
    rng.shuffle(order)
    captions = [captions[i] for i in order]
    names = [c for c, _ in groups] + ([background] if background else [])
    fields = {
        "duration": seconds,
        "sampling_rate": SAMPLE_RATE,
        "caption": captions[0],
        "captions": captions,
        "events": sorted(events, key=lambda e: (e["onset"], e["class"])),
        "groups": [{"class": c, "count": n} for c, n in groups],
        "background": background,
        "novel": sorted(_pairs(names) & held),
        "credits": credits,
    }
    return mix, fields


# --- Writing ------------------------------------------------------------------------------------


def write_shard(out: str, config: SoundConfig, split: str, shard: int) -> Path:
    """Write shard ``shard`` of ``split`` (its FLACs, then its manifest part, atomically)
    unless it is complete already; returns the manifest part."""
    import soundfile as sf

    out_dir = Path(out) / split
    part = out_dir / f"{shard:05d}.jsonl"
    if part.is_file():
        return part
    held = set(json.loads((Path(out) / "compositions.json").read_text())["held_out_pairs"])
    start = shard * config.shard_size
    stop = min(start + config.shard_size, config.counts[split])
    lines = []
    for index in range(start, stop):
        audio, fields = compose_sound_scene(index, split, config, held)
        scene_id = f"{split}-{index:06d}"
        path = out_dir / f"{shard:05d}" / f"{scene_id}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            sf.write(str(tmp), audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        lines.append({"id": scene_id, "source": str(path), **fields})
    atomic_write_text(part, "".join(json.dumps(line) + "\n" for line in lines))
    return part


def _resolve(config: SoundConfig) -> SoundConfig:
    """``config`` with its ESC-10 folder found and its sources checked."""
    if config.esc10 and not config.esc10_dir:
        found = default_esc10_dir()
        if found is None:
            raise SoundDataError(
                "ESC-10 was asked for but the shared pack's noise/sounds/esc10.jsonl is not "
                "there; set SUITE_SHARED_DATA, pass --esc10-dir, or --no-esc10"
            )
        config.esc10_dir = str(found)
    if config.esc10:
        esc10_clips(config.esc10_dir)
    if config.speech:
        from suite.data.engines import get_engine

        missing = get_engine("espeak").missing()
        if missing:
            raise SoundDataError(f"speech sounds need espeak-ng: {missing}; or --no-speech")
    return config


def write_sounds(
    out: str | Path, config: SoundConfig | None = None, jobs: int = 1, log: Any = print
) -> dict[str, Path]:
    """Compose every split's sound scenes into ``out`` (see the module docstring); returns
    each split's manifest path. Shards already written with the same settings are kept."""
    config = _resolve(config or SoundConfig())
    config.check()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out / "sounds.json", asdict(config), "sound scenes", SoundDataError)
    held = held_out_pairs(config.classes(), config.composition_seed)
    atomic_write_text(
        out / "compositions.json", json.dumps({"held_out_pairs": held}, indent=2) + "\n"
    )
    manifests = write_shards(out, config, config.counts, config.shard_size, write_shard, jobs)
    for split, path in manifests.items():
        log(f"{path}: {config.counts[split]} sound scenes")
    return manifests


def add_command(data_commands: Any) -> None:
    """Add ``suite data synth-sounds`` to the ``suite data`` sub-command parser."""
    import os

    cli = data_commands.add_parser(
        "synth-sounds", help="mix captioned sound scenes of ESC-10 clips, procedural sounds, speech"
    )
    cli.add_argument("--out", required=True, help="output folder (FLACs + SPLIT.jsonl)")
    cli.add_argument("--train", type=int, default=5000, help="training scenes")
    cli.add_argument("--dev", type=int, default=200, help="dev scenes (seen combinations)")
    cli.add_argument("--test", type=int, default=500, help="test scenes (held-out combinations)")
    cli.add_argument("--seed", type=int, default=0)
    cli.add_argument("--composition-seed", type=int, default=0, help="which pairs are held out")
    cli.add_argument("--min-seconds", type=float, default=5.0)
    cli.add_argument("--max-seconds", type=float, default=10.0)
    cli.add_argument("--no-esc10", action="store_true", help="procedural and spoken sounds only")
    cli.add_argument("--no-speech", action="store_true", help="no espeak-ng phrases")
    cli.add_argument("--esc10-dir", default="", help="folder holding esc10.jsonl")
    cli.add_argument("--shard-size", type=int, default=500, help="scenes per shard")
    cli.add_argument("--jobs", type=int, default=None, help="worker processes (default: cores)")

    def run(args: Any) -> None:
        config = SoundConfig(
            seed=args.seed,
            composition_seed=args.composition_seed,
            min_seconds=args.min_seconds,
            max_seconds=args.max_seconds,
            esc10=not args.no_esc10,
            speech=not args.no_speech,
            shard_size=args.shard_size,
            counts={"train": args.train, "dev": args.dev, "test": args.test},
            esc10_dir=args.esc10_dir,
        )
        write_sounds(args.out, config, jobs=args.jobs or os.cpu_count() or 1)

    cli.set_defaults(func=run)
