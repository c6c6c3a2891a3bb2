"""The bad-input corpus: every way an input can be wrong, generated here (nothing is committed),
through every interface a user has: the Python API, ``suite transcribe``, ``evaluate`` (Python
and ``suite evaluate``), a streaming session and the WebSocket server.

Each case checks what a user needs: no traceback; an error that names the input and says how to
fix it; and the good inputs of the same call transcribed as they are alone. Inputs that are odd
but usable (stereo, 8 or 44.1 kHz, mp3/ogg/opus, a piped WAV, int64 holding int16 values) give
a transcript; silence and audio shorter than one feature frame give "".
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np
import pytest
import soundfile as sf
import torch

import suite
from suite.audio import AudioError, AudioWarning
from suite.cli import main
from suite.errors import UserError
from suite.tasks.asr.pipeline import InputsError

SR = 16000
# Each error says how to fix it with one of these.
FIXES = (
    "check the path",
    "pass ",
    "re-export",
    "convert it",
    "drop it",
    "fix the recording",
    "add the transcript",
    "record at",
    "send ",
    "connect again",
    "run `",
)

SAME, ANY, EMPTY = "same", "any", ""  # a usable input's transcript: the clean one's, any, none


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Streaming steps are small: one thread each runs them 5-10x faster on a busy machine
    than threads that wait for each other's cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def has_fix(message: str) -> bool:
    return any(fix in message for fix in FIXES)


# --- files --------------------------------------------------------------------------------------


def pcm16(speech: np.ndarray) -> np.ndarray:
    return np.round(speech * 32767).astype(np.int16)


def wav_bytes(pcm: np.ndarray, data_size: int | None = None, channels: int = 1) -> bytes:
    """A PCM_16 WAV; ``data_size`` as ffmpeg leaves it when writing into a pipe."""
    fmt = struct.pack("<HHIIHH", 1, channels, SR, SR * 2 * channels, 2 * channels, 16)
    data = pcm.astype("<i2").tobytes()
    info = b"INFO" + b"ISFT" + struct.pack("<I", 14) + b"Lavf59.27.100\0"  # as ffmpeg writes
    riff = 0xFFFFFFFF if data_size is not None else 4 + 8 + len(fmt) + 8 + len(info) + 8 + len(data)
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"LIST"
        + struct.pack("<I", len(info))
        + info
        + b"data"
        + struct.pack("<I", len(data) if data_size is None else data_size)
        + data
    )


def write(path: Path, samples: np.ndarray, sr: int = SR, **kwargs: Any) -> Path:
    sf.write(str(path), samples, sr, **kwargs)
    return path


def cut_in_half(path: Path) -> Path:
    data = path.read_bytes()
    out = path.with_name("half_" + path.name)
    out.write_bytes(data[: len(data) // 2])
    return out


def resample(speech: np.ndarray, rate: int) -> np.ndarray:
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(speech), SR, rate).numpy()


@dataclass(frozen=True)
class FileCase:
    """A file made from 16 kHz speech in a folder, and what reading it must give: an error
    with these words, or a transcript (``SAME`` as the clean file's, ``ANY``, or ``EMPTY``)."""

    id: str
    make: Callable[[Path, np.ndarray], Path]
    error: tuple[str, ...] = ()
    text: str | None = None


def _missing(d: Path, s: np.ndarray) -> Path:
    return d / "missing" / "nope.wav"


def _directory(d: Path, s: np.ndarray) -> Path:
    (d / "a_folder.wav").mkdir()
    return d / "a_folder.wav"


def _empty(d: Path, s: np.ndarray) -> Path:
    (d / "empty.wav").touch()
    return d / "empty.wav"


def _write_bytes(name: str, content: Callable[[np.ndarray], bytes]) -> Callable:
    def make(d: Path, s: np.ndarray) -> Path:
        (d / name).write_bytes(content(s))
        return d / name

    return make


def _written(name: str, samples: Callable[[np.ndarray], np.ndarray], **kwargs: Any) -> Callable:
    return lambda d, s: write(d / name, samples(s), **kwargs)


def _halved(name: str, **kwargs: Any) -> Callable:
    return lambda d, s: cut_in_half(write(d / name, s, **kwargs))


def _random_bytes(s: np.ndarray) -> bytes:
    return np.random.default_rng(0).bytes(5000)


CUT = ("truncated", "re-export")
UNREADABLE = ("cannot decode", "ffmpeg")


def _nan(s: np.ndarray) -> np.ndarray:
    out = s.copy()
    out[[100, 5000]] = [np.nan, np.inf]
    return out


FILE_CASES = [
    FileCase("missing", _missing, ("does not exist", "check the path")),
    FileCase("directory", _directory, ("not a file", "pass the path")),
    FileCase("empty", _empty, ("empty (0 bytes)", "re-export")),
    FileCase("header only", _write_bytes("header.wav", lambda s: wav_bytes(pcm16(s))[:80]), CUT),
    FileCase("truncated wav", _write_bytes("cut.wav", lambda s: wav_bytes(pcm16(s))[:9999]), CUT),
    FileCase("truncated flac", _halved("cut.flac"), CUT),
    FileCase("truncated mp3", _halved("cut.mp3"), CUT),
    FileCase("truncated ogg", _halved("cut.ogg"), ("re-export",)),
    FileCase("truncated opus", _halved("cut.opus", format="OGG", subtype="OPUS"), ("re-export",)),
    FileCase("random bytes", _write_bytes("noise.wav", _random_bytes), UNREADABLE),
    FileCase("text named .wav", _write_bytes("notes.wav", lambda s: b"text\n" * 50), UNREADABLE),
    FileCase("zero samples", _written("nothing.wav", lambda s: s[:0]), ("zero-length", "drop it")),
    FileCase("NaN/Inf", _written("nan.wav", _nan, subtype="FLOAT"), ("2 NaN/Inf", "re-export")),
    FileCase("100 Hz header", _written("slow.wav", lambda s: s, sr=100), ("100 Hz", "re-export")),
    # usable
    FileCase("clean", _written("clean.wav", lambda s: s), text=SAME),
    FileCase("wav named .mp3", _write_bytes("wav.mp3", lambda s: wav_bytes(pcm16(s))), text=SAME),
    FileCase(
        "piped wav", _write_bytes("pipe.wav", lambda s: wav_bytes(pcm16(s), 2**32 - 1)), (), SAME
    ),
    FileCase(
        "piped wav, size 0", _write_bytes("pipe0.wav", lambda s: wav_bytes(pcm16(s), 0)), (), SAME
    ),
    FileCase("stereo", _written("stereo.wav", lambda s: np.stack([s, s], 1)), text=SAME),
    FileCase("flac", _written("speech.flac", lambda s: s), text=SAME),
    FileCase("mp3", _written("speech.mp3", lambda s: s), text=ANY),
    FileCase("ogg", _written("speech.ogg", lambda s: s), text=ANY),
    FileCase("opus", _written("speech.opus", lambda s: s, format="OGG", subtype="OPUS"), text=ANY),
    FileCase("8 kHz", _written("8k.wav", lambda s: resample(s, 8000), sr=8000), text=ANY),
    FileCase("44.1 kHz", _written("44k.wav", lambda s: resample(s, 44100), sr=44100), text=ANY),
    FileCase("silence", _written("zeros.wav", lambda s: np.zeros_like(s)), text=EMPTY),
    FileCase("DC offset", _written("dc.wav", lambda s: np.full_like(s, 0.25)), text=EMPTY),
    FileCase("100 samples", _written("short.wav", lambda s: s[4000:4100]), text=EMPTY),
]
BAD_FILES = [c for c in FILE_CASES if c.text is None]


@pytest.fixture(scope="module")
def speech() -> list[tuple[str, np.ndarray]]:
    """Two sentences the shipped models never heard, as 16 kHz float32 that int16 holds exactly."""
    from suite.demo import demo_utterances

    return [(text, pcm16(audio) / np.float32(32768)) for text, audio, *_ in demo_utterances(2)]


@pytest.fixture(scope="module")
def asr():
    return suite.load("default-asr")


@pytest.fixture(scope="module")
def files(tmp_path_factory, speech) -> dict[str, Path]:
    """Every file case, plus the two good files ``good0`` and ``good1``."""
    folder = tmp_path_factory.mktemp("bad_inputs")
    made = {case.id: case.make(folder, speech[0][1]) for case in FILE_CASES}
    for i, (_, audio) in enumerate(speech):
        made[f"good{i}"] = write(folder / f"good{i}.wav", audio)
    return made


@pytest.fixture(scope="module")
def alone(asr, files) -> dict[str, str]:
    """The transcript of each good file transcribed alone."""
    return {k: asr.transcribe(files[k], method="greedy")[0] for k in ("good0", "good1", "clean")}


def check_file_result(case: FileCase, path: Path, result: Any, clean: str) -> None:
    if case.text is None:
        assert isinstance(result, AudioError), case.id
        message = str(result)
        assert str(path) in message and has_fix(message), (case.id, message)
        assert all(word in message for word in case.error), (case.id, message)
    elif case.text == SAME:
        assert result == clean, case.id
    elif case.text == ANY:
        assert isinstance(result, str) and result, case.id
    else:
        assert result == "", case.id


def test_python_api_files(asr, files, alone):
    paths = [files["good0"], *(files[c.id] for c in FILE_CASES), files["good1"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AudioWarning)  # resampled, down-mixed, too short
        results = asr.transcribe(paths, errors="return", method="greedy")
    assert results[0] == alone["good0"] and results[-1] == alone["good1"]
    for case, result in zip(FILE_CASES, results[1:-1], strict=True):
        check_file_result(case, files[case.id], result, alone["clean"])

    with pytest.raises(InputsError) as raised, warnings.catch_warnings():
        warnings.simplefilter("ignore", AudioWarning)
        asr.transcribe(paths, method="greedy")
    message = str(raised.value)
    assert message.startswith(f"{len(BAD_FILES)} of {len(paths)} inputs cannot be read")
    assert 'errors="skip"' in message and len(message.splitlines()) == 1 + len(BAD_FILES)
    assert all(str(files[c.id]) in message for c in BAD_FILES)
    assert sorted(raised.value.failures) == [1 + FILE_CASES.index(c) for c in BAD_FILES]

    with pytest.warns(AudioWarning) as record:
        skipped = asr.transcribe(paths, errors="skip", method="greedy")
    assert [r is None for r in skipped] == [isinstance(r, AudioError) for r in results]
    assert sum(str(r.message).startswith("skipped: ") for r in record) == len(BAD_FILES)
    assert skipped[0] == alone["good0"]


def test_one_bad_file_alone_keeps_its_one_line_error(asr, files):
    with pytest.raises(AudioError) as raised:
        asr.transcribe(files["missing"])
    assert str(raised.value).startswith(f"audio file {files['missing']} does not exist")
    assert "\n" not in str(raised.value)
    with pytest.raises(InputsError, match=r"\(1 of 2 inputs; pass errors=\"skip\""):
        asr.transcribe([files["missing"], files["good0"]], method="greedy")
    with pytest.raises(UserError, match="errors must be one of raise, skip, return"):
        asr.transcribe(files["good0"], errors="ignore")


# --- arrays -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArrayCase:
    """An array made from 16 kHz float speech, and what it must give (as :class:`FileCase`)."""

    id: str
    make: Callable[[np.ndarray], Any]
    error: tuple[str, ...] = ()
    text: str | None = None


ARRAY_CASES = [
    ArrayCase("NaN", lambda s: np.where(np.arange(len(s)) == 7, np.nan, s), ("NaN/Inf",)),
    ArrayCase("Inf", lambda s: np.where(np.arange(len(s)) == 7, np.inf, s), ("NaN/Inf",)),
    ArrayCase("no samples", lambda s: s[:0], ("zero-length", "drop it")),
    ArrayCase("3-D", lambda s: s[: 3 * 4000].reshape(3, 1, 4000), ("(3, 1, 4000)",)),
    ArrayCase("batch-like 2-D", lambda s: np.zeros((20, 16000)), ("(20, 16000)", "one utterance")),
    ArrayCase("complex", lambda s: s.astype(np.complex64), ("dtype complex64",)),
    ArrayCase("uint16", lambda s: (s * 1000 + 2000).astype(np.uint16), ("dtype uint16",)),
    ArrayCase("object", lambda s: np.array([None] * 100), ("dtype object",)),
    ArrayCase("int64 beyond int16", lambda s: (s * 2**20).astype(np.int64), ("int16's range",)),
    ArrayCase("list", lambda s: s[:1000].tolist(), ("got list",)),
    # usable
    ArrayCase("float32", lambda s: s, text=SAME),
    ArrayCase("float64", lambda s: s.astype(np.float64), text=SAME),
    ArrayCase("int16", lambda s: pcm16(s), text=SAME),
    ArrayCase("int64 of int16 values", lambda s: np.array(pcm16(s).tolist()), text=SAME),
    ArrayCase("(1, S)", lambda s: s[None], text=SAME),
    ArrayCase("(S, 1)", lambda s: s[:, None], text=SAME),
    ArrayCase("(2, S) stereo", lambda s: np.stack([s, s]), text=SAME),
    ArrayCase("(S, 2) stereo", lambda s: np.stack([s, s], 1), text=SAME),
    ArrayCase("tensor", lambda s: torch.from_numpy(s), text=SAME),
    ArrayCase("bf16 tensor", lambda s: torch.from_numpy(s).bfloat16(), text=ANY),
    ArrayCase("zeros", lambda s: np.zeros_like(s), text=EMPTY),
    ArrayCase("DC", lambda s: np.full_like(s, -0.5), text=EMPTY),
    ArrayCase("int16 DC", lambda s: np.ones(len(s), np.int16), text=EMPTY),
    ArrayCase("1 sample", lambda s: s[5000:5001], text=EMPTY),
    ArrayCase("399 samples", lambda s: s[5000:5399], text=EMPTY),
]
# A rate applies to every array of a call, so each bad rate is a call of its own.
RATE_CASES = [
    (None, ("expected a sample rate", "pass sample_rate=")),
    (1, ("1 Hz", "between 1 kHz and 384 kHz")),
    (10**7, ("10000000 Hz", "between 1 kHz and 384 kHz")),
    ("16000", ("the string '16000'", "sample_rate=16000")),
    (-5, ("positive whole number",)),
    (16000.5, ("positive whole number",)),
    (True, ("positive whole number",)),
]


def test_python_api_arrays(asr, speech):
    good = [speech[0][1], speech[1][1]]
    alone = [asr.transcribe(g, sample_rate=SR, method="greedy")[0] for g in good]
    arrays = [good[0], *(c.make(good[0]) for c in ARRAY_CASES), good[1]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AudioWarning)
        results = asr.transcribe(arrays, sample_rate=SR, errors="return", method="greedy")
    assert results[0] == alone[0] and results[-1] == alone[1]
    for i, (case, result) in enumerate(zip(ARRAY_CASES, results[1:-1], strict=True), start=1):
        if case.text is None:
            assert isinstance(result, AudioError), case.id
            message = str(result)
            assert f"inputs[{i}]" in message and has_fix(message), (case.id, message)
            assert all(word in message for word in case.error), (case.id, message)
        elif case.text == SAME:
            assert result == alone[0], case.id
        elif case.text == ANY:
            assert isinstance(result, str) and result, case.id
        else:
            assert result == "", case.id


@pytest.mark.parametrize(("rate", "words"), RATE_CASES, ids=[repr(r) for r, _ in RATE_CASES])
def test_python_api_sample_rates(asr, speech, rate, words):
    (result,) = asr.transcribe(speech[0][1], sample_rate=rate, errors="return")
    assert isinstance(result, AudioError)
    message = str(result)
    assert "the input array" in message and has_fix(message) and "\n" not in message
    assert all(word in message for word in words), message


# What a call may be handed in place of a path, an array or a list of them.
ODD_CALLS = [None, 5, b"RIFF", [0.1] * 1000]


@pytest.mark.parametrize("given", ODD_CALLS, ids=["None", "int", "bytes", "list of floats"])
def test_python_api_odd_types(asr, given):
    with pytest.raises(AudioError) as raised:
        asr.transcribe(given, sample_rate=SR)
    message = str(raised.value)
    assert f"got {type(given).__name__}" in message and "the input array" in message
    assert has_fix(message)


def test_short_after_resampling_and_low_rates(asr, speech):
    with pytest.warns(AudioWarning, match="shorter than one feature frame"):
        assert asr.transcribe(speech[0][1][:1000], sample_rate=384_000) == [""]  # 42 samples
    with pytest.warns(AudioWarning, match="resampled 1 kHz"):  # one second, at a low rate
        assert isinstance(asr.transcribe(np.zeros(1000), sample_rate=1000)[0], str)


def test_silence_gate_leaves_speech_alone(asr, speech):
    """The gate only skips what no model should decode: speech at -60 dBFS still transcribes."""
    audio = speech[0][1]
    quiet = audio * (10 ** (-60 / 20) / np.sqrt(np.mean(audio**2)))
    dc = audio + 0.3  # speech on a DC offset is speech
    texts = asr.transcribe([audio, quiet, dc], sample_rate=SR, method="greedy")
    assert all(texts) and texts[2] == asr.transcribe(dc, sample_rate=SR, method="greedy")[0]


# `suite stream` on files (each through the same loader as above) and its options.
STREAM_CLI_CASES = [
    ("missing", ["--wav", "missing"], "does not exist"),
    ("truncated", ["--wav", "truncated wav"], "truncated"),
    ("NaN", ["--wav", "NaN/Inf"], "NaN/Inf"),
    ("zero chunk", ["--wav", "clean", "--chunk-ms", "0"], "above 0"),
    ("negative chunk", ["--wav", "clean", "--chunk-ms", "-160"], "above 0"),
]


# --- suite transcribe ---------------------------------------------------------------------------


def test_cli_transcribe(files, alone, capsys):
    paths = [files["good0"], *(files[c.id] for c in FILE_CASES), files["good1"]]
    assert main(["transcribe", "default-asr", *map(str, paths), "--decoding", "greedy"]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    printed = dict(line.split("\t") for line in out.splitlines())
    assert printed[str(files["good0"])] == alone["good0"]
    assert printed[str(files["good1"])] == alone["good1"]
    errors = [line for line in err.splitlines() if line.startswith("suite: error: ")]
    for case in FILE_CASES:
        path = str(files[case.id])
        mine = [line for line in errors if path in line]
        if case.text is None:
            assert path not in printed and len(mine) == 1 and has_fix(mine[0]), case.id
        else:
            assert not mine and (printed[path] == alone["clean"] or case.text != SAME), case.id
    assert f"suite: {len(BAD_FILES)} of {len(paths)} files could not be transcribed" in err

    assert main(["transcribe", "default-asr", str(files["missing"])]) == 2  # nothing to show
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("case", STREAM_CLI_CASES, ids=[c[0] for c in STREAM_CLI_CASES])
def test_cli_stream(files, capsys, case):
    what, argv, words = case
    argv = [str(files[a]) if a in files else a for a in argv]
    try:
        code = main(["stream", "streaming-asr", *argv, "--fast"])
    except SystemExit as exited:  # argparse refuses the option itself
        code = exited.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and words in err, (what, err)


# --- evaluate -----------------------------------------------------------------------------------


def make_manifest(files: dict[str, Path], speech, folder: Path) -> tuple[Path, list[str]]:
    """Cuts of the good files, of every bad file and one without a transcript; the bad ids."""
    from lhotse import AudioSource, CutSet, MonoCut, Recording, SupervisionSegment

    def cut(cut_id: str, recording: Recording, text: str | None) -> MonoCut:
        duration = recording.duration
        sups = [
            SupervisionSegment(
                id=cut_id, recording_id=recording.id, start=0, duration=duration, text=text
            )
        ]
        return MonoCut(
            id=cut_id,
            start=0,
            duration=duration,
            channel=0,
            recording=recording,
            supervisions=sups if text is not None else [],
        )

    def from_file(key: str, cut_id: str) -> Recording:
        return Recording.from_file(files[key], recording_id=cut_id)

    cuts = [
        cut(f"good{i}", from_file(f"good{i}", f"good{i}"), t) for i, (t, _) in enumerate(speech)
    ]
    bad = []
    for case in BAD_FILES:
        cut_id = case.id.replace(" ", "_").replace("/", "_")
        try:  # as a manifest of the file would say
            recording = from_file(case.id, cut_id)
        except Exception:  # it cannot be read: a manifest written before it broke
            source = AudioSource(type="file", channels=[0], source=str(files[case.id]))
            recording = Recording(
                id=cut_id, sources=[source], sampling_rate=SR, num_samples=2 * SR, duration=2.0
            )
        cuts.insert(1, cut(cut_id, recording, "some words"))
        bad.append(cut_id)
    cuts.insert(2, cut("no_text", from_file("good0", "no_text"), None))
    bad.append("no_text")
    path = folder / "cuts.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    return path, bad


def test_evaluate(asr, files, speech, tmp_path, capsys):
    from lhotse import CutSet

    from suite.tasks.asr.evaluation import evaluate_cuts, score

    manifest, bad = make_manifest(files, speech, tmp_path)
    cuts = CutSet.from_file(manifest).to_eager()
    scores = evaluate_cuts(asr.model, cuts, errors="skip", method="greedy")
    assert scores.num_utterances == 2 and len(scores.failed) == len(bad)
    assert sorted(row["id"] for row in scores.failed) == sorted(bad)
    for row in scores.failed:
        assert f"cut {row['id']}" in row["error"] and has_fix(row["error"]), row
    refs = [text for text, _ in speech]
    hyps = asr.transcribe([files["good0"], files["good1"]], method="greedy")
    assert scores.wer == score(refs, hyps).wer  # the good cuts are scored as if alone

    with pytest.raises(InputsError) as raised:
        evaluate_cuts(asr.model, cuts, method="greedy")
    message = str(raised.value)
    assert message.startswith(f"{len(bad)} of {len(cuts)} cuts cannot be read")
    assert all(f"cut {cut_id}" in message for cut_id in bad)

    results = tmp_path / "results.jsonl"
    argv = ["evaluate", "default-asr", str(manifest), "--results", str(results)]
    assert main([*argv, "--decoding", "greedy"]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "WER" in out and "(2 utterances" in out
    errors = [line for line in err.splitlines() if line.startswith("suite: error: ")]
    for cut_id in bad:
        assert sum(bool(re.search(rf"cut {re.escape(cut_id)}\b", e)) for e in errors) == 1, cut_id
    assert f"{len(bad)} of {len(bad) + 2} cuts could not be read" in err
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(r["id"] for r in rows if "error" in r) == sorted(bad)


def _garbage_gzip(folder: Path, files: dict[str, Path]) -> Path:
    (folder / "garbage.jsonl.gz").write_bytes(b"\x1f\x8b not really gzip")
    return folder / "garbage.jsonl.gz"


def _empty_manifest(folder: Path, files: dict[str, Path]) -> Path:
    (folder / "empty.jsonl").write_text("")
    return folder / "empty.jsonl"


# What `suite evaluate` may be handed in place of a manifest: (what, the file, its error).
NOT_MANIFESTS = [
    ("audio file", lambda d, f: f["good0"], ("is an audio file", "suite transcribe")),
    ("missing", lambda d, f: d / "nope.jsonl.gz", ("does not exist", "pass a lhotse")),
    ("garbage", _garbage_gzip, ("is not a lhotse cuts manifest", "pass a cuts")),
    ("empty", _empty_manifest, ("holds no cuts",)),
]


@pytest.mark.parametrize("case", NOT_MANIFESTS, ids=[c[0] for c in NOT_MANIFESTS])
def test_evaluate_refuses_what_is_not_a_manifest(files, tmp_path, capsys, case):
    what, make, words = case
    assert main(["evaluate", "default-asr", str(make(tmp_path, files))]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(w in err for w in words) and has_fix(err), (what, err)


# --- streaming ----------------------------------------------------------------------------------

# Chunks a session must refuse (the session goes on): (what, chunk from int16 PCM, rate, words).
BAD_CHUNKS = [
    ("rate as a string", lambda p: p, "16000", "the string '16000'"),
    ("another rate", lambda p: p, 8000, "model's 16 kHz"),
    ("absurd rate", lambda p: p, 1, "between 1 kHz and 384 kHz"),
    ("NaN", lambda p: np.where(np.arange(len(p)) == 3, np.nan, p / 32768), SR, "NaN/Inf"),
    ("3-D", lambda p: p[:1200].reshape(2, 3, 200), SR, "(S,) or (S, C)"),
    ("no channel side", lambda p: np.zeros((100, 1600)), SR, "cannot tell channels"),
    ("ragged list", lambda p: [[1, 2], [3]], SR, "numpy cannot read"),
    ("strings", lambda p: np.array(["a"] * 10), SR, "dtype <U1"),
    ("complex", lambda p: p.astype(np.complex64), SR, "dtype complex64"),
    ("int64 beyond int16", lambda p: p.astype(np.int64) * 2**16, SR, "int16's range"),
]
# The same samples in every form a chunk may take.
GOOD_CHUNKS = [
    ("int16", lambda p: p),
    ("float32", lambda p: p / np.float32(32768)),
    ("(S, 1)", lambda p: p[:, None]),
    ("(2, S) stereo", lambda p: np.stack([p, p]) / np.float32(32768)),
    ("(S, 2) stereo", lambda p: np.stack([p, p], 1)),
    ("int64 of int16", lambda p: np.array(p.tolist())),
    ("list of ints", lambda p: p.tolist()),
    ("tensor", lambda p: torch.from_numpy(p.copy())),
]
EMPTY_CHUNKS = [np.zeros(0, np.int16), [], torch.zeros(0)]  # fed between the others


@pytest.fixture(scope="module")
def streaming():
    return suite.load("streaming-asr")


def stream_in_chunks(session, pcm: np.ndarray, forms: list, bad: list | None = None) -> str:
    """Feed ``pcm`` in 0.16 s chunks, each in the next of ``forms``, a bad chunk before each."""
    bad = list(bad or [])
    for i, begin in enumerate(range(0, len(pcm), 2560)):
        if bad:
            what, make, rate, words = bad.pop(0)
            with pytest.raises(AudioError) as raised:
                session.accept(make(pcm[begin : begin + 2560]), sample_rate=rate)
            message = str(raised.value)
            assert words in message and has_fix(message) and "\n" not in message, what
            assert "streamed chunk" in message or "sample_rate" in message, what
        session.accept(forms[i % len(forms)][1](pcm[begin : begin + 2560]), sample_rate=SR)
        if len(forms) > 1:
            session.accept(EMPTY_CHUNKS[i % len(EMPTY_CHUNKS)], sample_rate=SR)
    assert not bad, "every bad chunk was tried"
    return session.finish()


def test_streaming_session(streaming, speech):
    pcm = pcm16(speech[0][1])
    with streaming.stream() as session:
        clean = stream_in_chunks(session, pcm, GOOD_CHUNKS[:1])
    assert clean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AudioWarning)  # down-mixed, int64 read as int16
        with streaming.stream() as session:
            assert stream_in_chunks(session, pcm, GOOD_CHUNKS, BAD_CHUNKS) == clean
    for audio in (np.zeros(SR, np.int16), pcm[:100], np.full(SR, 1000, np.int16)):
        with streaming.stream() as session:
            session.accept(audio, sample_rate=SR)
            assert session.finish() == ""


# --- the WebSocket server -----------------------------------------------------------------------

SERVER_CASES = [
    "odd byte count",
    "text that is not JSON",
    "unknown command",
    "audio after end",
    "oversized frame",
    "idle client",
    "abrupt disconnect",
]


def test_websocket_server(streaming, speech):
    from suite.serve import StreamServer, run_server
    from suite.tasks.asr import default_stream_context

    context = default_stream_context(streaming.model)
    pcm = pcm16(speech[0][1])
    with streaming.stream(att_context=context) as session:
        clean = stream_in_chunks(session, pcm, GOOD_CHUNKS[:1])

    async def client(http, url: str) -> tuple[list[str], dict]:
        async with http.ws_connect(url + "ws") as ws:
            assert (await ws.receive_json())["type"] == "ready"
            await ws.send_bytes(pcm[:801].tobytes()[:-1])  # half a sample at the end
            await ws.send_str("start please")
            await ws.send_json({"type": "start"})
            errors = [(await ws.receive_json())["message"] for _ in range(3)]
            for begin in range(0, len(pcm), 1600):
                await ws.send_bytes(pcm[begin : begin + 1600].tobytes())
            await ws.send_json({"type": "end"})
            await ws.send_bytes(pcm[:1600].tobytes())
            messages = [m.json() async for m in ws if m.type == aiohttp.WSMsgType.TEXT]
        errors += [m["message"] for m in messages if m["type"] == "error"]
        return errors, messages[-1]

    async def refused(http, url: str, send: bytes | None) -> tuple[int, str]:
        async with http.ws_connect(url + "ws") as ws:
            await ws.receive_json()
            if send is not None:
                await ws.send_bytes(send)
            messages = [m.json() async for m in ws if m.type == aiohttp.WSMsgType.TEXT]
            return ws.close_code, messages[-1]["message"]

    async def vanish(url: str) -> None:
        u = urlsplit(url)
        reader, writer = await asyncio.open_connection(u.hostname, u.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /ws HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        await reader.readuntil(b"\r\n\r\n")
        payload = pcm[:60].tobytes()  # one masked binary frame (a zero mask), then gone
        writer.write(bytes([0x82, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
        await asyncio.sleep(0.1)
        writer.transport.abort()  # no close frame: the network went away

    async def main_() -> Any:
        server = StreamServer(streaming.model, att_context=context, idle_timeout=1.0)
        async with run_server(server) as url, aiohttp.ClientSession() as http:
            results = await asyncio.gather(
                client(http, url),
                refused(http, url, np.zeros(2 * SR, "<i2").tobytes()),  # 2 s in one frame
                refused(http, url, None),  # connects, then says nothing
                vanish(url),
            )
            for _ in range(100):
                if not server.batcher.streams:
                    break
                await asyncio.sleep(0.05)
            assert server.batcher.streams == []  # every stream was freed
        return results

    (errors, final), oversized, idle, _ = asyncio.run(asyncio.wait_for(main_(), 120))
    assert final == {"type": "final", "text": clean}  # the bad frames changed nothing
    assert len(errors) == 4 and all(has_fix(e) for e in errors)
    assert "1601 bytes" in errors[0] and 'only text message is {"type": "end"}' in errors[1]
    assert "after" in errors[3]
    assert oversized[0] == 1009 and "over the cap" in oversized[1] and has_fix(oversized[1])
    assert idle[0] == 1008 and "no message for 1 s" in idle[1] and has_fix(idle[1])


def test_corpus_size():
    """The counts the reliability section of BENCHMARKS.md quotes (cases per interface)."""
    counts = {
        "python api": len(FILE_CASES) + len(ARRAY_CASES) + len(RATE_CASES) + len(ODD_CALLS),
        "suite transcribe": len(FILE_CASES),
        "suite stream": len(STREAM_CLI_CASES),
        "evaluate": len(BAD_FILES) + 1 + len(NOT_MANIFESTS),
        "streaming session": len(BAD_CHUNKS) + len(GOOD_CHUNKS) + len(EMPTY_CHUNKS) + 3,
        "websocket server": len(SERVER_CASES),
    }
    assert counts == {
        "python api": 64,
        "suite transcribe": 28,
        "suite stream": 5,
        "evaluate": 19,
        "streaming session": 24,
        "websocket server": 7,
    }
