"""Training on several cut manifests at once, each drawn with a sampling weight.

A recipe's ``data.train`` may list sources instead of naming one manifest::

    data:
      train:
        - {manifest: espeak_cuts_train.jsonl.gz, weight: 1.0}
        - {manifest: data/real/real_cuts_train.jsonl.gz, weight: 0.5}

As with lhotse's ``CutSet.mux``, a weight is the relative chance that the next training cut
comes from that source (cuts, not hours). What differs: instead of a random stream, each epoch
is a fixed draw that depends only on ``(seed, epoch)``, so our index-based samplers keep their
guarantees (the same seed gives the same batches; a resumed run continues exactly):

- the epoch holds as many cuts as all sources together (or ``size``), split between sources
  in proportion to their weights (largest-remainder rounding, so the shares are exact up to
  one cut);
- a source asked for fewer cuts than it has gives a fresh random subset every epoch; one asked
  for more gives all its cuts as often as they fit, then a random subset, and the repeated
  copies get ids ending in ``_rep1``, ``_rep2``, ... (as lhotse's ``CutSet.repeat``).

:class:`WeightedMix` is that epoch-dependent list of cuts; wrapped in a ``CutSet`` it reads as
a lazy manifest, so any sampler can batch it. :class:`MixSampler` forwards ``set_epoch`` to it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from lhotse.cut import Cut

from suite.errors import UserError


@dataclass(frozen=True)
class MixSource:
    """One source of a mix: its name (for logs and errors), its cuts and its weight."""

    name: str
    cuts: Sequence[Cut]
    weight: float


def share_counts(weights: Sequence[float], total: int) -> list[int]:
    """``total`` split in proportion to ``weights`` by largest remainders (sums to ``total``)."""
    w = np.asarray(weights, dtype=np.float64)
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(np.int64)
    # Ties go to the earlier source, so the split is a pure function of the weights.
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - int(counts.sum())]] += 1
    return counts.tolist()


class WeightedMix:
    """The cuts of one epoch of a weighted mix of sources; iterate after :meth:`set_epoch`.

    Args:
        sources: the sources, each with at least one cut and a weight >= 0 (not all 0).
        seed: the draw of epoch ``e`` depends only on ``(seed, e)``.
        size: cuts per epoch; by default all sources' cuts together.
    """

    def __init__(self, sources: Sequence[MixSource], seed: int = 0, size: int | None = None):
        if not sources:
            raise UserError("a mix needs at least one source")
        for source in sources:
            if not source.weight >= 0:
                raise UserError(f"source {source.name}: weight must be >= 0, got {source.weight}")
            if len(source.cuts) == 0 and source.weight > 0:
                raise UserError(f"source {source.name} has no cuts; drop it or give it cuts")
        if not any(s.weight > 0 for s in sources):
            raise UserError("every source of the mix has weight 0; give one a positive weight")
        self.sources = list(sources)
        self.seed = seed
        self.size = size if size is not None else sum(len(s.cuts) for s in sources)
        if self.size < 1:
            raise UserError(f"a mix's epoch size must be >= 1 cut, got {self.size}")
        self.counts = share_counts([s.weight for s in sources], self.size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[Cut]:
        return iter(self.epoch_cuts(self.epoch))

    def all_cuts(self) -> Iterator[Cut]:
        """Every cut of every source once (e.g. to fit a tokenizer on all texts)."""
        for source in self.sources:
            yield from source.cuts

    def epoch_cuts(self, epoch: int) -> list[Cut]:
        """The cuts of ``epoch``, shuffled: ``counts[i]`` from source ``i``."""
        out: list[Cut] = []
        for i, (source, count) in enumerate(zip(self.sources, self.counts, strict=True)):
            if count == 0:
                continue
            rng = np.random.default_rng([self.seed, epoch, i])
            num = len(source.cuts)
            repeats, rest = divmod(count, num)
            picks = [(copy, j) for copy in range(repeats) for j in range(num)]
            picks += [(repeats, int(j)) for j in np.sort(rng.permutation(num)[:rest])]
            for copy, j in picks:
                cut = source.cuts[j]
                out.append(cut if copy == 0 else cut.with_id(f"{cut.id}_rep{copy}"))
        order = np.random.default_rng([self.seed, epoch, len(self.sources)]).permutation(len(out))
        return [out[k] for k in order]


class MixSampler:
    """A sampler over a :class:`WeightedMix`: ``set_epoch`` redraws the mix, then the wrapped
    sampler (built over ``CutSet(mix)``) batches that epoch's cuts as usual."""

    def __init__(self, mix: WeightedMix, sampler: Any) -> None:
        self.mix, self.sampler = mix, sampler

    def set_epoch(self, epoch: int) -> None:
        self.mix.set_epoch(epoch)
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.sampler)

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state_dict)
        self.mix.set_epoch(self.sampler.epoch)
