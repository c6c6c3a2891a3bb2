"""The synthesizers behind ``suite data synth-speech`` (espeak-ng, flite, festival, SVOX Pico),
engine selection, the mixed plan with its held-out engine, and a small mixed corpus.

A test that needs an engine skips when it is not installed (``make data`` installs them all)."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from suite.data import engines as engines_module
from suite.data import synth
from suite.data.engines import SynthWarning, engine_of, get_engine, list_engines, resolve_engines
from suite.data.synth import (
    SPLITS,
    UtteranceSpec,
    plan_utterances,
    synthesize_corpus,
)
from suite.errors import UserError

ALL = ("espeak", "flite", "festival", "pico")
TEXT = "The rain in Spain stays mainly in the plain."


def needs(name: str):
    return pytest.mark.skipif(
        get_engine(name).missing() is not None,
        reason=f"the {name} engine is not installed ({get_engine(name).install})",
    )


def spec_for(engine: str, voice: str, rate: int = 175, pitch: int = 50) -> UtteranceSpec:
    return UtteranceSpec(0, "t", "test", "x", TEXT, voice, rate, pitch, 50, {}, True, engine)


def speak(engine: str, voice: str, rate: int = 175, pitch: int = 50) -> tuple[np.ndarray, int]:
    # Through the corpus's own path: in a fresh fork for the in-process engines.
    return synth._speak(spec_for(engine, voice, rate, pitch))


def corpus_state(out: Path) -> dict[str, str]:
    """Every file of a corpus: audio by hash, text with the folder's own path taken out."""
    state = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix == ".flac":
            state[str(path.relative_to(out))] = hashlib.sha256(data).hexdigest()
        else:
            text = gzip.decompress(data) if path.name.endswith(".gz") else data
            state[str(path.relative_to(out))] = text.decode().replace(str(out), "OUT")
    return state


def median_f0(audio: np.ndarray, rate: int) -> float:
    """The median pitch of loud 40 ms frames, by autocorrelation (60-400 Hz)."""
    size = int(0.04 * rate)
    found = []
    for start in range(0, len(audio) - size, size // 2):
        x = audio[start : start + size] - audio[start : start + size].mean()
        if np.sqrt(np.mean(x**2)) < 0.05 * np.abs(audio).max():
            continue
        c = np.correlate(x, x, "full")[size - 1 :]
        lo, hi = rate // 400, rate // 60
        lag = lo + int(np.argmax(c[lo:hi]))
        if c[lag] > 0.4 * c[0]:
            found.append(rate / lag)
    return float(np.median(found))


def check_speech(audio: np.ndarray, rate: int) -> None:
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 1.0 < len(audio) / rate < 6.0
    assert 0.05 < np.abs(audio).max() <= 1.0


# -- each engine ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine", "voices"),
    [
        ("flite", ["flite-kal16", "flite-awb", "flite-rms", "flite-slt"]),
        ("festival", ["festival-kal"]),  # seconds per utterance: the HTS voice's test is slow
        ("pico", ["pico-en-US", "pico-en-GB"]),
        ("espeak", ["en-gb-scotland+f3"]),
    ],
)
def test_engine_speaks_deterministically_at_the_asked_speed(engine, voices):
    if get_engine(engine).missing() is not None:
        pytest.skip(f"the {engine} engine is not installed ({get_engine(engine).install})")
    get_engine(engine).load()
    for voice in voices:
        audio, rate = speak(engine, voice)
        check_speech(audio, rate)
        again, _ = speak(engine, voice)
        assert np.array_equal(audio, again), voice  # whatever was spoken before
    fast, _ = speak(engine, voices[-1], rate=230)  # 175 is normal: 1.31x as fast
    assert len(fast) < 0.9 * len(audio)


@pytest.mark.parametrize(("engine", "voice"), [("flite", "flite-slt"), ("pico", "pico-en-US")])
def test_pitch_changes_the_voice(engine, voice):
    if get_engine(engine).missing() is not None:
        pytest.skip(f"the {engine} engine is not installed")
    get_engine(engine).load()
    low, rate = speak(engine, voice, pitch=30)
    high, _ = speak(engine, voice, pitch=70)

    assert median_f0(high, rate) > 1.2 * median_f0(low, rate)  # +-4 semitones: 1.59x


@pytest.mark.slow
@needs("festival")
def test_festival_hts_voice_speaks_at_the_asked_speed():
    audio, rate = speak("festival", "festival-slt")
    check_speech(audio, rate)
    assert rate == 32000 and np.array_equal(audio, speak("festival", "festival-slt")[0])
    assert len(speak("festival", "festival-slt", rate=230)[0]) < 0.85 * len(audio)


def test_voice_ids_are_unique_over_engines():
    voices = [v for name in list_engines() for v in get_engine(name).voices]
    assert len(voices) == len(set(voices)) and list_engines() == list(ALL)
    assert {engine_of(v).name for v in ("flite-slt", "festival-ked", "pico-en-GB")} == {
        "flite",
        "festival",
        "pico",
    }


# -- engine selection ----------------------------------------------------------------------------


def fake_installed(monkeypatch, *missing: str) -> None:
    for name in ALL:
        why = f"{name} is missing; {get_engine(name).install}" if name in missing else None
        monkeypatch.setattr(get_engine(name), "missing", lambda why=why: why)


def test_default_is_espeak_only_and_all_skips_what_is_missing(monkeypatch):
    fake_installed(monkeypatch)
    assert resolve_engines() == (("espeak",), None)
    assert resolve_engines("all") == (ALL, "pico")
    assert resolve_engines("pico, espeak") == (("espeak", "pico"), "pico")
    assert resolve_engines(["flite", "festival"]) == (("flite", "festival"), None)
    assert resolve_engines("all", "festival") == (ALL, "festival")
    assert resolve_engines("all", "none") == (ALL, None)
    fake_installed(monkeypatch, "festival", "pico")
    with pytest.warns(SynthWarning) as caught:
        assert resolve_engines("all") == (("espeak", "flite"), None)
    messages = " | ".join(str(w.message) for w in caught)
    assert "skipping the festival engine" in messages and "festvox-kallpc16k" in messages
    assert "no unseen-synthesizer test split" in messages


def test_missing_or_wrong_engines_raise_errors_that_teach(monkeypatch):
    fake_installed(monkeypatch, "festival", "pico")
    with pytest.raises(UserError, match=r"apt-get install festival .*make data"):
        resolve_engines("espeak,festival")
    with pytest.raises(UserError, match=r"pip install ttspico.*make data"):
        resolve_engines("pico")
    with pytest.raises(UserError, match="unknown speech engine 'mbrola'.*espeak, flite"):
        resolve_engines("espeak,mbrola")
    with pytest.raises(UserError, match="held-out engine must be one of the engines"):
        resolve_engines("espeak,flite", "pico")
    with pytest.raises(UserError, match="not the only one"):
        resolve_engines("flite", "flite")
    fake_installed(monkeypatch, *ALL)
    with pytest.warns(SynthWarning), pytest.raises(UserError, match="no speech engine"):
        resolve_engines("all")


def test_engine_checks_name_the_package_when_the_program_is_absent(monkeypatch):
    monkeypatch.setattr(engines_module.shutil, "which", lambda name: None)
    assert "apt-get install flite" in get_engine("flite").missing()
    assert "festvox-us-slt-hts" in get_engine("festival").missing()
    monkeypatch.setattr(engines_module._espeak, "find_library", lambda: None)
    assert "apt-get install espeak-ng" in get_engine("espeak").missing()


# -- the mixed plan --------------------------------------------------------------------------------


def test_mixed_plan_holds_one_engine_out_of_train_and_dev():
    specs = list(islice(plan_utterances(5, engines=ALL, held_out_engine="pico"), 3000))
    assert specs[:300] == list(islice(plan_utterances(5, engines=ALL, held_out_engine="pico"), 300))
    assert specs[0].id == "synth-s5-00000000"
    train = Counter(s.engine for s in specs if s.split == "train")
    assert set(train) == {"espeak", "flite", "festival"}
    n = sum(train.values())
    assert train["espeak"] / n == pytest.approx(0.5, abs=0.04)
    assert train["flite"] / n == pytest.approx(0.3, abs=0.04)
    for s in specs:
        assert engine_of(s.voice).name == s.engine
        assert s.engine_seen_in_train == (s.engine != "pico")
        assert s.split == "test" or (s.engine_seen_in_train and s.voice_seen_in_train)
        assert s.engine_seen_in_train or not s.voice_seen_in_train
    kinds = Counter(
        (s.engine_seen_in_train, s.voice_seen_in_train) for s in specs if s.split == "test"
    )
    assert set(kinds) == {(False, False), (True, False), (True, True)}  # a third each
    assert max(kinds.values()) - min(kinds.values()) <= 1
    assert {s.voice for s in specs if s.engine == "pico"} == {"pico-en-US", "pico-en-GB"}


def test_espeak_only_plan_is_the_one_of_earlier_versions():
    # Fingerprints that plan version 1 recorded in synth_settings.json: folders it made resume.
    assert synth._plan_fingerprint(3, None, True) == "93b90bfc575779c2"
    assert synth._plan_fingerprint(0, None, False) == "5353c1e98f61b78a"
    settings = synth._settings(0, None, True, ("espeak",), None)
    assert list(settings) == [
        "plan_version",
        "seed",
        "augment",
        "text_file_sha256",
        "espeak_ng",
        "plan_fingerprint",
    ]
    assert settings["plan_version"] == 1
    specs = list(islice(plan_utterances(0), 200))
    assert {s.engine for s in specs} == {"espeak"} and specs[0].id.startswith("espeak-s0-")


# -- a small mixed corpus ------------------------------------------------------------------------


FAST = ("espeak", "flite", "pico")  # festival spends seconds per utterance; its test is above


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    for name in FAST:
        if get_engine(name).missing() is not None:
            pytest.skip(f"the {name} engine is not installed ({get_engine(name).install})")
    out = tmp_path_factory.mktemp("mixed")
    synthesize_corpus(out, hours=0.006, seed=2, num_workers=2, engines=",".join(FAST))
    return out


def test_mixed_corpus_manifests_mark_engines_and_the_unseen_engine_split(mixed):
    from lhotse import load_manifest
    from lhotse.qa import validate

    sups = []
    for split in SPLITS:
        cuts = load_manifest(mixed / f"synth_cuts_{split}.jsonl.gz")
        validate(cuts, read_data=True)
        sups += [(split, c.supervisions[0]) for c in cuts]
    assert {s.custom["engine"] for _, s in sups} >= {"espeak", "flite"}
    for split, s in sups:
        assert s.custom["engine"] == engine_of(s.speaker).name
        assert s.custom["engine_seen_in_train"] == (s.custom["engine"] != "pico")
        assert split == "test" or s.custom["engine"] != "pico"
    unseen = load_manifest(mixed / "synth_cuts_test_unseen_engine.jsonl.gz")
    assert len(unseen) > 0 and {c.supervisions[0].custom["engine"] for c in unseen} == {"pico"}
    corpus = json.loads((mixed / "corpus.json").read_text())
    assert corpus["engines"]["pico"]["held_out"] and corpus["settings"]["held_out_engine"] == "pico"
    assert set(corpus["settings"]["engines"]) == set(FAST)


def test_mixed_corpus_is_deterministic_and_refuses_other_engines(mixed, tmp_path):
    again = tmp_path / "again"
    summary = synthesize_corpus(again, hours=0.006, seed=2, num_workers=1, engines=FAST)
    assert corpus_state(again) == corpus_state(mixed) and summary["reused"] == 0
    with pytest.raises(
        UserError, match="other settings.*--engines espeak,flite,pico --held-out-engine pico"
    ):
        synthesize_corpus(again, hours=0.006, seed=2, engines="espeak,flite")
