"""``suite bench distributed``: weak scaling of the one trainer under ``torchrun``.

One process (one thread) takes training steps of the shipped ``default-asr`` model (its
recipe's encoder, a CTC head over characters) at its recipe's batch (``data.max_duration``
seconds of audio per step, as items of :data:`SECONDS`); then 2 processes of one thread each,
every one at that same batch, under DDP and under FSDP2 (gloo on CPU; NCCL on a GPU machine,
one process per GPU). Measured: the median step time (forward, backward with the ranks'
gradient averaging, optimizer step) over the timed steps after warm-up, and its ratio to the
single process's: 1.0 is perfect weak scaling, and the scaling efficiency is its inverse.
Inputs are random features and targets of fixed shape, so data loading is not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from suite.bench import print_header, report

RECIPE = Path(__file__).resolve().parents[2] / "recipes/asr/espeak_conformer_ctc_cpu.yaml"
SECONDS, STEPS, WARMUP = 4.0, 10, 3


def recipe_batch() -> int:
    """Items of :data:`SECONDS` in one step of the recipe's batch (``data.max_duration``)."""
    from suite.config import load_recipe

    return max(1, int(load_recipe(RECIPE).data.max_duration // SECONDS))


def _worker(strategy: str, batch: int, seconds: float, steps: int, warmup: int, tiny: bool) -> None:
    """One rank's steps; rank 0 prints ``{"step_seconds": [...]}`` as one JSON line."""
    from suite import registry
    from suite.config import ModelConfig, TrainConfig, load_recipe
    from suite.interfaces import Batch
    from suite.model import build_model
    from suite.tokenizers import CharTokenizer
    from suite.train import distributed
    from suite.train.distributed import LossStep
    from suite.train.trainer import make_optimizer

    torch.set_num_threads(1)
    where, device = distributed.setup("auto")
    if tiny:
        config = ModelConfig(encoder={"name": "conformer", "preset": "tiny"})
    else:
        config = ModelConfig(**{**vars(load_recipe(RECIPE).model), "tokenizer": {"name": "char"}})
    torch.manual_seed(0)
    tokenizer = CharTokenizer()
    model = build_model(config, tokenizer).to(device)
    task = registry.create("task", "asr")
    step = distributed.wrap(LossStep(model, task.loss), strategy, where, device)
    optimizer = make_optimizer(model, TrainConfig(), task)
    frames = int(seconds * 100)
    g = torch.Generator().manual_seed(where.rank)
    data = Batch(
        inputs=torch.randn(batch, frames, model.frontend.input_dim, generator=g),
        lengths=torch.full((batch,), frames),
        targets=torch.randint(1, tokenizer.vocab_size, (batch, int(seconds * 12)), generator=g),
        target_lengths=torch.full((batch,), int(seconds * 12)),
    ).to(device)
    times = []
    for index in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        step(data)["loss"].backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if index >= warmup:
            times.append(time.perf_counter() - start)
    if where.main:
        print(json.dumps({"step_seconds": times}), flush=True)
    distributed.teardown()


def _run(nproc: int, strategy: str, options: list[str]) -> list[float]:
    """Start the workers (under torchrun when ``nproc > 1``) and read rank 0's step times."""
    module = ["-m", "suite.bench.distributed", "--worker", "--strategy", strategy, *options]
    if nproc > 1:
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
        command = [sys.executable, *launcher, *module]
    else:
        command = [sys.executable, *module]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{out.stderr[-3000:]}")
    line = [x for x in out.stdout.splitlines() if x.startswith('{"step_seconds"')][-1]
    return json.loads(line)["step_seconds"]


def measure(
    batch: int | None = None, seconds: float = SECONDS, steps: int = STEPS, tiny: bool = False
) -> dict:
    """Median step times of 1 process and of 2 (DDP, FSDP), each at ``batch`` per process
    (default: the recipe's, :func:`recipe_batch`)."""
    batch = recipe_batch() if batch is None else batch
    options = ["--batch", str(batch), "--seconds", str(seconds), "--steps", str(steps)]
    options += ["--tiny"] * tiny
    single = statistics.median(_run(1, "ddp", options))
    result = {
        "batch_per_process": batch,
        "seconds_per_item": seconds,
        "threads_per_process": 1,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "single_step_s": single,
    }
    for strategy in ("ddp", "fsdp"):
        median = statistics.median(_run(2, strategy, options))
        result[f"{strategy}_step_s"] = median
        result[f"{strategy}_ratio"] = median / single
        result[f"{strategy}_efficiency"] = single / median
    return result


def _markdown(r: dict) -> None:
    print_header("Distributed training: weak scaling", "distributed", 1)
    print(
        f"\n{r['batch_per_process']} utterances of {r['seconds_per_item']:.0f} s per process "
        f"and step, one thread per process, {r['device']}.\n"
    )
    print("| processes | strategy | median step (s) | / one process | scaling efficiency |")
    print("|---|---|---|---|---|")
    print(f"| 1 | - | {r['single_step_s']:.3f} | 1.00 | 100% |")
    for strategy in ("ddp", "fsdp"):
        print(
            f"| 2 | {strategy.upper()} | {r[f'{strategy}_step_s']:.3f} | "
            f"{r[f'{strategy}_ratio']:.2f} | {r[f'{strategy}_efficiency']:.0%} |"
        )


def main(json_output: bool = False, **options) -> None:
    report(measure(**options), json_output, _markdown)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--strategy", default="ddp")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--tiny", action="store_true")
    a = parser.parse_args()
    _worker(a.strategy, a.batch or recipe_batch(), a.seconds, a.steps, WARMUP, a.tiny)
