"""Batch samplers selected by the recipe's ``data.sampler`` section.

``{"name": "dynamic_bucketing", "num_buckets": 30}`` is lhotse's ``DynamicBucketingSampler``;
``{"name": "simple"}`` is lhotse's ``SimpleCutSampler`` (naive random batching). Every sampler
is seeded, reshuffles per ``set_epoch``, and shards by rank.
"""

from __future__ import annotations

from typing import Any

from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler, SimpleCutSampler

from suite.errors import UserError

SAMPLERS = ("dynamic_bucketing", "simple")


def build_sampler(
    cuts: CutSet,
    spec: dict[str, Any],
    max_duration: float,
    seed: int = 0,
    shuffle: bool = True,
    world_size: int = 1,
    rank: int = 0,
) -> Any:
    """The sampler named by ``spec["name"]`` over ``cuts`` with the spec's other options."""
    options = {k: v for k, v in spec.items() if k != "name"}
    name = spec.get("name", "dynamic_bucketing")
    common = dict(
        max_duration=max_duration,
        shuffle=shuffle,
        seed=seed,
        world_size=world_size,
        rank=rank,
        drop_last=False,
    )
    try:
        if name == "dynamic_bucketing":
            return DynamicBucketingSampler(cuts, **common, **options)
        if name == "simple":
            return SimpleCutSampler(cuts, **common, **options)
    except TypeError as e:
        raise UserError(f"data.sampler: bad option for sampler '{name}': {e}") from None
    raise UserError(f"data.sampler.name '{name}' is unknown; choose one of {', '.join(SAMPLERS)}")
