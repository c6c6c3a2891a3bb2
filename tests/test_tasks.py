"""A new task is a registered Task subclass: the one trainer trains it, checkpoints it, exports
its package, and ``suite.load`` gives its pipeline. Shown with a toy regression task defined
here, beside the built-in ``asr`` and ``lm``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import Tensor, nn

import suite
from suite import registry
from suite.config import ModelConfig, Recipe, load_recipe
from suite.interfaces import Batch, Tokenizer
from suite.tasks.base import IndexSampler, Task
from suite.train import Trainer

TEACHER = torch.tensor([[1.5, -2.0, 0.5, 1.0]])  # the linear map the toy task learns


def toy_items(count: int, seed: int) -> Tensor:
    return torch.randn(count, 4, generator=torch.Generator().manual_seed(seed))


class ToyModel(nn.Module):
    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)[:, 0]


class ToyDataset:
    def __init__(self, x: Tensor) -> None:
        self.x = x

    def __getitem__(self, item: Any) -> Batch:
        indices = item[0] if isinstance(item, tuple) else item
        x = self.x[indices]
        return Batch(inputs=x, lengths=torch.ones(len(indices), dtype=torch.long))


class Predictor:
    """The toy task's pipeline."""

    def __init__(self, model: nn.Module, name: str = "") -> None:
        self.model = model

    def predict(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.model(x)


@registry.register("task", "toy_regression")
class ToyTask(Task):
    name = "toy_regression"
    metric = ("mse", "min")

    def load_split(self, recipe: Recipe, split: str) -> Tensor:
        return toy_items(256 if split == "train" else 64, seed={"train": 0, "dev": 1}[split])

    def dataset(self, recipe: Recipe, model: nn.Module, training: bool, seed: int) -> ToyDataset:
        return ToyDataset(self.load_split(recipe, "train"))

    def sampler(self, recipe, train, model, seed, rank, world_size) -> IndexSampler:
        return IndexSampler(len(train), recipe.data.batch_size, seed, rank, world_size)

    def build_model(self, config: ModelConfig, tokenizer: Tokenizer | None) -> nn.Module:
        return ToyModel()

    def loss(self, model: nn.Module, batch: Batch) -> dict[str, Tensor]:
        target = (batch.inputs @ TEACHER.T)[:, 0]
        return {"loss": ((model(batch.inputs) - target) ** 2).mean()}

    def package_config(self, model: nn.Module) -> dict[str, Any]:
        return {"model": {}}

    def load_model(self, config: dict[str, Any], tokenizer: Tokenizer | None) -> nn.Module:
        return ToyModel()

    def evaluate(self, model: nn.Module, items: Tensor, **options: Any) -> dict[str, float]:
        target = (items @ TEACHER.T)[:, 0]
        with torch.no_grad():
            return {"mse": float(((model(items) - target) ** 2).mean())}

    def pipeline(self, model: nn.Module, name: str = "") -> Predictor:
        return Predictor(model, name)


def test_a_registered_task_trains_exports_and_loads_through_the_shared_parts(tmp_path):
    recipe_path = tmp_path / "toy.yaml"
    recipe_path.write_text(
        yaml.safe_dump(
            {
                "task": "toy_regression",
                "data": {"batch_size": 16},
                "train": {
                    "out_dir": str(tmp_path / "run"),
                    "max_steps": 200,
                    "lr": 0.05,
                    "warmup_steps": 5,
                    "val_every": 20,
                    "log_every": 10,
                    "device": "cpu",
                    "ema_decay": None,
                },
            },
            sort_keys=False,
        )
    )
    recipe = load_recipe(recipe_path)
    package = Trainer(recipe, progress=False).train()
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    dev = [r["dev_mse"] for r in rows if "dev_mse" in r]
    variance = float((TEACHER**2).sum())  # of the targets
    assert len(dev) == 10 and dev[-1] < 0.5 * dev[0] and dev[-1] < 0.05 * variance
    assert yaml.safe_load((package / "config.yaml").read_text())["task"] == "toy_regression"
    assert not (package / "tokenizer").exists()  # a task without text has no tokenizer
    predictor = suite.load(package)
    assert isinstance(predictor, Predictor)
    x = toy_items(8, seed=5)
    assert torch.allclose(predictor.predict(x), (x @ TEACHER.T)[:, 0], atol=0.5)
    with pytest.raises(Exception, match="already holds a training run"):
        Trainer(recipe, progress=False)


def test_builtin_tasks_are_registered_with_their_metric():
    assert {"asr", "lm", "caption", "classify"} <= set(registry.names("task"))
    assert registry.create("task", "asr").metric == ("wer", "min")
    assert registry.create("task", "lm").metric == ("perplexity", "min")
    assert registry.create("task", "classify").metric == ("accuracy", "max")
    assert suite.list_models() == {
        "default-asr": "asr",
        "streaming-asr": "asr",
        "default-captioner": "caption",
    }


def test_index_sampler_shards_one_global_order_across_ranks():
    whole = IndexSampler(40, 4, seed=3, rank=0, world_size=1)
    ranks = [IndexSampler(40, 2, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in (whole, *ranks):
        s.set_epoch(1)
    global_batches = list(whole)
    for step, (a, b) in enumerate(zip(*ranks, strict=True)):
        assert a + b == global_batches[step]
    assert len(ranks[0]) == 10 and len(whole) == 10


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
