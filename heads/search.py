"""Batched greedy and beam search over any next-token scorer (the AED and LLM-adapter heads').

Dims legend: B - utterances, K - beam, N - decoding rows (``B`` or ``B * K``), C - output classes.

The searches run the whole batch at once, never a Python loop over utterances:

- greedy: the argmax of every utterance at each step.
- beam: B utterances x K beams as ``B * K`` rows; each step keeps the top K of each utterance's
  ``K x C`` extensions. A hypothesis that emitted eos keeps its row with a frozen score (it
  extends only by eos, at no cost) until every row has ended. Pruning ranks log-probabilities;
  the final choice among an utterance's K hypotheses ranks ``log P / length ** length_penalty``
  (length normalization as in Whisper; ``length`` counts the tokens and the eos).
  ``Hypothesis.score`` is the log-probability itself, so beam search with ``beam_size=1`` gives
  greedy search's hypotheses and scores.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor

from suite.interfaces import Hypothesis

_NEG_INF = float("-inf")


def logaddexp(a: float, b: float) -> float:
    """``log(exp(a) + exp(b))`` on Python floats, exact for ``-inf`` operands."""
    if a == _NEG_INF:
        return b
    if b == _NEG_INF:
        return a
    hi, lo = (a, b) if a > b else (b, a)
    return hi + math.log1p(math.exp(lo - hi))


class Scorer(Protocol):
    """What the searches ask of a decoder: next-token log-probabilities of N rows.

    ``start`` returns ``(B, C)`` after each utterance's prompt; ``expand(rows)`` makes row ``i``
    a copy of row ``rows[i]``; ``advance(tokens (N,), parents)`` first reorders rows by
    ``parents (N,)`` (when given), appends one token per row and returns ``(N, C)``.
    """

    def start(self) -> Tensor: ...

    def expand(self, rows: Tensor) -> None: ...

    def advance(self, tokens: Tensor, parents: Tensor | None = None) -> Tensor: ...


def _constrain(log_probs: Tensor, ended: Tensor, must_end: Tensor, eos_id: int) -> Tensor:
    """Rows that ended extend only by eos at no cost; rows at their length limit must end."""
    classes = torch.arange(log_probs.shape[-1], device=log_probs.device)
    log_probs = log_probs.masked_fill(must_end[:, None] & (classes != eos_id), -math.inf)
    frozen = torch.where(classes == eos_id, 0.0, -math.inf).to(log_probs.dtype)  # (C,)
    return torch.where(ended[:, None], frozen, log_probs)


def _hypotheses(tokens: Tensor, scores: Tensor, eos_id: int) -> list[Hypothesis]:
    """Rows of ``tokens (B, S)`` cut before their first eos, with ``scores (B,)``."""
    hyps = []
    for row, score in zip(tokens.tolist(), scores.tolist(), strict=True):
        end = row.index(eos_id) if eos_id in row else len(row)
        hyps.append(Hypothesis(tokens=row[:end], score=score))
    return hyps


@torch.no_grad()
def greedy_search(scorer: Scorer, max_lengths: Tensor, eos_id: int) -> list[Hypothesis]:
    """Batched greedy search: every utterance takes its most likely token at each step.

    Args:
        scorer: next-token log-probabilities of the B utterances.
        max_lengths: ``(B,)`` tokens an utterance may emit before eos is forced.
        eos_id: the end-of-sequence class.

    Returns:
        One :class:`Hypothesis` per utterance, its score the log-probability of its tokens
        and eos.
    """
    log_probs = scorer.start()  # (B, C)
    B = log_probs.shape[0]
    scores = log_probs.new_zeros(B)
    emitted = torch.zeros(B, dtype=torch.long, device=log_probs.device)
    ended = torch.zeros(B, dtype=torch.bool, device=log_probs.device)
    steps = []
    while True:
        best, token = _constrain(log_probs, ended, emitted >= max_lengths, eos_id).max(dim=-1)
        scores += best
        emitted += (~ended).long()
        ended |= token == eos_id
        steps.append(token)
        if bool(ended.all()):
            break
        log_probs = scorer.advance(token)
    return _hypotheses(torch.stack(steps, dim=1), scores, eos_id)


@torch.no_grad()
def beam_search(
    scorer: Scorer,
    max_lengths: Tensor,
    eos_id: int,
    beam_size: int = 4,
    length_penalty: float = 1.0,
) -> list[Hypothesis]:
    """Batched beam search with length normalization (see the module docstring).

    Args:
        scorer: next-token log-probabilities; its B utterances are expanded to ``B * K`` rows.
        max_lengths: ``(B,)`` tokens an utterance may emit before eos is forced.
        eos_id: the end-of-sequence class.
        beam_size: K, hypotheses kept per utterance.
        length_penalty: alpha; the final ranking divides log-probabilities by
            ``length ** alpha`` (0: raw log-probabilities, which favour short hypotheses).

    Returns:
        One :class:`Hypothesis` per utterance, its score the log-probability of its tokens
        and eos.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    log_probs = scorer.start()  # (B, C)
    (B, C), K = log_probs.shape, beam_size
    device = log_probs.device
    rows = torch.arange(B, device=device).repeat_interleave(K)  # (N,)
    scorer.expand(rows)
    log_probs, max_lengths = log_probs[rows], max_lengths[rows]
    # An utterance's K rows start as one hypothesis: the copies score -inf and are pruned.
    scores = torch.full((B, K), -math.inf, device=device)
    scores[:, 0] = 0.0
    scores = scores.flatten()  # (N,)
    emitted = torch.zeros(B * K, dtype=torch.long, device=device)
    ended = torch.zeros(B * K, dtype=torch.bool, device=device)
    tokens = torch.zeros(B * K, 0, dtype=torch.long, device=device)
    first_row = torch.arange(B, device=device)[:, None] * K  # (B, 1)
    while True:
        total = scores[:, None] + _constrain(log_probs, ended, emitted >= max_lengths, eos_id)
        top_scores, top = total.view(B, K * C).topk(K, dim=1)  # (B, K) each
        parents = (torch.div(top, C, rounding_mode="floor") + first_row).flatten()  # (N,)
        token = (top % C).flatten()  # (N,)
        scores = top_scores.flatten()
        was_ended = ended[parents]
        emitted = emitted[parents] + (~was_ended).long()
        # A row scoring -inf had no finite extension left (fewer than K exist): it is dead.
        ended = was_ended | (token == eos_id) | (scores == -math.inf)
        tokens = torch.cat([tokens[parents], token[:, None]], dim=1)  # (N, steps)
        if bool(ended.all()):
            break
        log_probs = scorer.advance(token, parents)
    normalized = scores / emitted.clamp(min=1).to(scores.dtype) ** length_penalty
    best = normalized.view(B, K).argmax(dim=1) + first_row[:, 0]  # (B,)
    return _hypotheses(tokens[best], scores[best], eos_id)
