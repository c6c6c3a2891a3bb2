"""Packing short utterances into one training example (``data.sampler.pack: true``).

Dims: N - cuts of a window, P - examples after packing (P <= N).

A packed example is a lhotse ``MixedCut`` whose tracks are its member cuts one after another
(no gap, no overlap). Its supervisions are the members' with shifted starts, so the ASR
dataset reads its transcript as the members' transcripts joined with a space, and loads its
audio as the members' audio concatenated. Only heads whose loss is a sequence loss over the
whole example allow it (CTC and RNN-T: the alignment runs through an utterance boundary as
through a pause); a head says so with ``Head.allows_packing``, and ``load_recipe`` refuses
``pack`` for a recipe with any other head.

Unlike packing with attention masks between the sequences ("Efficient Sequence Packing without
Cross-contamination", Krell et al., 2021), the encoder attends across the boundary: nothing to
mask, and for speech it is like two sentences read in a row.

Which cuts: those no longer than half of ``pack_duration`` (a longer one could not share an
example with a cut of its own length). They are placed best-fit in a seeded random order: each
cut goes into the open example whose free room fits it most tightly, or opens a new one. The
packing is drawn again every epoch from the sampler's ``(seed, epoch)`` generator, so a resumed
run replays it.
"""

from __future__ import annotations

import bisect

import numpy as np
from lhotse.cut import Cut, MixedCut
from lhotse.cut.mixed import MixTrack

from suite.errors import UserError

Rows = np.ndarray  # (n,) int64 row indices into a window's length arrays


def pack_rows(
    durations: np.ndarray,
    pack_duration: float,
    rng: np.random.Generator | None = None,
    tokens: np.ndarray | None = None,
    max_tokens: int | None = None,
) -> list[Rows]:
    """Group rows into examples of at most ``pack_duration`` seconds (see the module docstring).

    Args:
        durations: ``(N,)`` seconds.
        pack_duration: the longest packed example, in seconds.
        rng: the order in which short cuts are placed; ``None`` places them in input order.
        tokens: ``(N,)`` output tokens; with ``max_tokens``, an example's tokens (see
            :func:`packed_tokens`) stay within it.
        max_tokens: the most output tokens of one example.

    Returns:
        P arrays of rows, every row in exactly one; ordered by their first row in input order
        (a cut too long to pack is an array of its own row).
    """
    durations = np.asarray(durations, dtype=np.float64)
    short = np.flatnonzero(durations <= pack_duration / 2)
    order = short[rng.permutation(len(short))] if rng is not None else short
    smallest = float(durations[short].min()) if len(short) else 0.0
    packs: list[list[int]] = []
    used_tokens: list[int] = []
    rooms: list[tuple[float, int]] = []  # (free seconds, pack) of the open packs, ascending
    for row in order.tolist():
        need = float(durations[row])
        t = 0 if tokens is None else int(tokens[row])
        i = bisect.bisect_left(rooms, (need - 1e-9,))
        fits = i < len(rooms)
        if fits and max_tokens is not None:
            fits = used_tokens[rooms[i][1]] + 1 + t <= max_tokens  # + 1: the joining space
        if fits:
            room, p = rooms.pop(i)
            packs[p].append(row)
            used_tokens[p] += 1 + t
        else:
            room, p = pack_duration, len(packs)
            packs.append([row])
            used_tokens.append(t)
        if room - need >= smallest:  # a pack no cut can join again is closed
            bisect.insort(rooms, (room - need, p))
    units = [np.asarray(p, dtype=np.int64) for p in packs]
    units += [
        np.asarray([r], dtype=np.int64) for r in np.flatnonzero(durations > pack_duration / 2)
    ]
    units.sort(key=lambda rows: int(rows.min()))
    return units


def packed_lengths(
    durations: np.ndarray, tokens: np.ndarray | None, units: list[Rows]
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(P,)`` seconds and ``(P,)`` output tokens of each example.

    An example's tokens are its members' plus one per joining space: the transcripts are joined
    with a space, which is one token for a character tokenizer and none for a sentencepiece BPE
    (whose pieces start at a word), so this is an upper bound for both.
    """
    rows = np.concatenate(units)  # (N,) the rows, example after example
    sizes = np.asarray([len(u) for u in units])  # (P,)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    seconds = np.add.reduceat(np.asarray(durations, dtype=np.float64)[rows], starts)
    if tokens is None:
        return seconds, None
    return seconds, np.add.reduceat(np.asarray(tokens)[rows], starts) + sizes - 1


def pack_cut(cuts: list[Cut]) -> Cut:
    """One example of ``cuts`` one after another; a single cut is returned as it is.

    The id is the members' ids joined by ``+`` (deterministic, unlike lhotse's ``append``,
    which draws a random one).
    """
    if len(cuts) == 1:
        return cuts[0]
    tracks, offset = [], 0.0
    for cut in cuts:
        if isinstance(cut, MixedCut):
            raise UserError(
                f"data.sampler.pack joins single-recording cuts, but cut {cut.id} is already a "
                "MixedCut; turn packing off for this manifest"
            )
        tracks.append(MixTrack(cut=cut, offset=offset))
        offset += cut.duration
    return MixedCut(id="+".join(c.id for c in cuts), tracks=tracks)


def members(cut: Cut) -> list[Cut]:
    """The original cuts of an example yielded by a packing sampler (itself when not packed)."""
    if isinstance(cut, MixedCut):
        return [track.cut for track in cut.tracks]
    return [cut]
