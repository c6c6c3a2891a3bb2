"""RNN-T head: a prediction network, a joiner, the transducer loss, greedy and beam search.

Implements the RNN Transducer (Graves, 2012, "Sequence Transduction with Recurrent Neural
Networks") on top of any encoder, with parts laid out as in icefall's transducer
(``decoder.py`` + ``joiner.py``):

- predictor: ``"lstm"`` (embedding + 1-layer LSTM, the classic prediction network) or
  ``"stateless"`` (icefall's stateless decoder, after Ghodsi et al., 2020, "RNN-Transducer with
  Stateless Prediction Network": an embedding of the last ``context_size`` tokens mixed by a
  Conv1d, then ReLU; icefall's conv has groups of 4 channels, here it is depthwise). The blank
  starts every sequence, as in icefall and torchaudio.
- joiner: encoder and predictor outputs projected to ``joint_dim``, added, ``tanh``, a linear
  layer to the vocabulary.

Loss: ``torchaudio.functional.rnnt_loss`` on fp32 logits (autocast is off in the predictor and
the joiner). The ``(B, T, U+1, V)`` logits are the memory peak of transducer training; with
``max_joint_elements`` set, the batch is split into runs of consecutive utterances (each trimmed
to its own longest frames and targets) whose logits hold at most that many elements, and each
run is recomputed in backward (activation checkpointing), so only one run's joint tensors
(logits, their gradient inside ``rnnt_loss``, the ``(b, T, U+1, J)`` tanh) live at a time. Loss
and gradients equal those of the whole batch at once; the price is a second joiner forward.

Decoding (``RnntHead.decode``):

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

Dims legend: B - batch, T - encoder frames, D - encoder width, U - target tokens, V - vocabulary
(incl. blank), P - predictor width, J - joint width, K - beam hypotheses, C - stateless context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torchaudio.functional import rnnt_loss

from suite.interfaces import (
    Batch,
    EncoderOutput,
    Head,
    Hypothesis,
    check_encoder_output,
    checked_targets,
    partial_hypotheses,
    with_text,
)
from suite.registry import register_head

PREDICTORS = ("lstm", "stateless")
# Joiner rows per pass of batched greedy search, shared out among the streams still decoding
# (see _window_frames), and the most frames one stream looks at per pass. For B=32, J=V=256 on
# CPU (`suite bench decoding`): 96 rows (3 frames each) beat 64, 80, 128 and 160; a cap of 8 or
# 32 frames made no difference there (it bounds the rows a lone stream wastes after a label).
ROWS_PER_PASS = 96
MAX_FRAMES_PER_PASS = 16


class LstmPredictor(nn.Module):
    """Embedding + 1-layer LSTM over the labels emitted so far.

    Args:
        vocab_size: V, input tokens (the blank is the start symbol).
        dim: P, embedding and LSTM width.
    """

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.lstm = nn.LSTM(dim, dim, batch_first=True)

    def forward(self, tokens: Tensor) -> Tensor:
        """``(B, U+1)`` tokens (blank first) -> ``(B, U+1, P)`` outputs, teacher-forced."""
        return self.lstm(self.embed(tokens))[0]

    def initial_state(self, batch_size: int, device: Any = None) -> list[Tensor]:
        """Zero hidden and cell states, each ``(B, P)``, before the start symbol."""
        h = self.embed.weight.new_zeros(batch_size, self.lstm.hidden_size, device=device)
        return [h, h.clone()]

    def step(
        self, tokens: Tensor, state: list[Tensor], table: Tensor | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """Feed one token per item: ``(B,)`` -> output ``(B, P)`` and the new ``[h, c]``
        (``table``: :meth:`input_table`, computed once per decode; else computed here)."""
        # The LSTM cell written out on nn.LSTM's weights: one-step nn.LSTM calls took 2-3 ms on
        # one CPU thread whatever B (torch 2.14), 4-10x this cell, and decoding makes one per label.
        h, c = state
        lstm = self.lstm
        if table is None:
            bias = lstm.bias_ih_l0 + lstm.bias_hh_l0
            inputs = F.linear(self.embed(tokens), lstm.weight_ih_l0, bias)
        else:
            inputs = table.index_select(0, tokens)
        gates = torch.addmm(inputs, h, lstm.weight_hh_l0.t())  # (B, 4P), both biases in inputs
        # nn.LSTM's gate order i, f, g, o. One sigmoid over all four gates (g's part unused) costs
        # less than three over the strided i, f and o columns.
        i, f, _, o = gates.sigmoid().chunk(4, dim=1)
        g = gates[:, 2 * h.shape[1] : 3 * h.shape[1]].tanh()
        c = torch.addcmul(f * c, i, g)
        h = o * c.tanh()
        return h, [h, c]

    def input_table(self) -> Tensor:
        """The LSTM's input gates of every token with both of its biases, ``(V, 4P)``: a decoder
        computes them once and passes them to each :meth:`step`, which then indexes instead of
        embedding and multiplying: one matmul of two per label (batched greedy search of
        ``suite bench decoding`` on 1 thread: 261 instead of 315 ms; the per-utterance loop
        gains too)."""
        lstm = self.lstm
        return F.linear(self.embed.weight, lstm.weight_ih_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0)


class StatelessPredictor(nn.Module):
    """icefall's stateless decoder: the last ``context_size`` tokens, embedded and mixed.

    Args:
        vocab_size: V, input tokens (the blank is the start symbol and the left padding).
        dim: P, embedding width.
        context_size: C, tokens seen (2 is a bigram model of the labels).
        blank_id: pads the context before the first tokens.
    """

    def __init__(self, vocab_size: int, dim: int, context_size: int, blank_id: int) -> None:
        super().__init__()
        if context_size < 1:
            raise ValueError(f"context_size must be >= 1, got {context_size}")
        self.context_size = context_size
        self.blank_id = blank_id
        self.embed = nn.Embedding(vocab_size, dim)
        # Depthwise and without bias: icefall's uses groups of 4 channels; either keeps it cheap.
        self.conv = nn.Conv1d(dim, dim, kernel_size=context_size, groups=dim, bias=False)

    def _mix(self, tokens: Tensor) -> Tensor:
        """``(B, L)`` tokens -> ``(B, L - C + 1, P)``: one output per full window of C tokens."""
        x = self.embed(tokens).transpose(1, 2)  # (B, P, L): Conv1d's layout, internal only
        return F.relu(self.conv(x)).transpose(1, 2)

    def forward(self, tokens: Tensor) -> Tensor:
        """``(B, U+1)`` tokens (blank first) -> ``(B, U+1, P)`` outputs."""
        return self._mix(F.pad(tokens, (self.context_size - 1, 0), value=self.blank_id))

    def initial_state(self, batch_size: int, device: Any = None) -> list[Tensor]:
        """The context before the start symbol: ``(B, C)`` int64 blanks."""
        device = self.embed.weight.device if device is None else device
        shape = (batch_size, self.context_size)
        return [torch.full(shape, self.blank_id, dtype=torch.long, device=device)]

    def input_table(self) -> None:
        """Nothing to precompute (the LSTM predictor's counterpart)."""
        return None

    def step(
        self, tokens: Tensor, state: list[Tensor], table: None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """Feed one token per item: ``(B,)`` -> output ``(B, P)`` and the new ``[context]``."""
        context = torch.cat([state[0][:, 1:], tokens[:, None]], dim=1)  # (B, C)
        return self._mix(context)[:, 0], [context]


class Joiner(nn.Module):
    """``tanh(enc_proj(e) + pred_proj(p))`` to ``V`` logits; callers project once, join often.

    Args:
        input_dim: D, encoder width.
        pred_dim: P, predictor width.
        joint_dim: J, width of the joint space.
        vocab_size: V, output classes including the blank.
    """

    def __init__(self, input_dim: int, pred_dim: int, joint_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.enc_proj = nn.Linear(input_dim, joint_dim)
        self.pred_proj = nn.Linear(pred_dim, joint_dim)
        self.out = nn.Linear(joint_dim, vocab_size)

    def forward(self, enc: Tensor, pred: Tensor) -> Tensor:
        """Logits ``(..., V)`` of projected ``enc (..., J)`` and ``pred (..., J)``, broadcast."""
        return self.out(torch.tanh(enc + pred))


def sub_batches(
    lengths: list[int], target_lengths: list[int], vocab_size: int, max_elements: int | None
) -> list[tuple[int, int]]:
    """Split a batch into runs ``[start, stop)`` whose joint logits fit in ``max_elements``.

    A run of consecutive items is trimmed to its longest item, so it costs
    ``(stop - start) * max(T) * (max(U) + 1) * V`` elements. Runs grow greedily; an item that is
    over the limit alone gets a run of its own. ``None`` keeps the whole batch in one run.
    """
    B = len(lengths)
    if max_elements is None:
        return [(0, B)] if B else []
    spans: list[tuple[int, int]] = []
    start, T, U = 0, 0, 0
    for b in range(B):
        T2, U2 = max(T, lengths[b]), max(U, target_lengths[b])
        if b > start and (b + 1 - start) * T2 * (U2 + 1) * vocab_size > max_elements:
            spans.append((start, b))
            start, T2, U2 = b, lengths[b], target_lengths[b]
        T, U = T2, U2
    if B:
        spans.append((start, B))
    return spans


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
                s = _logaddexp(merged[tokens][0], s)
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


def _logaddexp(a: float, b: float) -> float:
    """``log(exp(a) + exp(b))`` on finite Python floats."""
    hi, lo = (a, b) if a > b else (b, a)
    return hi + math.log1p(math.exp(lo - hi))


@register_head(
    "rnnt",
    presets={
        "tiny": {"pred_dim": 32, "joint_dim": 32},
        "small": {"pred_dim": 256, "joint_dim": 256},
    },
)
class RnntHead(Head):
    """Prediction network + joiner trained with the RNN-T loss.

    Args:
        input_dim: D, width of the encoder features.
        vocab_size: V, output classes including the blank.
        blank_id: index of the blank (0 in every suite tokenizer); also the start symbol.
        predictor: ``"lstm"`` (embedding + 1-layer LSTM) or ``"stateless"`` (icefall's).
        pred_dim: P, predictor width.
        joint_dim: J, joiner width.
        context_size: C, tokens the ``"stateless"`` predictor sees (unused by ``"lstm"``).
        max_joint_elements: if set, the loss runs over sub-batches whose ``(b, T, U+1, V)``
            logits hold at most this many elements, recomputed in backward (see the module
            docstring); ``None`` joins the whole batch at once.
    """

    allows_packing = True  # the transducer aligns across the join of packed utterances

    def __init__(
        self,
        input_dim: int,
        vocab_size: int,
        blank_id: int = 0,
        predictor: str = "lstm",
        pred_dim: int = 512,
        joint_dim: int = 512,
        context_size: int = 2,
        max_joint_elements: int | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= blank_id < vocab_size:
            raise ValueError(f"blank_id must be in [0, {vocab_size}), got {blank_id}")
        if max_joint_elements is not None and max_joint_elements < 1:
            raise ValueError(
                f"max_joint_elements must be a positive element count or None (whole batch), "
                f"got {max_joint_elements}"
            )
        self.input_dim = input_dim
        self.vocab_size = vocab_size
        self.blank_id = blank_id
        self.max_joint_elements = max_joint_elements
        if predictor == "lstm":
            self.predictor: nn.Module = LstmPredictor(vocab_size, pred_dim)
        elif predictor == "stateless":
            self.predictor = StatelessPredictor(vocab_size, pred_dim, context_size, blank_id)
        else:
            raise ValueError(f"unknown RNN-T predictor '{predictor}'; use one of {PREDICTORS}")
        self.joiner = Joiner(input_dim, pred_dim, joint_dim, vocab_size)

    def check_encoder_output(self, enc: EncoderOutput) -> None:
        """Raise a teaching error unless ``enc`` is ``(B, T, input_dim)`` with valid lengths."""
        check_encoder_output(enc, self.input_dim, "the RNN-T head")

    def _nll(
        self,
        features: Tensor,
        lengths: Tensor,
        pred: Tensor,
        targets: Tensor,
        target_lengths: Tensor,
    ) -> Tensor:
        """``(b,)`` transducer negative log-likelihoods, trimmed to this sub-batch's maxima."""
        T, U = int(lengths.max()), int(target_lengths.max())
        with torch.autocast(features.device.type, enabled=False):
            enc = self.joiner.enc_proj(features[:, :T].float())  # (b, T, J)
            prd = self.joiner.pred_proj(pred[:, : U + 1].float())  # (b, U+1, J)
            logits = self.joiner(enc[:, :, None], prd[:, None])  # (b, T, U+1, V)
            return rnnt_loss(
                logits,
                targets[:, :U].int(),
                lengths.int(),
                target_lengths.int(),
                blank=self.blank_id,
                reduction="none",
            )

    def loss(self, enc: EncoderOutput, batch: Batch) -> dict[str, Tensor]:
        """RNN-T loss of ``batch.targets`` under ``enc``.

        Reduction as in the CTC head: each utterance's negative log-likelihood is divided by
        its target length (at least 1), then averaged over the batch, so the loss reads as nats
        per token whatever the batch size or lengths, and sums with a CTC head's on one scale.

        Returns:
            ``{"loss": scalar}``.
        """
        self.check_encoder_output(enc)
        targets, target_lengths = checked_targets(batch, self.vocab_size, self.blank_id)
        lengths = enc.lengths.to(targets.device)
        if bool((lengths < 1).any()):
            raise ValueError(
                f"every utterance needs at least one encoder frame for the RNN-T loss, got "
                f"lengths {lengths.tolist()}; drop empty cuts before batching"
            )
        # The predictor runs in fp32 too: it is small next to the joint, and oneDNN has no
        # bf16 LSTM for CPU autocast.
        with torch.autocast(enc.features.device.type, enabled=False):
            pred = self.predictor(F.pad(targets, (1, 0), value=self.blank_id))  # (B, U+1, P)
        spans = sub_batches(
            lengths.tolist(), target_lengths.tolist(), self.vocab_size, self.max_joint_elements
        )
        if len(spans) == 1:
            nll = self._nll(enc.features, lengths, pred, targets, target_lengths)
        else:
            nll = torch.cat(
                [
                    checkpoint(
                        self._nll,
                        enc.features[a:b],
                        lengths[a:b],
                        pred[a:b],
                        targets[a:b],
                        target_lengths[a:b],
                        use_reentrant=False,
                    )
                    for a, b in spans
                ]
            )
        return {"loss": (nll / target_lengths.clamp(min=1)).mean()}

    @torch.no_grad()
    def decode(
        self,
        enc: EncoderOutput,
        method: str = "greedy",
        beam_size: int = 4,
        max_symbols_per_frame: int = 5,
        tokenizer: Any = None,
    ) -> list[Hypothesis]:
        """Decode every item of ``enc``.

        Args:
            enc: encoder output ``(B, T, D)`` with ``lengths (B,)``.
            method: ``"greedy"`` (label looping, batched) or ``"beam"`` (modified beam search,
                per utterance, one symbol per frame).
            beam_size: hypotheses kept per frame by ``"beam"``.
            max_symbols_per_frame: labels one frame may emit in ``"greedy"``.
            tokenizer: if given, ``Hypothesis.text`` is ``tokenizer.decode(tokens)``.

        Returns:
            One :class:`Hypothesis` per item, in batch order.
        """
        if method == "greedy":
            hyps = greedy_search(self, enc, max_symbols_per_frame)
        elif method == "beam":
            self.check_encoder_output(enc)
            hyps = [
                modified_beam_search(self, enc.features[b, :n], beam_size)
                for b, n in enumerate(enc.lengths.tolist())
            ]
        else:
            raise ValueError(f"unknown RNN-T decoding method '{method}'; use 'greedy' or 'beam'")
        return with_text(hyps, tokenizer)

    @torch.no_grad()
    def init_stream(self, batch_size: int, device: Any = None) -> RnntStreamState:
        """The greedy decoding state of ``batch_size`` fresh streams (the start blank fed)."""
        device = self.joiner.out.weight.device if device is None else device
        start = torch.full((batch_size,), self.blank_id, dtype=torch.long, device=device)
        out, pred_state = self.predictor.step(
            start, self.predictor.initial_state(batch_size, device)
        )
        return RnntStreamState(
            pred_out=self.joiner.pred_proj(out),
            pred_state=pred_state,
            scores=torch.zeros(batch_size, device=device),
            tokens=[[] for _ in range(batch_size)],
        )

    @torch.no_grad()
    def streaming_decode(
        self,
        enc: EncoderOutput,
        state: RnntStreamState,
        tokenizer: Any = None,
        max_symbols_per_frame: int = 5,
    ) -> tuple[list[Hypothesis], RnntStreamState]:
        """Greedy-decode the next chunk of encoder frames of B streams.

        Args:
            enc: the chunk's encoder output ``(B, T, D)`` with ``lengths (B,)`` (``T`` may be 0).
            state: from :meth:`init_stream` or the previous call.
            tokenizer: if given, ``Hypothesis.text`` is ``tokenizer.decode(tokens)``.
            max_symbols_per_frame: labels one frame may emit.

        Returns:
            The partial hypothesis of every stream (everything decoded so far; it only grows)
            and the new state. After a stream's last chunk its hypothesis equals
            ``decode(enc_whole, method="greedy")``.
        """
        if enc.features.shape[1] > 0:
            state = greedy_search_step(self, enc, state, max_symbols_per_frame)
        return partial_hypotheses(state.tokens, state.scores, tokenizer), state
