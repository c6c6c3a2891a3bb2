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

Decoding (``RnntHead.decode``: batched label-looping greedy search, icefall's modified beam
search) and streaming greedy decoding live in :mod:`suite.heads.rnnt_decoding`.

Dims legend: B - batch, T - encoder frames, D - encoder width, U - target tokens, V - vocabulary
(incl. blank), P - predictor width, J - joint width, K - beam hypotheses, C - stateless context.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torchaudio.functional import rnnt_loss

from suite.heads.rnnt_decoding import (
    RnntStreamState,
    greedy_search,
    greedy_search_reference,
    greedy_search_step,
    modified_beam_search,
)
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

# The searches are this head's decoding: importable from here as from their module.
__all__ = [
    "Joiner",
    "LstmPredictor",
    "RnntHead",
    "RnntStreamState",
    "StatelessPredictor",
    "greedy_search",
    "greedy_search_reference",
    "modified_beam_search",
    "sub_batches",
]

PREDICTORS = ("lstm", "stateless")


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
        # The LSTM cell written out on nn.LSTM's weights: a one-step nn.LSTM call has a large
        # fixed cost on the CPU, and decoding makes one per label.
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
        embedding and multiplying: one matmul of two per label."""
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
