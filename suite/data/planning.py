"""The batch planner: one epoch of cut lengths in, batches with almost no padding out.

Dims and units: N - rows (cuts of a window), C - cells (see :class:`~suite.data.bucketing.Buckets`).
Costs are "effective seconds" of padded audio; tokens are output tokens.

A batch is filled until ``batch size x its longest cut`` reaches the budget, as in lhotse's
``DynamicBucketingSampler``. What differs:

- rows that are left over in a cell (too few for a full batch, or for a full group of
  ``world_size`` batches) roll over into the next longer cell instead of forming a short batch,
  so more buckets cost no extra batches; the cells are numbered in the buckets' roll-over order
  (for 2D buckets a snake over tokens), so a roll-over lands among similar cuts;
- the whole epoch is planned with numpy from lengths alone, once per epoch and rank, with a
  seeded generator, so every rank computes the same plan and a resume replays it exactly.

:func:`search_batch_sizes` finds the largest batch each cell can train with, for budgets
measured on a device rather than computed from seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from suite.errors import UserError

if TYPE_CHECKING:
    from suite.data.bucketing import Buckets

Rows = np.ndarray  # (n,) int64 row indices into a window's length arrays


def padded_cost(durations: np.ndarray, quadratic_duration: float | None = None) -> np.ndarray:
    """Effective seconds a cut adds to a batch per slot: ``d`` or ``d + d**2 / q``.

    A batch costs ``size x max cost``: its padded frames, plus with ``quadratic_duration=q`` the
    attention term that doubles the cost of a ``q``-second cut (as in lhotse's TimeConstraint).
    """
    durations = np.asarray(durations, dtype=np.float64)
    if quadratic_duration is None:
        return durations
    return durations + durations**2 / quadratic_duration


def bucket_batch_sizes(
    buckets: Buckets,
    max_duration: float,
    quadratic_duration: float | None = None,
    max_tokens: int | None = None,
) -> list[int]:
    """The batch size each cell can always afford under the budgets (its longest cut padded).

    Args:
        buckets: the cells.
        max_duration: padded (effective) seconds per batch.
        quadratic_duration: see :func:`padded_cost`.
        max_tokens: padded output tokens per batch (2D buckets only).

    Returns:
        ``(C,)`` batch sizes in roll-over order, at least 1. The sampler fills batches up to the
        budget with the actual longest cut, so its batches are this size or larger.
    """
    upper_d, upper_t = buckets.cell_edges()
    sizes = np.floor(max_duration / padded_cost(upper_d, quadratic_duration))
    if max_tokens is not None and upper_t is not None:
        sizes = np.minimum(sizes, np.floor(max_tokens / upper_t))
    return [max(1, int(s)) for s in sizes]


@dataclass
class Budget:
    """What one batch may hold: ``size x max cost <= max_cost`` (padded effective seconds),
    ``size x max tokens <= max_tokens`` when set, and ``size <= caps[cell]`` when set."""

    max_cost: float
    max_tokens: int | None = None
    caps: np.ndarray | None = None  # (C,) per-cell batch-size caps (e.g. measured on GPU)

    def fits(self, rows: Rows, cost: np.ndarray, tokens: np.ndarray | None, cap: int) -> bool:
        """Whether ``rows`` fit in one batch whose cap is ``cap``."""
        n = len(rows)
        if n > cap or n * cost[rows].max() > self.max_cost * (1 + 1e-9):
            return False
        if self.max_tokens is None or tokens is None:
            return True
        return n * tokens[rows].max() <= self.max_tokens


def _fill(
    pool: Rows,
    start: int,
    cost: np.ndarray,
    tokens: np.ndarray | None,
    budget: Budget,
    limit: int,
) -> int:
    """Size of the largest batch ``pool[start:start+n]`` within the budget (at least 1)."""
    window = pool[start : start + limit]
    sizes = np.arange(1, len(window) + 1)
    # size x running max never decreases, so the batches that fit are a prefix.
    ok = sizes * np.maximum.accumulate(cost[window]) <= budget.max_cost * (1 + 1e-9)
    if budget.max_tokens is not None and tokens is not None:
        ok &= sizes * np.maximum.accumulate(tokens[window]) <= budget.max_tokens
    return max(1, len(ok) if ok.all() else int(np.argmin(ok)))


def _batches_in_pool(
    pool: Rows,
    cost: np.ndarray,
    tokens: np.ndarray | None,
    budget: Budget,
    cap: int,
    flush: bool,
) -> tuple[list[Rows], Rows]:
    """Greedy batches over ``pool``; returns them and the rows left for a later batch.

    Without ``flush`` the last batch, which ran out of cuts before reaching the budget, is
    left over (to roll over); with it, every row is batched.
    """
    # No batch can hold more than budget / cheapest cut, so that bounds the rows each fill reads.
    reach = int(budget.max_cost / max(float(cost[pool].min()), 1e-9)) + 1 if len(pool) else 0
    batches, start = [], 0
    while start < len(pool):
        n = _fill(pool, start, cost, tokens, budget, min(cap, reach, len(pool) - start))
        if start + n >= len(pool) and not flush:
            break
        batches.append(pool[start : start + n])
        start += n
    return batches, pool[start:]


def _finish(
    rest: Rows,
    groups: list[list[Rows]],
    cost: np.ndarray,
    tokens: np.ndarray | None,
    budget: Budget,
    cap: int,
    world_size: int,
) -> tuple[list[list[Rows]], Rows]:
    """Turn the epoch's last rows into whole groups of ``world_size`` non-empty batches.

    The rows are split into ``world_size``, ``2 x world_size``, ... equal parts until every part
    fits the budget. With fewer rows than ranks, the last planned group is taken apart and
    joins them. Returns the groups and the rows that could not be placed (only when every
    batch would have to hold a single cut; the sampler reports them as dropped).
    """
    batches, _ = _batches_in_pool(rest, cost, tokens, budget, cap, flush=True)
    if len(batches) % world_size == 0:
        return [batches[i : i + world_size] for i in range(0, len(batches), world_size)], rest[:0]
    while True:
        parts = world_size * math.ceil(len(batches) / world_size)
        while parts <= len(rest):
            split = np.array_split(rest, parts)
            if all(budget.fits(p, cost, tokens, cap) for p in split):
                return [split[i : i + world_size] for i in range(0, parts, world_size)], rest[:0]
            parts += world_size
        if not groups:
            return [], rest
        rest = np.concatenate([*groups.pop(), rest])
        batches = [rest]  # any further split starts from world_size parts


def plan_window(
    cells: np.ndarray,
    cost: np.ndarray,
    tokens: np.ndarray | None,
    num_cells: int,
    budget: Budget,
    world_size: int = 1,
    rng: np.random.Generator | None = None,
    final: bool = True,
    drop_last: bool = False,
    cell_buckets: np.ndarray | None = None,
) -> tuple[list[list[Rows]], Rows, Rows]:
    """Plan the batches of one window of cuts (the whole epoch when nothing is streamed).

    Args:
        cells: ``(N,)`` cell of each row, in roll-over order
            (:meth:`~suite.data.bucketing.Buckets.assign`).
        cost: ``(N,)`` effective seconds per batch slot (:func:`padded_cost`).
        tokens: ``(N,)`` output tokens, or ``None``.
        num_cells: C.
        budget: the batch budget.
        world_size: W; batches come in groups of W from the same cell, one per rank.
        rng: shuffles rows inside each cell and the order of the groups; ``None`` keeps the
            input order inside cells and visits the cells from short to long.
        final: the last window of the epoch: left-over rows roll over from cell to cell and are
            all placed at the end. Otherwise they are returned to join the next window.
        drop_last: drop the epoch's last rows instead of splitting them into smaller batches.
        cell_buckets: ``(C,)`` duration bucket of each cell
            (:meth:`~suite.data.bucketing.Buckets.cell_buckets`); by default every cell is its own
            bucket (1D).

    Returns:
        ``(groups, carry, dropped)``: each group is W arrays of rows (one batch per rank);
        ``carry`` are the rows for the next window; ``dropped`` the rows left out.
    """
    if cell_buckets is None:
        cell_buckets = np.arange(num_cells)
    order = np.arange(len(cells))
    if rng is not None:
        order = rng.permutation(len(cells))
    order = order[np.argsort(cells[order], kind="stable")]
    bounds = np.searchsorted(cells[order], np.arange(num_cells + 1), side="left")
    no_cap = np.iinfo(np.int64).max
    groups: list[list[Rows]] = []
    carried: list[Rows] = []
    rolling = order[:0]
    last_cap = no_cap
    for c in range(num_cells):
        members = order[bounds[c] : bounds[c + 1]]
        pool = np.concatenate([rolling, members]) if final else members
        if len(pool) == 0:
            continue
        if (
            rng is not None
            and len(rolling)
            and cell_buckets[cells[rolling]].min() < cell_buckets[c]
        ):
            # Cuts rolled over from a shorter duration bucket are mixed into this cell's first
            # group of batches (plus about W full batches of its own cuts), so that each batch
            # of that group has its longest cut in this duration bucket: ranks step on equal
            # lengths. Mixing them into only these batches pads fewer batches to their token
            # counts (2D). Inside a duration bucket they stay together at the front.
            per_batch = int(budget.max_cost / max(float(cost[members].max(initial=0.0)), 1e-9))
            head = len(rolling) + world_size * max(1, per_batch)
            pool[:head] = rng.permutation(pool[:head])
        cap = int(budget.caps[c]) if budget.caps is not None else no_cap
        last_cap = cap
        batches, rest = _batches_in_pool(pool, cost, tokens, budget, cap, flush=False)
        whole = len(batches) - len(batches) % world_size
        groups += [batches[i : i + world_size] for i in range(0, whole, world_size)]
        rest = np.concatenate([*batches[whole:], rest])
        if final:
            rolling = rest
        else:
            carried.append(rest)
    dropped = order[:0]
    if final and len(rolling):
        if drop_last:
            dropped = rolling
        else:
            tail, dropped = _finish(rolling, groups, cost, tokens, budget, last_cap, world_size)
            groups += tail
    if rng is not None:
        groups = [groups[i] for i in rng.permutation(len(groups))]
    carry = np.concatenate(carried) if carried else order[:0]
    return groups, carry, dropped


def search_batch_sizes(
    buckets: Buckets,
    fits: Callable[[float, int | None, int], bool],
    max_batch_size: int = 4096,
    tokens: Sequence[int] | None = None,
) -> list[int]:
    """The largest batch size per cell for which ``fits(duration, tokens, batch_size)`` holds.

    The search behind NeMo's OOMptimizer: for each cell, run a full training step on a batch of
    its longest shape, doubling the size until it fails, then bisect. ``fits`` runs the step and
    says whether it stayed under the memory cap (e.g. it catches a CUDA out-of-memory error and
    compares the peak allocated memory with the cap). It must be monotone in ``batch_size`` and
    in the shape: a longer or more-token batch of the same size never needs less memory.

    What differs from NeMo's: the shape order saves most probes. A cell no larger (in duration
    and tokens) than one already measured fits at least that cell's size; one no smaller fits
    at most that size. So each cell starts between those bounds, and first tries the size the
    next smaller cell allowed (often its answer too when bins are narrow), then that size
    scaled by the ratio of their durations.

    Args:
        buckets: the cells; each is probed at its upper duration edge.
        fits: the probe; ``tokens`` is ``None`` for 1D buckets unless ``tokens`` is given.
        max_batch_size: the search stops here.
        tokens: ``(C,)`` output tokens to probe each cell with (e.g. the longest transcript
            seen in it); by default the cell's token edge (2D) or ``None`` (1D).

    Returns:
        ``(C,)`` batch sizes in roll-over order, for the sampler's ``bucket_batch_size``.

    Raises:
        UserError: a cell cannot fit even one cut.
    """
    upper_d, upper_t = buckets.cell_edges()
    if tokens is not None:
        if len(tokens) != len(upper_d):
            raise UserError(
                f"tokens needs one count per cell ({len(upper_d)} cells), got {len(tokens)}"
            )
        upper_t = np.asarray(tokens, dtype=np.int64)
    sizes: list[int] = []
    for c, duration in enumerate(upper_d.tolist()):
        toks = None if upper_t is None else int(upper_t[c])
        # lo: a size known to fit (0: none yet); hi: a size known to fail (max + 1: none);
        # guess: the smallest size of the measured cells no larger than this one, the answer
        # when bins are narrow, and the duration of that cell.
        lo, hi, guess, guess_duration = 0, max_batch_size + 1, None, duration
        for k, size in enumerate(sizes):
            if upper_d[k] >= duration and (toks is None or upper_t[k] >= toks):
                lo = max(lo, size)
            if upper_d[k] <= duration and (toks is None or upper_t[k] <= toks):
                if guess is None or size < guess:
                    guess, guess_duration = size, float(upper_d[k])
                if size < max_batch_size:
                    hi = min(hi, size + 1)
        lo = min(lo, hi - 1)

        def probe(n: int, d: float = duration, t: int | None = toks) -> bool:
            return fits(d, t, n)

        if guess is not None and guess > lo:
            lo, hi = (guess, hi) if probe(guess) else (lo, guess)
            if hi == guess and hi - 1 > lo:
                # Activation memory grows about in proportion to the duration: the size scaled
                # down by the durations is the next best guess (often exact, else a lower
                # bound close to the answer when fixed memory does not scale).
                scaled = min(hi - 1, max(lo + 1, int(guess * guess_duration / duration)))
                lo, hi = (scaled, hi) if probe(scaled) else (lo, scaled)
        if lo == 0:
            if hi == 1 or not probe(1):
                what = f"{duration:.2f} s" + (f" and {toks} tokens" if toks is not None else "")
                raise UserError(
                    f"one cut of {what} does not fit under the memory cap even alone; raise "
                    "the cap, train a smaller model, or drop cuts this long (lower the last "
                    "duration bin and set data.sampler.too_long=drop)"
                )
            lo = 1
        while hi > max_batch_size and lo < max_batch_size:  # no failure seen yet: grow
            trial = min(2 * lo, max_batch_size)
            lo, hi = (trial, hi) if probe(trial) else (lo, trial)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if probe(mid) else (lo, mid)
        sizes.append(lo)
    return sizes
