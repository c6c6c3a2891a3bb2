"""CTC head: a linear projection to the vocabulary, the CTC loss, greedy and prefix beam search.

Implements Connectionist Temporal Classification (Graves et al., 2006) on top of any encoder,
with the CTC prefix beam search of Hannun et al. (2014, "First-Pass Large Vocabulary Continuous
Speech Recognition using Bi-Directional Recurrent DNNs"), optionally with a token-level language
model fused into it (shallow fusion: the LM of :mod:`suite.heads.lm`, frozen inside the head, so
a model package carries it; ``suite models attach-lm`` puts one into a trained package).

Streaming: ``CtcHead.init_stream`` / ``CtcHead.streaming_decode`` run greedy decoding chunk by
chunk with a :class:`CtcStreamState` (the last frame's label, so a token whose run of frames spans
two chunks is emitted once). Partial hypotheses only grow, and after the last chunk they equal
:func:`greedy_search` over the whole encoder output; partials never use the LM. A head with an
LM decodes each ended stream again with it (:meth:`CtcHead.final_decode`), as offline.

Dims legend: B - batch, T - encoder frames, D - encoder width, V - vocabulary (incl. blank),
U - target tokens.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from suite.heads.lm import BOUNDARY_ID, PrefixScorer, TransformerLM, build_lm, lm_options
from suite.heads.search import logaddexp
from suite.interfaces import (
    Batch,
    EncoderOutput,
    Head,
    Hypothesis,
    Tokenizer,
    partial_hypotheses,
    with_text,
)
from suite.registry import register_head

_NEG_INF = float("-inf")
# Extensions less likely than this on a frame are not tried by the beam search: on default-asr's
# dev split, lower floors left the WER where it was and only made the search slower.
TOKEN_MIN_LOGP = -7.0
# Prefixes this far below a frame's best are dropped, even with room in the beam: fewer prefixes
# for the LM to score, which halves the search time on default-asr's dev split at a small cost
# in WER.
BEAM_PRUNE_LOGP = 8.0


def _add(
    beams: dict[tuple[int, ...], tuple[float, float]],
    prefix: tuple[int, ...],
    blank: float,
    nonblank: float,
) -> None:
    """Accumulate blank-ended / token-ended path mass into ``beams[prefix]``."""
    old = beams.get(prefix)
    if old is None:  # most calls: a new prefix (no log-adds with -inf to make)
        beams[prefix] = (blank, nonblank)
    else:
        beams[prefix] = (logaddexp(old[0], blank), logaddexp(old[1], nonblank))


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
        frames: per stream, its log-probabilities so far, chunk by chunk (``(T_i, V)`` each, on
            the CPU), which a head with an LM decodes again at the end
            (:meth:`CtcHead.final_decode`); empty lists for a head without one.
    """

    last: Tensor
    scores: Tensor
    tokens: list[list[int]]
    frames: list[list[Tensor]]


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
    return CtcStreamState(last=last, scores=scores, tokens=tokens, frames=state.frames)


def prefix_beam_search(
    log_probs: Tensor,
    lengths: Tensor,
    blank_id: int = 0,
    beam_size: int = 8,
    lm: TransformerLM | None = None,
    lm_weight: float = 0.0,
    length_bonus: float = 0.0,
    token_min_logp: float = float("-inf"),
    beam_prune_logp: float = float("inf"),
) -> list[Hypothesis]:
    """CTC prefix beam search over a batch, in log space, with optional LM shallow fusion.

    Each prefix keeps two acoustic scores: the log-probability of all alignments of it that end
    in a blank (``pb``) and that end in its last token (``pnb``). Alignments that collapse to the
    same prefix are summed. Per frame only the ``beam_size`` most likely tokens (and of those,
    only tokens with ``log p >= token_min_logp``) are tried as extensions.

    Shallow fusion (Gulcehre et al., 2015; as in the CTC decoders of NeMo, ESPnet and
    pyctcdecode, with a token-level LM): a prefix is ranked by
    ``log p_ctc(prefix) + lm_weight * log p_lm(prefix) + length_bonus * len(prefix)``, and at the
    end ``lm_weight * log p_lm(end | prefix)`` is added.

    The LM scores each prefix once, when a new prefix one token longer needs its row. The items
    of the batch do not move in step: each runs on through its frames until one needs LM rows
    it lacks, and when every item waits or has ended, one LM call serves them all (far fewer
    calls than one per frame).

    Args:
        log_probs: ``(B, T, V)`` per-frame log-probabilities.
        lengths: ``(B,)`` valid frames.
        blank_id: index of the blank symbol.
        beam_size: prefixes kept after each frame.
        lm: a :class:`~suite.heads.lm.TransformerLM` over the same tokenizer (``None``: no LM).
        lm_weight: weight of the LM's log-probabilities.
        length_bonus: added per token, against the LM's and CTC's preference for short outputs.
        token_min_logp: extensions less likely than this on a frame are not tried.
        beam_prune_logp: prefixes scored this much below the frame's best are dropped, even
            with room in the beam (fewer prefixes for the LM to score).

    Returns:
        One :class:`Hypothesis` per item; ``score`` is its fused score (without an LM and
        bonus: the beam-pruned label-sequence log-probability).
    """
    B, T, V = log_probs.shape
    lengths = lengths.tolist()
    top = min(beam_size, V)
    cand_lp, cand_ids = log_probs.topk(top, dim=-1)  # (B, T, top) each
    cand_lp, cand_ids = cand_lp.tolist(), cand_ids.tolist()
    blank_lp = log_probs[..., blank_id].tolist()  # (B, T)
    # Fused-in score of each prefix (LM and bonus); the LM's next-token rows by prefix, shared
    # across the batch (the LM's answer depends on the prefix alone).
    fused: dict[tuple[int, ...], float] = {(): 0.0}
    next_lp = PrefixScorer(lm) if lm is not None else None
    beams: list[dict[tuple[int, ...], tuple[float, float]]] = [
        {(): (0.0, _NEG_INF)} for _ in range(B)
    ]
    t = [0] * B  # each item's next frame

    def expand(b: int, tokens: list[tuple[int, float]]) -> dict:
        """Item ``b``'s prefixes after frame ``t[b]`` with their acoustic scores, when
        ``tokens`` are tried as extensions."""
        lpb = blank_lp[b][t[b]]
        nxt: dict[tuple[int, ...], tuple[float, float]] = {}
        for prefix, (pb, pnb) in beams[b].items():
            total = logaddexp(pb, pnb)
            _add(nxt, prefix, total + lpb, _NEG_INF)  # blank: prefix unchanged
            for c, lp in tokens:
                if prefix and c == prefix[-1]:
                    # A repeat without a blank in between merges into the same token...
                    _add(nxt, prefix, _NEG_INF, pnb + lp)
                    # ...and only a blank-ended path can start a second, separate token.
                    if pb != _NEG_INF:
                        _add(nxt, prefix + (c,), _NEG_INF, pb + lp)
                else:
                    _add(nxt, prefix + (c,), _NEG_INF, total + lp)
        return nxt

    def finish(b: int, nxt: dict) -> None:
        """Give item ``b``'s new prefixes their fused scores (their parents' LM rows are
        there), keep its best, and move it to its next frame."""
        for p in nxt:
            if p not in fused:
                lm_lp = lm_weight * next_lp[p[:-1]][p[-1]] if next_lp is not None else 0.0
                fused[p] = fused[p[:-1]] + lm_lp + length_bonus
        scored = sorted(((logaddexp(*v) + fused[p], p, v) for p, v in nxt.items()), reverse=True)
        floor = scored[0][0] - beam_prune_logp
        beams[b] = {p: v for score, p, v in scored[:beam_size] if score >= floor}
        t[b] += 1

    while True:
        waiting: dict[int, dict] = {}  # items stopped at a frame whose LM rows are missing
        needs: set[tuple[int, ...]] = set()
        for b in range(B):
            while t[b] < lengths[b]:
                cands = zip(cand_ids[b][t[b]], cand_lp[b][t[b]], strict=True)
                tokens = [(c, lp) for c, lp in cands if c != blank_id and lp >= token_min_logp]
                if not tokens:  # only blanks: every prefix keeps its place
                    lpb = blank_lp[b][t[b]]
                    beams[b] = {p: (logaddexp(*s) + lpb, _NEG_INF) for p, s in beams[b].items()}
                    t[b] += 1
                    continue
                nxt = expand(b, tokens)
                if next_lp is not None:  # the LM rows that the new prefixes' scores need
                    wanted = {p[:-1] for p in nxt if p not in fused and p[:-1] not in next_lp}
                    if wanted:
                        waiting[b] = nxt
                        needs |= wanted
                        break
                finish(b, nxt)
        if not waiting:
            break
        if len(needs) > next_lp.free_rows:  # forget what no beam holds (their parents' caches
            live = {p for beam in beams for p in beam}  # stay: a beam's prefix may need a row)
            next_lp.retain(live | {p[:-1] for p in live if p})
        next_lp.score(list(needs))
        for b, nxt in waiting.items():
            finish(b, nxt)
    if next_lp is not None:  # the end-of-sentence probability of every final prefix
        next_lp.score(list({p for beam in beams for p in beam if p not in next_lp}))
    hyps = []
    for beam in beams:

        def final(kv: tuple[tuple[int, ...], tuple[float, float]]) -> float:
            end = lm_weight * next_lp[kv[0]][BOUNDARY_ID] if next_lp is not None else 0.0
            return logaddexp(*kv[1]) + fused[kv[0]] + end

        best = max(beam.items(), key=final)
        hyps.append(Hypothesis(tokens=list(best[0]), score=final(best)))
    return hyps


@register_head("ctc")
class CtcHead(Head):
    """Linear projection to ``vocab_size`` classes trained with CTC, optionally decoded with a
    language model (shallow fusion in the prefix beam search).

    Args:
        input_dim: D, width of the encoder features.
        vocab_size: V, output classes including the blank.
        blank_id: index of the blank (0 in every suite tokenizer).
        lm: a token-level LM to decode with (``None``: none): an LM package folder from
            ``suite train`` (an ``lm`` recipe) over the same tokenizer, or
            :class:`~suite.heads.lm.TransformerLM` options (as a saved package records it; the
            weights are in the package). It is frozen: CTC training never changes it. With an
            LM, ``decode`` defaults to ``"beam"``.
        tokenizer: the task model's tokenizer (``build_model`` passes it): an LM package's
            tokenizer must be the same.
        lm_weight: default weight of the LM's log-probabilities in the beam search.
        length_bonus: default score added per token in the beam search.
        beam_size: default prefixes kept per frame by ``"beam"``.
    """

    allows_packing = True  # CTC aligns across the join of packed utterances like a pause

    def __init__(
        self,
        input_dim: int,
        vocab_size: int,
        blank_id: int = 0,
        lm: str | dict[str, Any] | nn.Module | None = None,
        tokenizer: Tokenizer | None = None,
        lm_weight: float = 0.5,
        length_bonus: float = 0.0,
        beam_size: int = 8,
    ):
        super().__init__()
        if not 0 <= blank_id < vocab_size:
            raise ValueError(f"blank_id must be in [0, {vocab_size}), got {blank_id}")
        self.vocab_size = vocab_size
        self.blank_id = blank_id
        self.proj = nn.Linear(input_dim, vocab_size)
        self.lm: nn.Module | None = None
        if lm is not None:
            self.lm, _ = build_lm(lm, vocab_size, tokenizer, "ctc")
            self.lm.requires_grad_(False)
            self.lm.eval()
        self.options = {"lm_weight": lm_weight, "length_bonus": length_bonus}
        self.options["beam_size"] = beam_size

    def train(self, mode: bool = True) -> CtcHead:
        """As ``nn.Module.train``, but the (frozen) LM stays in eval mode."""
        super().train(mode)
        if self.lm is not None:
            self.lm.eval()
        return self

    def packaged_spec(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The registry spec that rebuilds this head from a model package alone: ``lm`` becomes
        the LM's options (its weights are in the package), never the folder a recipe named."""
        if self.lm is None:
            return spec
        return {**spec, **self.options, "lm": lm_options(self.lm)}

    def log_probs(self, enc: EncoderOutput) -> Tensor:
        """``(B, T, V)`` per-frame log-probabilities, in fp32 even under autocast."""
        return F.log_softmax(self.proj(enc.features).float(), dim=-1)

    def distillation_loss(self, enc: EncoderOutput, teacher: EncoderOutput) -> Tensor:
        """``KL(teacher || student)`` between the per-frame token distributions of two encoder
        outputs of the same frames (a chunked-context student, a full-context teacher), summed
        over tokens and averaged over valid frames; the teacher gets no gradient."""
        student = self.log_probs(enc)  # (B, T, V)
        with torch.no_grad():
            target = self.log_probs(teacher)  # (B, T, V)
        kl = F.kl_div(student, target, log_target=True, reduction="none").sum(-1)  # (B, T)
        valid = (torch.arange(kl.shape[1], device=kl.device) < enc.lengths[:, None]).to(kl.dtype)
        return (kl * valid).sum() / valid.sum().clamp(min=1)

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
        method: str | None = None,
        beam_size: int | None = None,
        lm_weight: float | None = None,
        length_bonus: float | None = None,
        tokenizer: Any = None,
    ) -> list[Hypothesis]:
        """Decode every item of ``enc``.

        Args:
            enc: encoder output ``(B, T, D)`` with ``lengths (B,)``.
            method: ``"greedy"`` (best path, batched) or ``"beam"`` (prefix beam search, with
                the head's LM if it has one); default ``"beam"`` with an LM, else ``"greedy"``.
            beam_size: prefixes kept per frame by ``"beam"`` (default: the head's).
            lm_weight: weight of the LM in ``"beam"`` (default: the head's; 0 turns it off).
            length_bonus: score per token in ``"beam"`` (default: the head's).
            tokenizer: if given, ``Hypothesis.text`` is ``tokenizer.decode(tokens)``.

        Returns:
            One :class:`Hypothesis` per item, in batch order.
        """
        log_probs = self.log_probs(enc)  # (B, T, V)
        method = method or ("greedy" if self.lm is None else "beam")
        if method == "greedy":
            hyps = greedy_search(log_probs, enc.lengths, self.blank_id)
        elif method == "beam":
            given = {"beam_size": beam_size, "lm_weight": lm_weight, "length_bonus": length_bonus}
            hyps = self._beam_search(log_probs, enc.lengths, given)
        else:
            raise ValueError(f"unknown CTC decoding method '{method}'; use 'greedy' or 'beam'")
        return with_text(hyps, tokenizer)

    def _beam_search(
        self, log_probs: Tensor, lengths: Tensor, given: dict[str, Any]
    ) -> list[Hypothesis]:
        """:func:`prefix_beam_search` with the head's options, overridden by the non-None
        ``given`` ones (``beam_size``, ``lm_weight``, ``length_bonus``)."""
        options = {**self.options, **{k: v for k, v in given.items() if v is not None}}
        if options["beam_size"] < 1:
            raise ValueError(f"beam_size must be >= 1, got {options['beam_size']}")
        return prefix_beam_search(
            log_probs.cpu(),
            lengths.cpu(),
            self.blank_id,
            options["beam_size"],
            self.lm if options["lm_weight"] else None,
            options["lm_weight"],
            options["length_bonus"],
            token_min_logp=TOKEN_MIN_LOGP,
            beam_prune_logp=BEAM_PRUNE_LOGP,
        )

    def init_stream(self, batch_size: int, device: Any = None) -> CtcStreamState:
        """The greedy decoding state of ``batch_size`` fresh streams."""
        device = self.proj.weight.device if device is None else device
        return CtcStreamState(
            last=torch.full((batch_size,), self.blank_id, dtype=torch.long, device=device),
            scores=torch.zeros(batch_size, device=device),
            tokens=[[] for _ in range(batch_size)],
            frames=[[] for _ in range(batch_size)],
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
            log_probs = self.log_probs(enc)  # (B, T, V)
            frames = state.frames
            if self.lm is not None:  # kept for final_decode (new lists; the old stay as they were)
                lengths = enc.lengths.tolist()
                kept = log_probs.cpu()
                frames = [f + [kept[b, : lengths[b]]] for b, f in enumerate(state.frames)]
            state = greedy_search_step(log_probs, enc.lengths, state, self.blank_id)
            state = dataclasses.replace(state, frames=frames)
        return partial_hypotheses(state.tokens, state.scores, tokenizer), state

    @torch.no_grad()
    def final_decode(self, state: CtcStreamState, tokenizer: Any = None) -> list[Hypothesis] | None:
        """The final hypotheses of ended streams with the head's default decoding, when that is
        not what streaming did (the LM's beam search over each stream's frames), else ``None``.

        A stream's partial texts come from greedy decoding as its audio arrives; its final text
        then equals ``decode`` of the whole encoder output, as offline.
        """
        if self.lm is None:
            return None
        T = max((sum(len(f) for f in frames) for frames in state.frames), default=0)
        log_probs = torch.zeros(len(state.frames), T, self.vocab_size)  # (B, T, V)
        lengths = torch.zeros(len(state.frames), dtype=torch.long)
        for b, frames in enumerate(state.frames):
            if frames:
                whole = torch.cat(frames)
                log_probs[b, : len(whole)], lengths[b] = whole, len(whole)
        return with_text(self._beam_search(log_probs, lengths, {}), tokenizer)
