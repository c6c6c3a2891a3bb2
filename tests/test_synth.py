"""``suite data synth-speech``: the espeak-ng binding, the plan, augmentation, and whole corpora
(lhotse-valid manifests, 16 kHz FLAC, disjoint splits, held-out voices, determinism, resume)."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from suite.cli import main as cli_main
from suite.data.espeak import find_library
from suite.data.synth import (
    SAMPLE_RATE,
    SPLITS,
    add_noise,
    add_reverb,
    held_out_voices,
    plan_utterances,
    resample,
    synthesize_corpus,
    voice_configs,
)
from suite.errors import UserError
from suite.text import normalize_text

needs_espeak = pytest.mark.skipif(
    find_library() is None,
    reason="libespeak-ng is not installed (apt-get install espeak-ng)",
)
SEED = 3
HOURS = 0.01  # 36 s of audio, about 13 utterances: every split gets at least one


def corpus_state(out: Path) -> dict[str, str]:
    """Every file of a corpus: audio by content hash, manifests decompressed and with the
    folder's own path taken out (recordings hold absolute paths)."""
    state = {}
    for path in sorted(out.rglob("*")):
        if path.is_dir():
            continue
        key = str(path.relative_to(out))
        if path.suffix == ".flac":
            state[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.name.endswith(".jsonl.gz"):
            state[key] = gzip.decompress(path.read_bytes()).decode().replace(str(out), "OUT")
        else:
            state[key] = path.read_text().replace(str(out), "OUT")
    return state


def cuts(out: Path, split: str):
    from lhotse import load_manifest

    # load_manifest, not CutSet.from_file: the latter gives None for an empty split.
    return load_manifest(out / f"espeak_cuts_{split}.jsonl.gz")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict]:
    if find_library() is None:
        pytest.skip("libespeak-ng is not installed (apt-get install espeak-ng)")
    out = tmp_path_factory.mktemp("reference")
    summary = synthesize_corpus(out, hours=HOURS, seed=SEED, num_workers=2)
    return out, summary


# -- plan, augmentation, binding (fast, no corpus) -------------------------------------------------


def test_voice_configs_and_held_out_set():
    configs = voice_configs()
    assert len(configs) >= 8 * 40 and len(set(configs)) == len(configs)
    dialects = {c.split("+")[0] for c in configs}
    assert {"en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us-nyc"} <= dialects
    assert not any("whisper" in c for c in configs)
    unseen = held_out_voices(SEED)
    assert unseen == held_out_voices(SEED) and set(unseen) < set(configs)
    assert 0.05 < len(unseen) / len(configs) < 0.2


def test_plan_is_deterministic_with_disjoint_splits_and_held_out_voices():
    specs = list(islice(plan_utterances(SEED), 3000))
    assert specs == list(islice(plan_utterances(SEED), 3000))
    assert specs != list(islice(plan_utterances(SEED + 1), 3000))
    texts = {split: {s.text for s in specs if s.split == split} for split in SPLITS}
    assert not (texts["train"] & texts["dev"] or texts["train"] & texts["test"])
    assert not texts["dev"] & texts["test"]
    counts = {split: sum(s.split == split for s in specs) for split in SPLITS}
    assert counts["train"] / len(specs) == pytest.approx(0.9, abs=0.02)
    unseen = set(held_out_voices(SEED))
    for s in specs:
        assert s.text == normalize_text(s.spoken) and s.text
        assert (s.voice in unseen) == (not s.voice_seen_in_train)
        assert s.split == "test" or s.voice_seen_in_train
        assert 130 <= s.rate <= 210 and 30 <= s.pitch <= 70
    test_specs = [s for s in specs if s.split == "test"]
    assert {s.voice_seen_in_train for s in test_specs} == {True, False}
    assert len({s.voice for s in specs}) > 300
    augmented = [s.augmentation for s in specs if s.augmentation]
    assert 0.25 < len(augmented) / len(specs) < 0.45
    assert any("noise" in a for a in augmented) and any("rt60" in a for a in augmented)
    assert not any(s.augmentation for s in islice(plan_utterances(SEED, augment=False), 500))


def test_plan_over_a_text_file_cycles_and_keeps_each_sentence_in_one_split(tmp_path):
    text = tmp_path / "text.txt"
    lines = [f"Sentence number {i} is here." for i in range(30)] + ["Sentence number 3 is here!"]
    text.write_text("\n".join(lines) + "\n\n")
    specs = list(islice(plan_utterances(0, text), 100))  # 30 distinct sentences, cycled
    split_of = {}
    for s in specs:
        assert split_of.setdefault(s.text, s.split) == s.split
    assert len(split_of) == 30 and "sentence number three is here" in split_of
    assert specs[0].text == specs[30].text and specs[0].voice_seen_in_train is False


def test_plan_over_a_text_folder_keeps_each_file_s_split(tmp_path):
    """A folder that `suite data text` wrote: every sentence is spoken in its own file's split
    (so text held out of an LM is held out of speech), in about the usual proportions, and a
    used-up split is repeated with new voices."""
    files = {"train": 60, "dev": 3, "test": 2}
    for split, count in files.items():
        lines = [f"{split} sentence {chr(97 + i % 26)} {chr(97 + i // 26)}." for i in range(count)]
        (tmp_path / f"{split}.spoken.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "train.txt").write_text("ignored when the spoken file is there\n")
    specs = list(islice(plan_utterances(0, tmp_path), 80))
    assert all(s.text.split()[0] == s.split for s in specs)
    counts = {split: sum(s.split == split for s in specs) for split in SPLITS}
    assert counts == {"train": 72, "dev": 4, "test": 4}
    tests = [s for s in specs if s.split == "test"]
    assert tests[0].text == tests[2].text and tests[0].text != tests[1].text  # cycled
    assert len({s.text for s in specs if s.split == "train"}) == 60
    (tmp_path / "dev.spoken.txt").unlink()
    with pytest.raises(UserError, match="has no dev.spoken.txt or dev.txt"):
        list(islice(plan_utterances(0, tmp_path), 1))


def test_noise_reaches_the_requested_snr():
    rng = np.random.default_rng(0)
    speech = np.sin(np.linspace(0, 2000, 32000)).astype(np.float32) * 0.3
    for color in ("white", "pink"):
        noisy = add_noise(speech, 10.0, color, rng)
        noise = noisy - speech
        snr = 10 * math.log10(np.mean(speech**2) / np.mean(noise**2))
        assert snr == pytest.approx(10.0, abs=0.1) and noisy.dtype == np.float32
    white = add_noise(speech, 0.0, "white", rng) - speech
    pink = add_noise(speech, 0.0, "pink", rng) - speech

    def low_share(x):  # energy share below 1 kHz: pink noise is heavier at low frequencies
        power = np.abs(np.fft.rfft(x)) ** 2
        return power[: len(power) // 8].sum() / power.sum()

    assert low_share(pink) > 2 * low_share(white)


def test_reverb_adds_a_tail_and_keeps_loudness():
    rng = np.random.default_rng(0)
    dry = np.zeros(16000, np.float32)
    dry[1000:1100] = 0.5
    wet = add_reverb(dry, 0.4, rng)
    assert len(wet) == len(dry) + int(0.4 * SAMPLE_RATE) // 2
    assert np.sqrt(np.mean(wet**2)) == pytest.approx(np.sqrt(np.mean(dry**2)), rel=1e-3)
    assert np.abs(wet[3000:6000]).max() > 1e-3  # energy after the click: the decaying tail


def test_resample_keeps_a_tone():
    t = np.arange(22050) / 22050
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    out = resample(tone, 22050, 16000)
    assert len(out) == 16000 and out.dtype == np.float32
    expected = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)
    assert np.abs(out[200:-200] - expected[200:-200]).max() < 1e-2


@needs_espeak
def test_espeak_binding():
    from suite.data.espeak import Espeak

    espeak = Espeak.get()
    assert espeak.sample_rate == 22050
    audio = espeak.synthesize("hello world", "en-gb-scotland+f3", rate=170, pitch=40)
    assert audio.dtype == np.float32 and 0.3 < len(audio) / espeak.sample_rate < 3
    assert 0.05 < np.abs(audio).max() <= 1.0
    with pytest.raises(UserError, match="no voice"):
        espeak.synthesize("hello", "xx-nowhere+m3")


# -- whole corpora --------------------------------------------------------------------------------


def test_manifests_are_valid_lhotse_with_16k_mono_flac(reference):
    from lhotse import load_manifest
    from lhotse.qa import validate, validate_recordings_and_supervisions

    out, summary = reference
    assert summary["total_hours"] >= HOURS and summary["utterances"] >= 11
    total = 0
    for split in SPLITS:
        recordings = load_manifest(out / f"espeak_recordings_{split}.jsonl.gz")
        supervisions = load_manifest(out / f"espeak_supervisions_{split}.jsonl.gz")
        validate_recordings_and_supervisions(recordings, supervisions)
        split_cuts = cuts(out, split)
        validate(split_cuts, read_data=True)
        assert len(split_cuts) > 0, split
        total += sum(c.duration for c in split_cuts)
        for cut in split_cuts:
            info = sf.info(cut.recording.sources[0].source)
            assert (info.samplerate, info.channels, info.format) == (SAMPLE_RATE, 1, "FLAC")
            (sup,) = cut.supervisions
            assert sup.text == normalize_text(sup.text) and sup.language == "en"
            assert sup.speaker in voice_configs()
            assert set(sup.custom) >= {"voice", "rate", "pitch", "augmentation"}
            assert isinstance(sup.custom["voice_seen_in_train"], bool)
            assert (sup.custom["engine"], sup.custom["engine_seen_in_train"]) == ("espeak", True)
    assert total / 3600 == pytest.approx(summary["total_hours"], abs=1e-3)
    corpus = json.loads((out / "corpus.json").read_text())
    assert corpus["settings"]["seed"] == SEED and corpus["utterances"]["train"] > 0
    # The default is the espeak-only corpus of plan version 1: its settings, so its folders resume.
    settings = json.loads((out / "synth_settings.json").read_text())
    assert settings["plan_version"] == 1 and "engines" not in settings
    assert summary["voice_configs"] == corpus["voice_configs"]["used"]
    # Exactly the corpus's audio is on disk: no temporary files, nothing past its end.
    assert len(list((out / "audio").rglob("*.flac"))) == summary["utterances"]


def test_splits_are_disjoint_and_test_holds_unseen_voices(reference):
    out, _ = reference
    texts = {s: {c.supervisions[0].text for c in cuts(out, s)} for s in SPLITS}
    assert not (texts["train"] & texts["dev"] or texts["train"] & texts["test"])
    assert not texts["dev"] & texts["test"]
    train_voices = {c.supervisions[0].speaker for c in cuts(out, "train")}
    test_sups = [c.supervisions[0] for c in cuts(out, "test")]
    unseen = [s for s in test_sups if not s.custom["voice_seen_in_train"]]
    assert unseen and not {s.speaker for s in unseen} & train_voices
    assert {s.speaker for s in unseen} <= set(held_out_voices(SEED))


def test_same_seed_gives_identical_corpus(reference, tmp_path):
    out, _ = reference
    again = tmp_path / "again"
    synthesize_corpus(again, hours=HOURS, seed=SEED, num_workers=1)  # other worker count
    assert corpus_state(again) == corpus_state(out)  # byte-identical FLAC, equal manifests


def test_resume_reuses_audio_and_rebuilds_manifests(reference, tmp_path):
    out, summary = reference
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    flacs = sorted((resumed / "audio").rglob("*.flac"))
    for path in flacs[2:5] + list(resumed.glob("*.jsonl.gz")) + [resumed / "corpus.json"]:
        path.unlink()
    # What a killed run can leave: a temporary file, and audio past the end of the corpus.
    (flacs[0].parent / ".espeak-s3-00000004.flac.abc123.flac").write_bytes(b"partial")
    shutil.copy(flacs[0], flacs[0].parent / "espeak-s3-00000999.flac")
    result = synthesize_corpus(resumed, hours=HOURS, seed=SEED, num_workers=2)
    assert (result["synthesized"], result["reused"]) == (3, summary["utterances"] - 3)
    assert corpus_state(resumed) == corpus_state(out)


def test_killed_run_then_rerun_equals_uninterrupted(reference, tmp_path):
    out, _ = reference
    killed = tmp_path / "killed"
    code = (
        "from suite.data.synth import synthesize_corpus; "
        f"synthesize_corpus({str(killed)!r}, hours=0.05, seed={SEED}, num_workers=2)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(list(killed.glob("audio/*/*.flac"))) < 5 and time.monotonic() < deadline:
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run, its workers and their forks
        proc.wait()
    assert not (killed / "corpus.json").exists()
    synthesize_corpus(killed, hours=HOURS, seed=SEED, num_workers=2)
    assert corpus_state(killed) == corpus_state(out)


@needs_espeak
def test_text_file_corpus_speaks_its_lines(tmp_path):
    text = tmp_path / "lines.txt"
    text.write_text("The train leaves at 7:45.\nIt costs 12 euros!\nThe train leaves at 7:45.\n")
    out = tmp_path / "corpus"
    summary = synthesize_corpus(out, hours=0.002, seed=0, text_file=text, augment=False)
    sups = [c.supervisions[0] for s in SPLITS for c in cuts(out, s)]
    assert summary["utterances"] == len(sups) >= 3  # two distinct lines, cycled
    assert {s.text for s in sups} == {
        "the train leaves at seven forty five",
        "it costs twelve euros",
    }
    assert all(s.custom["augmentation"] == {} for s in sups)


@needs_espeak
def test_bad_input_raises_user_errors_that_teach(tmp_path, monkeypatch, reference):
    out = tmp_path / "out"
    with pytest.raises(UserError, match="does not exist"):
        synthesize_corpus(out, 0.01, 0, text_file=tmp_path / "missing.txt")
    for content in ("", "\n \n", "... !!! ---\n"):
        empty = tmp_path / "empty.txt"
        empty.write_text(content)
        with pytest.raises(UserError, match="no text to speak"):
            synthesize_corpus(out, 0.01, 0, text_file=empty)
    for hours in (0, -1, float("nan")):
        with pytest.raises(UserError, match="hours must be a positive number"):
            synthesize_corpus(out, hours, 0)
    with pytest.raises(UserError, match="seed"):
        synthesize_corpus(out, 0.01, -1)
    used = tmp_path / "used"
    shutil.copytree(reference[0], used)
    with pytest.raises(UserError, match="other settings.*seed"):
        synthesize_corpus(used, HOURS, SEED + 1)
    monkeypatch.setattr("suite.data.espeak.find_library", lambda: None)
    with pytest.raises(UserError, match="apt-get install espeak-ng.*make data"):
        synthesize_corpus(out, 0.01, 0)


def test_cli_prints_one_line_for_bad_input(tmp_path, capsys):
    code = cli_main(["data", "synth-speech", "--out", str(tmp_path), "--hours", "0"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("suite: error: hours must be a positive number") and "Trace" not in err


@needs_espeak
@pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed (make data)")
def test_an_espeak_only_folder_refuses_other_engines_and_says_how_to_resume(reference, tmp_path):
    used = tmp_path / "used"
    shutil.copytree(reference[0], used)
    with pytest.raises(UserError, match="other settings.*--engines espeak,"):
        synthesize_corpus(used, HOURS, SEED, engines="espeak,flite")
