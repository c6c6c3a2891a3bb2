"""What a task is: everything that differs between jobs, behind one interface the trainer, the
package loader and the CLI share.

A task (registry kind ``task``) names its data (how a split is read, the dataset that turns a
sampler's items into a :class:`~suite.interfaces.Batch`, the sampler), its model (how a
recipe's ``model:`` section is built and how a package stores it), its loss, its evaluation
(metrics with one primary metric and its direction, e.g. ``("wer", "min")``), the pipeline
:func:`suite.load` returns for its packages, and its CLI verbs. The trainer, checkpoints,
samplers and the package writer are shared by every task.

A new task is a subclass registered with ``@register_task("name")``; a recipe selects it with
``task: name`` as its first line.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor, nn

from suite.config import ModelConfig, Recipe
from suite.interfaces import Batch, Tokenizer


class Task(ABC):
    """One kind of job. Subclasses fill in the abstract methods; the rest have defaults.

    Attributes:
        name: the registry name (``task:`` in recipes and package configs).
        metric: the primary evaluation metric and whether lower or higher is better,
            e.g. ``("wer", "min")``; the trainer keeps the best model by it.
        amount: what :meth:`batch_amount` counts, for the training-speed log
            (``"audio_sec"`` gives ``audio_sec_per_sec``).
    """

    name: ClassVar[str]
    metric: ClassVar[tuple[str, str]]
    amount: ClassVar[str] = "items"

    # --- data ---------------------------------------------------------------------------
    @abstractmethod
    def load_split(self, recipe: Recipe, split: str) -> Any:
        """The items of ``split`` (``train``, ``dev``, ``test``); ``None`` for a missing dev
        or test split, a teaching error for a missing training split."""

    def tokenizer(self, recipe: Recipe, train: Any, directory: Path) -> Tokenizer | None:
        """The run's tokenizer, kept in ``directory`` (``None`` for a task without text)."""
        return None

    @abstractmethod
    def dataset(self, recipe: Recipe, model: nn.Module, training: bool, seed: int) -> Any:
        """A map-style dataset: ``dataset[(items, seed)]`` (or ``dataset[items]``) is a
        :class:`~suite.interfaces.Batch`; ``seed`` fixes the batch's random draws."""

    def sampler(
        self, recipe: Recipe, train: Any, model: nn.Module, seed: int, rank: int, world_size: int
    ) -> Any:
        """This rank's batches of training items: ``set_epoch(epoch)``, then iterate. Every
        rank yields the same number of batches per epoch. Default: shuffled batches of
        ``data.batch_size`` items (:class:`IndexSampler`) of a training split that has a
        length."""
        return IndexSampler(len(train), recipe.data.batch_size, seed, rank, world_size)

    def batch_amount(self, batch: Batch, model: nn.Module) -> float:
        """How much of :attr:`amount` ``batch`` holds (default: its items)."""
        return float(len(batch))

    # --- model ----------------------------------------------------------------------------
    @abstractmethod
    def build_model(self, config: ModelConfig, tokenizer: Tokenizer | None) -> nn.Module:
        """The recipe's model, freshly initialized."""

    def loss(self, model: nn.Module, batch: Batch) -> dict[str, Tensor]:
        """The training loss of ``batch`` (``"loss"``, plus named terms to log)."""
        return model.loss(batch)

    def optimizer_groups(self, model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW parameter groups over the trainable parameters (frozen ones left out)."""
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    @abstractmethod
    def package_config(self, model: nn.Module) -> dict[str, Any]:
        """What ``config.yaml`` of a package holds besides ``task``."""

    @abstractmethod
    def load_model(self, config: dict[str, Any], tokenizer: Tokenizer | None) -> nn.Module:
        """The model a package's ``config.yaml`` describes, before its weights are loaded."""

    # --- evaluation and use ---------------------------------------------------------------
    @abstractmethod
    def evaluate(self, model: nn.Module, items: Any, **options: Any) -> dict[str, float]:
        """Metrics of ``model`` on ``items``; holds at least :attr:`metric`'s name."""

    def eval_options(self, recipe: Recipe) -> dict[str, Any]:
        """The options :meth:`evaluate` takes from the recipe during training (default: none)."""
        return {}

    def describe(self, config: ModelConfig) -> str:
        """The model's parts in one line, for the model card."""
        return f"`{config}`"

    def format_metrics(self, metrics: dict[str, float]) -> str:
        """One line of the metrics for people."""
        return "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())

    @abstractmethod
    def pipeline(self, model: nn.Module, name: str = "") -> Any:
        """What :func:`suite.load` returns for this task's packages."""

    def add_commands(self, commands: Any) -> None:  # noqa: B027 (optional hook)
        """Add this task's CLI verbs to the ``suite`` sub-command parser (default: none)."""

    def better(self, value: float, best: float | None) -> bool:
        """Whether ``value`` of the primary metric is at least as good as ``best``."""
        if best is None:
            return True
        return value <= best if self.metric[1] == "min" else value >= best


class IndexSampler:
    """Shuffled batches of item indices, the same order on every rank and sharded by rank:
    ``set_epoch(e)`` then iterate. Each epoch reshuffles from ``(seed, epoch)``; the last
    batches that cannot give every rank one are dropped, so ranks stay in step.

    Args:
        num_items: items in the training split.
        batch_size: items per batch on each rank.
        seed: shuffling seed.
        rank: this rank.
        world_size: number of ranks.
    """

    def __init__(
        self, num_items: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_items // (self.batch_size * self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = list(range(self.num_items))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        size = self.batch_size
        for index in range(len(self)):
            start = (index * self.world_size + self.rank) * size
            yield order[start : start + size]
