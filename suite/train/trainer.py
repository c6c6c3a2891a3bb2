"""The training loop: AdamW, warm-up then cosine decay, clipping, accumulation, bf16 on GPU,
optional weight EMA, validation WER with best-model export, and exact resume.

Exact resume: a checkpoint stores the weights, the optimizer, the global RNG states, the EMA
weights and the sampler position as ``(epoch, batches consumed in that epoch)``. Samplers are
seeded per epoch, so re-creating the epoch's sampler and skipping the consumed batches (no audio
is read for them) continues the same batch order. On CPU with ``data.num_workers=0`` a run killed
and resumed ends with the same weights as one that never stopped (``tests/test_train.py``).
"""

from __future__ import annotations

import json
import math
import random
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lhotse import CutSet
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from tqdm import tqdm

from suite import registry
from suite.api import resolve
from suite.config import Recipe, TrainConfig, save_recipe
from suite.data.dataset import AsrDataset
from suite.data.sampling import build_sampler
from suite.errors import UserError
from suite.evaluate import evaluate_cuts
from suite.interfaces import Batch, Tokenizer
from suite.model import AsrModel, build_model, save_package
from suite.tokenizers import load_tokenizer, train_tokenizer
from suite.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_at(step: int, peak: float, warmup: int, total: int, final_ratio: float = 0.05) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to
    ``final_ratio * peak`` at ``total`` steps."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of ``model`` (frozen ones are left out), with
    ``train.lr`` and ``train.weight_decay``."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)


def frozen_parts(model: torch.nn.Module, names: list[str] | None) -> list[torch.nn.Module]:
    """The submodules ``train.freeze`` names, with their weights made fixed (no gradient)."""
    parts = []
    for name in names or []:
        try:
            part = model.get_submodule(name)
        except AttributeError:
            top = ", ".join(n for n, _ in model.named_children())
            raise UserError(
                f"train.freeze names '{name}', which this model does not have; its parts: {top} "
                f"(a head: heads.NAME)"
            ) from None
        part.requires_grad_(False)
        parts.append(part)
    return parts


def copy_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of ``model.state_dict()``: the EMA's start, or live weights set aside."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def precision_autocast(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    """The context a training forward runs in: bf16 autocast on CUDA under ``precision="bf16"``,
    none otherwise (CPU trains in fp32)."""
    if device.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    model: torch.nn.Module,
    ema: dict[str, torch.Tensor] | None,
    ema_decay: float | None,
) -> None:
    """Take the optimizer step, then move the EMA weights (when kept) ``1 - ema_decay`` of the
    way to the new ones; entries that are not floating point (counters) are copied."""
    optimizer.step()
    if ema is None:
        return
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                ema[k].lerp_(v, 1 - ema_decay)
            else:
                ema[k].copy_(v)


def load_cuts(path: Path, what: str) -> CutSet:
    """Open a cut manifest, with an error that says how to make one."""
    if not path.is_file():
        raise UserError(
            f"{what} manifest {path} does not exist; create a corpus with "
            f"`suite data synth-speech --out {path.parent}` or set data.corpus_dir=..."
        )
    return CutSet.from_file(path)


def recipe_tokenizer(recipe: Recipe, cuts: CutSet, directory: Path) -> Tokenizer:
    """The recipe's tokenizer, kept in ``directory``: the one already there (a resumed run),
    else a copy of ``train.init_from``'s (its output layer needs those ids), else one trained
    on the texts of ``cuts`` (deterministic: the same texts give the same vocabulary)."""
    if directory.is_dir():
        return load_tokenizer(directory)
    if recipe.train.init_from is not None:
        tokenizer = load_tokenizer(resolve(recipe.train.init_from) / "tokenizer")
        tokenizer.save(directory)
        return tokenizer
    texts = (c.supervisions[0].text for c in cuts if c.supervisions)
    return train_tokenizer(recipe.model.tokenizer, texts, directory)


class _RunBatches:
    """The run's batches, epoch after epoch, from position ``(epoch, skip)`` on.

    Yields ``(cuts, seed, (epoch, batches done in that epoch))``. The seed, a function of
    (run seed, epoch, batch index), fixes the batch's augmentation, so a resumed run augments
    exactly as the uninterrupted one would, with any number of workers. One iterator spans all
    epochs, so the data loader's workers start once per run rather than once per epoch.
    """

    def __init__(self, sampler: Any, epoch: int, skip: int, seed: int, manifest: Any) -> None:
        self.sampler, self.epoch, self.skip, self.seed = sampler, epoch, skip, seed
        self.manifest = manifest

    def __iter__(self) -> Iterator[tuple[Any, int, tuple[int, int]]]:
        epoch, skip = self.epoch, self.skip
        while True:
            self.sampler.set_epoch(epoch)
            produced = 0
            for index, cuts in enumerate(self.sampler):
                produced += 1
                if index >= skip:
                    seed = (self.seed * 1_000_003 + epoch) * 1_000_003 + index
                    yield cuts, seed, (epoch, index + 1)
            if produced == 0:
                raise UserError(
                    f"the training manifest {self.manifest} gave no batch; "
                    f"is it empty, or is every cut longer than data.max_duration?"
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
    """Trains the recipe's model into ``train.out_dir``.

    Args:
        recipe: the merged recipe (saved as ``config.yaml`` in the run folder).
        resume: continue from the run folder's latest checkpoint when there is one.
        progress: show a progress bar.
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
        self.run_dir = Path(self.cfg.out_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.progress = progress
        self.save_every = save_every or self.cfg.val_every
        latest = latest_checkpoint(self.ckpt_dir)
        if latest is not None and not resume:
            raise UserError(
                f"{self.run_dir} already holds a training run; pass --resume to continue it, "
                f"or set train.out_dir=... for a new run"
            )
        self.device = resolve_device(self.cfg.device)
        self._seed_everything(self.cfg.seed)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_recipe(recipe, self.run_dir / "config.yaml")

        self.train_cuts = load_cuts(recipe.data.manifest("train"), "training")
        dev_path = recipe.data.manifest("dev")
        self.dev_cuts = CutSet.from_file(dev_path) if dev_path.is_file() else None
        self.tokenizer = recipe_tokenizer(recipe, self.train_cuts, self.run_dir / "tokenizer")
        self.model: AsrModel = build_model(recipe.model, self.tokenizer).to(self.device)
        self.frozen = frozen_parts(self.model, self.cfg.freeze)
        self.optimizer = make_optimizer(self.model, self.cfg)
        self.ema = copy_weights(self.model) if self.cfg.ema_decay is not None else None
        self.state: dict[str, Any] = {
            "step": 0,
            "epoch": 0,
            "batches_in_epoch": 0,
            "best_wer": None,
            "best_step": None,
        }
        if latest is not None:
            self._restore(latest)
        elif self.cfg.init_from is not None:
            self._init_from(self.cfg.init_from)

        frontend = registry.create_from_spec("frontend", recipe.model.frontend)
        self.dataset = AsrDataset(
            self.tokenizer, frontend, recipe.data.augment, training=True, seed=self.cfg.seed
        )
        self.sampler = build_sampler(
            self.train_cuts,
            recipe.data.sampler,
            recipe.data.max_duration,
            seed=self.cfg.seed,
            tokenizer=self.tokenizer,  # 2D buckets count output tokens
        )
        self.metrics = _MetricsLog(self.run_dir, self.state["step"])
        self.command = " ".join(shlex.quote(a) for a in ["suite", *sys.argv[1:]])

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
        if self.ema is not None:
            self.ema = copy_weights(self.model)
        print(f"initialized {', '.join(include or ['all parts'])} from {path}", file=sys.stderr)

    def _train_mode(self) -> None:
        """Training mode, but frozen parts stay in eval mode (no dropout, fixed statistics)."""
        self.model.train()
        for part in self.frozen:
            part.eval()

    def _restore(self, path: Path) -> None:
        ck = load_checkpoint(path)
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.state = ck["trainer"]
        if self.ema is not None:
            self.ema = {k[len("ema.") :]: v.to(self.device) for k, v in ck["extra"].items()}
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

    def _validate(self) -> dict[str, float]:
        live = None
        if self.ema is not None:  # validate (and export) the averaged weights
            live = copy_weights(self.model)
            self.model.load_state_dict(self.ema)
        scores = evaluate_cuts(self.model, self.dev_cuts, self.recipe.data.max_duration)
        step = self.state["step"]
        best = self.state["best_wer"]
        if best is None or scores.wer <= best:
            self.state["best_wer"], self.state["best_step"] = scores.wer, step
            save_package(self.model, self.run_dir / "model", card=self._card(scores.wer, step))
        if live is not None:
            self.model.load_state_dict(live)
        return {"dev_wer": scores.wer, "dev_cer": scores.cer, "dev_rtfx": scores.rtfx}

    def _card(self, wer: float | None, step: int) -> str:
        result = f"dev WER {wer:.2%} at step {step}" if wer is not None else "not validated"
        return (
            f"# Model trained by suite\n\n"
            f"- Recipe command: `{self.command}`\n"
            f"- Training data: `{self.recipe.data.manifest('train')}`\n"
            f"- Encoder: `{self.recipe.model.encoder}`; heads: `{self.recipe.model.heads}`\n"
            f"- Result: {result}\n\n"
            f"The merged recipe is in `config.yaml` of the run folder.\n"
        )

    def _checkpoint(self) -> None:
        extra = {f"ema.{k}": v for k, v in self.ema.items()} if self.ema is not None else None
        save_checkpoint(
            self.ckpt_dir,
            self.state["step"],
            self.model.state_dict(),
            self.optimizer.state_dict(),
            self.state,
            extra,
            keep=self.cfg.keep_checkpoints,
        )

    def train(self) -> Path:
        """Run until ``train.max_steps``; returns the exported model package's folder."""
        cfg = self.cfg
        frame_seconds = self.dataset.frontend.hop_ms / 1000
        batches = self._batches()
        self._train_mode()
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.state["step"],
            disable=not self.progress,
            dynamic_ncols=True,
            desc="train",
        )
        audio_seconds, window_start, skipped = 0.0, time.perf_counter(), 0
        terms: dict[str, float] = {}  # the loss and its terms summed over the log window's steps
        window_steps = 0
        while self.state["step"] < cfg.max_steps:
            step = self.state["step"]
            lr = lr_at(step, cfg.lr, cfg.warmup_steps, cfg.max_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            for _ in range(cfg.accum_grad):
                batch = next(batches).to(self.device)
                with precision_autocast(self.device, cfg.precision):
                    out = self.model.loss(batch)
                (out["loss"] / cfg.accum_grad).backward()
                for key, value in out.items():
                    terms[key] = terms.get(key, 0.0) + value.item() / cfg.accum_grad
                audio_seconds += batch.lengths.sum().item() * frame_seconds
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            if torch.isfinite(grad_norm):
                optimizer_step(self.optimizer, self.model, self.ema, cfg.ema_decay)
            else:  # a bad batch must not poison the weights
                skipped += 1
            self.state["step"] = step = step + 1
            bar.update(1)
            window_steps += 1
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                elapsed = time.perf_counter() - window_start
                speed = audio_seconds / max(elapsed, 1e-9)
                means = {key: total / window_steps for key, total in terms.items()}
                loss = means.pop("loss")
                self.metrics.write(
                    step,
                    {
                        "loss": loss,  # a mean over the steps since the last line, as each term
                        "lr": lr,
                        "grad_norm": float(grad_norm),
                        "audio_sec_per_sec": speed,
                        "skipped_steps": skipped,
                        **means,
                    },
                )
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", audio_s_per_s=f"{speed:.0f}")
                audio_seconds, window_start = 0.0, time.perf_counter()
                terms, window_steps = {}, 0
            if self.dev_cuts is not None and (step % cfg.val_every == 0 or step == cfg.max_steps):
                val = self._validate()
                self.metrics.write(step, val)
                bar.write(f"step {step}: dev WER {val['dev_wer']:.2%} CER {val['dev_cer']:.2%}")
                self._train_mode()
            if step % self.save_every == 0 or step == cfg.max_steps:
                self._checkpoint()
        bar.close()
        if self.dev_cuts is None:  # nothing to select by: export the final weights
            save_package(
                self.model,
                self.run_dir / "model",
                state=self.ema,
                card=self._card(None, self.state["step"]),
            )
        return self.run_dir / "model"


def train(
    recipe: Recipe, resume: bool = False, progress: bool = True, save_every: int | None = None
) -> Path:
    """Train ``recipe``; see :class:`Trainer`."""
    return Trainer(recipe, resume=resume, progress=progress, save_every=save_every).train()
