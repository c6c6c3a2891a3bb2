"""The offline speech synthesizers behind ``suite data synth-speech``, one adapter each.

* ``espeak``: 8 dialects x 51 variants, libespeak-ng in-process (:mod:`suite.data.espeak`);
  speed, pitch and intonation range.
* ``flite``: kal16 (diphone), awb, rms, slt (clustergen), the ``flite`` command; speed, and
  pitch except for rms (its voice ignores the F0 shift).
* ``festival``: kal and ked (diphone), slt (HTS), the ``text2wave`` command; speed, and pitch
  and intonation range for the diphone voices (festival's hts_engine module reads no pitch
  option).
* ``pico``: SVOX Pico's en-US and en-GB, ``ttspico`` (PyPI) in-process; speed and pitch.

Every adapter takes the same prosody as espeak-ng: ``rate`` in words per minute (175 is an
engine's normal speed; the others get ``rate / 175`` as a speed factor) and ``pitch`` /
``pitch_range`` on espeak's 0-100 scale (50 is the voice's own; the others get ``pitch`` as
``(pitch - 50) / 5`` semitones). Where an engine has no control for one of them, that knob is
ignored, as the list says.

Engines that keep state between utterances in-process (espeak-ng, Pico: speaking one text twice
gives different audio) set ``in_process``: the corpus synthesizes each of their utterances in a
fresh fork of a warmed-up worker. The command-line engines start afresh for every utterance.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

from suite.data import espeak as _espeak
from suite.errors import UserError

DEFAULT_HELD_OUT_ENGINE = "pico"  # its own lineage: flite is a port of festival, with its voices
NORMAL_RATE = 175  # words per minute that every engine's normal speed stands for
MAKE_DATA = "or run `make data`, which installs every engine"


def speed_factor(rate: int) -> float:
    """How much faster than the voice's normal speed: ``rate / 175``."""
    return rate / NORMAL_RATE


def pitch_factor(pitch: int) -> float:
    """The F0 multiplier for espeak's 0-100 ``pitch`` (50 -> 1.0, 30 -> -4 st, 70 -> +4 st)."""
    return 2.0 ** ((pitch - 50) / 5 / 12)


class Engine:
    """One synthesizer: its voices, whether it is installed, and how it speaks.

    Attributes:
        name: the engine's name on the command line (``--engines``).
        voices: voice configuration ids, unique over all engines (the corpus's speakers).
        install: what to install, for errors and warnings.
        in_process: it keeps state in this process between utterances (see the module doc).
        debian: the Debian packages it needs (``make data`` installs them).
        pypi: the PyPI packages it needs (``make data`` installs them).
    """

    name: str = ""
    voices: tuple[str, ...] = ()
    install: str = ""
    in_process: bool = False
    debian: tuple[str, ...] = ()
    pypi: tuple[str, ...] = ()

    def missing(self) -> str | None:
        """Why this engine cannot run here (with what to install), or ``None`` if it can."""
        raise NotImplementedError

    def version(self) -> str:
        """The engine's version, recorded with a corpus (its audio depends on it)."""
        raise NotImplementedError

    def load(self) -> None:
        """Prepare a worker process: load libraries and speak a warm-up sentence."""

    def synthesize(
        self, text: str, voice: str, rate: int, pitch: int, pitch_range: int
    ) -> tuple[np.ndarray, int]:
        """Speak ``text`` with the voice configuration ``voice``.

        Returns:
            Float32 mono samples in [-1, 1] and their sample rate.
        """
        raise NotImplementedError


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, timeout=300)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).decode(errors="replace").strip()
        raise RuntimeError(f"{what} failed (exit {result.returncode}): {detail[-2000:]}")


def _read_wav(path: Path, what: str) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if audio.shape[0] == 0:
        raise RuntimeError(f"{what} produced no audio")
    return audio[:, 0].copy(), int(rate)


class EspeakEngine(Engine):
    """espeak-ng dialects times voice variants (ids like ``en-gb-scotland+f3``)."""

    name = "espeak"
    install = f"apt-get install espeak-ng (Debian package libespeak-ng1), {MAKE_DATA}"
    in_process = True
    debian = ("espeak-ng",)

    def __init__(self) -> None:
        # Imported here: suite.data.synth owns the dialect and variant lists.
        from suite.data.synth import voice_configs

        self.voices = tuple(voice_configs())

    def missing(self) -> str | None:
        if _espeak.find_library() is None:
            return f"libespeak-ng was not found; {self.install}"
        return None

    def version(self) -> str:
        return _espeak.version()

    def load(self) -> None:
        _espeak.Espeak.get().synthesize("warm up", "en-us", 175, 50)

    def synthesize(self, text, voice, rate, pitch, pitch_range):
        from suite.data.synth import espeak_voice

        lib = _espeak.Espeak.get()
        return lib.synthesize(text, espeak_voice(voice), rate, pitch, pitch_range), lib.sample_rate


class FliteEngine(Engine):
    """CMU Flite's built-in English voices: kal16 (diphone), awb, rms, slt (clustergen)."""

    name = "flite"
    voices = ("flite-kal16", "flite-awb", "flite-rms", "flite-slt")
    install = f"apt-get install flite (Debian package flite), {MAKE_DATA}"
    debian = ("flite",)

    def missing(self) -> str | None:
        if shutil.which("flite") is None:
            return f"flite is not installed; {self.install}"
        listed = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout.split()
        absent = [v for v in self.voices if v.removeprefix("flite-") not in listed]
        if absent:
            return f"this flite has no voice {', '.join(absent)}; {self.install}"
        return None

    def version(self) -> str:
        out = subprocess.run(["flite", "--version"], capture_output=True, text=True).stdout
        return next((word for word in out.split() if word.startswith("flite-")), "unknown")

    def synthesize(self, text, voice, rate, pitch, pitch_range):
        with tempfile.TemporaryDirectory(prefix="suite-flite-") as tmp:
            wav = Path(tmp) / "out.wav"
            _run(
                [
                    "flite",
                    "-voice",
                    voice.removeprefix("flite-"),
                    "--setf",
                    f"duration_stretch={1 / speed_factor(rate):.4f}",
                    # f0_shift scales the whole F0 contour; rms's voice ignores it.
                    "--setf",
                    f"f0_shift={pitch_factor(pitch):.4f}",
                    "-t",
                    text,
                    "-o",
                    str(wav),
                ],
                f"flite ({voice})",
            )
            return _read_wav(wav, f"flite ({voice})")


# Voice configuration id -> (festival voice function, Debian package, diphone F0 mean/std).
_FESTIVAL = {
    "festival-kal": ("voice_kal_diphone", "festvox-kallpc16k", (105, 14)),
    "festival-ked": ("voice_ked_diphone", "festvox-kdlpc16k", (105, 15)),
    "festival-slt": ("voice_cmu_us_slt_arctic_hts", "festvox-us-slt-hts", None),
}


class FestivalEngine(Engine):
    """Festival's kal and ked diphone voices and its HTS (HMM) voice of CMU ARCTIC slt."""

    name = "festival"
    voices = tuple(_FESTIVAL)
    install = (
        "apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts "
        f"(Debian packages), {MAKE_DATA}"
    )
    debian = ("festival", *(package for _, package, _ in _FESTIVAL.values()))

    def missing(self) -> str | None:
        if shutil.which("text2wave") is None:
            return f"festival is not installed; {self.install}"
        probe = " ".join(f"(if (not (boundp '{f})) (print '{f}))" for f, _, _ in _FESTIVAL.values())
        out = subprocess.run(
            ["festival", "--batch", f"(begin {probe})"], capture_output=True, text=True
        ).stdout
        absent = [pkg for f, pkg, _ in _FESTIVAL.values() if f in out]
        if absent:
            return f"festival lacks the voice packages {', '.join(absent)}; {self.install}"
        return None

    def version(self) -> str:
        out = subprocess.run(["festival", "--version"], capture_output=True, text=True).stdout
        # "festival: Festival Speech Synthesis System: 2.5.0:release December 2017"
        parts = out.split(":")
        return f"festival {parts[2].strip()}" if len(parts) > 2 else "unknown"

    def synthesize(self, text, voice, rate, pitch, pitch_range):
        function, _, f0 = _FESTIVAL[voice]
        speed = speed_factor(rate)
        if f0 is None:  # HTS: its engine takes a speech rate, and reads no pitch option
            setup = f'(set! hts_engine_params (append hts_engine_params \'(("-r" {speed:.4f}))))'
        else:  # diphones: linear-regression intonation targets, and a duration stretch
            mean, std = f0
            setup = (
                f"(Parameter.set 'Duration_Stretch {1 / speed:.4f}) "
                f"(set! int_lr_params '((target_f0_mean {mean * pitch_factor(pitch):.2f}) "
                f"(target_f0_std {std * pitch_range / 50:.2f}) "
                "(model_f0_mean 170) (model_f0_std 34)))"
            )
        with tempfile.TemporaryDirectory(prefix="suite-festival-") as tmp:
            txt, wav = Path(tmp) / "in.txt", Path(tmp) / "out.wav"
            txt.write_text(text + "\n", encoding="utf-8")
            _run(
                ["text2wave", "-o", str(wav), "-eval", f"(begin ({function}) {setup})", str(txt)],
                f"festival text2wave ({voice})",
            )
            return _read_wav(wav, f"festival ({voice})")


class PicoEngine(Engine):
    """SVOX Pico's two English voices (``ttspico`` on PyPI, with the language files), 16 kHz.

    Debian's ``pico2wave`` (libttspico-utils) is not used: it is in non-free, which not every
    machine's apt sources carry, and PyPI's build gives the same engine in-process.
    """

    name = "pico"
    voices = ("pico-en-US", "pico-en-GB")
    install = f"pip install ttspico (PyPI; builds from C sources), {MAKE_DATA}"
    in_process = True
    pypi = ("ttspico",)

    def __init__(self) -> None:
        self._engines: dict[str, object] = {}  # voice -> ttspico.TtsEngine

    def missing(self) -> str | None:
        try:  # the module, its compiled extension (ctts) and its language files
            self._engine(self.voices[0])
        except ImportError as e:
            return f"SVOX Pico is not installed ({e}); {self.install}"
        except RuntimeError as e:  # the language files are not where ttspico looks
            return f"SVOX Pico cannot load its voices ({e}); reinstall it: {self.install}"
        return None

    def version(self) -> str:
        from importlib.metadata import version

        return f"ttspico {version('ttspico')}"

    def _engine(self, voice: str):
        if voice not in self._engines:
            import ttspico

            engine = ttspico.TtsEngine(voice.removeprefix("pico-"))
            engine.set_property("volume", 60)  # at 100, en-US clips about 0.7% of its samples
            self._engines[voice] = engine
        return self._engines[voice]

    def load(self) -> None:
        for voice in self.voices:
            self._engine(voice).speak("warm up")

    def synthesize(self, text, voice, rate, pitch, pitch_range):
        engine = self._engine(voice)
        # Percent of normal; Pico accepts speed 20-500 and pitch 50-200.
        engine.set_property("rate", round(100 * speed_factor(rate)))
        engine.set_property("pitch", round(100 * pitch_factor(pitch)))
        pcm = engine.speak(text) or b""
        if not pcm:
            raise RuntimeError(f"SVOX Pico ({voice}) produced no audio for {text!r}")
        return np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0, 16000


_ENGINE_TYPES = {cls.name: cls for cls in (EspeakEngine, FliteEngine, FestivalEngine, PicoEngine)}
_INSTANCES: dict[str, Engine] = {}


def list_engines() -> list[str]:
    """Every engine's name, in a fixed order: espeak, flite, festival, pico."""
    return list(_ENGINE_TYPES)


def get_engine(name: str) -> Engine:
    """The engine called ``name`` (one instance per process)."""
    if name not in _ENGINE_TYPES:
        raise UserError(
            f"unknown speech engine '{name}'; the engines are {', '.join(_ENGINE_TYPES)} (or 'all')"
        )
    if name not in _INSTANCES:
        _INSTANCES[name] = _ENGINE_TYPES[name]()
    return _INSTANCES[name]


def debian_packages() -> list[str]:
    """Every engine's Debian packages, for ``make data``."""
    return [package for name in _ENGINE_TYPES for package in _ENGINE_TYPES[name].debian]


def pypi_packages() -> list[str]:
    """Every engine's PyPI packages, for ``make data``."""
    return [package for name in _ENGINE_TYPES for package in _ENGINE_TYPES[name].pypi]


def engine_of(voice: str) -> Engine:
    """The engine a voice configuration id belongs to (ids are unique over engines)."""
    for name in _ENGINE_TYPES:
        if voice in get_engine(name).voices:
            return get_engine(name)
    raise KeyError(f"no engine has the voice configuration '{voice}'")


class SynthWarning(UserWarning):
    """An engine asked for with ``"all"`` is not installed and is skipped."""


def resolve_engines(
    engines: str | list[str] | tuple[str, ...] | None = None,
    held_out_engine: str | None = None,
) -> tuple[tuple[str, ...], str | None]:
    """The engines a corpus uses, in a fixed order, and its held-out engine.

    Args:
        engines: ``None`` (espeak-ng only, the corpus of earlier versions), ``"all"`` (every
            engine installed here: a missing one is skipped with a :class:`SynthWarning`), or
            names (a list, or one comma-separated string), each of which must be installed.
        held_out_engine: ``None`` picks :data:`DEFAULT_HELD_OUT_ENGINE` when it is used along
            with another engine; ``"none"`` holds no engine out; a name must be among the
            engines, and not the only one.

    Raises:
        UserError: for an unknown name, a named engine that is not installed (with what to
            install), no engine installed, or a held-out engine that cannot be held out.
    """
    if engines is None:
        engines = ["espeak"]
    if isinstance(engines, str):
        engines = [name.strip() for name in engines.split(",") if name.strip()]
    everything = list(engines) == ["all"]
    wanted = set(list_engines() if everything else engines)
    for name in wanted:
        get_engine(name)  # an unknown name raises, listing the known ones
    names = []
    for name in list_engines():
        why = get_engine(name).missing() if name in wanted else None
        if why is not None and not everything:
            raise UserError(why)
        if why is not None:
            warnings.warn(f"skipping the {name} engine: {why}", SynthWarning, stacklevel=2)
        elif name in wanted:
            names.append(name)
    if not names:
        raise UserError("no speech engine is installed; run `make data`, or install espeak-ng")
    if held_out_engine is None:
        held = DEFAULT_HELD_OUT_ENGINE
        if everything and held not in names:
            warnings.warn(
                f"no unseen-synthesizer test split: {held} is not installed", SynthWarning, 2
            )
        return tuple(names), held if held in names and len(names) > 1 else None
    if held_out_engine == "none":
        return tuple(names), None
    if held_out_engine not in names or len(names) == 1:
        raise UserError(
            f"the held-out engine must be one of the engines and not the only one; got "
            f"--held-out-engine {held_out_engine} with --engines {','.join(names)}"
        )
    return tuple(names), held_out_engine
