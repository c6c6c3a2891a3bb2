"""Codec quality metrics on synthetic signals: a perfect copy scores best, noise scores worse,
and a codec's delay is removed before scoring."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from suite.tasks.codec import metrics

RATE = metrics.SAMPLE_RATE


def _speech_like(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """A vowel-like harmonic tone whose pitch glides, in 4 Hz syllables with pauses: enough
    like speech for PESQ's voice activity detection and STOI's frames."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    phase = 2 * np.pi * np.cumsum(120 + 40 * np.sin(2 * np.pi * 0.5 * t)) / RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 20))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    return (0.2 * voice * envelope + 1e-3 * rng.standard_normal(len(t))).astype(np.float64)


def test_si_sdr_and_mel_distance_rank_a_copy_above_noise():
    clean = _speech_like()
    noise = np.random.default_rng(1).standard_normal(len(clean)) * clean.std()
    copy, noisy = metrics.score(clean, clean), metrics.score(clean + noise, clean)
    assert copy["si_sdr"] > 50 and abs(noisy["si_sdr"]) < 1.0  # 0 dB SNR
    assert copy["mel_distance"] < 1e-3 < noisy["mel_distance"]
    assert metrics.score(0.5 * clean, clean)["si_sdr"] > 50  # scale-invariant


def test_a_codecs_delay_is_removed_before_scoring():
    clean = _speech_like()
    delayed = np.concatenate([np.zeros(37), clean])  # 37 samples late, and longer
    aligned, lag = metrics.align(delayed, clean, 800)
    assert lag == 37 and len(aligned) == len(clean)
    scores = metrics.score(delayed, clean)
    assert scores["si_sdr"] > 50 and scores["lag_ms"] == pytest.approx(37 / 16)


@pytest.mark.skipif(
    importlib.util.find_spec("pesq") is None or importlib.util.find_spec("pystoi") is None,
    reason="pesq and pystoi not installed (pip install 'suite[codec-bench]')",
)
def test_pesq_and_stoi_rank_a_copy_above_noise():
    clean = _speech_like()
    noise = np.random.default_rng(1).standard_normal(len(clean)) * clean.std() * 0.5
    copy, noisy = metrics.score(clean, clean), metrics.score(clean + noise, clean)
    assert copy["pesq"] > 4.5 and noisy["pesq"] < 2.0
    assert copy["stoi"] > 0.99 and noisy["stoi"] < copy["stoi"] - 0.1
