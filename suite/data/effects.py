"""Signal processing for synthetic speech: band-limited resampling, additive white or pink
noise at a given SNR, and synthetic reverberation. Numpy only, to keep the synthesis workers
small: scipy's import alone costs most of a second."""

from __future__ import annotations

import math

import numpy as np

SAMPLE_RATE = 16000


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
