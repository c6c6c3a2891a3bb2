"""Batch samplers selected by the recipe's ``data.sampler`` section.

``{"name": "suite_bucketing", "num_buckets": 100}`` is :class:`BucketingSampler` (bins estimated
from the data, padded-cost budget, roll-over of left-overs, exact resume; see
:mod:`suite.data.bucketing` and :mod:`suite.data.planning`; per-bucket batch sizes measured by
``suite data oomptimize``; packing of short cuts, :mod:`suite.data.packing`);
``{"name": "dynamic_bucketing", "num_buckets": 30}`` is lhotse's ``DynamicBucketingSampler``;
``{"name": "simple"}`` is lhotse's ``SimpleCutSampler`` (naive random batching). Every sampler
is seeded, reshuffles per ``set_epoch``, and shards by rank.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np
from lhotse import CutSet
from lhotse.cut import Cut
from lhotse.dataset import DynamicBucketingSampler, SimpleCutSampler
from lhotse.dataset.sampling.base import CutSampler

from suite.data.bucketing import Buckets, cut_lengths, estimate_bins, token_counter
from suite.data.packing import pack_cut, pack_rows, packed_lengths
from suite.data.planning import Budget, padded_cost, plan_window
from suite.errors import UserError

SAMPLERS = ("suite_bucketing", "dynamic_bucketing", "simple")

# (cuts of the window, their per-row arrays, the rows' cells)
_Window = tuple[list[Cut], np.ndarray, np.ndarray | None, np.ndarray]


class BucketingSampler(CutSampler):
    """Duration-bucketed batches with almost no padding; a lhotse ``CutSampler``.

    Iterating yields one epoch of ``CutSet`` batches for this rank. Cuts of a bucket (or 2D
    cell) are batched together until ``batch size x the longest cut's cost`` reaches
    ``max_duration``; left-over cuts roll over into the next longer bucket. At each step all
    ranks draw from the same bucket, every rank gets the same number of batches, and every cut
    is in exactly one batch of one rank (see :func:`~suite.data.planning.plan_window`).

    The plan of an epoch depends only on ``(seed, epoch)`` and the cuts, so re-iterating an
    epoch and skipping ``n`` batches continues exactly; :meth:`state_dict` and
    :meth:`load_state_dict` do the same without the caller counting (the position is the
    batches drawn from the sampler: behind a prefetching ``DataLoader``, save the number of
    batches training consumed instead, as the trainer does).

    Args:
        cuts: a ``CutSet``, eager or lazy (a lazy one is read once per epoch).
        max_duration: padded effective seconds per batch (``size x max cost``), like lhotse's.
        duration_bins: bucket upper edges in seconds (e.g. from ``suite data estimate-buckets``);
            by default estimated from the cuts, with the last bucket left open.
        token_bins: 2D token edges per duration bucket; estimated when ``num_token_buckets``
            is set and these are not given.
        num_buckets: K, duration buckets to estimate when ``duration_bins`` is not given.
        num_token_buckets: J, token buckets per duration bucket (2D); needs ``count_tokens``.
        count_tokens: a cut's number of output tokens (see
            :func:`~suite.data.bucketing.token_counter`); needed by 2D buckets and ``max_tokens``.
        quadratic_duration: adds the attention term ``d**2 / q`` to each cut's cost.
        max_tokens: padded output tokens per batch (``size x max tokens``), when set.
        bucket_batch_size: per-cell caps on the batch size (roll-over order), e.g. measured on
            GPU with :func:`~suite.data.planning.search_batch_sizes`.
        shuffle: shuffle inside buckets and the order of batches; ``False`` goes short to long.
        seed: the epoch's plan is drawn from ``(seed, epoch)``.
        world_size: number of ranks (default: from the environment, like lhotse).
        rank: this rank (default: from the environment).
        drop_last: drop the epoch's last cuts that do not fill a group of ``world_size`` full
            batches, instead of splitting them into smaller batches.
        buffer_size: stream a lazy manifest in windows of this many cuts (memory is bounded, and
            shuffling stays inside a window); ``None`` plans the whole epoch at once.
        too_long: a cut longer than the last duration bin, or one whose cost alone exceeds the
            budget, raises a :class:`UserError` (``"error"``) or is dropped with a warning
            and counted in ``diagnostics`` (``"drop"``).
        pack: join short cuts into examples of up to ``pack_duration`` seconds, redrawn every
            epoch (see :mod:`suite.data.packing`); a packed example is a ``MixedCut`` and
            :func:`~suite.data.packing.members` gives its cuts. Only for heads that allow it
            (``Head.allows_packing``; ``load_recipe`` checks the recipe's heads).
        pack_duration: the longest packed example in seconds; by default the median duration
            of the cuts (of the first window when streaming).

    Example::

        >>> sampler = BucketingSampler(cuts, max_duration=600, num_buckets=100, seed=0)
        >>> loader = DataLoader(dataset, sampler=sampler, batch_size=None)
        >>> for epoch in range(10):
        ...     sampler.set_epoch(epoch)
        ...     for batch in loader: ...
    """

    def __init__(
        self,
        cuts: CutSet,
        max_duration: float,
        *,
        duration_bins: list[float] | None = None,
        token_bins: list[list[int]] | None = None,
        num_buckets: int = 100,
        num_token_buckets: int | None = None,
        count_tokens: Callable[[Cut], int] | None = None,
        quadratic_duration: float | None = None,
        max_tokens: int | None = None,
        bucket_batch_size: list[int] | None = None,
        shuffle: bool = True,
        seed: int = 0,
        world_size: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
        buffer_size: int | None = None,
        too_long: Literal["error", "drop"] = "error",
        pack: bool = False,
        pack_duration: float | None = None,
    ) -> None:
        super().__init__(
            shuffle=shuffle, drop_last=drop_last, world_size=world_size, rank=rank, seed=seed
        )
        if max_duration is None or max_duration <= 0:
            raise UserError(f"max_duration must be positive seconds, got {max_duration}")
        if too_long not in ("error", "drop"):
            raise UserError(f"too_long must be 'error' or 'drop', got {too_long!r}")
        if buffer_size is not None and buffer_size < 1:
            raise UserError(f"buffer_size must be a positive number of cuts, got {buffer_size}")
        if token_bins is not None and duration_bins is None:
            raise UserError(
                "token_bins are per duration bucket; give duration_bins with them (both come "
                "from `suite data estimate-buckets MANIFEST --token-buckets J --tokenizer DIR`)"
            )
        two_d = token_bins is not None or num_token_buckets is not None
        if (two_d or max_tokens is not None) and count_tokens is None:
            raise UserError(
                "2D buckets (token_bins, num_token_buckets) and max_tokens count output tokens; "
                "pass count_tokens=token_counter(tokenizer), or build the sampler with "
                "build_sampler(..., tokenizer=tokenizer)"
            )
        self.cuts = cuts
        self.max_duration = float(max_duration)
        self.quadratic_duration = quadratic_duration
        self.max_tokens = max_tokens
        self.buffer_size = buffer_size
        self.too_long = too_long
        self._count_tokens = count_tokens if (two_d or max_tokens is not None) else None
        self._token_cache: dict[str, int] | None = {} if buffer_size is None else None
        self._position = 0  # batches this rank has yielded in the current epoch
        self._batches: Iterator[CutSet] | None = None
        if duration_bins is None or (token_bins is None and num_token_buckets is not None):
            self.buckets = self._estimate(duration_bins, num_buckets, num_token_buckets)
        else:
            self.buckets = Buckets(tuple(duration_bins), token_bins)
        self.pack_duration = self._pack_duration(pack, pack_duration)
        caps = None
        if bucket_batch_size is not None:
            if len(bucket_batch_size) != self.buckets.num_cells:
                raise UserError(
                    f"bucket_batch_size has {len(bucket_batch_size)} sizes but the buckets have "
                    f"{self.buckets.num_cells} cells; give one size per cell (roll-over order)"
                )
            caps = np.asarray(bucket_batch_size, dtype=np.int64)
        self.budget = Budget(self.max_duration, max_tokens, caps)

    def _estimate(
        self,
        duration_bins: list[float] | None,
        num_buckets: int,
        num_token_buckets: int | None,
    ) -> Buckets:
        """Bins from the first window of cuts (all cuts when nothing is streamed)."""
        window = next(self._read(self.buffer_size, check=False), None)
        if window is None:
            raise UserError("the sampler got an empty cut set; nothing to batch")
        _, durations, tokens, _ = window
        estimated = estimate_bins(durations, num_buckets, tokens, num_token_buckets, duration_bins)
        if duration_bins is not None:
            return estimated
        # Cuts not seen by the estimate may be longer: the estimated last bucket stays open.
        return Buckets((*estimated.duration_bins[:-1], math.inf), estimated.token_bins)

    def _pack_duration(self, pack: bool, pack_duration: float | None) -> float | None:
        """The checked length of packed examples, or ``None`` when nothing is packed."""
        if not pack:
            if pack_duration is not None:
                raise UserError("data.sampler.pack_duration is set but pack is off; set pack: true")
            return None
        if pack_duration is None:
            window = next(self._read(self.buffer_size, check=False), None)
            if window is None:
                raise UserError("the sampler got an empty cut set; nothing to batch")
            pack_duration = float(np.median(window[1]))
        longest = self.buckets.duration_bins[-1]
        if not 0 < pack_duration <= longest:
            raise UserError(
                f"pack_duration must be positive and at most the last duration bin "
                f"({longest:.2f} s), got {pack_duration}"
            )
        if padded_cost(np.array([pack_duration]), self.quadratic_duration)[0] > self.max_duration:
            raise UserError(
                f"a packed example of pack_duration={pack_duration} s alone exceeds the batch "
                f"budget (max_duration={self.max_duration}); lower pack_duration"
            )
        return float(pack_duration)

    def _packed(self, window: _Window, rng: np.random.Generator | None) -> _Window:
        """The window's cuts packed into examples, with their lengths and cells."""
        cuts, durations, tokens, _ = window
        units = pack_rows(durations, self.pack_duration, rng, tokens, self.max_tokens)
        examples = [pack_cut([cuts[i] for i in rows]) for rows in units]
        seconds, counts = packed_lengths(durations, tokens, units)
        return examples, seconds, counts, self.buckets.assign(seconds, counts)

    def _lengths(self, cuts: list[Cut]) -> tuple[np.ndarray, np.ndarray | None]:
        count = self._count_tokens
        if count is not None and self._token_cache is not None:
            cache = self._token_cache

            def count(cut: Cut, counter: Callable[[Cut], int] = count) -> int:
                if cut.id not in cache:
                    cache[cut.id] = counter(cut)
                return cache[cut.id]

        return cut_lengths(cuts, count)

    def _read(self, size: int | None, check: bool = True) -> Iterator[_Window]:
        """The epoch's cuts in windows of ``size`` (one window when ``None``), filtered."""
        source = iter(self.cuts)
        while True:
            cuts: list[Cut] = []
            for cut in source:
                if self._filter_fn(cut):
                    cuts.append(cut)
                else:
                    self.diagnostics.discard_single(cut)
                if size is not None and len(cuts) >= size:
                    break
            if not cuts:
                return
            durations, tokens = self._lengths(cuts)
            if not check:
                yield cuts, durations, tokens, np.zeros(len(cuts), dtype=np.int64)
            else:
                yield self._checked(cuts, durations, tokens)
            if size is None:
                return

    def _checked(
        self, cuts: list[Cut], durations: np.ndarray, tokens: np.ndarray | None
    ) -> _Window:
        """Assign cells; apply the ``too_long`` policy to cuts no batch can hold."""
        cells = self.buckets.assign(durations, tokens)
        cost = padded_cost(durations, self.quadratic_duration)
        bad = (cells < 0) | (cost > self.max_duration)
        if self.max_tokens is not None and tokens is not None:
            bad |= tokens > self.max_tokens
        if not bad.any():
            return cuts, durations, tokens, cells
        first = int(np.argmax(bad))
        if self.too_long == "error":
            what = f"{durations[first]:.2f} s" + (
                f", {tokens[first]} tokens" if tokens is not None else ""
            )
            if cells[first] < 0:
                why = f"the last duration bucket ends at {self.buckets.duration_bins[-1]:.2f} s"
            else:
                why = (
                    f"alone it exceeds the batch budget (max_duration={self.max_duration} "
                    f"padded seconds, quadratic_duration={self.quadratic_duration}, "
                    f"max_tokens={self.max_tokens})"
                )
            raise UserError(
                f"cut {cuts[first].id} ({what}) fits no batch: {why}; {int(bad.sum())} cuts of "
                "this window are too long. Re-estimate the bins (`suite data estimate-buckets`), "
                "raise data.max_duration, filter the manifest, or set "
                "data.sampler.too_long=drop"
            )
        warnings.warn(
            f"dropping {int(bad.sum())} cuts that fit no batch (e.g. {cuts[first].id}, "
            f"{durations[first]:.2f} s), as data.sampler.too_long=drop asks",
            stacklevel=2,
        )
        for i in np.flatnonzero(bad):
            self.diagnostics.discard_single(cuts[i])
        keep = np.flatnonzero(~bad)
        return (
            [cuts[i] for i in keep],
            durations[keep],
            None if tokens is None else tokens[keep],
            cells[keep],
        )

    def _plan(self) -> Iterator[tuple[list[Cut], list[list[np.ndarray]]]]:
        """The epoch's groups of ``world_size`` batches, window by window."""
        rng = np.random.default_rng([self.seed, self.epoch]) if self.shuffle else None
        carry_cuts: list[Cut] = []
        carry = (np.zeros(0), None if self._count_tokens is None else np.zeros(0, np.int64))
        carry_cells = np.zeros(0, dtype=np.int64)
        windows = self._read(self.buffer_size)
        window = next(windows, None)
        while window is not None:
            following = next(windows, None)  # look ahead: the last window flushes everything
            if self.pack_duration is not None:  # carried examples are not packed again
                window = self._packed(window, rng)
            cuts, durations, tokens, cells = window
            cuts = carry_cuts + cuts
            durations = np.concatenate([carry[0], durations])
            tokens = None if tokens is None else np.concatenate([carry[1], tokens])
            cells = np.concatenate([carry_cells, cells])
            groups, kept, dropped = plan_window(
                cells,
                padded_cost(durations, self.quadratic_duration),
                tokens,
                self.buckets.num_cells,
                self.budget,
                world_size=self.world_size,
                rng=rng,
                final=following is None,
                drop_last=self.drop_last,
                cell_buckets=self.buckets.cell_buckets(),
            )
            if len(dropped):
                if not self.drop_last:
                    warnings.warn(
                        f"{len(dropped)} cuts left at the end of the epoch cannot be split "
                        f"over {self.world_size} ranks (every batch would hold one cut); "
                        "dropping them",
                        stacklevel=2,
                    )
                for i in dropped:
                    self.diagnostics.discard_single(cuts[i])
            yield cuts, groups
            carry_cuts = [cuts[i] for i in kept]
            carry = (durations[kept], None if tokens is None else tokens[kept])
            carry_cells = cells[kept]
            window = following

    def _epoch(self, skip: int) -> Iterator[CutSet]:
        for cuts, groups in self._plan():
            for group in groups:
                if skip > 0:  # resuming: the plan is replayed without touching any audio
                    skip -= 1
                    continue
                batch = CutSet([cuts[i] for i in group[self.rank]])
                for transform in self._transforms:
                    batch = transform(batch)
                yield batch

    def __iter__(self) -> BucketingSampler:
        if self._just_restored_state:
            self._just_restored_state = False  # resume once, then epochs start from 0
        else:
            self._position = 0
            self.diagnostics.reset_current_epoch()
        self._batches = self._epoch(self._position)
        return self

    def __next__(self) -> CutSet:
        if self._batches is None:
            iter(self)
        batch = next(self._batches)
        self._position += 1
        self.diagnostics.keep(batch)
        return batch

    def __getstate__(self) -> dict[str, Any]:
        # An epoch in progress is a generator, which does not pickle (DataLoader workers,
        # lhotse's IterableDatasetWrapper); the copy starts its epoch afresh.
        return {**self.__dict__, "_batches": None}

    def _fingerprint(self) -> str:
        plan = (self.buckets, self.max_duration, self.quadratic_duration, self.max_tokens)
        # Options added later join only when set, so saved runs keep their fingerprint.
        if self.budget.caps is not None:
            plan = (*plan, tuple(self.budget.caps.tolist()))
        if self.pack_duration is not None:
            plan = (*plan, ("pack", self.pack_duration))
        text = repr(plan)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def state_dict(self) -> dict[str, Any]:
        """Where this rank is: ``epoch`` and ``position`` (batches yielded in it), plus what
        the plan depends on, checked when loading."""
        return {
            "epoch": self.epoch,
            "position": self._position,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "world_size": self.world_size,
            "buffer_size": self.buffer_size,
            "buckets": self._fingerprint(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from ``state_dict``: the next iteration resumes at its position.

        Raises:
            UserError: the state comes from a sampler with other settings (seed, world size,
                buckets, budget), which would give other batches.
        """
        expected = self.state_dict()
        for key in ("seed", "shuffle", "drop_last", "world_size", "buffer_size", "buckets"):
            if state_dict.get(key) != expected[key]:
                raise UserError(
                    f"cannot resume the sampler: its {key} was {state_dict.get(key)!r} and is "
                    f"now {expected[key]!r}, which would change the batches; resume with the "
                    "same data.sampler settings, max_duration, seed and number of ranks"
                )
        self.set_epoch(int(state_dict["epoch"]))
        self._position = int(state_dict["position"])
        self.diagnostics.reset_current_epoch()
        self._just_restored_state = True

    @property
    def remaining_duration(self) -> float | None:
        return None  # only known by planning the epoch, as for lhotse's lazy samplers

    @property
    def remaining_cuts(self) -> int | None:
        return None

    @property
    def num_cuts(self) -> int | None:
        return None


def build_sampler(
    cuts: CutSet,
    spec: dict[str, Any],
    max_duration: float,
    seed: int = 0,
    shuffle: bool = True,
    world_size: int = 1,
    rank: int = 0,
    tokenizer: Any = None,
) -> Any:
    """The sampler named by ``spec["name"]`` over ``cuts`` with the spec's other options.

    Args:
        cuts: the training cuts.
        spec: the recipe's ``data.sampler`` section, e.g. ``{"name": "suite_bucketing"}``.
        max_duration: padded seconds per batch.
        seed: shuffling seed; each epoch reshuffles from ``(seed, epoch)``.
        shuffle: shuffle at all.
        world_size: number of ranks.
        rank: this rank.
        tokenizer: counts output tokens for ``suite_bucketing``'s 2D buckets and
            ``max_tokens`` (``encode(text) -> list[int]``).
    """
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
        if name == "suite_bucketing":
            counter = token_counter(tokenizer) if tokenizer is not None else None
            return BucketingSampler(cuts, **common, count_tokens=counter, **options)
        if name == "dynamic_bucketing":
            return DynamicBucketingSampler(cuts, **common, **options)
        if name == "simple":
            return SimpleCutSampler(cuts, **common, **options)
    except TypeError as e:
        raise UserError(f"data.sampler: bad option for sampler '{name}': {e}") from None
    raise UserError(f"data.sampler.name '{name}' is unknown; choose one of {', '.join(SAMPLERS)}")
