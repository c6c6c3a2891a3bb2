"""Quality metrics of decoded speech against the original, for comparing codecs (ours, Opus,
Codec2) on the same utterances: PESQ wide-band (ITU-T P.862.2, PyPI ``pesq``), STOI (Taal et
al. 2011, PyPI ``pystoi``), the multi-scale mel distance of the training loss, and SI-SDR.

Dims legend: S - audio samples (mono, 16 kHz).

``pesq`` and ``pystoi`` are optional (``pip install 'suite[codec-bench]'``): :func:`missing_tools`
names what is absent, and a metric whose package is missing is left out, never an exception.
"""

from __future__ import annotations

import importlib.util
import math
import warnings

import numpy as np
import torch

from suite.tasks.codec.evaluation import si_sdr

SAMPLE_RATE = 16000
# Codecs delay their output (Codec2 by a few ms, resampling filters by a little more): the
# decoded signal is shifted back by the lag of best correlation within this window, so SI-SDR and
# STOI (which do not align) measure the coding, not the delay. PESQ aligns by itself.
MAX_LAG_S = 0.05
_MEL: dict[str, torch.nn.Module] = {}  # one mel loss, built on first use


def missing_tools() -> list[str]:
    """The optional metric packages not installed (``pesq``, ``pystoi``)."""
    return [name for name in ("pesq", "pystoi") if importlib.util.find_spec(name) is None]


def align(decoded: np.ndarray, reference: np.ndarray, max_lag: int) -> tuple[np.ndarray, int]:
    """``decoded`` shifted by the lag in ``[0, max_lag]`` samples that best correlates it with
    ``reference`` (a codec only delays), cut or zero-padded to the reference's length; and the
    lag."""
    n = len(reference)
    decoded = np.pad(decoded, (0, max(0, n + max_lag - len(decoded))))[: n + max_lag]
    spectrum = np.fft.rfft(decoded, 2 * (n + max_lag))
    corr = np.fft.irfft(spectrum * np.conj(np.fft.rfft(reference, 2 * (n + max_lag))))
    lag = int(np.argmax(corr[: max_lag + 1]))
    return decoded[lag : lag + n], lag


def mel_distance(decoded: np.ndarray, reference: np.ndarray) -> float:
    """The training loss's multi-scale log-mel L1 (lower is better)."""
    from suite.codecs.losses import MultiScaleMelLoss

    loss = _MEL.setdefault("loss", MultiScaleMelLoss(SAMPLE_RATE))
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32))[None]
        y = torch.from_numpy(np.ascontiguousarray(decoded, dtype=np.float32))[None]
        return float(loss(y, x))


def pesq_wb(decoded: np.ndarray, reference: np.ndarray) -> float:
    """PESQ wide-band MOS-LQO (1.0 to 4.64); NaN where PESQ finds no speech."""
    from pesq import PesqError, pesq

    try:
        return float(pesq(SAMPLE_RATE, reference, decoded, "wb"))
    except PesqError:  # e.g. no utterance detected in a near-silent item
        return math.nan


def stoi(decoded: np.ndarray, reference: np.ndarray) -> float:
    """Short-time objective intelligibility (0 to 1); NaN for an utterance too short once
    its silent frames are dropped (pystoi warns and returns 1e-5 there)."""
    from pystoi import stoi as _stoi

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(_stoi(reference, decoded, SAMPLE_RATE, extended=False))
    return math.nan if any("Not enough STFT frames" in str(w.message) for w in caught) else value


def score(decoded: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Every available metric of ``decoded (S',)`` against ``reference (S,)`` (16 kHz float),
    after :func:`align`: ``pesq``, ``stoi`` (when installed), ``mel_distance``, ``si_sdr``, and
    the ``lag_ms`` removed."""
    reference = np.asarray(reference, dtype=np.float64)
    decoded, lag = align(
        np.asarray(decoded, dtype=np.float64), reference, int(MAX_LAG_S * SAMPLE_RATE)
    )
    missing = missing_tools()
    out = {"lag_ms": lag * 1000 / SAMPLE_RATE}
    if "pesq" not in missing:
        out["pesq"] = pesq_wb(decoded, reference)
    if "pystoi" not in missing:
        out["stoi"] = stoi(decoded, reference)
    out["mel_distance"] = mel_distance(decoded, reference)
    out["si_sdr"] = si_sdr(torch.from_numpy(decoded), torch.from_numpy(reference))
    return out
