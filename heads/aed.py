"""Attention encoder-decoder (AED) head: a transformer decoder with cross-attention.

Implements the decoder of "Attention Is All You Need" (Vaswani et al., 2017) on top of any
encoder (the attention decoder of ESPnet's and icefall's hybrid models), with task prompts as in
Canary and Whisper: every target sequence starts with a task token (``transcribe``,
``caption``, ...), so one head can learn several tasks and be asked for one when decoding.

What differs from the paper:

- Pre-norm layers (LayerNorm before each sub-layer, and once after the last layer), which train
  without the paper's careful warm-up; GELU in the feed-forward.
- Positions: fixed sinusoids added to the scaled embeddings, not a learned table, so there is no
  maximum length; the decoding length follows the encoder's instead (see below).
- The encoder output is projected from its width D to the decoder's E by one linear layer, so the
  head fits every encoder.

Vocabulary: the tokenizer's ids ``0..V-1`` followed by the head's own special tokens, so any
tokenizer works: ``eos = V``, ``sos = V + 1``, ``pad = V + 2``, then one id per task. The decoder
reads ``[sos, task, y_1 .. y_U]`` and learns to predict ``[y_1 .. y_U, eos]``: the prompt is given,
never predicted. The output layer has ``C = V + 1`` classes (the tokenizer's ids and eos), so
sos, pad and task tokens cannot be emitted; the blank (id 0, reserved by every tokenizer) is never
a target and is masked when decoding.

Loss: teacher-forced cross-entropy with label smoothing (Szegedy et al., 2016), on fp32 logits;
each utterance's sum over its ``U + 1`` predictions is divided by ``U + 1``, then averaged over the
batch, so it reads as nats per token like the CTC and RNN-T heads' losses.

Decoding (``AedHead.decode``) runs the whole batch at once with the batched ``"greedy"`` and
``"beam"`` searches of :mod:`suite.heads.search` (length-normalized beams), scoring with
:class:`DecoderScorer`:

- Length: an utterance of T encoder frames must end (eos is forced) after
  ``floor(max_length_ratio * T) + max_length_offset`` tokens.
- KV cache: the cross-attention keys and values of the encoder frames are computed once, and the
  self-attention keys and values of the prefix are cached and reordered with the beams, so a
  step costs one position. ``use_kv_cache=False`` runs the teacher-forcing forward over the whole
  prefix and the encoder frames at every step instead: the same numbers at a higher cost, for the
  tests and ``suite bench decoding``.

Dims legend: B - batch, T - encoder frames, D - encoder width, E - decoder width (``d_model``),
H - heads, Dh - head width, L - decoder positions, U - target tokens, V - tokenizer vocabulary,
C - output classes (``V + 1``), K - beam, N - decoding rows (``B * K``), P - cached positions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from suite.heads.search import beam_search, greedy_search
from suite.interfaces import (
    Batch,
    EncoderOutput,
    Head,
    Hypothesis,
    check_encoder_output,
    checked_targets,
    with_text,
)
from suite.kernels.attention import attention
from suite.registry import register_head

KV = tuple[Tensor, Tensor]  # keys, values: (B, H, L, Dh) each

CAUSAL = (-1, 0)  # chunks of one position with unlimited left context: a causal mask
IGNORE = -100  # label of positions that carry no loss (F.cross_entropy's ignore_index)
METHODS = ("greedy", "beam")


def sinusoids(positions: Tensor, dim: int) -> Tensor:
    """``(L, dim)`` sinusoidal encodings of ``positions (L,)``: sines, then cosines."""
    half = dim // 2
    inv_freq = torch.exp(
        torch.arange(half, device=positions.device, dtype=torch.float32)
        * (-math.log(10000.0) / half)
    )
    angles = positions.float()[:, None] * inv_freq[None, :]  # (L, dim / 2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


@dataclass
class CrossMemory:
    """The encoder frames as every decoder layer's cross-attention reads them.

    Attributes:
        kv: per layer, keys and values ``(B, H, T, Dh)``.
        mask: ``(B, 1, 1, T)`` bool, True on valid frames (all True for an utterance without
            frames, so that its softmax stays finite).
    """

    kv: list[KV]
    mask: Tensor

    def select(self, rows: Tensor) -> CrossMemory:
        """The memory of ``rows (N,)`` (e.g. each utterance repeated once per beam)."""
        return CrossMemory([(k[rows], v[rows]) for k, v in self.kv], self.mask[rows])


class DecoderLayer(nn.Module):
    """Pre-norm causal self-attention, cross-attention over the encoder frames, feed-forward.

    Args:
        d_model: E.
        num_heads: H; ``E / H`` is the head width.
        ff_dim: hidden width of the feed-forward.
        dropout: after each sub-layer, on the attention-free feed-forward hidden layer too.
    """

    def __init__(self, d_model: int, num_heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.self_norm = nn.LayerNorm(d_model)
        self.self_qkv = nn.Linear(d_model, 3 * d_model)
        self.self_out = nn.Linear(d_model, d_model)
        self.cross_norm = nn.LayerNorm(d_model)
        self.cross_q = nn.Linear(d_model, d_model)
        self.cross_kv = nn.Linear(d_model, 2 * d_model)
        self.cross_out = nn.Linear(d_model, d_model)
        self.ff = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, ff_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ff_dim, d_model),
        )
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: Tensor) -> Tensor:
        B, L, E = x.shape
        return x.view(B, L, self.num_heads, E // self.num_heads).transpose(1, 2)  # (B, H, L, Dh)

    def _merge(self, x: Tensor) -> Tensor:
        B, H, L, Dh = x.shape
        return x.transpose(1, 2).reshape(B, L, H * Dh)  # (B, L, E)

    def memory_kv(self, frames: Tensor) -> KV:
        """Cross-attention keys and values ``(B, H, T, Dh)`` of encoder frames ``(B, T, E)``."""
        k, v = self.cross_kv(frames).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def _self_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = self.self_qkv(self.self_norm(x)).chunk(3, dim=-1)
        return self._split(q), self._split(k), self._split(v)  # (B, H, L, Dh) each

    def _cross_and_ff(self, x: Tensor, kv: KV, mask: Tensor) -> Tensor:
        q = self._split(self.cross_q(self.cross_norm(x)))  # (B, H, L, Dh)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask)  # (B, H, L, Dh)
        x = x + self.dropout(self.cross_out(self._merge(out)))
        return x + self.dropout(self.ff(x))

    def forward(self, x: Tensor, lengths: Tensor, kv: KV, mask: Tensor) -> tuple[Tensor, KV]:
        """Teacher forcing: ``x (B, L, E)`` with ``lengths (B,)`` valid positions.

        Returns:
            ``(B, L, E)`` and the self-attention keys and values, the cache of these positions.
        """
        q, k, v = self._self_qkv(x)
        out = attention(q, k, v, lengths, CAUSAL)  # (B, H, L, Dh)
        x = x + self.dropout(self.self_out(self._merge(out)))
        return self._cross_and_ff(x, kv, mask), (k, v)

    def step(self, x: Tensor, cache: KV, kv: KV, mask: Tensor) -> tuple[Tensor, KV]:
        """One new position ``x (N, 1, E)`` after the ``cache`` of P earlier ones.

        Returns:
            ``(N, 1, E)`` and the cache extended to ``P + 1`` positions.
        """
        q, k, v = self._self_qkv(x)  # (N, H, 1, Dh) each
        k = torch.cat([cache[0], k], dim=2)  # (N, H, P + 1, Dh)
        v = torch.cat([cache[1], v], dim=2)
        out = F.scaled_dot_product_attention(q, k, v)  # the newest position sees the whole prefix
        x = x + self.dropout(self.self_out(self._merge(out)))
        return self._cross_and_ff(x, kv, mask), (k, v)


class TransformerDecoder(nn.Module):
    """Token embeddings with sinusoidal positions, pre-norm decoder layers, the output layer.

    Args:
        num_embeddings: input token ids (the tokenizer's plus the special tokens).
        num_classes: C, output classes.
        d_model: E, decoder width (even, for the sinusoids).
        num_layers: decoder layers.
        num_heads: H, attention heads; ``E`` must be a multiple.
        ff_dim: feed-forward hidden width.
        dropout: dropout on the embeddings and after every sub-layer.
    """

    def __init__(
        self,
        num_embeddings: int,
        num_classes: int,
        d_model: int,
        num_layers: int,
        num_heads: int,
        ff_dim: int,
        dropout: float,
    ) -> None:
        super().__init__()
        if d_model % 2 or d_model % num_heads:
            raise ValueError(
                f"the AED decoder needs an even d_model that num_heads divides, got d_model="
                f"{d_model} with num_heads={num_heads}; e.g. d_model=256 with 4 heads"
            )
        self.d_model = d_model
        self.embed = nn.Embedding(num_embeddings, d_model)
        # The paper's (and fairseq's) scale: N(0, 1/E), so that the embeddings times sqrt(E)
        # have unit scale like the sinusoids and the sub-layer outputs. nn.Embedding's N(0, 1)
        # made them sqrt(E) times larger: the residual stream was the token's identity, the
        # cross-attention's contribution a rounding error, and the decoder trained as a bigram
        # LM that ignored the audio.
        nn.init.normal_(self.embed.weight, std=d_model**-0.5)
        self.layers = nn.ModuleList(
            [DecoderLayer(d_model, num_heads, ff_dim, dropout) for _ in range(num_layers)]
        )
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, num_classes)
        self.dropout = nn.Dropout(dropout)

    def _embed(self, tokens: Tensor, start: int) -> Tensor:
        """``(N, L)`` ids at positions ``start..start+L-1`` -> ``(N, L, E)``."""
        positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        x = self.embed(tokens) * math.sqrt(self.d_model) + sinusoids(positions, self.d_model)
        return self.dropout(x)

    def memory(self, frames: Tensor, lengths: Tensor) -> CrossMemory:
        """The cross-attention memory of encoder frames ``(B, T, E)`` with ``lengths (B,)``."""
        T = frames.shape[1]
        valid = torch.arange(T, device=frames.device)[None, :] < lengths[:, None]  # (B, T)
        valid = valid | (lengths == 0)[:, None]
        return CrossMemory([layer.memory_kv(frames) for layer in self.layers], valid[:, None, None])

    def forward(
        self, tokens: Tensor, lengths: Tensor, memory: CrossMemory
    ) -> tuple[Tensor, list[KV]]:
        """Teacher forcing over ``tokens (B, L)`` with ``lengths (B,)`` valid positions.

        Returns:
            Hidden states ``(B, L, E)`` (after the final norm) and every layer's cache.
        """
        x = self._embed(tokens, 0)
        cache = []
        for layer, kv in zip(self.layers, memory.kv, strict=True):
            x, layer_cache = layer(x, lengths, kv, memory.mask)
            cache.append(layer_cache)
        return self.norm(x), cache

    def step(self, tokens: Tensor, cache: list[KV], memory: CrossMemory) -> tuple[Tensor, list[KV]]:
        """Feed one token per row, ``tokens (N,)``, after the cached prefix.

        Returns:
            Hidden states ``(N, E)`` and the extended cache.
        """
        x = self._embed(tokens[:, None], cache[0][0].shape[2])  # (N, 1, E)
        new_cache = []
        for layer, layer_cache, kv in zip(self.layers, cache, memory.kv, strict=True):
            x, layer_cache = layer.step(x, layer_cache, kv, memory.mask)
            new_cache.append(layer_cache)
        return self.norm(x)[:, 0], new_cache


class DecoderScorer:
    """The :class:`~suite.heads.search.Scorer` of an :class:`AedHead` over an encoder output.

    Args:
        head: the head whose decoder scores.
        enc: encoder output ``(B, T, D)`` with ``lengths (B,)``.
        task_ids: ``(B,)`` task token of each utterance.
        use_kv_cache: cache self-attention keys and values and compute the cross-attention
            memory once; otherwise every step runs the teacher-forcing forward over the whole
            prefix and the encoder frames.
    """

    def __init__(
        self, head: AedHead, enc: EncoderOutput, task_ids: Tensor, use_kv_cache: bool
    ) -> None:
        self.head = head
        self.use_kv_cache = use_kv_cache
        self.frames = head.input_proj(enc.features)  # (B, T, E)
        self.lengths = enc.lengths.to(self.frames.device)
        sos = torch.full_like(task_ids, head.sos_id)
        self.history = torch.stack([sos, task_ids], dim=1)  # (B, 2): the prompt
        self.memory: CrossMemory | None = None
        self.cache: list[KV] | None = None

    def _forward(self, memory: CrossMemory) -> tuple[Tensor, list[KV]]:
        """Teacher forcing over every row's whole history: ``(N, C)`` at its end, and the cache."""
        N, L = self.history.shape
        lengths = torch.full((N,), L, dtype=torch.long, device=self.history.device)
        hidden, cache = self.head.decoder(self.history, lengths, memory)
        return self.head.log_probs(hidden[:, -1]), cache

    def start(self) -> Tensor:
        memory = self.head.decoder.memory(self.frames, self.lengths)
        log_probs, cache = self._forward(memory)
        if self.use_kv_cache:
            self.memory, self.cache = memory, cache
        return log_probs

    def expand(self, rows: Tensor) -> None:
        self.frames, self.lengths = self.frames[rows], self.lengths[rows]
        self.history = self.history[rows]
        if self.memory is not None:
            self.memory = self.memory.select(rows)
        self._reorder(rows)

    def _reorder(self, rows: Tensor) -> None:
        if self.cache is not None:
            self.cache = [(k[rows], v[rows]) for k, v in self.cache]

    def advance(self, tokens: Tensor, parents: Tensor | None = None) -> Tensor:
        # Beams only trade places within an utterance, so frames and memory need no reordering.
        if parents is not None:
            self.history = self.history[parents]
            self._reorder(parents)
        self.history = torch.cat([self.history, tokens[:, None]], dim=1)  # (N, L + 1)
        if self.cache is None or self.memory is None:  # no cache: everything again
            return self._forward(self.head.decoder.memory(self.frames, self.lengths))[0]
        hidden, self.cache = self.head.decoder.step(tokens, self.cache, self.memory)
        return self.head.log_probs(hidden)


@register_head(
    "aed",
    presets={
        "tiny": {"d_model": 32, "num_layers": 2, "num_heads": 2, "ff_dim": 64},
        "small": {"d_model": 256, "num_layers": 6, "num_heads": 4, "ff_dim": 1024},
    },
)
class AedHead(Head):
    """Transformer decoder with cross-attention, trained with label-smoothed cross-entropy.

    Args:
        input_dim: D, width of the encoder features.
        vocab_size: V, the tokenizer's ids; the head's special tokens follow them.
        d_model: E, decoder width.
        num_layers: decoder layers.
        num_heads: attention heads.
        ff_dim: feed-forward hidden width.
        dropout: dropout in the decoder.
        label_smoothing: probability mass spread evenly over all C classes in the loss.
        tasks: task tokens, in id order; the first is the default task.
        blank_id: the tokenizer's reserved blank (never a target, never decoded).
    """

    def __init__(
        self,
        input_dim: int,
        vocab_size: int,
        d_model: int = 256,
        num_layers: int = 6,
        num_heads: int = 4,
        ff_dim: int = 1024,
        dropout: float = 0.1,
        label_smoothing: float = 0.1,
        tasks: Sequence[str] = ("transcribe", "caption"),
        blank_id: int = 0,
    ) -> None:
        super().__init__()
        tasks = list(tasks)
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks must be distinct names, at least one, got {tasks}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if not 0 <= blank_id < vocab_size:
            raise ValueError(f"blank_id must be in [0, {vocab_size}), got {blank_id}")
        self.input_dim = input_dim
        self.vocab_size = vocab_size
        self.blank_id = blank_id
        self.label_smoothing = label_smoothing
        self.eos_id = vocab_size
        self.sos_id = vocab_size + 1
        self.pad_id = vocab_size + 2
        self.task_ids = {task: vocab_size + 3 + i for i, task in enumerate(tasks)}
        self.input_proj = nn.Linear(input_dim, d_model)
        self.decoder = TransformerDecoder(
            num_embeddings=vocab_size + 3 + len(tasks),
            num_classes=vocab_size + 1,
            d_model=d_model,
            num_layers=num_layers,
            num_heads=num_heads,
            ff_dim=ff_dim,
            dropout=dropout,
        )

    def check_encoder_output(self, enc: EncoderOutput) -> None:
        """Raise a teaching error unless ``enc`` is ``(B, T, input_dim)`` with valid lengths."""
        check_encoder_output(enc, self.input_dim, "the AED head")

    def task_tokens(self, task: str | Sequence[str] | None, batch_size: int, device: Any) -> Tensor:
        """``(B,)`` task token ids: one task for all (``None``: the first) or one per item."""
        if task is None or isinstance(task, str):
            names = [task or next(iter(self.task_ids))] * batch_size
        else:
            names = list(task)
        if len(names) != batch_size:
            raise ValueError(f"got {len(names)} tasks for a batch of {batch_size}; give one each")
        unknown = sorted({n for n in names if n not in self.task_ids})
        if unknown:
            raise ValueError(
                f"unknown task {', '.join(map(repr, unknown))}; this head was built with tasks "
                f"{list(self.task_ids)} (set `tasks:` in the head's recipe spec to add one)"
            )
        return torch.tensor([self.task_ids[n] for n in names], dtype=torch.long, device=device)

    def log_probs(self, hidden: Tensor) -> Tensor:
        """``(..., C)`` decoding log-probabilities of hidden states ``(..., E)``, in fp32, with
        the blank masked."""
        logits = self.decoder.out(hidden).float()
        logits[..., self.blank_id] = -math.inf
        return logits.log_softmax(dim=-1)

    def loss(
        self, enc: EncoderOutput, batch: Batch, task: str | Sequence[str] | None = None
    ) -> dict[str, Tensor]:
        """Label-smoothed cross-entropy of ``batch.targets`` and eos under teacher forcing.

        Args:
            enc: encoder output ``(B, T, D)`` with ``lengths (B,)``.
            batch: targets ``(B, U)`` with ``target_lengths (B,)``.
            task: the task of every item (default: the first task), or one per item.

        Returns:
            ``{"loss": nats per token (see the module docstring), "accuracy": the teacher-forced
            fraction of tokens and eos predicted right}``.
        """
        self.check_encoder_output(enc)
        targets, target_lengths = checked_targets(
            batch, self.vocab_size, self.blank_id, pad_id=self.pad_id
        )  # (B, U), (B,)
        B, U = targets.shape
        device = targets.device
        prompt = torch.stack(
            [torch.full((B,), self.sos_id, device=device), self.task_tokens(task, B, device)], 1
        )  # (B, 2)
        memory = self.decoder.memory(self.input_proj(enc.features), enc.lengths.to(device))
        hidden, _ = self.decoder(torch.cat([prompt, targets], dim=1), target_lengths + 2, memory)
        logits = self.decoder.out(hidden[:, 1:]).float()  # (B, U + 1, C): after task, y_1..y_U
        labels = F.pad(targets.masked_fill(targets == self.pad_id, IGNORE), (0, 1), value=IGNORE)
        labels[torch.arange(B, device=device), target_lengths] = self.eos_id  # (B, U + 1)
        nll = F.cross_entropy(
            logits.transpose(1, 2),  # (B, C, U + 1): the class axis second, as it requires
            labels,
            ignore_index=IGNORE,
            label_smoothing=self.label_smoothing,
            reduction="none",
        )  # (B, U + 1), zero on ignored positions
        counted = labels != IGNORE
        correct = (logits.argmax(dim=-1) == labels) & counted
        return {
            "loss": (nll.sum(dim=1) / (target_lengths + 1)).mean(),
            "accuracy": correct.sum() / counted.sum().clamp(min=1),
        }

    @torch.no_grad()
    def decode(
        self,
        enc: EncoderOutput,
        method: str = "greedy",
        beam_size: int = 4,
        length_penalty: float = 1.0,
        max_length_ratio: float = 1.0,
        max_length_offset: int = 0,
        task: str | Sequence[str] | None = None,
        use_kv_cache: bool = True,
        tokenizer: Any = None,
    ) -> list[Hypothesis]:
        """Decode every item of ``enc``, the whole batch at once.

        Args:
            enc: encoder output ``(B, T, D)`` with ``lengths (B,)``.
            method: ``"greedy"`` or ``"beam"``.
            beam_size: hypotheses kept per utterance by ``"beam"``.
            length_penalty: alpha of the length normalization of ``"beam"``.
            max_length_ratio: tokens allowed per encoder frame...
            max_length_offset: ...plus this many, before eos is forced.
            task: the task of every item (default: the first task), or one per item.
            use_kv_cache: ``False`` recomputes the whole prefix each step (same hypotheses).
            tokenizer: if given, ``Hypothesis.text`` is ``tokenizer.decode(tokens)``.

        Returns:
            One :class:`Hypothesis` per item, in batch order, without task token or eos; its
            score is the log-probability of the tokens and eos.
        """
        if method not in METHODS:
            raise ValueError(f"unknown AED decoding method '{method}'; use 'greedy' or 'beam'")
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        self.check_encoder_output(enc)
        B = enc.features.shape[0]
        if B == 0:
            return []
        device = enc.features.device
        lengths = enc.lengths.to(device)
        max_lengths = (lengths * max_length_ratio).floor().long() + max_length_offset
        scorer = DecoderScorer(self, enc, self.task_tokens(task, B, device), use_kv_cache)
        if method == "greedy":
            hyps = greedy_search(scorer, max_lengths.clamp(min=0), self.eos_id)
        else:
            hyps = beam_search(
                scorer, max_lengths.clamp(min=0), self.eos_id, beam_size, length_penalty
            )
        return with_text(hyps, tokenizer)
