"""Quality half of ``suite bench codec``: a trained codec package beside Opus (6, 8, 12 kbps;
ffmpeg's libopus, VoIP mode) and Codec2 (1.2, 1.6, 3.2 kbps; ffmpeg's libcodec2 at 8 kHz) on
the same held-out utterances, scored by :mod:`suite.tasks.codec.metrics` (PESQ wide-band, STOI,
multi-scale mel distance, SI-SDR; the decoded audio aligned to the original first).

Dims legend: S - audio samples (mono, 16 kHz).

Where things come from (each overridable by an environment variable, since ``suite bench``
takes no options):

- ``SUITE_BENCH_CODEC_MODEL``: the codec package (default ``runs/codec_seanet_rvq_cpu/model``);
- ``SUITE_BENCH_CODEC_TEST``: the held-out cut manifest (default
  ``data/real/real_cuts_test.jsonl.gz``, from ``suite data real-speech``);
- ``SUITE_BENCH_CODEC_ITEMS``: utterances, evenly spaced through the manifest (default 24).

A system whose tool is missing (no package, no ffmpeg or an ffmpeg without the encoder) is
skipped with one line saying what to install; so are PESQ and STOI without ``pesq`` and
``pystoi`` (``pip install 'suite[codec-bench]'``, or ``make codec-bench-deps``).
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from suite.tasks.codec import metrics

MODEL = "runs/codec_seanet_rvq_cpu/model"
TEST = "data/real/real_cuts_test.jsonl.gz"
ITEMS = 24
OURS_KBPS = (0.5, 1.5, 3.0, 6.0)
OPUS_KBPS = (6.0, 8.0, 12.0)
CODEC2_KBPS = (1.2, 1.6, 3.2)
RATE = metrics.SAMPLE_RATE

# (decoded (S',) float32 at 16 kHz, bytes of the coded stream) of one utterance.
RoundTrip = Callable[[np.ndarray], tuple[np.ndarray, int]]


@functools.lru_cache(maxsize=1)
def _ffmpeg_encoders() -> str:
    if shutil.which("ffmpeg") is None:
        return ""
    out = subprocess.run(
        ["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True, check=False
    )
    return out.stdout


def ffmpeg_missing(encoder: str) -> str | None:
    """Why ffmpeg's ``encoder`` cannot run here, or ``None`` when it can."""
    listing = _ffmpeg_encoders()
    if not listing:
        return "ffmpeg not found (Debian: apt-get install ffmpeg)"
    if f" {encoder} " not in listing:
        return f"this ffmpeg has no {encoder} encoder (Debian's ffmpeg package has it)"
    return None


def _ffmpeg(args: list[str], data: bytes) -> bytes:
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", *args]
    done = subprocess.run(command, input=data, capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.decode().strip()}")
    return done.stdout


def _raw_in() -> list[str]:
    return ["-f", "f32le", "-ar", str(RATE), "-ac", "1", "-i", "pipe:0"]


def _raw_out() -> list[str]:
    return ["-f", "f32le", "-ar", str(RATE), "-ac", "1", "pipe:1"]


def opus(kbps: float) -> RoundTrip:
    """Opus at ``kbps`` through ffmpeg's libopus (VoIP mode, in Ogg: the byte count includes
    Ogg's pages and headers)."""

    def run(audio: np.ndarray) -> tuple[np.ndarray, int]:
        encode = ["-c:a", "libopus", "-b:a", f"{kbps:g}k", "-application", "voip", "-f", "ogg"]
        coded = _ffmpeg([*_raw_in(), *encode, "pipe:1"], audio.astype(np.float32).tobytes())
        decoded = _ffmpeg(["-i", "pipe:0", *_raw_out()], coded)
        return np.frombuffer(decoded, dtype=np.float32), len(coded)

    return run


def codec2(kbps: float) -> RoundTrip:
    """Codec2 at ``kbps`` (its mode ``1000 * kbps``) through ffmpeg's libcodec2: 8 kHz, so
    the decoded audio has no content above 4 kHz."""

    def run(audio: np.ndarray) -> tuple[np.ndarray, int]:
        mode = ["-ar", "8000", "-c:a", "libcodec2", "-mode", str(round(kbps * 1000))]
        coded = _ffmpeg([*_raw_in(), *mode, "-f", "codec2", "pipe:1"], audio.tobytes())
        decoded = _ffmpeg(["-f", "codec2", "-i", "pipe:0", *_raw_out()], coded)
        return np.frombuffer(decoded, dtype=np.float32), len(coded)

    return run


def ours(codec: object, kbps: float) -> RoundTrip:
    """The loaded codec package (:class:`~suite.tasks.codec.pipeline.AudioCodec`) at ``kbps``;
    bytes are the codes' bits (the ``.sca`` header aside)."""

    def run(audio: np.ndarray) -> tuple[np.ndarray, int]:
        encoded = codec.encode(audio, sample_rate=RATE, bitrate=kbps)
        bits = encoded.codes.numel() * encoded.codebook_bits
        return np.asarray(codec.decode(encoded), dtype=np.float32), math.ceil(bits / 8)

    return run


def held_out_items(manifest: Path, items: int) -> list[tuple[str, np.ndarray]]:
    """``items`` utterances ``(id, audio)`` evenly spaced through a cut manifest, at 16 kHz."""
    from lhotse import load_manifest

    from suite.tasks.asr.dataset import load_cut_audio

    cuts = list(load_manifest(manifest))
    picks = np.linspace(0, len(cuts) - 1, min(items, len(cuts))).round().astype(int)
    return [(cuts[i].id, load_cut_audio(cuts[i], RATE).astype(np.float32)) for i in picks]


def systems(model: str | None) -> tuple[list[tuple[str, float, RoundTrip]], list[str]]:
    """The rows to measure ``(system, kbps, round trip)`` and a line per skipped system."""
    rows, skipped = [], []
    path = Path(model or MODEL)
    if (path / "config.yaml").is_file():
        import suite

        codec = suite.load(str(path))
        for kbps in OURS_KBPS:
            try:
                codec.stages(kbps)
            except Exception:  # below this codec's lowest bitrate
                continue
            rows.append(("ours", kbps, ours(codec, kbps)))
    else:
        skipped.append(
            f"ours: no codec package at {path} (train recipes/codec/speech_seanet_rvq_cpu.yaml "
            "or set SUITE_BENCH_CODEC_MODEL)"
        )
    for name, encoder, kbps_list, make in (
        ("opus", "libopus", OPUS_KBPS, opus),
        ("codec2", "libcodec2", CODEC2_KBPS, codec2),
    ):
        why = ffmpeg_missing(encoder)
        if why:
            skipped.append(f"{name}: {why}")
        else:
            rows.extend((name, kbps, make(kbps)) for kbps in kbps_list)
    return rows, skipped


def measure_quality(
    model: str | None = None, manifest: str | None = None, items: int | None = None
) -> dict:
    """Mean metrics per system and bitrate over the test utterances (see the module
    docstring); ``{"skipped": [...]}`` lines for what could not run."""
    model = model or os.environ.get("SUITE_BENCH_CODEC_MODEL")
    test = Path(manifest or os.environ.get("SUITE_BENCH_CODEC_TEST", TEST))
    count = items or int(os.environ.get("SUITE_BENCH_CODEC_ITEMS", ITEMS))
    rows, skipped = systems(model)
    skipped += [f"{name}: not installed (pip install {name})" for name in metrics.missing_tools()]
    if not test.is_file():
        skipped.append(f"all systems: no test manifest at {test} (suite data real-speech)")
        return {"config": {"manifest": str(test), "items": 0}, "rows": [], "skipped": skipped}
    utterances = held_out_items(test, count)
    seconds = sum(len(a) for _, a in utterances) / RATE
    results = []
    for system, kbps, run in rows:
        scores, size, start = [], 0, time.perf_counter()
        for _, audio in utterances:
            decoded, nbytes = run(audio)
            scores.append(metrics.score(decoded, audio))
            size += nbytes
        row = {"system": system, "kbps": kbps, "measured_kbps": size * 8 / seconds / 1000}
        for key in scores[0]:
            values = [s[key] for s in scores if not math.isnan(s[key])]
            row[key] = float(np.mean(values)) if values else math.nan
        row["seconds"] = time.perf_counter() - start
        results.append(row)
    config = {"manifest": str(test), "items": len(utterances), "audio_seconds": seconds}
    config["model"] = str(model or MODEL)
    return {"config": config, "rows": results, "skipped": skipped}


def markdown(result: dict) -> None:
    """Print the quality table and the skipped systems."""
    config = result["config"]
    print(
        f"- Quality: {config['items']} utterances of `{config['manifest']}`; ours: "
        f"`{config.get('model', MODEL)}`; decoded audio aligned to the original (at most "
        f"{metrics.MAX_LAG_S * 1000:g} ms of delay removed)\n"
    )
    print("| system | kbps | measured kbps | PESQ-WB | STOI | mel distance | SI-SDR dB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in result["rows"]:
        cells = [f"{r.get(k, math.nan):.3f}" for k in ("pesq", "stoi", "mel_distance")]
        print(
            f"| {r['system']} | {r['kbps']:g} | {r['measured_kbps']:.2f} | "
            f"{' | '.join(cells)} | {r['si_sdr']:.1f} |"
        )
    for line in result["skipped"]:
        print(f"\nSkipped: {line}")
    print()
