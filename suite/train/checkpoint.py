"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a folder ``checkpoints/step-00000100/`` holding ``model.safetensors``,
``optimizer.safetensors`` (the optimizer's tensors, RNG state, EMA weights) and ``trainer.json``
(step, sampler position, optimizer hyper-parameters, Python/NumPy RNG state). It is written
under a temporary name and renamed into place, and ``checkpoints/latest`` is replaced after it,
so a kill at any moment leaves the previous checkpoint intact.
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
    """Detached contiguous CPU tensors, as safetensors stores them (a weight may lie column by
    column: ``suite.kernels.linear.Linear``)."""
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors and a JSON-able remainder."""
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
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for index, slots in meta["scalars"].items():
        state.setdefault(int(index), {}).update(slots)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The global RNG states: torch's as a tensor, Python's and NumPy's as JSON."""
    py = random.getstate()
    np_state = np.random.get_state()
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
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
) -> Path:
    """Write checkpoint ``step`` atomically into ``directory`` and keep the newest ``keep``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step:08d}"
    tmp = directory / f".tmp-step-{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    optim_tensors, optim_meta = _flatten_optimizer(optimizer_state)
    rng_tensors, rng_meta = rng_state()
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


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint folder; restores the global RNG states as a side effect.

    Returns:
        ``{"step", "model", "optimizer", "trainer", "extra"}`` where ``extra`` holds the
        tensors saved with ``extra_tensors``.
    """
    path = Path(path)
    meta = json.loads((path / "trainer.json").read_text())
    tensors = load_file(str(path / "optimizer.safetensors"))
    set_rng_state(tensors, meta["rng"])
    extra = {k: v for k, v in tensors.items() if not k.startswith(("optim.", "rng."))}
    return {
        "step": meta["step"],
        "model": load_file(str(path / "model.safetensors")),
        "optimizer": _unflatten_optimizer(tensors, meta["optimizer"]),
        "trainer": meta["trainer"],
        "extra": extra,
    }
