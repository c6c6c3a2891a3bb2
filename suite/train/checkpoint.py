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

import hashlib
import json
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from suite.config import Recipe
from suite.errors import UserError
from suite.io import atomic_write_text

LATEST = "latest"
DAMAGED = "damaged-"  # a damaged checkpoint is renamed with this prefix, never deleted
TENSOR_FILES = ("model.safetensors", "optimizer.safetensors")


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
    for stale in directory.glob(".tmp-step-*"):  # left by a run killed while writing
        shutil.rmtree(stale, ignore_errors=True)
    tmp = directory / f".tmp-step-{step:08d}-{os.getpid()}"
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
    files = {name: _fingerprint(tmp / name) for name in TENSOR_FILES}
    meta = {
        "step": step,
        "files": files,
        "optimizer": optim_meta,
        "rng": rng_meta,
        "trainer": trainer_state,
    }
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


def _fingerprint(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def damage(path: str | Path) -> str | None:
    """Why the checkpoint folder ``path`` cannot be resumed from, or ``None`` when it is
    intact: its files are all there, with the sizes and SHA-256 sums written at save time, and
    its weights are finite."""
    path = Path(path)
    try:
        meta = json.loads((path / "trainer.json").read_text())
        files = meta["files"]
        meta["trainer"]["step"]
    except FileNotFoundError:
        return "trainer.json is missing"
    except (ValueError, KeyError, TypeError):
        return "trainer.json is not a complete checkpoint record"
    for name in TENSOR_FILES:
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if _fingerprint(file) != files.get(name):
            return f"{name} does not match the size and checksum written with it"
    for key, tensor in load_file(str(path / "model.safetensors")).items():
        if tensor.dtype.is_floating_point and not bool(torch.isfinite(tensor).all()):
            return f"its weight {key} holds NaN or Inf"
    return None


def checkpoints(directory: str | Path) -> list[Path]:
    """The checkpoint folders of a run, newest first."""
    return sorted(Path(directory).glob("step-*"), reverse=True)


def resume_checkpoint(directory: str | Path, log: Any = None) -> Path | None:
    """The newest intact checkpoint of a run (``None`` when it has none).

    The one ``directory/latest`` names comes first, then every ``step-*`` folder, newest
    first. A damaged one is reported, renamed ``damaged-step-*`` (never deleted, so nothing is
    lost and it no longer counts as a checkpoint) and the next is tried.

    Raises:
        UserError: the run has checkpoints but none is intact.
    """
    directory = Path(directory)
    log = log or (lambda line: print(line, file=sys.stderr))
    pointer = directory / LATEST
    named = pointer.read_text().strip() if pointer.is_file() else ""
    candidates = checkpoints(directory)
    if named and (directory / named) in candidates:
        candidates.remove(directory / named)
        candidates.insert(0, directory / named)
    elif named:
        log(f"checkpoint pointer {pointer} names '{named}', which is not a checkpoint folder")
    damaged = []
    for path in candidates:
        reason = damage(path)
        if reason is None:
            if damaged:
                log(f"resuming from the newest intact checkpoint, {path}")
            return path
        aside = path.with_name(DAMAGED + path.name)
        os.replace(path, aside)
        damaged.append(f"{path.name} ({reason}; kept as {aside.name})")
        log(f"checkpoint {path} is damaged: {reason}; kept as {aside}")
    if damaged or list(directory.glob(DAMAGED + "step-*")):
        raise UserError(
            f"no intact checkpoint in {directory} to resume from; damaged: "
            f"{', '.join(damaged) or 'all (damaged-step-*)'}. Start a new run with "
            "train.out_dir=..., or move a good checkpoint folder there as step-NNNNNNNN"
        )
    return None


def holds_run(directory: str | Path) -> bool:
    """Whether a run's checkpoint folder holds anything a new run must not overwrite."""
    directory = Path(directory)
    return directory.is_dir() and any(
        p.name == LATEST or p.name.startswith(("step-", DAMAGED)) for p in directory.iterdir()
    )


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


# Recipe keys a resumed run may change; any other difference is refused before anything is
# written, since the checkpoint's weights, optimizer and data order belong to the old values.
RESUMABLE_CHANGES = (
    "train.out_dir",  # a run folder may be moved
    "train.max_steps",
    "train.val_every",
    "train.log_every",
    "train.keep_checkpoints",
    "train.max_skipped_steps",
    "train.device",
    "train.strategy",  # full-state checkpoints load under either
    "data.num_workers",
)


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def check_same_run(recipe: Recipe, saved: Path) -> None:
    """Refuse to resume the run whose merged recipe is ``saved`` with a ``recipe`` that
    differs in more than :data:`RESUMABLE_CHANGES`, naming the differing keys."""
    import yaml

    if not saved.is_file():
        return
    try:
        before = _flat(yaml.safe_load(saved.read_text()))
    except yaml.YAMLError as e:
        raise UserError(f"{saved} (the run's recipe) is not valid YAML: {e}") from None
    now = _flat(recipe.to_dict())
    differ = sorted(
        key
        for key in before.keys() | now.keys()
        if before.get(key) != now.get(key) and not key.startswith(RESUMABLE_CHANGES)
    )
    if differ:
        shown = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in differ[:6])
        raise UserError(
            f"--resume: this recipe differs from the run's ({saved}) in {shown}"
            f"{' ...' if len(differ) > 6 else ''}; resume with the run's settings (only "
            f"{', '.join(RESUMABLE_CHANGES)} may change) or start a new run with "
            "train.out_dir=..."
        )
