"""What one optimizer step needs, shared by the trainer and the batch-size probes: the
learning-rate schedule, AdamW over a task's parameter groups, frozen parts, bf16 autocast on
GPU, and the weight EMA."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from suite.config import TrainConfig
from suite.errors import UserError
from suite.tasks.base import Task


def lr_at(step: int, peak: float, warmup: int, total: int, final_ratio: float = 0.05) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to
    ``final_ratio * peak`` at ``total`` steps."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, task: Task) -> torch.optim.AdamW:
    """AdamW over the task's parameter groups (trainable parameters only), with ``train.lr``,
    ``train.weight_decay`` and ``train.adam_betas``."""
    groups = task.optimizer_groups(model, cfg.weight_decay)
    betas = tuple(cfg.adam_betas)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)


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
    way to the new ones; entries that are not floating point (counters) are copied. Under FSDP
    both are shards, and each rank moves its own."""
    optimizer.step()
    if ema is None:
        return
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                ema[k].lerp_(v, 1 - ema_decay)
            else:
                ema[k].copy_(v)
