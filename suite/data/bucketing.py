"""Length buckets for batching: bins estimated from data, and the cut lengths they sort.

Dims and units: N - cuts, K - duration buckets, J - token buckets inside one duration bucket,
C - cells (all (duration, token) buckets, C = K in 1D). Durations are seconds; token counts are
output tokens (a decoder's targets).

Why: careless batching spends about half of the compute on padding ("Training and Inference
Efficiency of Encoder-Decoder Speech Models", 2025). Like lhotse's
``DynamicBucketingSampler``, cuts of similar length are batched together; what differs here:
bins are equal-count quantiles of the data, and many of them (100 by default: buckets near the
mode are a small fraction of a second wide), optionally split again by token count (2D). The
2D cells are numbered in a snake order (tokens up, then down in the next duration bucket) so
that the planner's roll-over (:mod:`suite.data.planning`) lands among similar cuts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from lhotse.cut import Cut

from suite.errors import UserError
from suite.text import normalize_text


def _ascending(values: Iterable[float]) -> bool:
    return bool(np.all(np.diff(np.asarray(list(values), dtype=np.float64)) > 0))


@dataclass(frozen=True)
class Buckets:
    """Bucket edges: which cell a cut of a given duration (and token count) belongs to.

    Args:
        duration_bins: ascending upper edges in seconds; bucket ``k`` holds durations in
            ``(duration_bins[k-1], duration_bins[k]]`` (the first starts at 0). The last edge is
            the longest duration accepted; a longer cut is "too long" (see the sampler).
        token_bins: for 2D buckets, one ascending list of token-count upper edges per duration
            bucket; a cut with more tokens than a bucket's last edge goes to its last cell.
    """

    duration_bins: tuple[float, ...]
    token_bins: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        bins = [float(b) for b in self.duration_bins]
        if not bins or bins[0] <= 0 or not _ascending(bins):
            raise UserError(
                f"duration_bins must be positive and strictly ascending seconds, got {bins}; "
                "estimate them with `suite data estimate-buckets MANIFEST`"
            )
        object.__setattr__(self, "duration_bins", tuple(bins))
        if self.token_bins is not None:
            tokens = tuple(tuple(int(t) for t in row) for row in self.token_bins)
            if len(tokens) != len(bins) or any(not row or not _ascending(row) for row in tokens):
                raise UserError(
                    f"token_bins needs one non-empty ascending list per duration bucket "
                    f"({len(bins)} buckets), got {len(tokens)} lists: {tokens}"
                )
            object.__setattr__(self, "token_bins", tokens)

    @property
    def num_cells(self) -> int:
        """C: the number of (duration, token) cells."""
        if self.token_bins is None:
            return len(self.duration_bins)
        return sum(len(row) for row in self.token_bins)

    def cell_edges(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Upper edges of each cell in roll-over order: ``(C,)`` seconds and ``(C,)`` tokens."""
        if self.token_bins is None:
            return np.asarray(self.duration_bins), None
        durations, tokens = [], []
        for k, row in enumerate(self.token_bins):
            order = row if k % 2 == 0 else row[::-1]  # snake order, see the module docstring
            durations += [self.duration_bins[k]] * len(row)
            tokens += list(order)
        return np.asarray(durations), np.asarray(tokens)

    def cell_buckets(self) -> np.ndarray:
        """``(C,)`` the duration bucket of each cell, in roll-over order."""
        if self.token_bins is None:
            return np.arange(len(self.duration_bins))
        return np.repeat(np.arange(len(self.duration_bins)), [len(r) for r in self.token_bins])

    def assign(self, durations: np.ndarray, tokens: np.ndarray | None = None) -> np.ndarray:
        """Cell of each cut, numbered in roll-over order.

        Args:
            durations: ``(N,)`` seconds.
            tokens: ``(N,)`` output-token counts; required for 2D buckets.

        Returns:
            ``(N,)`` int64 cells in ``[0, C)``; ``-1`` marks a cut longer than the last bin.
        """
        durations = np.asarray(durations, dtype=np.float64)
        bucket = np.searchsorted(np.asarray(self.duration_bins), durations, side="left")
        too_long = bucket >= len(self.duration_bins)
        if self.token_bins is None:
            return np.where(too_long, -1, bucket).astype(np.int64)
        if tokens is None:
            raise UserError("2D buckets (token_bins) need the token count of every cut")
        tokens = np.asarray(tokens)
        sizes = np.array([len(row) for row in self.token_bins])
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        cells = np.full(len(durations), -1, dtype=np.int64)
        for k, row in enumerate(self.token_bins):
            mask = bucket == k
            j = np.searchsorted(np.asarray(row), tokens[mask], side="left")
            j = np.minimum(j, len(row) - 1)  # more tokens than the last edge: the last cell
            if k % 2 == 1:
                j = len(row) - 1 - j
            cells[mask] = offsets[k] + j
        return cells

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a recipe's ``data.sampler`` section."""
        out: dict[str, Any] = {"duration_bins": list(self.duration_bins)}
        if self.token_bins is not None:
            out["token_bins"] = [list(row) for row in self.token_bins]
        return out


def _ceil_ms(seconds: float) -> float:
    # Edges are rounded up to the millisecond so the YAML reads well and no cut changes side
    # of its own bucket's upper edge.
    return math.ceil(round(seconds * 1000, 6)) / 1000


def _quantile_edges(values: np.ndarray, num: int) -> np.ndarray:
    """Up to ``num`` ascending upper edges holding equal counts of ``values``; ties merge bins."""
    levels = np.arange(1, num + 1) / num
    return np.unique(np.quantile(values, levels, method="inverted_cdf"))


def estimate_bins(
    durations: np.ndarray,
    num_buckets: int,
    tokens: np.ndarray | None = None,
    num_token_buckets: int | None = None,
    duration_bins: Iterable[float] | None = None,
) -> Buckets:
    """Equal-count bins from length arrays (see :func:`estimate_buckets`).

    Args:
        durations: ``(N,)`` seconds.
        num_buckets: K, the number of duration buckets (fewer when durations tie).
        tokens: ``(N,)`` output-token counts, for 2D buckets.
        num_token_buckets: J, token buckets per duration bucket; ``None`` gives 1D buckets.
        duration_bins: keep these duration edges and estimate only the token edges.

    Returns:
        The buckets; the last duration edge is the longest duration seen.
    """
    durations = np.asarray(durations, dtype=np.float64)
    if len(durations) == 0:
        raise UserError("cannot estimate buckets from an empty cut set")
    if num_buckets < 1:
        raise UserError(f"num_buckets must be at least 1, got {num_buckets}")
    if duration_bins is not None:
        edges = np.asarray(Buckets(tuple(duration_bins)).duration_bins)
    else:
        edges = np.unique([_ceil_ms(e) for e in _quantile_edges(durations, num_buckets)])
    if num_token_buckets is None:
        return Buckets(tuple(edges))
    if tokens is None:
        raise UserError("2D buckets need token counts; pass a tokenizer or count_tokens")
    if num_token_buckets < 1:
        raise UserError(f"num_token_buckets must be at least 1, got {num_token_buckets}")
    tokens = np.asarray(tokens)
    bucket = np.searchsorted(edges, durations, side="left")
    token_bins = []
    for k in range(len(edges)):
        inside = tokens[bucket == k]
        row = _quantile_edges(inside, num_token_buckets) if len(inside) else np.array([1])
        token_bins.append(tuple(int(t) for t in row))
    return Buckets(tuple(edges), tuple(token_bins))


class TokenCounter:
    """Counts a cut's output tokens as the ASR dataset makes them (its supervisions' texts
    joined and normalized, then encoded). A class rather than a closure so samplers pickle.

    Args:
        tokenizer: has ``encode(text) -> list[int]``.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, cut: Cut) -> int:
        texts = [s.text or "" for s in sorted(cut.supervisions, key=lambda s: s.start)]
        return len(self.tokenizer.encode(normalize_text(" ".join(texts))))


def token_counter(tokenizer: Any) -> Callable[[Cut], int]:
    """A :class:`TokenCounter` for ``tokenizer``."""
    return TokenCounter(tokenizer)


def cut_lengths(
    cuts: Iterable[Cut], count_tokens: Callable[[Cut], int] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(N,)`` durations in seconds and, with ``count_tokens``, ``(N,)`` token counts."""
    durations, tokens = [], []
    for cut in cuts:
        durations.append(cut.duration)
        if count_tokens is not None:
            tokens.append(count_tokens(cut))
    token_array = np.asarray(tokens, dtype=np.int64) if count_tokens is not None else None
    return np.asarray(durations, dtype=np.float64), token_array


def estimate_buckets(
    cuts: Iterable[Cut],
    num_buckets: int = 100,
    num_token_buckets: int | None = None,
    tokenizer: Any = None,
    count_tokens: Callable[[Cut], int] | None = None,
) -> Buckets:
    """Estimate bucket edges from a cut set (lazy manifests are read once).

    1D buckets split the durations into ``num_buckets`` equal-count bins. 2D buckets then split
    each duration bucket into ``num_token_buckets`` equal-count bins of output tokens, counted
    with ``tokenizer`` (as the ASR dataset tokenizes) or with ``count_tokens(cut)``.

    Args:
        cuts: the cuts (any iterable of lhotse cuts).
        num_buckets: K, duration buckets (fewer when many durations tie).
        num_token_buckets: J, token buckets per duration bucket; ``None`` for 1D.
        tokenizer: has ``encode(text) -> list[int]``; used when ``count_tokens`` is not given.
        count_tokens: the number of output tokens of a cut.

    Returns:
        The buckets; ``Buckets.to_dict()`` is what a recipe's ``data.sampler`` takes.

    Example::

        >>> buckets = estimate_buckets(CutSet.from_file("cuts.jsonl.gz"), num_buckets=100)
        >>> buckets.duration_bins[-1]  # the longest cut, in seconds
    """
    if count_tokens is None and tokenizer is not None:
        count_tokens = token_counter(tokenizer)
    if num_token_buckets is not None and count_tokens is None:
        raise UserError("2D buckets (num_token_buckets) need a tokenizer or count_tokens")
    durations, tokens = cut_lengths(cuts, count_tokens if num_token_buckets else None)
    return estimate_bins(durations, num_buckets, tokens, num_token_buckets)


def buckets_yaml(
    buckets: Buckets,
    max_duration: float | None = None,
    quadratic_duration: float | None = None,
) -> str:
    """The ``data.sampler`` section selecting these buckets, to paste into a recipe.

    With ``max_duration``, a comment lists the batch size each cell can always afford
    (:func:`~suite.data.planning.bucket_batch_sizes`); the sampler fills each batch to the budget
    by itself.
    """
    import yaml

    from suite.data.planning import bucket_batch_sizes  # planning imports this module

    spec: dict[str, Any] = {"name": "suite_bucketing", **buckets.to_dict()}
    if quadratic_duration is not None:
        spec["quadratic_duration"] = quadratic_duration
    text = yaml.safe_dump({"data": {"sampler": spec}}, default_flow_style=None, sort_keys=False)
    if max_duration is not None:
        sizes = bucket_batch_sizes(buckets, max_duration, quadratic_duration)
        text += f"# smallest batch per cell at data.max_duration={max_duration}: {sizes}\n"
    return text


def estimate_manifest_buckets(
    manifest: str,
    num_buckets: int = 100,
    num_token_buckets: int | None = None,
    tokenizer_dir: str | None = None,
    max_duration: float | None = None,
    quadratic_duration: float | None = None,
) -> str:
    """``suite data estimate-buckets``: the YAML of a manifest's bins (see :func:`buckets_yaml`)."""
    from pathlib import Path

    from lhotse import CutSet

    if not Path(manifest).is_file():
        raise UserError(f"manifest {manifest} does not exist; pass a lhotse cuts .jsonl.gz")
    tokenizer = None
    if num_token_buckets is not None:
        if tokenizer_dir is None:
            raise UserError(
                "--token-buckets counts output tokens; pass --tokenizer DIR (a run's tokenizer/ "
                "folder), or leave the token bins to the sampler, which estimates them at start"
            )
        from suite.tokenizers import load_tokenizer

        tokenizer = load_tokenizer(tokenizer_dir)
    cuts = CutSet.from_file(manifest)  # lazy for .jsonl(.gz): read once, never held
    buckets = estimate_buckets(cuts, num_buckets, num_token_buckets, tokenizer=tokenizer)
    return buckets_yaml(buckets, max_duration, quadratic_duration)
