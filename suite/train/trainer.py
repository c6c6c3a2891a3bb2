"""The one training loop, for every task: AdamW, warm-up then cosine decay, clipping, gradient
accumulation, bf16 autocast on GPU, optional weight EMA, validation by the task's primary
metric with best-model export, exact resume, and ``torchrun`` (DDP or FSDP2).

What differs between jobs comes from the recipe's task (:mod:`suite.tasks`): its data, model,
loss, evaluation and package. Under ``torchrun`` every rank draws its own shard of each batch
(rank-sharded samplers), rank 0 alone writes files and logs, and checkpoints hold full state
dicts, so a run saved by N processes resumes at M.

Exact resume: a checkpoint stores the weights, the optimizer, every rank's RNG states, the EMA
weights and the sampler position as ``(epoch, batches consumed in that epoch)``. Samplers are
seeded per epoch, so re-creating the epoch's sampler and skipping the consumed batches (no audio
is read for them) continues the same batch order. On CPU with ``data.num_workers=0`` a run killed
and resumed with as many processes ends with the same weights as one that never stopped
(``tests/test_train.py``, ``tests/test_distributed.py``).
"""

from __future__ import annotations

import json
import random
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from tqdm import tqdm

from suite import registry
from suite.config import Recipe, save_recipe
from suite.errors import UserError
from suite.interfaces import Batch
from suite.model import save_package
from suite.tasks.base import Task
from suite.train import distributed
from suite.train.checkpoint import (
    check_same_run,
    holds_run,
    load_checkpoint,
    resume_checkpoint,
    rng_state,
    save_checkpoint,
)
from suite.train.distributed import LossStep, full_tensor
from suite.train.optim import (
    copy_weights,
    frozen_parts,
    lr_at,
    make_optimizer,
    optimizer_step,
    precision_autocast,
)


class _RunBatches:
    """The run's batches, epoch after epoch, from position ``(epoch, skip)`` on.

    Yields ``(cuts, seed, (epoch, batches done in that epoch))``. The seed, a function of
    (run seed, epoch, batch index), fixes the batch's augmentation, so a resumed run augments
    exactly as the uninterrupted one would, with any number of workers. One iterator spans all
    epochs, so the data loader's workers start once per run rather than once per epoch.
    """

    def __init__(
        self, sampler: Any, epoch: int, skip: int, seed: int, manifest: Any, rank: int = 0
    ) -> None:
        self.sampler, self.epoch, self.skip, self.seed = sampler, epoch, skip, seed
        self.manifest, self.rank = manifest, rank

    def __iter__(self) -> Iterator[tuple[Any, int, tuple[int, int]]]:
        epoch, skip = self.epoch, self.skip
        while True:
            self.sampler.set_epoch(epoch)
            produced = 0
            for index, cuts in enumerate(self.sampler):
                produced += 1
                if index >= skip:
                    seed = (self.seed * 1_000_003 + epoch) * 1_000_003 + index
                    seed += self.rank * 1_000_000_007  # ranks augment independently
                    yield cuts, seed, (epoch, index + 1)
            if produced == 0:
                raise UserError(
                    f"the training data {self.manifest} gave no batch; is it empty, or "
                    f"smaller than one batch per rank, or is every cut longer than "
                    f"data.max_duration?"
                )
            epoch, skip = epoch + 1, 0


class _Positioned(torch.utils.data.Dataset):
    """Passes a batch's sampler position through the data loader beside the batch."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __getitem__(self, item: tuple[Any, int, tuple[int, int]]) -> tuple[Any, tuple[int, int]]:
        cuts, seed, position = item
        return self.dataset[(cuts, seed)], position


class _MetricsLog:
    """``metrics.jsonl`` (plus TensorBoard when it is installed)."""

    def __init__(self, run_dir: Path, resume_step: int) -> None:
        self.path = run_dir / "metrics.jsonl"
        if self.path.exists():  # drop what a killed run logged after its last checkpoint
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:
            self.tb = None

    def write(self, step: int, values: dict[str, float]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(key, value, step)


class Trainer:
    """Trains the recipe's model into ``train.out_dir``, in this process or as one rank of a
    ``torchrun`` launch (see the module docstring).

    Args:
        recipe: the merged recipe (saved as ``config.yaml`` in the run folder).
        resume: continue from the run folder's latest checkpoint when there is one.
        progress: show a progress bar (rank 0).
        save_every: checkpoint every N optimizer steps (default: ``train.val_every``).
    """

    def __init__(
        self,
        recipe: Recipe,
        resume: bool = False,
        progress: bool = True,
        save_every: int | None = None,
    ) -> None:
        self.recipe, self.cfg = recipe, recipe.train
        self.task: Task = registry.create("task", recipe.task)
        self.run_dir = Path(self.cfg.out_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.save_every = save_every or self.cfg.val_every
        if holds_run(self.ckpt_dir) and not resume:
            raise UserError(
                f"{self.run_dir} already holds a training run; pass --resume to continue it, "
                f"or set train.out_dir=... for a new run"
            )
        if resume:
            check_same_run(recipe, self.run_dir / "config.yaml")
        self.where, self.device = distributed.setup(self.cfg.device)
        self.progress = progress and self.where.main
        latest = None
        if resume:  # rank 0 checks (and sets damaged ones aside); every rank resumes from it
            latest = resume_checkpoint(self.ckpt_dir) if self.where.main else None
            latest = distributed.broadcast_object(latest, self.where)
        self._seed_everything(self.cfg.seed + self.where.rank)
        self.train_items = self.task.load_split(recipe, "train")
        self.dev_items = self.task.load_split(recipe, "dev")
        if self.where.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_recipe(recipe, self.run_dir / "config.yaml")
            self.tokenizer = self.task.tokenizer(
                recipe, self.train_items, self.run_dir / "tokenizer"
            )
        distributed.barrier(self.where)  # the tokenizer is trained once, by rank 0
        if not self.where.main:
            self.tokenizer = self.task.tokenizer(
                recipe, self.train_items, self.run_dir / "tokenizer"
            )
        torch.manual_seed(self.cfg.seed)  # every rank initializes the same weights
        self.model = self.task.build_model(recipe.model, self.tokenizer).to(self.device)
        self.frozen = frozen_parts(self.model, self.cfg.freeze)
        self.state: dict[str, Any] = {
            "step": 0,
            "epoch": 0,
            "batches_in_epoch": 0,
            "world_size": self.where.world_size,
            "best": None,
            "best_step": None,
        }
        if latest is None and self.cfg.init_from is not None:
            self._init_from(self.cfg.init_from)
        self.step_module = distributed.wrap(
            LossStep(self.model, self.task.loss), self.cfg.strategy, self.where, self.device
        )
        self.optimizer = make_optimizer(self.model, self.cfg, self.task)
        self.ema = copy_weights(self.model) if self.cfg.ema_decay is not None else None
        self._seed_everything(self.cfg.seed + self.where.rank)
        if latest is not None:
            self._restore(latest)

        self.dataset = self.task.dataset(recipe, self.model, training=True, seed=self.cfg.seed)
        self.sampler = self.task.sampler(
            recipe,
            self.train_items,
            self.model,
            self.cfg.seed,
            self.where.rank,
            self.where.world_size,
        )
        self.metrics = _MetricsLog(self.run_dir, self.state["step"]) if self.where.main else None
        self.command = " ".join(shlex.quote(a) for a in ["suite", *sys.argv[1:]])
        self._eval_model: torch.nn.Module | None = None

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _init_from(self, name_or_path: str) -> None:
        """Copy a package's weights into the (freshly built) model: all of them, or those of
        the parts named in ``train.init_include`` (e.g. ``[frontend, encoder]`` to put a new
        head on a trained encoder; dotted names such as ``heads.ctc.proj`` name a submodule, as
        in ``train.freeze``). Every copied tensor must exist on both sides and fit."""
        from suite.model import resolve

        path = resolve(name_or_path) / "model.safetensors"
        include = self.cfg.init_include

        def wanted(key: str) -> bool:
            return include is None or any(key.startswith(f"{part}.") for part in include)

        weights = {k: v for k, v in load_file(str(path)).items() if wanted(k)}
        own = {k: v for k, v in self.model.state_dict().items() if wanted(k)}
        wrong = sorted(k for k in own.keys() ^ weights.keys())
        wrong += sorted(k for k in own.keys() & weights.keys() if own[k].shape != weights[k].shape)
        if wrong or not weights:
            raise UserError(
                f"train.init_from={name_or_path}: its weights do not fit this recipe's model "
                f"(missing, extra or differently shaped: {', '.join(wrong[:5]) or 'all'}"
                f"{' ...' if len(wrong) > 5 else ''}); the sizes of the parts copied "
                f"(train.init_include={include}) must match"
            )
        self.model.load_state_dict(weights, strict=include is None)
        if self.where.main:
            print(f"initialized {', '.join(include or ['all parts'])} from {path}", file=sys.stderr)

    def _train_mode(self) -> None:
        """Training mode, but frozen parts stay in eval mode (no dropout, fixed statistics)."""
        self.model.train()
        for part in self.frozen:
            part.eval()

    def _full_states(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The whole model and optimizer state dicts, keyed by parameter name (rank 0 holds
        them under torchrun; a collective)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_state_dict(self.model, self.optimizer, options=options)

    def _full_weights(self) -> dict[str, torch.Tensor]:
        """The weights to evaluate and export whole: the EMA's when kept, else the model's (a
        collective under torchrun; the optimizer's state is not gathered)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        ema = self._full_ema()
        if ema is not None:
            return ema
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(self.model, options=options)

    def _full_ema(self) -> dict[str, torch.Tensor] | None:
        """The EMA weights whole (a collective under FSDP, whose EMA is sharded)."""
        if self.ema is None:
            return None
        return {k: full_tensor(v).cpu() for k, v in self.ema.items()}

    def _restore(self, path: Path) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        ck = load_checkpoint(path, self.where.rank, self.where.world_size)
        set_state_dict(
            self.model,
            self.optimizer,
            model_state_dict=ck["model"],
            optim_state_dict=ck["optimizer"],
            options=StateDictOptions(full_state_dict=True),
        )
        saved_world = ck["trainer"].get("world_size", 1)
        self.state = {**self.state, **ck["trainer"], "world_size": self.where.world_size}
        if saved_world != self.where.world_size:  # the same share of the epoch is done
            done = self.state["batches_in_epoch"] * saved_world
            self.state["batches_in_epoch"] = done // self.where.world_size
        if self.ema is not None:
            saved = {k[len("ema.") :]: v for k, v in ck["extra"].items() if k.startswith("ema.")}
            live = self.model.state_dict()
            self.ema = {k: _like(saved[k], v) for k, v in live.items()}
        if self.where.main:
            print(f"resumed from {path} at step {self.state['step']}", file=sys.stderr)

    def _batches(self) -> Iterator[Batch]:
        """Batches forever, epoch after epoch, tracking the position for exact resume."""
        workers = self.recipe.data.num_workers
        loader = DataLoader(
            _Positioned(self.dataset),
            sampler=_RunBatches(
                self.sampler,
                self.state["epoch"],
                self.state["batches_in_epoch"],
                self.cfg.seed,
                self.recipe.data.manifest("train"),
                rank=self.where.rank,
            ),
            batch_size=None,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if workers > 0 else None,
            # Its own generator for the workers' base seed: drawing it from the global one
            # would shift the global RNG (dropout) of a resumed run against an uninterrupted one.
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )
        for batch, (epoch, done) in loader:
            self.state["epoch"], self.state["batches_in_epoch"] = epoch, done
            yield batch

    def _evaluation_model(self, weights: dict[str, torch.Tensor]) -> torch.nn.Module:
        """A plain (unwrapped) copy of the model holding ``weights``, for rank 0 to evaluate
        and export without the other ranks."""
        if self._eval_model is None:
            self._eval_model = self.task.build_model(self.recipe.model, self.tokenizer)
            self._eval_model.to(self.device)
        self._eval_model.load_state_dict(weights)
        return self._eval_model.eval()

    def _validate(self) -> dict[str, float] | None:
        """Evaluate the EMA (else live) weights on the dev split on rank 0, and export the
        package when the primary metric is the best so far. Every rank calls it."""
        weights = self._full_weights()  # a collective: every rank takes part
        best: list[Any] = [None]
        values = None
        if self.where.main:
            model = self._evaluation_model(weights)
            values = self.task.evaluate(
                model, self.dev_items, **self.task.eval_options(self.recipe)
            )
            name = self.task.metric[0]
            if self.task.better(values[name], self.state["best"]):
                self.state["best"], self.state["best_step"] = values[name], self.state["step"]
                self._export(model, card_result=values)
            best = [(self.state["best"], self.state["best_step"])]
        best = distributed.broadcast_object(best, self.where)
        if best[0] is not None:
            self.state["best"], self.state["best_step"] = best[0]
        return values

    def _export(self, model: torch.nn.Module, card_result: dict[str, float] | None) -> None:
        save_package(
            model,
            self.run_dir / "model",
            card=self._card(card_result, self.state["step"]),
            task=self.task.name,
        )

    def _card(self, values: dict[str, float] | None, step: int) -> str:
        if values is None:
            result = "not validated"
        else:
            result = f"dev {self.task.format_metrics(values)} at step {step}"
        mix = self.recipe.data.sources("train")
        sources = ", ".join(
            f"`{path}`" + (f" (weight {weight:g})" if len(mix) > 1 else "") for path, weight in mix
        )
        return (
            f"# Model trained by suite ({self.task.name})\n\n"
            f"- Recipe command: `{self.command}`\n"
            f"- Training data: {sources}\n"
            f"- Model: {self.task.describe(self.recipe.model)}\n"
            f"- Result: {result}\n\n"
            f"The merged recipe is in `config.yaml` of the run folder.\n"
        )

    def _checkpoint(self) -> None:
        model_state, optim_state = self._full_states()
        ema = self._full_ema()
        rng = distributed.gather_objects(rng_state(), self.where)
        if self.where.main:
            extra = {f"ema.{k}": v for k, v in ema.items()} if ema is not None else None
            save_checkpoint(
                self.ckpt_dir,
                self.state["step"],
                model_state,
                optim_state,
                self.state,
                extra,
                keep=self.cfg.keep_checkpoints,
                rng=rng,
            )
        distributed.barrier(self.where)

    def train(self) -> Path | None:
        """Run until ``train.max_steps``; returns the exported model package's folder on
        rank 0 (``None`` on the other ranks)."""
        try:
            return self._train()
        finally:
            distributed.teardown()

    def _train(self) -> Path | None:
        cfg = self.cfg
        batches = self._batches()
        self._train_mode()
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.state["step"],
            disable=not self.progress,
            dynamic_ncols=True,
            desc="train",
        )
        amount, window_start, skipped, in_a_row = 0.0, time.perf_counter(), 0, 0
        terms: dict[str, float] = {}  # the loss and its terms summed over the log window's steps
        window_steps = 0
        while self.state["step"] < cfg.max_steps:
            step = self.state["step"]
            lr = lr_at(step, cfg.lr, cfg.warmup_steps, cfg.max_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            for micro in range(cfg.accum_grad):
                batch = next(batches).to(self.device)
                with distributed.gradient_sync(self.step_module, micro == cfg.accum_grad - 1):
                    with precision_autocast(self.device, cfg.precision):
                        out = self.step_module(batch)
                    (out["loss"] / cfg.accum_grad).backward()
                for key, value in out.items():
                    terms[key] = terms.get(key, 0.0) + value.item() / cfg.accum_grad
                amount += self.task.batch_amount(batch, self.model)
            grad_norm = full_tensor(
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            )
            if torch.isfinite(grad_norm):
                optimizer_step(self.optimizer, self.model, self.ema, cfg.ema_decay)
                in_a_row = 0
            else:  # a bad batch must not poison the weights
                skipped, in_a_row = skipped + 1, in_a_row + 1
                if in_a_row >= cfg.max_skipped_steps:
                    raise UserError(
                        f"{in_a_row} steps in a row had a non-finite loss or gradient (step "
                        f"{step + 1}); the weights were kept as they were, and the last "
                        f"checkpoint is intact. Lower train.lr, check the data, or raise "
                        f"train.max_skipped_steps"
                    )
            self.state["step"] = step = step + 1
            bar.update(1)
            window_steps += 1
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                elapsed = time.perf_counter() - window_start
                means = {key: total / window_steps for key, total in terms.items()}
                means = distributed.mean_over_ranks(means, self.where)
                speed = amount * self.where.world_size / max(elapsed, 1e-9)
                loss = means.pop("loss")
                if self.metrics is not None:
                    self.metrics.write(
                        step,
                        {
                            "loss": loss,  # a mean over the steps since the last line, as each term
                            "lr": lr,
                            "grad_norm": float(grad_norm),
                            f"{self.task.amount}_per_sec": speed,
                            "skipped_steps": skipped,
                            **means,
                        },
                    )
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
                amount, window_start = 0.0, time.perf_counter()
                terms, window_steps = {}, 0
            if self.dev_items is not None and (step % cfg.val_every == 0 or step == cfg.max_steps):
                values = self._validate()
                if values is not None and self.metrics is not None:
                    self.metrics.write(step, {f"dev_{k}": v for k, v in values.items()})
                    bar.write(f"step {step}: dev {self.task.format_metrics(values)}")
                self._train_mode()
            if step % self.save_every == 0 or step == cfg.max_steps:
                self._checkpoint()
        bar.close()
        if self.dev_items is None:  # nothing to select by: export the final weights
            weights = self._full_weights()
            if self.where.main:
                self._export(self._evaluation_model(weights), card_result=None)
        distributed.barrier(self.where)
        return self.run_dir / "model" if self.where.main else None


def _like(value: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
    """``value`` (a whole tensor) laid out as ``live``: on its device, and sharded as it is
    under FSDP."""
    if hasattr(live, "device_mesh"):  # a DTensor shard
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(value.to(live.device), live.device_mesh, live.placements)
    return value.to(live.device).clone()


def train(
    recipe: Recipe, resume: bool = False, progress: bool = True, save_every: int | None = None
) -> Path | None:
    """Train ``recipe``; see :class:`Trainer`."""
    return Trainer(recipe, resume=resume, progress=progress, save_every=save_every).train()
