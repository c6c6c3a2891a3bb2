"""A small decoder-only language model, its prefix scorer for shallow fusion, and the LM package.

:class:`TransformerLM` is a GPT-style causal transformer (Radford et al., 2019; laid out as
nanoGPT's ``model.py``): token embedding, pre-norm blocks of causal self-attention and a
feed-forward, a final LayerNorm, and an output layer tied to the embedding. What differs from
GPT-2: rotary positions (Su et al., RoFormer) instead of a learned position table, so there is no
maximum length and a sequence may start at any offset; SiLU instead of GELU in the feed-forward
(:class:`~suite.nn.feedforward.FeedForward`, the encoders' too).

Token ids are the tokenizer's. Id 0 (the blank/padding id every suite tokenizer reserves and
never produces when encoding) doubles as the sequence boundary, as GPT-2's ``<|endoftext|>``: a
sentence is read as ``[0, y_1 .. y_U]`` and ends by predicting ``0``. The LM needs no id of its
own, so its vocabulary is exactly the tokenizer's.

:class:`CausalLM` is the small interface that the LLM adapter head
(:mod:`suite.heads.llm_adapter`) needs; any module with it plugs in, and the adapter decodes
with it through :class:`~suite.heads.llm_adapter.LmScorer`.

An LM package is a folder like a model package: ``config.yaml`` (``task: lm`` and the
constructor's keyword arguments), ``model.safetensors``, ``tokenizer/`` and ``README.md``;
:func:`save_lm_package` writes each file atomically and loading never unpickles.

Dims legend: B - batch, L - new positions, S - cached positions, D - model width (``d_model``),
H - heads, Dh - head width, V - vocabulary.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file
from torch import Tensor, nn

from suite.errors import UserError
from suite.interfaces import Tokenizer
from suite.io import write_package
from suite.nn.attention import RotaryAttentionBase
from suite.nn.feedforward import FeedForward
from suite.nn.frames import frame_mask
from suite.nn.rotary import apply_rotary, rotary_tables

BOUNDARY_ID = 0  # starts and ends every sequence (the tokenizers' reserved blank id)
LM_PACKAGE_FILES = ("config.yaml", "model.safetensors", "tokenizer")


@dataclass
class KVCache:
    """Keys and values of every layer for B sequences, grown by each :meth:`CausalLM.forward`.

    Attributes:
        keys: per layer ``(B, H, S, Dh)``, already rotated by their positions.
        values: per layer ``(B, H, S, Dh)``.
        valid: ``(B, S)`` bool, the slots that hold a real token: a right-padded call
            (``lengths`` shorter than ``L``) leaves padding slots that later queries skip.
        positions: ``(B,)`` int64, each sequence's real tokens so far: the position its next
            token takes.
    """

    keys: list[Tensor]
    values: list[Tensor]
    valid: Tensor
    positions: Tensor


@runtime_checkable
class CausalLM(Protocol):
    """What the LLM adapter needs of a decoder-only language model.

    Attributes:
        d_model: D, the width of the embeddings ``forward`` takes.
        vocab_size: V, logits per position (the tokenizer's vocabulary).
    """

    d_model: int
    vocab_size: int

    def embed(self, ids: Tensor) -> Tensor:
        """Token ids ``(B, L)`` -> input embeddings ``(B, L, D)``."""
        ...

    def forward(
        self, embeds: Tensor, cache: KVCache | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, KVCache]:
        """Continue each sequence by ``embeds (B, L, D)``, of which the first ``lengths (B,)``
        are real (default: all); returns ``logits (B, L, V)`` (position ``l`` predicts the next
        token) and the cache extended by them. Padding positions never change a real one."""
        ...


class CausalSelfAttention(RotaryAttentionBase):
    """Pre-norm multi-head causal self-attention with rotary positions and a KV cache.

    The encoders' projections and rotary frequencies
    (:class:`~suite.nn.attention.RotaryAttentionBase`), with the input LayerNorm.

    Args:
        d_model: D.
        num_heads: H; ``D / H`` must be even for the rotary pairs.
        rope_base: rotary base period.
    """

    def __init__(self, d_model: int, num_heads: int, rope_base: float = 10000.0) -> None:
        super().__init__(d_model, num_heads, rope_base)

    def forward(
        self,
        x: Tensor,
        positions: Tensor,
        mask: Tensor | None,
        keys: Tensor | None = None,
        values: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Attend from ``x (B, L, D)`` at ``positions (B, L)`` to ``[cache, x]``.

        Args:
            mask: ``(B, 1, L, S + L)`` bool, True where a query may look; ``None`` is plain
                causal attention without a cache (teacher forcing).
            keys: ``(B, H, S, Dh)`` cached rotated keys (``None``: no cache).
            values: ``(B, H, S, Dh)``.

        Returns:
            ``(out (B, L, D), keys, values)``, the caches extended by the L new positions.
        """
        B, L, D = x.shape
        q, k, v = self._qkv(x).permute(2, 0, 3, 1, 4)  # (B, H, L, Dh) each
        cos, sin = rotary_tables(positions[:, None], self.inv_freq, q.dtype)  # (B, 1, L, Dh)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if keys is not None:
            k, v = torch.cat([keys, k], dim=2), torch.cat([values, v], dim=2)  # (B, H, S+L, Dh)
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, L, Dh)
        return self.proj(out.transpose(1, 2).reshape(B, L, D)), k, v


class LmBlock(nn.Module):
    """``x + attn(norm(x))`` then ``x + ff(norm(x))`` (GPT-2's pre-norm block)."""

    def __init__(
        self, d_model: int, num_heads: int, ff_mult: int, dropout: float, rope_base: float
    ) -> None:
        super().__init__()
        self.attn = CausalSelfAttention(d_model, num_heads, rope_base)
        self.ff = FeedForward(d_model, ff_mult, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        positions: Tensor,
        mask: Tensor | None,
        keys: Tensor | None = None,
        values: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """As :meth:`CausalSelfAttention.forward`, with the feed-forward after it."""
        a, keys, values = self.attn(x, positions, mask, keys, values)
        x = x + self.dropout(a)
        return x + self.dropout(self.ff(x)), keys, values


class TransformerLM(nn.Module):
    """A GPT-style causal transformer LM with rotary positions and a tied output layer.

    Implements :class:`CausalLM`. See the module docstring for what differs from GPT-2.

    Args:
        vocab_size: V, the tokenizer's vocabulary (id 0 is the sequence boundary).
        d_model: D.
        num_layers: transformer blocks.
        num_heads: attention heads; ``D / H`` must be even.
        ff_mult: feed-forward width as a multiple of D.
        dropout: on the residual branches and inside the feed-forward.
        rope_base: rotary base period.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        ff_mult: int = 4,
        dropout: float = 0.0,
        rope_base: float = 10000.0,
    ) -> None:
        super().__init__()
        self.config = {
            "vocab_size": vocab_size,
            "d_model": d_model,
            "num_layers": num_layers,
            "num_heads": num_heads,
            "ff_mult": ff_mult,
            "dropout": dropout,
            "rope_base": rope_base,
        }
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.tokens = nn.Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList(
            LmBlock(d_model, num_heads, ff_mult, dropout, rope_base) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self._init_weights(num_layers)

    def _init_weights(self, num_layers: int) -> None:
        # GPT-2's: N(0, 0.02) everywhere, residual output layers scaled by 1/sqrt(2 * layers) so
        # the residual stream's variance does not grow with depth.
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            for out in (block.attn.proj, block.ff[-1]):
                nn.init.normal_(out.weight, std=0.02 / math.sqrt(2 * num_layers))

    def embed(self, ids: Tensor) -> Tensor:
        """Token ids ``(B, L)`` -> embeddings ``(B, L, D)``."""
        return self.tokens(ids)

    def forward(
        self, embeds: Tensor, cache: KVCache | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, KVCache]:
        """Continue each sequence by ``embeds (B, L, D)`` (see :class:`CausalLM`).

        Without a cache and without ``lengths`` (teacher forcing), attention is plain causal;
        right padding is harmless then, as no real position looks ahead.

        Returns:
            ``logits (B, L, V)`` and the extended :class:`KVCache`.
        """
        B, L, _ = embeds.shape
        device = embeds.device
        new_valid = (
            torch.ones(B, L, dtype=torch.bool, device=device)
            if lengths is None
            else frame_mask(lengths.to(device), L)
        )
        start = (
            cache.positions
            if cache is not None
            else torch.zeros(B, dtype=torch.long, device=device)
        )
        positions = start[:, None] + torch.arange(L, device=device)  # (B, L)
        mask = None
        if cache is not None or lengths is not None:
            old_valid = cache.valid if cache is not None else new_valid[:, :0]
            causal = torch.ones(L, L, dtype=torch.bool, device=device).tril()
            eye = torch.eye(L, dtype=torch.bool, device=device)
            # A query sees the cache's real slots and the real new tokens up to itself, and
            # always itself, so a padding query never has an empty row (NaN) to pass on.
            new = (causal & new_valid[:, None, :]) | eye  # (B, L, L)
            mask = torch.cat([old_valid[:, None, :].expand(B, L, -1), new], dim=2)[:, None]
        x = embeds
        keys, values = [], []
        for i, block in enumerate(self.blocks):
            k = cache.keys[i] if cache is not None else None
            v = cache.values[i] if cache is not None else None
            x, k, v = block(x, positions, mask, k, v)
            keys.append(k)
            values.append(v)
        logits = F.linear(self.norm(x), self.tokens.weight)  # (B, L, V), tied to the embedding
        valid = new_valid if cache is None else torch.cat([cache.valid, new_valid], dim=1)
        return logits, KVCache(keys, values, valid, start + new_valid.sum(dim=1))


def sequence_nll(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Per-sequence sums of ``-log p(targets)`` over ``mask``, in fp32.

    Args:
        logits: ``(B, L, V)``.
        targets: ``(B, L)`` int64, the token each position should predict.
        mask: ``(B, L)`` bool, the positions that count.

    Returns:
        ``(B,)`` summed negative log-likelihoods.
    """
    nll = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")  # (B, L)
    return (nll * mask).sum(dim=1)


def text_batch(sequences: list[list[int]], device: Any = None) -> tuple[Tensor, Tensor]:
    """``[0, y_1 .. y_U]`` inputs and ``[y_1 .. y_U, 0]`` targets of token-id lists.

    Returns:
        ``(inputs (B, U+1), targets (B, U+1))`` int64, right-padded with 0 to the longest list;
        item ``b`` has ``U_b + 1`` real positions (the caller masks the rest).
    """
    U = max((len(s) for s in sequences), default=0)
    ids = torch.zeros(len(sequences), U + 2, dtype=torch.long)  # BOUNDARY_ID = 0 around each
    for b, s in enumerate(sequences):
        ids[b, 1 : 1 + len(s)] = torch.tensor(s, dtype=torch.long)
    return ids[:, :-1].to(device), ids[:, 1:].to(device)


def lm_loss(lm: CausalLM, sequences: list[list[int]], device: Any = None) -> tuple[Tensor, Tensor]:
    """Next-token negative log-likelihood of token-id sentences, each read as ``[0, y...]`` and
    ending by predicting ``0``.

    Returns:
        ``(nll (B,), tokens (B,))``: summed nats and predicted tokens (``U_b + 1``) per sentence.
    """
    inputs, targets = text_batch(sequences, device)
    lengths = torch.tensor([len(s) + 1 for s in sequences], device=inputs.device)
    logits, _ = lm(lm.embed(inputs))
    return sequence_nll(logits, targets, frame_mask(lengths, inputs.shape[1])), lengths


class PrefixScorer:
    """Next-token log-probabilities of growing token prefixes, for shallow fusion in a search.

    Every scored prefix keeps its KV cache (a row of a pool that grows as needed), so scoring
    prefixes one token longer than scored ones costs one LM position each, all in one call of
    the LM's ``forward`` with a cache. A prefix is read as the LM reads a sentence,
    ``[0, y_1 .. y_U]``; its row is ``log p(. | y_1 .. y_U)``, whose entry :data:`BOUNDARY_ID` is
    the probability that the sentence ends there.

    Args:
        lm: a :class:`CausalLM` whose ``forward`` returns a :class:`KVCache` (e.g.
            :class:`TransformerLM`).
    """

    def __init__(self, lm: CausalLM) -> None:
        self.lm = lm
        start = torch.full((1, 1), BOUNDARY_ID, device=next(lm.parameters()).device)
        logits, cache = lm(lm.embed(start))
        self.device = start.device
        # Every layer's keys and values, (layers, 2, P, H, S, Dh): pool row ``self._slot[prefix]``
        # holds the prefix's len(prefix) + 1 positions (boundary first), oldest first; rows in
        # ``self._free`` are unused. 64 rows of 32 positions to start with (zeros: the positions
        # past a row's own are masked, and must be finite to be masked).
        first = torch.stack([torch.stack(kv) for kv in zip(cache.keys, cache.values, strict=True)])
        L, _, _, H, _, Dh = first.shape
        self._kv = first.new_zeros(L, 2, 64, H, 32, Dh)
        self._kv[:, :, :1, :, :1] = first
        self._slot = {(): 0}
        self._free = list(range(63, 0, -1))
        self.rows: dict[tuple[int, ...], list[float]] = {
            (): F.log_softmax(logits[0, -1].float(), dim=-1).tolist()
        }

    def __contains__(self, prefix: tuple[int, ...]) -> bool:
        return prefix in self.rows

    def __getitem__(self, prefix: tuple[int, ...]) -> list[float]:
        return self.rows[prefix]

    def score(self, prefixes: list[tuple[int, ...]]) -> None:
        """Score new prefixes; their unscored ancestors (forgotten, or among ``prefixes``) are
        scored first, one call per generation (one in all when every parent is scored)."""
        todo = {p for p in prefixes if p not in self.rows}
        for prefix in list(todo):
            parent = prefix[:-1]
            while parent not in self.rows and parent not in todo:
                todo.add(parent)
                parent = parent[:-1]
        while todo:
            ready = [p for p in todo if p[:-1] in self.rows]
            self._score(ready)
            todo.difference_update(ready)

    def _score(self, prefixes: list[tuple[int, ...]]) -> None:
        """Score new prefixes, each one token longer than a scored prefix (its parent)."""
        N = len(prefixes)
        sizes = [len(p) for p in prefixes]  # the parents' positions (boundary included)
        S = max(sizes) + 1  # and the new token's
        capacity, width = self._kv.shape[2], self._kv.shape[4]
        if N > len(self._free) or S > width:  # grow the pool (rows and positions x2 at least)
            more = max(capacity, N - len(self._free)) if N > len(self._free) else 0
            grow = (0, 0, 0, max(width, 2 * S) - width if S > width else 0, 0, 0, 0, more)
            self._kv = F.pad(self._kv, grow)
            self._free += range(capacity, capacity + more)
        slots = [self._free.pop() for _ in prefixes]
        parents = torch.tensor([self._slot[p[:-1]] for p in prefixes], device=self.device)
        kv = self._kv[..., :S, :].index_select(2, parents)  # (layers, 2, N, H, S, Dh), a copy
        lengths = torch.tensor(sizes, device=self.device)
        cache = KVCache(
            keys=list(kv[:, 0, ..., :-1, :].unbind(0)),  # (N, H, S - 1, Dh) per layer
            values=list(kv[:, 1, ..., :-1, :].unbind(0)),
            valid=frame_mask(lengths, S - 1),  # each parent's own positions
            positions=lengths,
        )
        last = torch.tensor([[p[-1]] for p in prefixes], device=self.device)  # (N, 1)
        logits, new = self.lm(self.lm.embed(last), cache)  # (N, 1, V)
        # The new token's keys and values (the last slot of each layer's cache) go right after
        # each parent's own positions, so a pool row stays its prefix's positions in order.
        rows = torch.arange(N, device=self.device)
        for layer, (keys, values) in enumerate(zip(new.keys, new.values, strict=True)):
            kv[layer, :, rows, :, lengths] = torch.stack([keys[:, :, -1], values[:, :, -1]], 1)
        self._kv[..., :S, :].index_copy_(2, torch.tensor(slots, device=self.device), kv)
        rows_lp = F.log_softmax(logits[:, 0].float(), dim=-1).tolist()
        for prefix, slot, row in zip(prefixes, slots, rows_lp, strict=True):
            self.rows[prefix] = row
            self._slot[prefix] = slot

    @property
    def free_rows(self) -> int:
        """Prefixes :meth:`score` can take before the cache pool grows."""
        return len(self._free)

    def retain(self, keep: set[tuple[int, ...]]) -> None:
        """Forget every scored prefix not in ``keep`` (the search's live prefixes), freeing its
        cache row; a forgotten prefix may be scored again later."""
        for prefix in [p for p in self._slot if p and p not in keep]:
            self._free.append(self._slot.pop(prefix))
            del self.rows[prefix]


@dataclass
class LmPackage:
    """A loaded LM package: the LM, its tokenizer, and the folder it came from."""

    lm: TransformerLM
    tokenizer: Tokenizer
    path: Path


def save_lm_package(
    lm: TransformerLM,
    tokenizer: Tokenizer,
    directory: str | Path,
    state: dict[str, Tensor] | None = None,
    card: str | None = None,
) -> Path:
    """Write an LM package folder (each file atomically; the card last).

    Args:
        lm: the LM; its ``config`` is saved as the constructor's keyword arguments.
        tokenizer: the tokenizer whose ids the LM reads.
        directory: the package folder (created).
        state: weights to save instead of ``lm.state_dict()``.
        card: the model card's markdown; an existing card is kept when ``None``.
    """
    config = {"task": "lm", "model": dict(lm.config)}
    return write_package(directory, config, state or lm.state_dict(), tokenizer, card)


def load_lm_package(directory: str | Path) -> LmPackage:
    """Load an LM package written by :func:`save_lm_package` (no pickle)."""
    from suite.tokenizers import load_tokenizer

    directory = Path(directory)
    missing = [name for name in LM_PACKAGE_FILES if not (directory / name).exists()]
    if missing:
        raise UserError(
            f"{directory} is not an LM package: missing {', '.join(missing)}; pre-train one "
            f"with `suite train recipes/lm/espeak_text_lm.yaml` (it writes RUN/model)"
        )
    raw = yaml.safe_load((directory / "config.yaml").read_text()) or {}
    if raw.get("task") != "lm":
        raise UserError(
            f"{directory} holds a '{raw.get('task')}' package, not an LM (task: lm); an LM "
            f"package comes from `suite train` (an lm recipe)"
        )
    lm = TransformerLM(**raw["model"])
    lm.load_state_dict(load_file(str(directory / "model.safetensors")))
    return LmPackage(lm.eval(), load_tokenizer(directory / "tokenizer"), directory)


def same_tokenizer(a: Tokenizer, b: Tokenizer) -> bool:
    """Whether two tokenizers save the same files (the same ids for every text)."""
    with tempfile.TemporaryDirectory() as tmp:
        da, db = Path(tmp) / "a", Path(tmp) / "b"
        a.save(da)
        b.save(db)
        files = sorted(p.name for p in da.iterdir())
        return files == sorted(p.name for p in db.iterdir()) and all(
            (da / f).read_bytes() == (db / f).read_bytes() for f in files
        )


def build_lm(
    lm: Any, vocab_size: int, tokenizer: Tokenizer | None, head: str
) -> tuple[nn.Module, Tokenizer | None]:
    """The LM module a head's ``lm`` option names, and the tokenizer the head should use.

    Args:
        lm: an LM package folder written by ``suite train`` with an ``lm`` recipe (its weights
            and options), a mapping of :class:`TransformerLM` options (a fresh LM, as a saved
            model package records it), or any :class:`CausalLM` module.
        vocab_size: the task model's vocabulary; the LM's must equal it.
        tokenizer: the task model's tokenizer, if known; it must be an LM package's own.
        head: the head's registry name, for messages.

    Returns:
        ``(lm, tokenizer)``: ``tokenizer`` is the given one, else the LM package's (or ``None``).
    """
    package_tokenizer = None
    if isinstance(lm, (str, Path)):
        package = load_lm_package(lm)
        lm, package_tokenizer = package.lm, package.tokenizer
    elif isinstance(lm, dict):
        lm = TransformerLM(**{"vocab_size": vocab_size, **lm})
    elif lm is None:
        raise UserError(
            f"the {head} head needs `lm`: an LM package folder from `suite train` (an lm "
            "recipe; e.g. lm: runs/espeak_text_lm/model) or TransformerLM options "
            "(e.g. lm: {d_model: 128, num_layers: 2, num_heads: 4})"
        )
    if not isinstance(lm, nn.Module) or not isinstance(lm, CausalLM):
        raise UserError(
            f"lm must be a causal LM module with embed, forward, d_model and vocab_size "
            f"(suite.heads.lm.CausalLM); got {type(lm).__name__}"
        )
    if lm.vocab_size != vocab_size:
        raise UserError(
            f"the LM has {lm.vocab_size} tokens but the tokenizer {vocab_size}: the LM must "
            f"read the task model's tokenizer (pre-train it with the same tokenizer)"
        )
    if package_tokenizer is not None and tokenizer is not None:
        if not same_tokenizer(package_tokenizer, tokenizer):
            raise UserError(
                f"the task model's tokenizer is not the LM package's ({package.path}/tokenizer): "
                f"the LM reads that tokenizer's ids. Point the recipe's model.tokenizer at it; "
                f"for BPE: {{name: bpe, vocab_size: {vocab_size}, model_file: "
                f"{package.path}/tokenizer/tokenizer.model}}"
            )
    return lm, tokenizer or package_tokenizer


def lm_options(lm: nn.Module) -> dict[str, Any]:
    """The constructor options that rebuild ``lm`` (a :class:`TransformerLM`) in a package."""
    options = getattr(lm, "config", None)
    if not isinstance(options, dict):
        raise UserError(
            f"cannot save a model package with a {type(lm).__name__} LM: it has no "
            f"`config` dict of constructor options; use suite.heads.lm.TransformerLM"
        )
    return dict(options)
