"""Word timestamps and confidences (``transcribe(..., timestamps=True)``) and the transcript
formats of ``suite transcribe --format``."""

from __future__ import annotations

import difflib
import json
import re

import numpy as np
import pytest
import soundfile as sf
import torch

import suite
from suite.config import ModelConfig
from suite.errors import UserError
from suite.model import build_model
from suite.tasks.asr import Transcriber
from suite.tasks.asr.alignment import Transcript, Word, align_words, frame_seconds, word_pieces
from suite.tasks.asr.formats import MAX_CUE_CHARS, clock, cues, render
from suite.tokenizers import CharTokenizer

RATE = 16000


@pytest.fixture(scope="module")
def speech() -> list[tuple[str, np.ndarray]]:
    """Two open-domain sentences the shipped models never heard, in held-out espeak-ng voices,
    as (text, 16 kHz audio)."""
    from suite.demo import open_demo_utterances

    held_out = [u for u in open_demo_utterances(2, real=0) if u.group == "held-out voice"]
    return [(u.text, u.audio) for u in held_out]


@pytest.fixture(scope="module")
def asr():
    return suite.load("default-asr")


def _speech_span(audio: np.ndarray) -> tuple[float, float]:
    """First and last 10 ms frame within 30 dB of the loudest, in seconds."""
    hop = RATE // 100
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    db = 10 * np.log10(np.square(frames).mean(axis=1) + 1e-12)
    loud = np.flatnonzero(db > db.max() - 30)
    return loud[0] / 100, (loud[-1] + 1) / 100


def test_words_are_the_text_in_order_within_the_audio_and_move_with_it(asr, speech):
    audio = [a for _, a in speech]
    padded = [np.concatenate([np.zeros(RATE, np.float32), a]) for a in audio]  # 1 s before
    plain = asr.transcribe(audio + padded, sample_rate=RATE)
    timed = asr.transcribe(audio + padded, sample_rate=RATE, timestamps=True)
    assert all(isinstance(t, Transcript) for t in timed)
    assert [t.text for t in timed] == plain  # timestamps leave the text as it was
    for t, a in zip(timed, audio + padded, strict=True):
        assert [w.word for w in t.words] == t.text.split()
        assert t.duration == pytest.approx(len(a) / RATE)
        starts = [w.start for w in t.words]
        assert starts == sorted(starts)
        assert all(0 <= w.start < w.end <= t.duration for w in t.words)
        assert all(0 < w.confidence <= 1 for w in t.words)
        first, last = _speech_span(a)  # the words lie where the sound is (a frame either side)
        assert first - 0.08 <= t.words[0].start <= first + 0.4
        assert last - 0.5 <= t.words[-1].end <= last + 0.08
    for t, moved in zip(timed[:2], timed[2:], strict=True):
        # The silence before may respell a word (the LM weighs a near tie differently): the
        # words both read are the same frames, 25 later.
        words, shifted = [w.word for w in t.words], [m.word for m in moved.words]
        same = difflib.SequenceMatcher(a=words, b=shifted, autojunk=False).get_matching_blocks()
        pairs = [(t.words[b.a + i], moved.words[b.b + i]) for b in same for i in range(b.size)]
        assert len(pairs) >= 0.5 * len(words)  # measured 7 of 11 and 11 of 11
        shifts = np.array([m.start - w.start for w, m in pairs])
        # A respelled neighbour may move a word's peak a few frames (measured once: 0.92 s).
        assert np.median(shifts) == pytest.approx(1.0, abs=0.041)
        assert np.mean(np.abs(shifts - 1.0) <= 0.041) >= 0.75


def test_timestamps_with_the_lm_spelling_against_the_acoustics_score_lower(asr, speech):
    audio = speech[0][1]
    fused = asr.transcribe(audio, sample_rate=RATE, timestamps=True)[0]
    greedy = asr.transcribe(audio, sample_rate=RATE, timestamps=True, method="greedy")[0]
    # Greedy words are each frame's most likely tokens, so each is at least as sure as
    # the LM's, word for word where they agree.
    assert np.mean([w.confidence for w in greedy.words]) > 0.5
    same = [(f, g) for f, g in zip(fused.words, greedy.words, strict=False) if f.word == g.word]
    assert same and all(g.confidence >= f.confidence - 1e-6 for f, g in same)


def test_frame_seconds_is_the_hop_times_the_subsampling(asr):
    assert frame_seconds(asr.model) == pytest.approx(0.04)  # 10 ms x 4


def test_align_words_groups_tokens_at_word_starts_and_times_their_frames():
    tokenizer = CharTokenizer()
    tokens = tokenizer.encode("ab c")
    V, T = tokenizer.vocab_size, 12
    # Frames 1-2: a, 4: b, 6: space, 9-10: c; blanks elsewhere (posterior 0.9 for each).
    logits = torch.full((T, V), -10.0)
    logits[:, 0] = 0.0
    for frames, token in (
        ((1, 2), tokens[0]),
        ((4,), tokens[1]),
        ((6,), tokens[2]),
        ((9, 10), tokens[3]),
    ):
        for t in frames:
            logits[t, token] = 2.0
    log_probs = logits.log_softmax(-1)
    words = align_words(log_probs, tokens, word_pieces(tokenizer, tokens), 0.04, duration=0.45)
    assert [w.word for w in words] == ["ab", "c"]
    assert words[0].start == pytest.approx(0.04) and words[0].end == pytest.approx(0.2)
    assert words[1].start == pytest.approx(0.36) and words[1].end == pytest.approx(0.44)
    posterior = float(log_probs[1, tokens[0]].exp())
    assert words[0].confidence == pytest.approx(posterior, rel=1e-4)
    # Tokens that cannot fit in the frames (each needs one) give no words, not an error.
    assert align_words(log_probs[:3], tokens, word_pieces(tokenizer, tokens), 0.04) == []


def test_a_model_without_a_ctc_head_says_timestamps_need_one():
    config = ModelConfig(
        encoder={"name": "conformer", "preset": "tiny"},
        heads={"rnnt": {"name": "rnnt"}},
        tokenizer={"name": "char"},
    )
    asr = Transcriber(build_model(config, CharTokenizer()))
    audio = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    assert isinstance(asr.transcribe(audio, sample_rate=RATE)[0], str)
    with pytest.raises(UserError, match="CTC head"):
        asr.transcribe(audio, sample_rate=RATE, timestamps=True)


def test_a_transducer_beside_a_ctc_head_is_timed_by_the_ctc_head():
    config = ModelConfig(
        encoder={"name": "conformer", "preset": "tiny"},
        heads={"rnnt": {"name": "rnnt"}, "ctc": {"name": "ctc"}},
        tokenizer={"name": "char"},
    )
    torch.manual_seed(0)
    asr = Transcriber(build_model(config, CharTokenizer()))
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    timed = asr.transcribe(audio, sample_rate=RATE, timestamps=True)[0]
    assert timed.text == asr.transcribe(audio, sample_rate=RATE)[0]
    assert " ".join(w.word for w in timed.words) in ("", " ".join(timed.text.split()))


def _transcript() -> Transcript:
    words = [f"word{i}" for i in range(20)]
    timed = tuple(
        Word(w, 0.5 * i + (3.0 if i >= 10 else 0.0), 0.5 * i + 0.3, 0.9)
        for i, w in enumerate(words)
    )
    return Transcript(" ".join(words), timed, 20.0)


def test_subtitle_cues_are_short_lines_in_order_and_break_at_pauses():
    t = _transcript()
    made = cues(t.words)
    assert " ".join(c.text for c in made) == t.text
    assert all(len(c.text) <= MAX_CUE_CHARS for c in made)
    assert all(c.end - c.start <= 5.0 + 1e-9 for c in made)
    assert all(a.end <= b.start for a, b in zip(made, made[1:], strict=False))
    assert any(c.text.startswith("word10") for c in made)  # a 3 s pause starts a cue
    assert clock(3725.5) == "01:02:05.500" and clock(0.0004, ",") == "00:00:00,000"


def test_formats_render_text_json_srt_and_vtt():
    t = _transcript()
    srt = render(t, "srt")
    blocks = srt.strip().split("\n\n")
    assert blocks[0].split("\n")[0] == "1"
    assert re.fullmatch(r"\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}", blocks[0].split("\n")[1])
    vtt = render(t, "vtt")
    assert vtt.startswith("WEBVTT\n\n") and vtt.count(" --> ") == len(blocks)
    data = json.loads(render(t, "json", file="a.wav"))
    assert data["file"] == "a.wav" and data["text"] == t.text and len(data["words"]) == 20
    assert set(data["words"][0]) == {"word", "start", "end", "confidence"}
    assert render("hello there", "txt") == "hello there\n"
    assert render(t, "txt").startswith("[00:00:00.000 --> ")
    with pytest.raises(ValueError, match="timestamps=True"):
        render("no times", "srt")


def test_cli_writes_each_format(tmp_path, speech, capsys):
    from suite.cli import main

    path = tmp_path / "speech.wav"
    sf.write(path, speech[0][1], RATE)
    assert main(["transcribe", "default-asr", str(path), "--format", "json", "--timestamps"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["file"] == str(path) and [w["word"] for w in data["words"]] == data["text"].split()
    out = tmp_path / "subs"
    assert (
        main(["transcribe", "default-asr", str(path), "--format", "vtt", "--output-dir", str(out)])
        == 0
    )
    assert capsys.readouterr().out.strip() == str(out / "speech.vtt")
    assert (out / "speech.vtt").read_text().startswith("WEBVTT")
    assert main(["transcribe", "default-asr", str(path), str(path), "--format", "srt"]) == 2
    assert "--output-dir" in capsys.readouterr().err
