"""``suite data oomptimize``: the largest batch per bucket that trains under a memory cap.

After NeMo's OOMptimizer: build the recipe's model and, for each bucket of its sampler, run a
full training step (forward, loss, backward, clipping, optimizer step and EMA, under the
recipe's precision) on a synthetic batch of the bucket's longest shape, growing the batch size
geometrically and then bisecting (:func:`~suite.data.planning.search_batch_sizes`). The sizes
and the bins go into a copy of the recipe, as ``data.sampler.bucket_batch_size``, which
``suite train`` reads. What differs from NeMo's: the search skips what the shape order already
tells (see :func:`~suite.data.planning.search_batch_sizes`), and CPU memory can be measured.

Dims: B - batch, T - feature frames, F - feature bins, U - output tokens, C - bucket cells.

What is measured, per device:

- CUDA: the caching allocator is capped at the memory cap
  (``torch.cuda.set_per_process_memory_fraction``), so a step that would need more raises
  ``torch.cuda.OutOfMemoryError``: that size does not fit. The reported figure is the step's
  ``torch.cuda.max_memory_allocated``. One process and one model: the optimizer state and the
  EMA weights stay allocated between probes, as they do in training.
- CPU: there is no allocator-level peak for CPU tensors, so each probe runs in a fresh process
  forked from a server that has imported torch and the suite (``multiprocessing`` forkserver),
  and the figure is that process's peak resident memory (``ru_maxrss``): the interpreter,
  torch, the model, the optimizer and one step; what the kernel's out-of-memory killer counts.
  The cap is a fraction of the memory available now (``MemAvailable``), since other jobs may
  share the machine, and an address-space limit stops a probe that grows past the cap before
  it can take their memory.

Not covered: data-loader workers and prefetched batches, and memory that grows over many steps
(fragmentation); the margin left by ``--memory-fraction`` (0.9 by default) is there for them.

Shapes: features ``(B, T, F)`` of the bucket's upper duration edge (stretched by the slowest
speed perturbation), targets ``(B, U)`` with the most output tokens of any training cut in the
bucket (for 2D buckets at least the cell's token edge).
"""

from __future__ import annotations

import copy
import datetime
import gc
import math
import multiprocessing
import os
import resource
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from lhotse import CutSet

from suite import registry
from suite.config import Recipe, load_recipe, recipe_from_dict
from suite.data.bucketing import Buckets, cut_lengths, estimate_bins, token_counter
from suite.data.planning import padded_cost, search_batch_sizes
from suite.errors import UserError
from suite.interfaces import Batch, Tokenizer
from suite.io import atomic_write_text
from suite.model import build_model
from suite.tasks.asr import AsrTask, load_cuts
from suite.tokenizers import load_tokenizer
from suite.train.distributed import resolve_device
from suite.train.optim import (
    copy_weights,
    make_optimizer,
    optimizer_step,
    precision_autocast,
)

GIB = 2**30
# Headroom of the CPU probe's address-space limit over the cap: virtual memory that is reserved
# but never touched (malloc arenas, thread stacks) must not fail a probe that fits.
_ADDRESS_SLACK = 512 * 2**20
# Imported once by the CPU probes' fork server rather than by every probe: the registry's
# families, and torch._dynamo, which the first optimizer of a process imports (slowly).
_PRELOAD = ("suite.features", "suite.tokenizers", "suite.encoders", "suite.heads", "torch._dynamo")


def _tokenizer(recipe: Recipe, cuts: CutSet, scratch: Path) -> tuple[Tokenizer, Path]:
    """The tokenizer ``suite train`` would use, and its folder: the run folder's if it exists,
    else one made as the trainer makes it, in ``scratch``."""
    directory = Path(recipe.train.out_dir) / "tokenizer"
    if not directory.is_dir():
        directory = scratch / "tokenizer"
    return AsrTask().tokenizer(recipe, cuts, directory), directory


def recipe_buckets(
    spec: dict[str, Any],
    durations: np.ndarray,
    tokens: np.ndarray,
    num_buckets: int | None = None,
) -> Buckets:
    """The bins the recipe's ``suite_bucketing`` sampler gives (estimated when not set).

    Unlike the sampler's own estimate, the last bucket ends at the longest cut: a bucket is
    probed at its upper edge, which must be finite.
    """
    num_token_buckets = spec.get("num_token_buckets")
    if spec.get("duration_bins") is not None and num_buckets is None:
        if spec.get("token_bins") is not None or num_token_buckets is None:
            buckets = Buckets(tuple(spec["duration_bins"]), spec.get("token_bins"))
        else:
            buckets = estimate_bins(
                durations, 1, tokens, num_token_buckets, duration_bins=spec["duration_bins"]
            )
    else:
        count = num_buckets or spec.get("num_buckets", 100)
        buckets = estimate_bins(durations, count, tokens, num_token_buckets)
    if not math.isfinite(buckets.duration_bins[-1]):
        raise UserError(
            "the last duration bin is open (inf), so its longest batch is unknown; give a "
            "finite last edge in data.sampler.duration_bins, or leave the bins out to estimate"
        )
    return buckets


def cell_tokens(buckets: Buckets, durations: np.ndarray, tokens: np.ndarray) -> list[int]:
    """``(C,)`` output tokens to probe each cell with: the most any cut of the cell has.

    2D cells take at least their token edge. A 1D bucket takes at least what shorter buckets
    take (so a longer bucket is never a smaller shape, which the search relies on), and an
    empty one its duration edge times the highest tokens-per-second rate of the data.
    """
    cells = buckets.assign(durations, tokens)
    inside = cells >= 0
    most = np.zeros(buckets.num_cells, dtype=np.int64)
    np.maximum.at(most, cells[inside], tokens[inside])
    edges_d, edges_t = buckets.cell_edges()
    if edges_t is not None:
        most = np.maximum(most, edges_t)
    rate = float(np.max(tokens / np.maximum(durations, 1e-3))) if len(tokens) else 1.0
    empty = most == 0
    most[empty] = np.ceil(rate * edges_d[empty]).astype(np.int64)
    if edges_t is None:
        most = np.maximum.accumulate(most)
    return np.maximum(most, 1).tolist()


class TrainingStep:
    """One training step of the recipe's model on a synthetic batch, as ``suite train`` runs it:
    AdamW, forward and loss under the recipe's precision (bf16 autocast on CUDA only), backward,
    gradient clipping, the optimizer step (taken even when the gradient is not finite, so its
    state is allocated), and the EMA update when the recipe keeps one.

    Args:
        recipe: the recipe (its ``model`` and ``train`` sections are used).
        tokenizer: the recipe's tokenizer (its vocabulary sizes the output layer).
        device: where the step runs.
        stretch: features are this much longer than the bucket's duration edge (speed
            perturbation slower than 1 makes cuts longer).
    """

    def __init__(
        self, recipe: Recipe, tokenizer: Tokenizer, device: str | torch.device, stretch: float = 1.0
    ) -> None:
        self.cfg = recipe.train
        self.device = torch.device(device)
        self.stretch = stretch
        self.vocab_size = tokenizer.vocab_size
        self.model = build_model(recipe.model, tokenizer).to(self.device).train()
        self.optimizer = make_optimizer(self.model, self.cfg, AsrTask())
        self.ema = copy_weights(self.model) if self.cfg.ema_decay is not None else None
        # Features are made on CPU by the dataset's own frontend, as in training.
        self._frontend = registry.create_from_spec("frontend", recipe.model.frontend)
        self._frames: dict[float, int] = {}

    def frames(self, duration: float) -> int:
        """T: feature frames the frontend makes of ``duration`` seconds (times the stretch)."""
        if duration not in self._frames:
            samples = round(duration * self.stretch * self._frontend.sample_rate)
            with torch.no_grad():
                _, lengths = self._frontend(torch.zeros(1, samples), torch.tensor([samples]))
            self._frames[duration] = int(lengths[0])
        return self._frames[duration]

    def batch(self, duration: float, tokens: int, size: int) -> Batch:
        """A random batch of ``size`` cuts, each ``duration`` seconds long with ``tokens``."""
        frames = self.frames(duration)
        features = torch.randn(size, frames, self._frontend.input_dim, device=self.device)
        targets = torch.randint(1, self.vocab_size, (size, tokens), device=self.device)  # (B, U)
        return Batch(
            inputs=features,  # (B, T, F)
            lengths=torch.full((size,), frames, dtype=torch.long, device=self.device),
            targets=targets,
            target_lengths=torch.full((size,), tokens, dtype=torch.long, device=self.device),
        )

    def __call__(self, duration: float, tokens: int, size: int) -> None:
        """Run the step on :meth:`batch` ``(duration, tokens, size)``."""
        batch = self.batch(duration, tokens, size)
        self.optimizer.zero_grad(set_to_none=True)
        with precision_autocast(self.device, self.cfg.precision):
            loss = self.model.loss(batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        optimizer_step(self.optimizer, self.model, self.ema, self.cfg.ema_decay)
        self.optimizer.zero_grad(set_to_none=True)


@dataclass
class Probe:
    """A measured probe: the shape, its peak memory in bytes (``None``: it ran out) and verdict."""

    duration: float
    tokens: int
    size: int
    peak: int | None
    fits: bool


class CudaProbe:
    """``fits(duration, tokens, size)`` by running the step on a CUDA device under the cap.

    Args:
        step: the training step, on the CUDA device.
        cap: bytes; the allocator is limited to it for the probe's lifetime (use as a context
            manager to set and restore the limit).
        log: called with each probe's line.
    """

    def __init__(self, step: TrainingStep, cap: int, log: Callable[[str], None] = print) -> None:
        self.step, self.cap, self.log = step, cap, log
        self.device = step.device
        self.total = torch.cuda.get_device_properties(self.device).total_memory
        self.probes: list[Probe] = []

    def __enter__(self) -> CudaProbe:
        torch.cuda.set_per_process_memory_fraction(min(1.0, self.cap / self.total), self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        torch.cuda.set_per_process_memory_fraction(1.0, self.device)

    def __call__(self, duration: float, tokens: int | None, size: int) -> bool:
        tokens = int(tokens or 1)
        gc.collect()
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        peak = None
        try:
            self.step(duration, tokens, size)
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        except torch.cuda.OutOfMemoryError:
            self.step.optimizer.zero_grad(set_to_none=True)
        gc.collect()
        torch.cuda.empty_cache()
        return _record(self, Probe(duration, tokens, size, peak, False))


def _record(probe: CudaProbe | CpuProbe, result: Probe) -> bool:
    result.fits = result.peak is not None and result.peak <= probe.cap
    probe.probes.append(result)
    peak = "out of memory" if result.peak is None else f"{result.peak / GIB:.2f} GiB"
    verdict = "fits" if result.fits else "does not fit"
    probe.log(
        f"  {result.duration:7.2f} s, {result.tokens:4d} tokens, batch {result.size:5d}: "
        f"{peak} ({verdict})"
    )
    return result.fits


def _address_space() -> int:
    """Bytes of virtual memory this process maps now (``VmSize``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmSize in /proc/self/status")


def _probe_in_child(
    conn: Connection,
    recipe: dict[str, Any],
    tokenizer_dir: str,
    shape: tuple[float, int, int],
    stretch: float,
    cap: int,
) -> None:
    """Run one CPU step in this fresh process; send its peak resident bytes (``None``: out of
    memory under the address-space limit) or the text of any other error."""
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = _address_space() + cap + _ADDRESS_SLACK
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        step = TrainingStep(recipe_from_dict(recipe), load_tokenizer(tokenizer_dir), "cpu", stretch)
        step(*shape)
        conn.send(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # KiB on Linux
    except MemoryError:
        conn.send(None)
    except RuntimeError as e:  # torch's CPU allocator reports a refused allocation this way
        conn.send(None if "memory" in str(e).lower() else f"{type(e).__name__}: {e}")
    except Exception as e:  # noqa: BLE001  (reported by the parent with its message)
        conn.send(f"{type(e).__name__}: {e}")
    finally:
        conn.close()


class CpuProbe:
    """``fits(duration, tokens, size)`` by the peak resident memory of a fresh process that
    runs the step on CPU (see the module docstring).

    Args:
        recipe: the recipe.
        tokenizer_dir: the recipe's tokenizer folder.
        cap: bytes of peak resident memory allowed.
        stretch: see :class:`TrainingStep`.
        log: called with each probe's line.
    """

    def __init__(
        self,
        recipe: Recipe,
        tokenizer_dir: Path,
        cap: int,
        stretch: float = 1.0,
        log: Callable[[str], None] = print,
    ) -> None:
        self.recipe = recipe.to_dict()
        self.tokenizer_dir = str(tokenizer_dir)
        self.cap, self.stretch, self.log = cap, stretch, log
        self.probes: list[Probe] = []
        self.context = multiprocessing.get_context("forkserver")
        # Children fork from a server that has imported torch and the suite once (_PRELOAD):
        # a probe then pays for no imports, and every probe starts from the same baseline.
        self.context.set_forkserver_preload([__name__, *_PRELOAD])

    def __call__(self, duration: float, tokens: int | None, size: int) -> bool:
        tokens = int(tokens or 1)
        receive, send = self.context.Pipe(duplex=False)
        shape = (duration, tokens, size)
        args = (send, self.recipe, self.tokenizer_dir, shape, self.stretch, self.cap)
        child = self.context.Process(target=_probe_in_child, args=args, daemon=True)
        child.start()
        send.close()
        try:
            answer = receive.recv()
        except EOFError:  # killed (e.g. by the out-of-memory killer) before it answered
            answer = None
        finally:
            receive.close()
            child.join()
        if isinstance(answer, str):
            raise UserError(f"a probe step failed on CPU ({duration:.2f} s x {size}): {answer}")
        return _record(self, Probe(duration, tokens, size, answer, False))


def available_memory() -> int:
    """Bytes of memory available to a new process now (``MemAvailable``), else physical."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_cap(device: torch.device, cap_gib: float | None, fraction: float) -> int:
    """The cap in bytes: ``cap_gib`` GiB, else ``fraction`` of the device's memory (on CPU,
    of the memory available now)."""
    if cap_gib is not None:
        if cap_gib <= 0:
            raise UserError(f"--memory-cap-gb must be positive GiB, got {cap_gib}")
        cap = int(cap_gib * GIB)
    else:
        if not 0 < fraction <= 1:
            raise UserError(f"--memory-fraction must be in (0, 1], got {fraction}")
        cap = int(fraction * _device_memory(device))
    if device.type == "cuda" and cap > _device_memory(device):
        raise UserError(
            f"the memory cap ({cap / GIB:.1f} GiB) is more than {device} has "
            f"({_device_memory(device) / GIB:.1f} GiB); lower --memory-cap-gb"
        )
    return cap


def _device_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return available_memory()


def _device(name: str) -> torch.device:
    device = resolve_device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"--device {name}: no CUDA device is visible; run on a GPU machine, or pass "
            "--device cpu to measure the peak resident memory of CPU training"
        )
    if device.type not in ("cuda", "cpu"):
        raise UserError(f"--device must be cuda[:N] or cpu, got {name}")
    return device


class _RecipeDumper(yaml.SafeDumper):
    """YAML as the recipes are written: block mappings, lists on one line."""


_RecipeDumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, True)
)


def oomptimized_recipe(
    raw: dict[str, Any],
    recipe: Recipe,
    buckets: Buckets,
    sizes: list[int],
) -> dict[str, Any]:
    """``raw`` (a recipe file's mapping) with the measured sizes in ``data.sampler``.

    The sampler keeps its other options (budget, packing, ...); ``data.max_duration`` is
    raised, when needed, to the padded seconds of the largest measured batch, so that the
    measured sizes, not the budget, limit every bucket.
    """
    spec = dict(recipe.data.sampler)
    for key in ("num_buckets", "num_token_buckets", "duration_bins", "token_bins"):
        spec.pop(key, None)
    spec.pop("bucket_batch_size", None)
    spec = {"name": "suite_bucketing", **buckets.to_dict(), "bucket_batch_size": sizes, **spec}
    edges, _ = buckets.cell_edges()
    cost = padded_cost(edges, spec.get("quadratic_duration"))
    needed = math.ceil(float(np.max(np.asarray(sizes) * cost)) * 10) / 10
    out = copy.deepcopy(raw)
    data = out.setdefault("data", {})
    data["sampler"] = spec
    data["max_duration"] = max(recipe.data.max_duration, needed)
    return out


def oomptimize(
    recipe_path: str | Path,
    out: str | Path | None = None,
    device: str | None = None,
    memory_cap_gb: float | None = None,
    memory_fraction: float = 0.9,
    max_batch_size: int = 4096,
    num_buckets: int | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Measure the largest batch per bucket and write the recipe that uses them.

    Args:
        recipe_path: the recipe; its sampler must be ``suite_bucketing``.
        out: the recipe to write (default: ``RECIPE.oomptimized.yaml`` beside it). Comments of
            the original are not kept.
        device: ``cuda``, ``cuda:N`` or ``cpu`` (default: the recipe's ``train.device``).
        memory_cap_gb: the cap in GiB; overrides ``memory_fraction``.
        memory_fraction: the cap as a fraction of the GPU's memory (on CPU: of the memory
            available now).
        max_batch_size: no bucket gets more.
        num_buckets: duration buckets to estimate (default: the recipe's ``num_buckets``, or its
            ``duration_bins``).
        log: called with each line of progress and the summary.

    Returns:
        The written recipe's path.
    """
    recipe_path = Path(recipe_path)
    recipe = load_recipe(recipe_path)
    spec = recipe.data.sampler
    if spec.get("name") != "suite_bucketing":
        raise UserError(
            f"{recipe_path}: per-bucket batch sizes are for the suite_bucketing sampler, but "
            f"data.sampler.name is {spec.get('name')!r}; set data.sampler: "
            "{name: suite_bucketing, num_buckets: 100} in the recipe first"
        )
    if max_batch_size < 1:
        raise UserError(f"--max-batch-size must be at least 1, got {max_batch_size}")
    dev = _device(device or recipe.train.device)
    cap = memory_cap(dev, memory_cap_gb, memory_fraction)
    cuts = load_cuts(recipe.data.manifest("train"), "training")
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer, tokenizer_dir = _tokenizer(recipe, cuts, Path(scratch))
        durations, tokens = cut_lengths(cuts, token_counter(tokenizer))
        buckets = recipe_buckets(spec, durations, tokens, num_buckets)
        probe_tokens = cell_tokens(buckets, durations, tokens)
        speeds = recipe.data.augment.speed_perturb
        stretch = max(1.0, 1.0 / min(speeds)) if speeds else 1.0
        log(
            f"{buckets.num_cells} buckets of {len(durations)} cuts; probing on {dev} under a cap "
            f"of {cap / GIB:.2f} GiB"
        )
        if dev.type == "cuda":
            step = TrainingStep(recipe, tokenizer, dev, stretch)
            with CudaProbe(step, cap, log) as probe:
                sizes, probes = _search(buckets, probe, max_batch_size, probe_tokens, cap, dev)
        else:
            probe = CpuProbe(recipe, tokenizer_dir, cap, stretch, log)
            sizes, probes = _search(buckets, probe, max_batch_size, probe_tokens, cap, dev)
    raw = yaml.safe_load(recipe_path.read_text()) or {}
    result = oomptimized_recipe(raw, recipe, buckets, sizes)
    out = Path(out) if out is not None else recipe_path.with_suffix(".oomptimized.yaml")
    header = (
        f"# {recipe_path} with data.sampler.bucket_batch_size measured by `suite data "
        f"oomptimize`\n# on {dev} under a cap of {cap / GIB:.2f} GiB ({len(probes)} probes, "
        f"{datetime.date.today().isoformat()})\n"
    )
    atomic_write_text(out, header + yaml.dump(result, Dumper=_RecipeDumper, sort_keys=False))
    load_recipe(out)  # what was written must load
    edges_d, _ = buckets.cell_edges()
    log(f"batch sizes ({len(probes)} probes): {sizes}")
    log(
        f"wrote {out} (data.max_duration: {result['data']['max_duration']:g}, "
        f"largest bucket {edges_d[-1]:.2f} s x {sizes[-1]})"
    )
    return out


def _search(
    buckets: Buckets,
    probe: CudaProbe | CpuProbe,
    max_batch_size: int,
    tokens: list[int],
    cap: int,
    device: torch.device,
) -> tuple[list[int], list[Probe]]:
    """:func:`search_batch_sizes` with the probe; a failure says what was measured."""
    try:
        sizes = search_batch_sizes(buckets, probe, max_batch_size, tokens=tokens)
    except UserError as e:
        last = probe.probes[-1] if probe.probes else None
        seen = "it ran out of memory"
        if last is not None and last.peak is not None:
            seen = f"it peaked at {last.peak / GIB:.2f} GiB"
        where = " (on CPU the peak includes Python and torch)" if device.type == "cpu" else ""
        raise UserError(f"{e}; {seen} against a cap of {cap / GIB:.2f} GiB{where}") from None
    return sizes, probe.probes
