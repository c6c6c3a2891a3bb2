"""``suite bench sampler``: padding, batches and speed of batch samplers on one epoch.

The cut set is synthetic and LibriSpeech-like, and holds metadata only (a dummy recording per
cut, no audio), because a sampler reads nothing else. Durations (seconds, 1-35) mix three parts:
55 % around the mode, ``N(15, 1.8)``; 40 % a long tail of shorter cuts, ``1 + 14 Beta(1.5, 1.2)``;
5 % longer cuts, ``17 + Exp(4)``; the mean is about 12.8 s (LibriSpeech's 960 h: 12.3 s). Output
tokens are proportional to duration with speaking-rate noise: ``4 tokens/s x LogNormal(0, 0.15)``
(about a 500-piece BPE on read English), stored as ``cut.custom["num_tokens"]``.

Every sampler gets the same ``max_duration`` (padded seconds per batch) and seed:

- ``naive``: lhotse ``SimpleCutSampler`` (random batches);
- ``lhotse``: lhotse ``DynamicBucketingSampler`` with 30 buckets;
- ``suite``: :class:`~suite.data.sampling.BucketingSampler` with 2D buckets (duration x tokens);
- ``suite_1d`` (Markdown table only): the same with duration buckets alone;
- ``suite_packed`` (Markdown table only): ``suite`` with ``pack=True``: cuts up to half the
  median duration are packed into examples of up to the median (see
  :mod:`suite.data.packing`); an example's tokens are its cuts' tokens summed.

Measured per sampler: ``padding_fraction`` (padded frames / all frames: ``1 - sum d / sum
(batch size x longest d)``), ``token_padding_fraction`` (the same over output tokens), ``batches``
per epoch, ``mean_audio_per_batch`` (real seconds), ``examples`` per epoch (rows of the batches:
fewer than ``cuts`` when packing), ``seconds`` (wall time of one epoch of
sampling: ``set_epoch`` plus iterating every batch, nothing else) and ``init_seconds``
(constructing the sampler, which includes the bin estimates).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from lhotse import AudioSource, CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.cut import Cut
from lhotse.dataset import DynamicBucketingSampler, SimpleCutSampler

from suite.data.packing import members
from suite.data.sampling import BucketingSampler

NUM_CUTS = 100_000
MAX_DURATION = 600.0  # padded seconds per batch, for every sampler
TOKENS_PER_SECOND = 4.0
SUITE_OPTIONS = {"num_buckets": 100, "num_token_buckets": 16}  # the "suite" entry (2D)
SUITE_1D_OPTIONS = {"num_buckets": 100}
SUITE_PACKED_OPTIONS = {**SUITE_OPTIONS, "pack": True}
REQUIRED = ("naive", "lhotse", "suite")  # the keys of --json


def librispeech_like_durations(num: int, rng: np.random.Generator) -> np.ndarray:
    """``(num,)`` durations in seconds, 1-35, rounded to 10 ms (see the module docstring)."""
    part = rng.choice(3, size=num, p=[0.55, 0.40, 0.05])
    mode = rng.normal(15.0, 1.8, num)
    short = 1.0 + 14.0 * rng.beta(1.5, 1.2, num)
    long = 17.0 + rng.exponential(4.0, num)
    durations = np.where(part == 0, mode, np.where(part == 1, short, long))
    return np.round(np.clip(durations, 1.0, 35.0), 2)


def synthetic_cuts(num_cuts: int = NUM_CUTS, seed: int = 0) -> CutSet:
    """An eager ``CutSet`` of ``num_cuts`` metadata-only cuts with ``custom["num_tokens"]``."""
    rng = np.random.default_rng(seed)
    durations = librispeech_like_durations(num_cuts, rng)
    rate = TOKENS_PER_SECOND * np.exp(rng.normal(0.0, 0.15, num_cuts))
    tokens = np.maximum(1, np.round(durations * rate)).astype(int)
    lengths = zip(durations.tolist(), tokens.tolist(), strict=True)
    return CutSet(
        [
            metadata_cut(i, duration, custom={"num_tokens": num_tokens})
            for i, (duration, num_tokens) in enumerate(lengths)
        ]
    )


def metadata_cut(
    index: int, duration: float, text: str | None = None, custom: dict[str, Any] | None = None
) -> MonoCut:
    """A 16 kHz cut ``cut{index}`` with no audio behind it (samplers and batch-size probes read
    only its metadata): one supervision with ``text`` when given, and ``custom``."""
    recording = Recording(
        id=f"rec{index}",
        sources=[AudioSource(type="file", channels=[0], source="none.wav")],
        sampling_rate=16000,
        num_samples=round(duration * 16000),
        duration=duration,
    )
    supervisions = []
    if text is not None:
        supervisions = [
            SupervisionSegment(
                id=f"sup{index}", recording_id=recording.id, start=0.0, duration=duration, text=text
            )
        ]
    return MonoCut(
        id=f"cut{index}",
        start=0.0,
        duration=duration,
        channel=0,
        recording=recording,
        supervisions=supervisions,
        custom=custom,
    )


def count_tokens(cut: Cut) -> int:
    """The synthetic cut's output tokens."""
    return cut.custom["num_tokens"]


def samplers(max_duration: float, seed: int) -> dict[str, Callable[[CutSet], Any]]:
    """The compared samplers, each built from a cut set."""
    common = {"max_duration": max_duration, "shuffle": True, "seed": seed}
    return {
        "naive": lambda cuts: SimpleCutSampler(cuts, **common),
        "lhotse": lambda cuts: DynamicBucketingSampler(cuts, num_buckets=30, **common),
        "suite": lambda cuts: BucketingSampler(
            cuts, count_tokens=count_tokens, **SUITE_OPTIONS, **common
        ),
        "suite_1d": lambda cuts: BucketingSampler(cuts, **SUITE_1D_OPTIONS, **common),
        "suite_packed": lambda cuts: BucketingSampler(
            cuts, count_tokens=count_tokens, **SUITE_PACKED_OPTIONS, **common
        ),
    }


def measure(make: Callable[[CutSet], Any], cuts: CutSet) -> dict[str, float]:
    """Build a sampler, time one epoch, and measure its batches (see the module docstring)."""
    with warnings.catch_warnings():  # lhotse warns that an eager CutSet gains nothing from it
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        sampler = make(cuts)
        init_seconds = time.perf_counter() - start
        start = time.perf_counter()
        sampler.set_epoch(0)
        batches = [list(batch) for batch in sampler]
        seconds = time.perf_counter() - start
    real = padded = real_tokens = padded_tokens = 0.0
    num_cuts = num_examples = 0
    for batch in batches:
        durations = np.array([c.duration for c in batch])  # (B,) seconds
        tokens = np.array([sum(map(count_tokens, members(c))) for c in batch])  # (B,)
        real += durations.sum()
        padded += len(batch) * durations.max()
        real_tokens += tokens.sum()
        padded_tokens += len(batch) * tokens.max()
        num_cuts += sum(len(members(c)) for c in batch)
        num_examples += len(batch)
    return {
        "padding_fraction": float(1.0 - real / padded),
        "token_padding_fraction": float(1.0 - real_tokens / padded_tokens),
        "batches": len(batches),
        "mean_audio_per_batch": float(real / len(batches)),
        "examples": num_examples,
        "seconds": seconds,
        "init_seconds": init_seconds,
        "cuts": num_cuts,
    }


def run(
    num_cuts: int = NUM_CUTS, max_duration: float = MAX_DURATION, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Measure every sampler of :func:`samplers` on :func:`synthetic_cuts`."""
    cuts = synthetic_cuts(num_cuts, seed)
    return {name: measure(make, cuts) for name, make in samplers(max_duration, seed).items()}


def machine() -> dict[str, str]:
    """Cores and CPU model of this machine."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": str(os.cpu_count()), "cpu": model}


def markdown(results: dict[str, dict[str, float]], num_cuts: int, max_duration: float) -> str:
    """A BENCHMARKS.md section: machine, command, date and the table."""
    info = machine()
    rows = [
        "| sampler | padded frames | padded tokens | batches/epoch | real audio/batch (s) "
        "| examples/batch | epoch (s) | init (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = {
        "naive": "naive: lhotse SimpleCutSampler",
        "lhotse": "lhotse DynamicBucketingSampler (30 buckets)",
        "suite": f"suite BucketingSampler 2D {SUITE_OPTIONS}",
        "suite_1d": f"suite BucketingSampler 1D {SUITE_1D_OPTIONS}",
        "suite_packed": f"suite BucketingSampler 2D, packed {SUITE_PACKED_OPTIONS}",
    }
    for name, r in results.items():
        rows.append(
            f"| {names.get(name, name)} | {r['padding_fraction']:.2%} "
            f"| {r['token_padding_fraction']:.2%} | {r['batches']} "
            f"| {r['mean_audio_per_batch']:.1f} | {r['examples'] / r['batches']:.1f} "
            f"| {r['seconds']:.2f} | {r['init_seconds']:.2f} |"
        )
    return "\n".join(
        [
            "## Sampler: padding, batches and speed (`suite bench sampler`)",
            "",
            f"- Machine: {info['nproc']} cores (`nproc`), {info['cpu']}",
            "- Command: `suite bench sampler`",
            f"- Date: {datetime.date.today().isoformat()}",
            f"- Data: {num_cuts} synthetic LibriSpeech-like cuts (see `suite/bench/sampler.py`), "
            f"max_duration={max_duration:g} padded seconds per batch, seed 0, one epoch",
            "",
            *rows,
            "",
        ]
    )


def main(json_output: bool = False, num_cuts: int | None = None) -> None:
    """Run the benchmark and print Markdown, or JSON with ``json_output``.

    Args:
        json_output: print ``{"naive": {...}, "lhotse": {...}, "suite": {...}}``.
        num_cuts: size of the synthetic cut set (default :data:`NUM_CUTS`).
    """
    num_cuts = NUM_CUTS if num_cuts is None else num_cuts
    results = run(num_cuts)
    if json_output:
        print(json.dumps({name: results[name] for name in REQUIRED}, indent=2))
    else:
        print(markdown(results, num_cuts, MAX_DURATION))
