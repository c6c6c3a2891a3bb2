"""``suite serve`` end to end: headless Chromium opens the page, its fake microphone plays a
sentence synthesized with espeak-ng, and the page shows the words (partial, then final).

Needs Debian's ``chromium`` (``make test`` installs it) and the shipped ``streaming-asr``; set
``SUITE_SERVE_TEST_MODEL`` to another streaming package folder to try one before it ships.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from suite.demo import open_demo_utterances
from suite.model import resolve
from suite.tasks.asr.evaluation import score

CHROMIUM = Path("/usr/bin/chromium")
MODEL = os.environ.get("SUITE_SERVE_TEST_MODEL", "streaming-asr")
SR = 16000
LEAD, TAIL = 0.5, 1.0  # seconds of silence around the sentence


@pytest.fixture(scope="module")
def sentence(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, float]:
    """An open-domain sentence never used in training, in a held-out espeak-ng voice, as a
    16-bit PCM mono wav."""
    held_out = [u for u in open_demo_utterances(6, real=0) if u.group == "held-out voice"]
    text, audio = held_out[0].text, held_out[0].audio
    audio = np.concatenate([np.zeros(int(LEAD * SR)), audio, np.zeros(int(TAIL * SR))])
    path = tmp_path_factory.mktemp("speech") / "sentence.wav"
    sf.write(path, audio, SR, subtype="PCM_16")  # what Chromium's fake capture device reads
    return text, path, len(audio) / SR


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """``suite serve`` on a free port, as a user starts it; its URL."""
    package = resolve(MODEL)
    command = [sys.executable, "-m", "suite.cli", "serve", str(package), "--port", "0"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("serving http://"):
            proc.kill()
            pytest.fail(f"suite serve did not start: {line!r} {proc.stderr.read()}")
        yield line.split()[1]
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: it closes its streams and exits
        try:  # (seconds normally; over 10 s once on 2 cores shared with two training jobs)
            assert proc.wait(timeout=60) == 0, proc.stderr.read()
        finally:
            proc.kill()


def launch(playwright, args: list[str]):
    """Debian's Chromium, headless; Playwright gives it a fresh profile folder."""
    assert CHROMIUM.exists(), "the browser tests need Debian's chromium: run `make system-deps`"
    quiet = ["--no-first-run", "--disable-background-networking", "--disable-component-update"]
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        args=["--disable-gpu", "--disable-quic", "--disable-sync", *quiet, *args],
    )


def test_page_shows_the_words_spoken_into_the_microphone(sentence, server_url):
    from playwright.sync_api import sync_playwright

    text, wav, seconds = sentence
    with sync_playwright() as playwright:
        browser = launch(
            playwright,
            [
                "--use-fake-ui-for-media-stream",  # grant the microphone without asking
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}%noloop",  # play once, then silence
            ],
        )
        try:
            page = browser.new_page()
            page.goto(server_url)
            page.click("#toggle")
            started = time.monotonic()
            # Words appear while the sentence is still playing ...
            page.wait_for_function("document.querySelector('#partial').textContent.length > 0")
            partial, partial_at = page.inner_text("#partial"), time.monotonic() - started
            time.sleep(max(0.0, seconds - (time.monotonic() - started)))
            page.click("#toggle")
            # ... and the final text once the page sent the end of the audio.
            page.wait_for_function(
                "document.querySelector('#final').textContent.length > 0", timeout=30_000
            )
            final, error = page.inner_text("#final"), page.inner_text("#error")
        finally:
            browser.close()
    assert error == ""
    assert partial_at < seconds, "no partial text while the sentence was playing"
    # The partial text is greedy; the final one is the LM's beam search over the same frames
    # (streaming-asr carries an LM), so it may respell the words the partial already showed.
    assert len(partial.split()) <= len(final.split()) + 1
    # The page shows the sentence, or what the model itself makes of it: the shipped model
    # streams held-out voices at about 32% WER (this sentence: 3 of 11 words wrong), and the
    # browser's resampling (its capture runs at 48 kHz) moves which words, from run to run.
    expected = streamed(wav)
    wer = min(score([text], [final]).wer, score([expected], [final]).wer)
    assert wer <= 0.4, (text, expected, final)


def streamed(wav: Path) -> str:
    """The served model's final text of ``wav`` streamed in 160 ms chunks at its default
    context, as ``suite serve`` streams a page's audio."""
    import suite
    from suite.streaming import stream_audio

    audio, rate = sf.read(wav, dtype="float32")
    assert rate == SR
    stream = suite.load(resolve(MODEL)).stream()
    return next(p.text for p in stream_audio(stream, audio, 0.16, False) if p.final)


def test_page_explains_a_denied_microphone(server_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright, ["--use-fake-device-for-media-stream"])  # headless: "deny"
        try:
            page = browser.new_page()
            page.goto(server_url)
            page.click("#toggle")
            page.wait_for_function("document.querySelector('#error').textContent.length > 0")
            error, button = page.inner_text("#error"), page.inner_text("#toggle")
        finally:
            browser.close()
    assert "permission was denied" in error and "site settings" in error and button == "Start"
