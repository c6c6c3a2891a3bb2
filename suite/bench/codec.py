"""``suite bench codec``: the speed of the codec recipe's model on CPU, per bitrate.

The model is ``recipes/codec/speech_seanet_rvq_cpu.yaml``'s (the ``small`` preset: 16 kHz, 50
code frames per second, 12 codebooks of 1024 entries) with random weights and codebooks started
by k-means on the input: the work per frame does not depend on the weights, so speed is measured
without a trained model (quality needs one). The input is ``SECONDS`` of a synthetic vowel-like
signal at 16 kHz. Measured with ``THREADS`` threads:

- offline encode + decode RTFx (audio seconds / compute seconds) of the whole signal at 0.5,
  1.5, 3 and 6 kbps, for the RVQ model and its group-residual twin (2 groups);
- streaming: one stream fed 20 ms chunks (one code frame each) through ``encode_step`` then
  ``decode_step``; the per-chunk compute latency p50 / p95 in ms;
- quality (:mod:`suite.bench.codec_quality`): a trained package beside Opus and Codec2 on
  held-out speech (PESQ wide-band, STOI, mel distance, SI-SDR); systems whose tools are missing
  are skipped with a line saying what to install.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from suite import registry
from suite.bench import codec_quality, print_header, report

SECONDS, SAMPLE_RATE, THREADS = 10.0, 16000, 2
BITRATES = (0.5, 1.5, 3.0, 6.0)


def _signal(seconds: float) -> torch.Tensor:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    phase = 2 * np.pi * np.cumsum(140 + 30 * np.sin(2 * np.pi * 0.7 * t)) / SAMPLE_RATE
    wave = sum(np.sin(k * phase) / k for k in range(1, 10)) * 0.2
    return torch.from_numpy(wave.astype(np.float32))[None]  # (1, S)


def _model(preset: str, **options: object) -> torch.nn.Module:
    torch.manual_seed(0)
    codec = registry.create("codec", "seanet", preset=preset, **options).train()
    audio = _signal(2.0)
    with torch.no_grad():  # one training forward: codebooks start at k-means of real latents
        codec(audio, torch.tensor([audio.shape[1]]))
    return codec.eval()


@torch.inference_mode()
def _rtfx(codec: torch.nn.Module, audio: torch.Tensor, q: int, repeats: int) -> float:
    lengths = torch.tensor([audio.shape[1]])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        codes, code_lengths = codec.encode(audio, lengths, q)
        codec.decode(codes, code_lengths)
        best = min(best, time.perf_counter() - start)
    return audio.shape[1] / SAMPLE_RATE / best


@torch.inference_mode()
def _chunk_latency(codec: torch.nn.Module, audio: torch.Tensor, q: int) -> list[float]:
    """Milliseconds of ``encode_step`` + ``decode_step`` per one-frame chunk."""
    hop = codec.hop
    one = torch.tensor([hop])
    enc, dec = codec.init_state(1), codec.init_state(1)
    times = []
    for start in range(0, audio.shape[1] - hop + 1, hop):
        begin = time.perf_counter()
        codes, lengths, enc = codec.encode_step(audio[:, start : start + hop], one, enc)
        codec.decode_step(codes[:, :q], lengths, dec)
        times.append((time.perf_counter() - begin) * 1000)
    return times[5:]  # the first steps warm up allocators and caches


def measure(
    preset: str = "small", seconds: float = SECONDS, threads: int = THREADS, repeats: int = 3
) -> dict:
    """The benchmark's numbers as a dict (see the module docstring)."""
    torch.set_num_threads(threads)
    audio = _signal(seconds)
    rows = []
    for label, options in (("rvq", {}), ("grvq", {"groups": 2})):
        codec = _model(preset, **options)
        measured: set[int] = set()
        for kbps in BITRATES:
            try:
                q = codec.stages_for(kbps)
            except ValueError:  # below the lowest bitrate
                continue
            if q in measured:  # a bitrate between two steps rounds down to one measured
                continue
            measured.add(q)
            latency = _chunk_latency(codec, audio, q)
            rows.append(
                {
                    "quantizer": label,
                    "kbps": q * codec.bits_per_stage / 1000,
                    "codebooks": q,
                    "rtfx": _rtfx(codec, audio, q, repeats),
                    "chunk_ms_p50": statistics.median(latency),
                    "chunk_ms_p95": float(np.percentile(latency, 95)),
                }
            )
    return {
        "config": {"preset": preset, "seconds": seconds, "threads": threads, "chunk_ms": 20},
        "rows": rows,
    }


def _markdown(result: dict) -> None:
    config = result["config"]
    print_header("Codec speed", "codec", config["threads"])
    print(
        f"- Model: seanet `{config['preset']}` (random weights, k-means codebooks); "
        f"{config['seconds']:g} s of audio; streaming in {config['chunk_ms']} ms chunks\n"
    )
    print("| quantizer | kbps | codebooks | encode+decode RTFx | chunk p50 ms | chunk p95 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in result["rows"]:
        print(
            f"| {r['quantizer']} | {r['kbps']:g} | {r['codebooks']} | {r['rtfx']:.1f} | "
            f"{r['chunk_ms_p50']:.2f} | {r['chunk_ms_p95']:.2f} |"
        )
    print()
    if "quality" in result:
        codec_quality.markdown(result["quality"])


def main(json_output: bool = False) -> None:
    result = measure()
    result["quality"] = codec_quality.measure_quality()
    report(result, json_output, _markdown)


if __name__ == "__main__":
    main()
