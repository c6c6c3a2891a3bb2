"""Running the one trainer under ``torchrun``: process groups, model wrapping, rank-0 I/O.

``suite train RECIPE --nproc N`` re-runs itself under ``torch.distributed.run --standalone``
(:func:`launch`); each process then finds ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in its
environment (:func:`setup`) and joins a process group: NCCL on GPUs, gloo on CPUs. Several
machines run ``torchrun --nnodes ... -m suite.cli train RECIPE`` themselves (README).

The model is wrapped per ``train.strategy``: ``ddp`` replicates it (DistributedDataParallel,
gradients averaged), ``fsdp`` shards parameters, gradients and optimizer state (FSDP2
``fully_shard`` on each encoder layer and the whole model). Either way a step's
gradient is the mean of the ranks' gradients, so N ranks with batches ``b_1 .. b_N`` step as
one process accumulating ``b_1 .. b_N`` would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class Dist:
    """Where this process stands: its rank among ``world_size`` and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes files and logs (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def under_launcher() -> bool:
    """Whether this process was started by ``torchrun`` (its environment names a rank)."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``suite ARGV`` in ``nproc`` processes on this machine under ``torchrun``; returns
    its exit status (non-zero when any process failed; torchrun then stops the others)."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "suite.cli",
        *argv,
    ]
    return subprocess.call(command)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when present (this process's GPU under torchrun), else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        from suite.errors import UserError

        raise UserError(
            f"device {name} was asked for, but no GPU is visible to torch; use the CPU "
            "(train.device=cpu, or --device cpu) or auto (a GPU when there is one)"
        )
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def setup(device_name: str) -> tuple[Dist, torch.device]:
    """Join the launcher's process group (when launched) and pick this process's device."""
    if not under_launcher():
        return Dist(), resolve_device(device_name)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ["LOCAL_RANK"])
    device = resolve_device(device_name, local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    return Dist(rank, world, local), device


def teardown() -> None:
    """Leave the process group (when one was joined)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(where: Dist) -> None:
    if where.distributed:
        dist.barrier()


class LossStep(nn.Module):
    """The module a training step calls: ``forward(batch)`` is the task's loss of the model.

    DDP and FSDP run their synchronization around a module's ``forward``; the task model's
    loss is a method, so this wrapper makes it the forward. Its state is the model's.
    """

    def __init__(self, model: nn.Module, loss: Any) -> None:
        super().__init__()
        self.model = model
        self._loss = loss

    def forward(self, batch: Any) -> dict[str, Tensor]:
        return self._loss(self.model, batch)


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The submodules FSDP shards one by one: each encoder layer (or each block of an LM), so
    only one layer's parameters are gathered at a time. The rest (frontend, heads) is sharded
    with the whole model: heads are used through ``loss`` and ``decode`` rather than
    ``forward``, and FSDP gathers a unit's parameters around its ``forward``."""
    owner = getattr(model, "encoder", model)
    units: list[nn.Module] = []
    for name in ("layers", "blocks"):
        layers = getattr(owner, name, None)
        if isinstance(layers, nn.ModuleList):
            units += list(layers)
    return [u for u in units if any(p.requires_grad for p in u.parameters())]


def wrap(step: LossStep, strategy: str, where: Dist, device: torch.device) -> nn.Module:
    """``step`` ready for training under ``strategy`` (unchanged in a single process)."""
    if not where.distributed:
        return step
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for unit in shard_units(step.model):
            fully_shard(unit)
        fully_shard(step)
        return step
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(step, device_ids=ids)


@contextmanager
def gradient_sync(module: nn.Module, sync: bool) -> Iterator[None]:
    """Accumulating micro-batches: the ranks average gradients only on the last one."""
    if sync:
        yield
        return
    if hasattr(module, "no_sync"):  # DDP
        with module.no_sync():
            yield
        return
    if hasattr(module, "set_requires_gradient_sync"):  # FSDP2
        module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            module.set_requires_gradient_sync(True)
        return
    with nullcontext():
        yield


def full_tensor(t: Tensor) -> Tensor:
    """The whole tensor behind an FSDP shard (a collective: every rank must call it)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def mean_over_ranks(values: dict[str, float], where: Dist) -> dict[str, float]:
    """The mean of each value over the ranks (every rank must call it with the same keys)."""
    if not where.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / where.world_size for k, v in zip(keys, t.tolist(), strict=True)}


def gather_objects(value: Any, where: Dist) -> list[Any]:
    """Every rank's ``value``, in rank order (a collective)."""
    if not where.distributed:
        return [value]
    out: list[Any] = [None] * where.world_size
    dist.all_gather_object(out, value)
    return out


def broadcast_object(value: Any, where: Dist) -> Any:
    """Rank 0's ``value`` on every rank (a collective)."""
    if not where.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
