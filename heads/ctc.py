"""CTC head: a linear projection to the vocabulary, the CTC loss, greedy and prefix beam search.

Implements Connectionist Temporal Classification (Graves et al., 2006) on top of any encoder,
with the CTC prefix beam search of Hannun et al. (2014, "First-Pass Large Vocabulary Continuous
Speech Recognition using Bi-Directional Recurrent DNNs"), without a language model.

Streaming: ``CtcHead.init_stream`` / ``CtcHead.streaming_decode`` run greedy decoding chunk by
chunk with a :class:`CtcStreamState` (the last frame's label, so a token whose run of frames spans
two chunks is emitted once). Partial hypotheses only grow, and after the last chunk they equal
:func:`greedy_search` over the whole encoder output.

Dims legend: B - batch, T - encoder frames, D - encoder width, V - vocabulary (incl. blank),
U - target tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from suite.interfaces import (
    Batch,
    EncoderOutput,
    Head,
    Hypothesis,
    partial_hypotheses,
    with_text,
)
from suite.registry import register_head

_NEG_INF = float("-inf")


def _logaddexp(a: float, b: float) -> float:
    """``log(exp(a) + exp(b))`` on Python floats, exact for ``-inf`` operands."""
    if a == _NEG_INF:
        return b
    if b == _NEG_INF:
        return a
    hi, lo = (a, b) if a > b else (b, a)
    return hi + math.log1p(math.exp(lo - hi))


def _add(
    beams: dict[tuple[int, ...], tuple[float, float]],
    prefix: tuple[int, ...],
    blank: float,
    nonblank: float,
) -> None:
    """Accumulate blank-ended / token-ended path mass into ``beams[prefix]``."""
    pb, pnb = beams.get(prefix, (_NEG_INF, _NEG_INF))
    beams[prefix] = (_logaddexp(pb, blank), _logaddexp(pnb, nonblank))


def greedy_search(log_probs: Tensor, lengths: Tensor, blank_id: int = 0) -> list[Hypothesis]:
    """Best-path decoding: per-frame argmax, collapse repeats, drop blanks (batched).

    Args:
        log_probs: ``(B, T, V)`` per-frame log-probabilities.
        lengths: ``(B,)`` valid frames.
        blank_id: index of the blank symbol.

    Returns:
        One :class:`Hypothesis` per item; ``score`` is the log-probability of the best path
        (the sum of the per-frame maxima), not of the label sequence.
    """
    B, T, _ = log_probs.shape
    best, ids = log_probs.max(dim=-1)  # (B, T) each
    valid = torch.arange(T, device=ids.device)[None, :] < lengths.to(ids.device)[:, None]
    prev = F.pad(ids, (1, 0), value=blank_id)[:, :-1]  # (B, T) previous frame's argmax
    keep = valid & (ids != blank_id) & (ids != prev)  # (B, T) first frame of each token run
    scores = best.masked_fill(~valid, 0.0).sum(dim=1).tolist()
    ids, keep = ids.cpu(), keep.cpu()
    return [Hypothesis(tokens=ids[b][keep[b]].tolist(), score=scores[b]) for b in range(B)]


@dataclass
class CtcStreamState:
    """Greedy CTC decoding state of B streams, carried from chunk to chunk.

    Attributes:
        last: ``(B,)`` int64 best label of each stream's latest frame (blank before the first),
            so a repeat continuing across a chunk boundary collapses as it would offline.
        scores: ``(B,)`` float32 sum of the per-frame maxima so far (the best-path score).
        tokens: per stream, the tokens emitted so far: the partial hypothesis.
    """

    last: Tensor
    scores: Tensor
    tokens: list[list[int]]


def greedy_search_step(
    log_probs: Tensor, lengths: Tensor, state: CtcStreamState, blank_id: int = 0
) -> CtcStreamState:
    """Extend greedy decoding of B streams by one chunk of frames.

    Args:
        log_probs: ``(B, T, V)`` log-probabilities of each stream's new frames.
        lengths: ``(B,)`` valid new frames per stream (0 leaves a stream unchanged).
        state: from :meth:`CtcHead.init_stream` or the previous step.
        blank_id: index of the blank symbol.

    Returns:
        The new state; its ``tokens`` extend the old ones (new lists, the old are untouched).
    """
    B, T, _ = log_probs.shape
    lengths = lengths.to(log_probs.device)
    best, ids = log_probs.max(dim=-1)  # (B, T) each
    valid = torch.arange(T, device=ids.device)[None, :] < lengths[:, None]
    prev = torch.cat([state.last.to(ids.device)[:, None], ids[:, :-1]], dim=1)  # (B, T)
    keep = valid & (ids != blank_id) & (ids != prev)  # first frame of each new token run
    last_index = (lengths - 1).clamp(min=0)[:, None]
    last = torch.where(lengths > 0, ids.gather(1, last_index)[:, 0], state.last.to(ids.device))
    scores = state.scores.to(best.device) + best.masked_fill(~valid, 0.0).sum(dim=1)
    ids, keep = ids.cpu(), keep.cpu()
    tokens = [state.tokens[b] + ids[b][keep[b]].tolist() for b in range(B)]
    return CtcStreamState(last=last, scores=scores, tokens=tokens)


def prefix_beam_search(log_probs: Tensor, blank_id: int = 0, beam_size: int = 8) -> Hypothesis:
    """CTC prefix beam search over one utterance, in log space.

    Each prefix keeps two scores: the log-probability of all alignments of it that end in a
    blank (``pb``) and that end in its last token (``pnb``). Alignments that collapse to the
    same prefix are summed, so ``score`` is the (beam-pruned) label-sequence log-probability.
    Per frame only the ``beam_size`` most likely tokens are tried as extensions.

    Args:
        log_probs: ``(T, V)`` valid frames only.
        blank_id: index of the blank symbol.
        beam_size: prefixes kept after each frame.

    Returns:
        The most probable prefix as a :class:`Hypothesis` with its log-probability.
    """
    T, V = log_probs.shape
    top = min(beam_size, V)
    candidates = log_probs.topk(top, dim=-1).indices.tolist()  # (T, top)
    frames = log_probs.tolist()
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, _NEG_INF)}
    for t in range(T):
        lp = frames[t]
        tokens = [c for c in candidates[t] if c != blank_id]
        nxt: dict[tuple[int, ...], tuple[float, float]] = {}
        for prefix, (pb, pnb) in beams.items():
            total = _logaddexp(pb, pnb)
            _add(nxt, prefix, total + lp[blank_id], _NEG_INF)  # blank: prefix unchanged
            for c in tokens:
                if prefix and c == prefix[-1]:
                    # A repeat without a blank in between merges into the same token...
                    _add(nxt, prefix, _NEG_INF, pnb + lp[c])
                    # ...and only a blank-ended path can start a second, separate token.
                    _add(nxt, prefix + (c,), _NEG_INF, pb + lp[c])
                else:
                    _add(nxt, prefix + (c,), _NEG_INF, total + lp[c])
        ranked = sorted(nxt.items(), key=lambda kv: _logaddexp(*kv[1]), reverse=True)
        beams = dict(ranked[:beam_size])
    prefix, (pb, pnb) = max(beams.items(), key=lambda kv: _logaddexp(*kv[1]))
    return Hypothesis(tokens=list(prefix), score=_logaddexp(pb, pnb))


@register_head("ctc")
class CtcHead(Head):
    """Linear projection to ``vocab_size`` classes trained with CTC.

    Args:
        input_dim: D, width of the encoder features.
        vocab_size: V, output classes including the blank.
        blank_id: index of the blank (0 in every suite tokenizer).
    """

    allows_packing = True  # CTC aligns across the join of packed utterances like a pause

    def __init__(self, input_dim: int, vocab_size: int, blank_id: int = 0):
        super().__init__()
        if not 0 <= blank_id < vocab_size:
            raise ValueError(f"blank_id must be in [0, {vocab_size}), got {blank_id}")
        self.vocab_size = vocab_size
        self.blank_id = blank_id
        self.proj = nn.Linear(input_dim, vocab_size)

    def log_probs(self, enc: EncoderOutput) -> Tensor:
        """``(B, T, V)`` per-frame log-probabilities, in fp32 even under autocast."""
        return F.log_softmax(self.proj(enc.features).float(), dim=-1)

    def loss(self, enc: EncoderOutput, batch: Batch) -> dict[str, Tensor]:
        """CTC loss of ``batch.targets`` under ``enc``.

        Reduction: each utterance's negative log-likelihood is divided by its target length,
        then averaged over the batch (torch's ``reduction="mean"``). The loss then reads as
        nats per token whatever the batch size or utterance lengths, so a learning rate
        transfers across bucket sizes; ``zero_infinity`` drops utterances whose targets
        cannot fit in their frames instead of poisoning the batch with ``inf``.

        Returns:
            ``{"loss": scalar}``.
        """
        log_probs = self.log_probs(enc)  # (B, T, V)
        loss = F.ctc_loss(
            log_probs.transpose(0, 1),  # (T, B, V): the layout ctc_loss requires, internal only
            batch.targets,
            enc.lengths,
            batch.target_lengths,
            blank=self.blank_id,
            reduction="mean",
            zero_infinity=True,
        )
        return {"loss": loss}

    @torch.no_grad()
    def decode(
        self,
        enc: EncoderOutput,
        method: str = "greedy",
        beam_size: int = 8,
        tokenizer: Any = None,
    ) -> list[Hypothesis]:
        """Decode every item of ``enc``.

        Args:
            enc: encoder output ``(B, T, D)`` with ``lengths (B,)``.
            method: ``"greedy"`` (best path, batched) or ``"beam"`` (prefix beam search).
            beam_size: prefixes kept per frame by ``"beam"``.
            tokenizer: if given, ``Hypothesis.text`` is ``tokenizer.decode(tokens)``.

        Returns:
            One :class:`Hypothesis` per item, in batch order.
        """
        log_probs = self.log_probs(enc)  # (B, T, V)
        if method == "greedy":
            hyps = greedy_search(log_probs, enc.lengths, self.blank_id)
        elif method == "beam":
            lengths = enc.lengths.tolist()
            log_probs = log_probs.cpu()
            hyps = [
                prefix_beam_search(log_probs[b, : lengths[b]], self.blank_id, beam_size)
                for b in range(len(lengths))
            ]
        else:
            raise ValueError(f"unknown CTC decoding method '{method}'; use 'greedy' or 'beam'")
        return with_text(hyps, tokenizer)

    def init_stream(self, batch_size: int, device: Any = None) -> CtcStreamState:
        """The greedy decoding state of ``batch_size`` fresh streams."""
        device = self.proj.weight.device if device is None else device
        return CtcStreamState(
            last=torch.full((batch_size,), self.blank_id, dtype=torch.long, device=device),
            scores=torch.zeros(batch_size, device=device),
            tokens=[[] for _ in range(batch_size)],
        )

    @torch.no_grad()
    def streaming_decode(
        self, enc: EncoderOutput, state: CtcStreamState, tokenizer: Any = None
    ) -> tuple[list[Hypothesis], CtcStreamState]:
        """Greedy-decode the next chunk of encoder frames of B streams.

        Args:
            enc: the chunk's encoder output ``(B, T, D)`` with ``lengths (B,)`` (``T`` may be 0).
            state: from :meth:`init_stream` or the previous call.
            tokenizer: if given, ``Hypothesis.text`` is ``tokenizer.decode(tokens)``.

        Returns:
            The partial hypothesis of every stream (everything decoded so far; it only grows)
            and the new state. After a stream's last chunk its hypothesis equals
            ``decode(enc_whole, method="greedy")``.
        """
        if enc.features.shape[1] > 0:
            state = greedy_search_step(self.log_probs(enc), enc.lengths, state, self.blank_id)
        return partial_hypotheses(state.tokens, state.scores, tokenizer), state
