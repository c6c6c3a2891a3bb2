"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a folder ``checkpoints/step-00000100/`` holding ``model.safetensors``,
``optimizer.safetensors`` (the optimizer's tensors keyed by parameter name, every rank's RNG
state, EMA weights) and ``trainer.json`` (step, sampler position, optimizer hyper-parameters,
every rank's Python/NumPy RNG state). It is written under a temporary name and renamed into
place, and ``checkpoints/latest`` is replaced after it, so a kill at any moment leaves the
previous checkpoint intact.

Under ``torchrun`` the weights and optimizer state are gathered whole (the full state dicts of
``torch.distributed.checkpoint.state_dict``) and rank 0 writes them, so a checkpoint does not
depend on how many processes wrote it: one saved by N ranks loads at M, sharded again by
``set_state_dict``. Each rank restores its own RNG state when the number of ranks is the same.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from suite.io import atomic_write_text

LATEST = "latest"


def _packed(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Detached contiguous CPU tensors, as safetensors stores them."""
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimizer state dict (slots keyed by parameter name or index) into tensors
    and a JSON-able remainder."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, slots in state["state"].items():
        for key, value in slots.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            index, key = name[len("optim.") :].rsplit(".", 1)  # parameter names hold dots
            state.setdefault(index, {})[key] = value
    for index, slots in meta["scalars"].items():
        state.setdefault(index, {}).update(slots)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, Tensor], dict[str, Any]]:
    """This process's global RNG states: torch's as tensors, Python's and NumPy's as JSON."""
    py = random.getstate()
    np_state = np.random.get_state()
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state()
    meta = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(
    directory: str | Path,
    step: int,
    model_state: dict[str, Tensor],
    optimizer_state: dict[str, Any],
    trainer_state: dict[str, Any],
    extra_tensors: dict[str, Tensor] | None = None,
    keep: int = 2,
    rng: list[tuple[dict[str, Tensor], dict[str, Any]]] | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically into ``directory`` and keep the newest ``keep``.

    ``rng`` holds every rank's :func:`rng_state`, in rank order (default: this process's).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step:08d}"
    tmp = directory / f".tmp-step-{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    optim_tensors, optim_meta = _flatten_optimizer(optimizer_state)
    rng = rng or [rng_state()]
    rng_tensors = {f"rng.{r}.{k}": v for r, (ts, _) in enumerate(rng) for k, v in ts.items()}
    rng_meta = [meta for _, meta in rng]
    save_file(_packed(model_state), str(tmp / "model.safetensors"))
    save_file(
        _packed({**optim_tensors, **rng_tensors, **(extra_tensors or {})}),
        str(tmp / "optimizer.safetensors"),
    )
    meta = {"step": step, "optimizer": optim_meta, "rng": rng_meta, "trainer": trainer_state}
    (tmp / "trainer.json").write_text(json.dumps(meta))
    for path in tmp.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    if final.exists():  # a re-run of the same step after a resume: replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_text(directory / LATEST, final.name + "\n")
    for old in sorted(directory.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint named by ``directory/latest``, or ``None`` when there is none."""
    pointer = Path(directory) / LATEST
    if not pointer.exists():
        return None
    path = Path(directory) / pointer.read_text().strip()
    return path if path.is_dir() else None


def load_checkpoint(path: str | Path, rank: int = 0, world_size: int = 1) -> dict[str, Any]:
    """Read a checkpoint folder; restores this rank's global RNG states as a side effect
    (when it was saved by as many ranks; else each rank's are seeded afresh from rank 0's).

    Returns:
        ``{"step", "model", "optimizer", "trainer", "extra"}`` where ``extra`` holds the
        tensors saved with ``extra_tensors``.
    """
    path = Path(path)
    meta = json.loads((path / "trainer.json").read_text())
    tensors = load_file(str(path / "optimizer.safetensors"))
    saved = len(meta["rng"])
    own = rank if saved == world_size else 0
    prefix = f"rng.{own}."
    set_rng_state(
        {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)},
        meta["rng"][own],
    )
    if saved != world_size and rank:  # ranks must not draw the same random numbers
        torch.manual_seed(int(torch.randint(0, 2**62, ())) + rank)
    extra = {k: v for k, v in tensors.items() if not k.startswith(("optim.", "rng."))}
    return {
        "step": meta["step"],
        "model": load_file(str(path / "model.safetensors")),
        "optimizer": _unflatten_optimizer(tensors, meta["optimizer"]),
        "trainer": meta["trainer"],
        "extra": extra,
    }
