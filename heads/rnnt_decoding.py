"""RNN-T decoding: batched label-looping greedy search (offline and streaming), beam search.

Searches of :class:`~suite.heads.rnnt.RnntHead` (``RnntHead.decode``):

- ``"greedy"``: label looping (Bataev et al., 2024, "Label-Looping: Highly Efficient Decoding
  for Transducers"), batched: while a stream emits no label its predictor output is fixed, so
  each pass joins every stream with its predictor output at its next few frames at once, the
  stream skips the blanks up to its first label there and takes it, and one predictor step
  serves the streams that took one. At most ``max_symbols_per_frame`` labels per frame; after
  that the frame is left without asking the joiner again (as icefall's ``greedy_search``). What
  differs from the paper (an outer loop over labels around an inner loop over frames, one frame
  per iteration for the whole batch): one loop, whose passes look ``ROWS_PER_PASS // streams``
  frames ahead (a pass has a fixed cost on CPU), and the streams still decoding are compacted
  when half of them have ended, so the longest utterances finish in small, far-looking passes.
  :func:`greedy_search_reference` is the same search one utterance and one frame at a time in
  plain Python: the baseline of tests and of ``suite bench decoding``.
- ``"beam"``: icefall's modified beam search, one utterance at a time: one symbol per frame at
  most (a label also moves to the next frame), hypotheses with equal tokens merged by summing
  their probabilities. With ``beam_size=1`` it is greedy search with ``max_symbols_per_frame=1``.

Streaming: ``RnntHead.init_stream`` / ``RnntHead.streaming_decode`` run the batched greedy search
chunk by chunk with an :class:`RnntStreamState` (predictor output and state after each stream's
last label, plus the partial hypothesis); after the last chunk the hypotheses equal greedy
decoding of the whole encoder output.

Dims legend: B - batch (streams), T - encoder frames, D - encoder width, V - vocabulary (incl.
blank), P - predictor width, J - joint width, K - beam hypotheses, C - stateless context,
N - streams still decoding, W - frames a pass looks at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from suite.heads.search import logaddexp
from suite.interfaces import EncoderOutput, Hypothesis, partial_hypotheses

if TYPE_CHECKING:
    from suite.heads.rnnt import RnntHead

# Joiner rows per pass of batched greedy search, shared out among the streams still decoding
# (see _window_frames), and the most frames one stream looks at per pass. The rows were tuned
# with `suite bench decoding`: fewer passes cost less, wider ones waste the rows past a label;
# the frame cap bounds the rows a lone stream wastes after a label.
ROWS_PER_PASS = 96
MAX_FRAMES_PER_PASS = 16


@dataclass
class RnntStreamState:
    """Greedy RNN-T decoding state of B streams, carried from chunk to chunk.

    Attributes:
        pred_out: ``(B, J)`` the predictor's output after each stream's last label (the start
            blank before the first), already projected by the joiner.
        pred_state: the predictor's state, one batch-first tensor per part: ``[h (B, P),
            c (B, P)]`` for ``"lstm"``, ``[context (B, C) int64]`` for ``"stateless"``.
        scores: ``(B,)`` float32 sum of the log-probabilities of every decision so far (labels
            and blanks): the score of the greedy alignment.
        tokens: per stream, the labels emitted so far: the partial hypothesis.
    """

    pred_out: Tensor
    pred_state: list[Tensor]
    scores: Tensor
    tokens: list[list[int]]


def _window_frames(streams: int, frames: int) -> int:
    """Frames each of ``streams`` streams looks at per pass (``ROWS_PER_PASS`` joiner rows
    shared out, at least 1, at most ``MAX_FRAMES_PER_PASS`` and the ``frames`` there are)."""
    return max(1, min(ROWS_PER_PASS // streams, MAX_FRAMES_PER_PASS, frames))


@torch.no_grad()
def greedy_search_step(
    head: RnntHead, enc: EncoderOutput, state: RnntStreamState, max_symbols_per_frame: int = 5
) -> RnntStreamState:
    """Batched label-looping greedy search over the frames of ``enc``, continuing ``state``.

    Each pass joins every stream still decoding with its predictor output at the next W
    frames (:func:`_window_frames`): while no label is emitted the predictor output is fixed,
    so those decisions do not depend on each other. A stream skips the blanks up to its first
    label in the window (or all W) and takes that label; one predictor step then serves the
    streams that took one. When half of the streams have ended, the rest are compacted (and
    look further ahead).

    Args:
        head: the RNN-T head whose predictor and joiner decode.
        enc: ``(B, T, D)`` encoder frames with ``lengths (B,)`` (0 leaves a stream unchanged).
        state: from :meth:`RnntHead.init_stream` or the previous step (not modified).
        max_symbols_per_frame: labels one frame may emit before decoding moves on.

    Returns:
        The new state; its ``tokens`` extend the old ones (new lists, the old are untouched).
    """
    if max_symbols_per_frame < 1:
        raise ValueError(f"max_symbols_per_frame must be >= 1, got {max_symbols_per_frame}")
    head.check_encoder_output(enc)
    frames = head.joiner.enc_proj(enc.features)  # (B, T, J)
    B, T, J = frames.shape
    device = frames.device
    widest = _window_frames(1, T)
    # Frame f of stream b is row b * T + f; the zero rows after the last let a window run past
    # the end without clamping (what lies past a stream's end is never taken).
    flat = torch.cat([frames.reshape(B * T, J), frames.new_zeros(widest, J)])
    ahead = torch.arange(widest, device=device)
    final = RnntStreamState(
        pred_out=state.pred_out.clone(),
        pred_state=[s.clone() for s in state.pred_state],
        scores=state.scores.clone(),
        tokens=[list(tok) for tok in state.tokens],
    )
    # The streams in the batch (all, then the unfinished ones) and their working copies, which
    # are the final tensors themselves until the first compaction; updated in place.
    ids = torch.arange(B, device=device)
    pos = ids * T  # (N,) flat row of each stream's current frame
    end = pos + enc.lengths.to(device, torch.long)
    emitted = torch.zeros_like(pos)  # labels emitted at the current frame
    pred, pred_state, scores = final.pred_out, final.pred_state, final.scores
    table = head.predictor.input_table()
    segments = []  # (ids, per pass: (N,) label and whether it was taken) per batch composition
    labels: list[tuple[Tensor, Tensor]] = []
    N = B
    while True:
        left = int((pos < end).sum())
        if left == 0:
            break
        if left <= N // 2:  # compact: write the batch back, keep the unfinished streams
            keep = (pos < end).nonzero()[:, 0]
            segments.append((ids, labels))
            labels = []
            _write_back(final, ids, pred, pred_state, scores)
            ids, pos, end, emitted = (x.index_select(0, keep) for x in (ids, pos, end, emitted))
            pred, scores = pred.index_select(0, keep), scores.index_select(0, keep)
            pred_state = [s.index_select(0, keep) for s in pred_state]
            N = left
        W = _window_frames(N, T)
        at = pos[:, None] + ahead[:W]  # (N, W)
        seen = flat.index_select(0, at.view(-1)).view(N, W, J)
        joint = head.joiner(seen, pred[:, None])
        best_w, label_w = joint.log_softmax(-1).max(dim=-1)  # (N, W) each
        stop = (label_w != head.blank_id) | (at >= end[:, None])  # a label or the end
        # torch.max gives the first maximal index: the first stop where there is one.
        stopped, hit = stop.max(dim=1)  # (N,) each
        first = torch.where(stopped, hit, W)  # (N,) blanks skipped
        pos += first
        take = stopped & (pos < end)  # a label, not the end
        taken = take.long()
        label = label_w.gather(1, hit[:, None])[:, 0]
        decided = ahead[:W] < (first + taken)[:, None]  # (N, W) the blanks and the label
        scores += torch.where(decided, best_w, 0.0).sum(1)
        emitted.masked_fill_(first > 0, 0)
        emitted += taken
        full = emitted >= max_symbols_per_frame
        pos += full.long()
        emitted.masked_fill_(full, 0)
        rows = take.nonzero()[:, 0]  # (A,)
        if not rows.numel():
            continue
        labels.append((label, take))
        if rows.numel() == N:  # every stream: no gathers and scatters
            out, new_state = head.predictor.step(label, pred_state, table)
            pred.copy_(head.joiner.pred_proj(out))
            for s, n in zip(pred_state, new_state, strict=True):
                s.copy_(n)
        else:
            out, new_state = head.predictor.step(
                label.index_select(0, rows), [s.index_select(0, rows) for s in pred_state], table
            )
            pred.index_copy_(0, rows, head.joiner.pred_proj(out))
            for s, n in zip(pred_state, new_state, strict=True):
                s.index_copy_(0, rows, n)
    segments.append((ids, labels))
    _write_back(final, ids, pred, pred_state, scores)
    for seg_ids, seg_labels in segments:
        if not seg_labels:
            continue
        label_table = torch.stack([lab for lab, _ in seg_labels], dim=1).cpu()  # (N, passes)
        take_table = torch.stack([t for _, t in seg_labels], dim=1).cpu()
        for i, b in enumerate(seg_ids.tolist()):
            final.tokens[b] += label_table[i][take_table[i]].tolist()
    return final


def _write_back(
    final: RnntStreamState, ids: Tensor, pred: Tensor, pred_state: list[Tensor], scores: Tensor
) -> None:
    """Copy the working tensors of streams ``ids`` into ``final`` (nothing to do before the
    first compaction: they are ``final``'s own)."""
    if pred is final.pred_out:
        return
    final.pred_out.index_copy_(0, ids, pred)
    final.scores.index_copy_(0, ids, scores)
    for s, w in zip(final.pred_state, pred_state, strict=True):
        s.index_copy_(0, ids, w)


def greedy_search(
    head: RnntHead, enc: EncoderOutput, max_symbols_per_frame: int = 5
) -> list[Hypothesis]:
    """Batched label-looping greedy search (see :func:`greedy_search_step`).

    Returns:
        One :class:`Hypothesis` per item; ``score`` is the log-probability of the greedy
        alignment (every label and blank decision), not of the label sequence.
    """
    fresh = head.init_stream(enc.features.shape[0], enc.features.device)
    state = greedy_search_step(head, enc, fresh, max_symbols_per_frame)
    return partial_hypotheses(state.tokens, state.scores)


@torch.no_grad()
def greedy_search_reference(
    head: RnntHead, enc: EncoderOutput, max_symbols_per_frame: int = 5
) -> list[Hypothesis]:
    """The same greedy search as :func:`greedy_search`, one utterance and one frame at a time.

    A plain Python loop (icefall's ``greedy_search``): the baseline that the batched search must
    match exactly and that ``suite bench decoding`` times it against.
    """
    head.check_encoder_output(enc)
    table = head.predictor.input_table()
    hyps = []
    for b, n in enumerate(enc.lengths.tolist()):
        frames = head.joiner.enc_proj(enc.features[b, :n])  # (T_b, J)
        start = head.init_stream(1, frames.device)
        pred, pred_state = start.pred_out, start.pred_state  # (1, J), batch of one
        tokens: list[int] = []
        score = 0.0
        for t in range(n):
            for _ in range(max_symbols_per_frame):
                best, label = head.joiner(frames[t : t + 1], pred).log_softmax(-1).max(dim=-1)
                score += float(best)
                if int(label) == head.blank_id:
                    break
                tokens.append(int(label))
                out, pred_state = head.predictor.step(label, pred_state, table)
                pred = head.joiner.pred_proj(out)
        hyps.append(Hypothesis(tokens=tokens, score=score))
    return hyps


@torch.no_grad()
def modified_beam_search(head: RnntHead, features: Tensor, beam_size: int = 4) -> Hypothesis:
    """icefall's modified beam search over one utterance: one symbol per frame at most.

    Per frame, every hypothesis is extended by the blank (same tokens) or by one label; the
    ``beam_size`` best extensions survive, and extensions with equal tokens are merged by summing
    their probabilities. Without pruning (a beam wider than all extensions) the result is the
    most probable label sequence under one-symbol-per-frame alignments, exactly.

    Args:
        head: the RNN-T head whose predictor and joiner decode.
        features: ``(T, D)`` valid encoder frames of the utterance.
        beam_size: extensions kept per frame.

    Returns:
        The best hypothesis, with the (beam-pruned) log-probability of its label sequence.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    frames = head.joiner.enc_proj(features)  # (T, J)
    start = head.init_stream(1, features.device)
    pred, pred_state = start.pred_out, start.pred_state  # (K, J) and (K, ...) with K = 1
    table = head.predictor.input_table()
    hyps: list[tuple[int, ...]] = [()]
    scores: list[float] = [0.0]
    for t in range(frames.shape[0]):
        log_probs = head.joiner(frames[t : t + 1], pred).log_softmax(-1)  # (K, V)
        V = log_probs.shape[-1]
        total = torch.tensor(scores, device=log_probs.device)[:, None] + log_probs  # (K, V)
        top = total.flatten().topk(min(beam_size, total.numel()))
        merged: dict[tuple[int, ...], tuple[float, int, int]] = {}  # tokens: score, parent, label
        for s, index in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            parent, label = divmod(index, V)
            tokens = hyps[parent] if label == head.blank_id else (*hyps[parent], label)
            if tokens in merged:
                s = logaddexp(merged[tokens][0], s)
                parent, label = merged[tokens][1:]
            merged[tokens] = (s, parent, label)
        hyps = list(merged)
        scores = [v[0] for v in merged.values()]
        parents = torch.tensor([v[1] for v in merged.values()], device=pred.device)
        labels = torch.tensor([v[2] for v in merged.values()], device=pred.device)
        pred, pred_state = pred[parents], [s[parents] for s in pred_state]
        emit = labels != head.blank_id
        if bool(emit.any()):
            out, new_state = head.predictor.step(labels[emit], [s[emit] for s in pred_state], table)
            pred[emit] = head.joiner.pred_proj(out)
            for s, n in zip(pred_state, new_state, strict=True):
                s[emit] = n
    best = max(range(len(hyps)), key=scores.__getitem__)
    return Hypothesis(tokens=list(hyps[best]), score=scores[best])
