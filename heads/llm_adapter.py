"""LLM-adapter head: encoder frames stacked, projected into a causal LM's embeddings, decoded by it.

After SLAM-ASR (Ma et al., 2024, "An Embarrassingly Simple Approach for LLM with Strong ASR
Capacity"): every ``stack`` encoder frames are concatenated (frame stacking, a downsampling with
no weights of its own), a projector (linear, or Linear-GELU-Linear) maps them to the LM's width,
and the LM reads

    ``[0] [audio_1 .. audio_N] [prompt_1 .. prompt_P] [y_1 .. y_U] [0]``

where ``0`` is the sequence boundary of :mod:`suite.heads.lm` (the tokenizers' reserved blank) and
the prompt is a short instruction in the tokenizer's text (e.g. ``"transcribe"``). The loss is
the cross-entropy of the answer ``y_1 .. y_U`` and the closing ``0`` only: audio and prompt
positions are context, never targets. Each utterance's sum over its ``U + 1`` predictions is
divided by ``U + 1``, then averaged over the batch, so the loss reads as nats per token like the
CTC, RNN-T and AED heads' losses. Decoding is the AED head's batched greedy or beam search
(:func:`suite.heads.search.greedy_search`, :func:`~suite.heads.search.beam_search`) over the LM's
next-token log-probabilities, with its KV cache (:class:`LmScorer`).

What differs from SLAM-ASR: the LM is the small :class:`~suite.heads.lm.TransformerLM` that
``suite train`` (an ``lm`` recipe) pre-trains on the corpus text (any module with the
:class:`~suite.heads.lm.CausalLM` interface works), it may be frozen or trained with the rest
(no LoRA), and there is no chat template around the audio and the prompt (``USER: ...
ASSISTANT:``): the sequence boundary, the audio, then the prompt.

The LM's tokenizer is the task model's: targets are its ids. Built from an LM package folder,
the head checks that the tokenizer it is given (the recipe's ``model.tokenizer``; point its
``model_file`` at the package's ``tokenizer/tokenizer.model``) is the package's, with an error
that says so. A saved model package holds the LM's weights (a submodule of this head) and its
options (:meth:`LlmAdapterHead.packaged_spec`), so it loads without the LM package.

Dims legend: B - batch, T - encoder frames, D - encoder width, N - stacked frames (audio
positions), E - LM width, P - prompt tokens, U - answer tokens, L - LM positions, V - vocabulary.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from suite.errors import UserError
from suite.heads.lm import (
    BOUNDARY_ID,
    CausalLM,
    KVCache,
    build_lm,
    lm_options,
    sequence_nll,
)
from suite.heads.search import beam_search, greedy_search
from suite.interfaces import Batch, EncoderOutput, Head, Hypothesis, Tokenizer, with_text
from suite.nn.frames import frame_mask
from suite.registry import register_head
from suite.text import normalize_text


def stack_frames(features: Tensor, lengths: Tensor, stack: int) -> tuple[Tensor, Tensor]:
    """Concatenate every ``stack`` consecutive frames: ``(B, T, D)`` -> ``(B, N, stack * D)``.

    Frames past each item's length are zeroed first, so an item's last, partial group is the
    same in any batch as alone. ``N = ceil(T / stack)``; lengths become ``ceil(lengths / stack)``.
    """
    B, T, D = features.shape
    lengths = lengths.to(features.device)
    x = features * frame_mask(lengths, T)[..., None]
    x = F.pad(x, (0, 0, 0, -T % stack))  # (B, N * stack, D)
    return x.reshape(B, -1, stack * D), torch.div(lengths + stack - 1, stack, rounding_mode="floor")


class LmScorer:
    """The :class:`~suite.heads.search.Scorer` of a causal LM continuing prefix embeddings.

    Each row's prefix (audio and prompt, right-padded) runs through the LM once; every step then
    feeds one token per row against the KV cache (padding slots of the prefixes are masked).

    Args:
        lm: any :class:`~suite.heads.lm.CausalLM`.
        embeds: ``(B, L, E)`` right-padded prefix embeddings.
        lengths: ``(B,)`` real prefix positions (at least 1).
    """

    def __init__(self, lm: CausalLM, embeds: Tensor, lengths: Tensor) -> None:
        if embeds.shape[0] and int(lengths.min()) < 1:
            raise ValueError(f"every prefix needs at least one position, got lengths {lengths}")
        self.lm, self.embeds, self.lengths = lm, embeds, lengths.to(embeds.device)
        self.cache: KVCache | None = None

    def start(self) -> Tensor:
        logits, self.cache = self.lm(self.embeds, lengths=self.lengths)
        last = logits[torch.arange(logits.shape[0], device=logits.device), self.lengths - 1]
        return F.log_softmax(last.float(), dim=-1)  # (B, V)

    def expand(self, rows: Tensor) -> None:
        self._reorder(rows)

    def _reorder(self, rows: Tensor) -> None:
        c = self.cache
        if c is None:
            raise RuntimeError("LmScorer: call start() before expand() or advance()")
        self.cache = KVCache(
            [k[rows] for k in c.keys], [v[rows] for v in c.values], c.valid[rows], c.positions[rows]
        )

    def advance(self, tokens: Tensor, parents: Tensor | None = None) -> Tensor:
        if parents is not None:
            self._reorder(parents)
        logits, self.cache = self.lm(self.lm.embed(tokens[:, None]), self.cache)
        return F.log_softmax(logits[:, 0].float(), dim=-1)


@register_head(
    "llm_adapter",
    presets={
        "tiny": {"lm": {"d_model": 32, "num_layers": 1, "num_heads": 2}, "projector_dim": 64},
        "small": {"lm": {"d_model": 256, "num_layers": 4, "num_heads": 4}, "projector_dim": 512},
    },
)
class LlmAdapterHead(Head):
    """Frame stacking + projector into a causal LM, trained on the answer tokens only.

    Args:
        input_dim: D, width of the encoder features.
        vocab_size: V, the tokenizer's vocabulary; the LM's must equal it.
        lm: the language model: an LM package folder written by ``suite train`` with an ``lm``
            recipe (its weights and options), a mapping of
            :class:`~suite.heads.lm.TransformerLM` options (a fresh LM; a saved model package
            records this form), or any module implementing :class:`~suite.heads.lm.CausalLM`.
        tokenizer: the task model's tokenizer (``build_model`` passes it): encodes the prompt,
            and must be an LM package's own. Without it a package's tokenizer is used.
        freeze_lm: keep the LM's weights fixed (no gradient, eval mode); only the projector and
            the encoder learn.
        stack: encoder frames per LM position.
        projector_dim: hidden width of a Linear-GELU-Linear projector; ``None`` is one linear
            layer.
        prompt: the instruction between audio and answer, e.g. ``"transcribe"`` (normalized
            like transcripts; ``""``: none).
        max_new_tokens: default cap on generated tokens per utterance (the closing boundary
            not counted).
    """

    def __init__(
        self,
        input_dim: int,
        vocab_size: int,
        lm: str | dict[str, Any] | nn.Module | None = None,
        tokenizer: Tokenizer | None = None,
        freeze_lm: bool = False,
        stack: int = 2,
        projector_dim: int | None = 256,
        prompt: str = "",
        max_new_tokens: int = 128,
    ) -> None:
        super().__init__()
        if stack < 1:
            raise ValueError(f"stack must be >= 1 encoder frames per LM position, got {stack}")
        self.lm, tokenizer = build_lm(lm, vocab_size, tokenizer, "llm_adapter")
        prompt = normalize_text(prompt)
        if prompt and tokenizer is None:
            raise UserError(
                f"the llm_adapter prompt {prompt!r} needs a tokenizer to encode it: build the "
                "head through suite.model.build_model, or pass tokenizer=..."
            )
        prompt_ids = tokenizer.encode(prompt) if prompt else []
        prompt_tensor = torch.tensor(prompt_ids, dtype=torch.long)
        self.register_buffer("prompt_ids", prompt_tensor, persistent=False)  # from the config
        self.vocab_size = vocab_size
        self.stack = stack
        self.freeze_lm = freeze_lm
        self.max_new_tokens = max_new_tokens
        self.options = {"freeze_lm": freeze_lm, "stack": stack, "projector_dim": projector_dim}
        self.options.update(prompt=prompt, max_new_tokens=max_new_tokens)
        E = self.lm.d_model
        if projector_dim is None:
            self.projector: nn.Module = nn.Linear(stack * input_dim, E)
        else:
            self.projector = nn.Sequential(
                nn.Linear(stack * input_dim, projector_dim),
                nn.GELU(),
                nn.Linear(projector_dim, E),
            )
        if freeze_lm:
            self.lm.requires_grad_(False)
            self.lm.eval()

    def train(self, mode: bool = True) -> LlmAdapterHead:
        """As ``nn.Module.train``, but a frozen LM stays in eval mode (no dropout)."""
        super().train(mode)
        if self.freeze_lm:
            self.lm.eval()
        return self

    def packaged_spec(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The registry spec that rebuilds this head from a model package alone.

        ``suite.model.save_package`` saves it instead of the recipe's: ``lm`` becomes the LM's
        options (its weights are in the package's ``model.safetensors``), so loading never reads
        the LM package folder the recipe named.
        """
        return {"name": spec["name"], **self.options, "lm": lm_options(self.lm)}

    def audio_embeddings(self, enc: EncoderOutput) -> tuple[Tensor, Tensor]:
        """Stacked, projected encoder frames ``(B, N, E)`` and their lengths ``(B,)``."""
        stacked, lengths = stack_frames(enc.features, enc.lengths, self.stack)
        return self.projector(stacked), lengths

    def sequences(
        self, enc: EncoderOutput, answers: Tensor, answer_lengths: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The LM's inputs for a batch, right-padded, and what each position must predict.

        Item ``b`` reads ``[0] audio(N_b) prompt(P) answer(U_b) [0]`` (see the module docstring).

        Args:
            enc: encoder output ``(B, T, D)`` with ``lengths (B,)``.
            answers: ``(B, U)`` int64 token ids (padding is ignored).
            answer_lengths: ``(B,)``.

        Returns:
            ``embeds (B, L, E)``, ``targets (B, L)`` (the next token at each position),
            ``mask (B, L)`` (True on the ``U_b + 1`` positions that predict the answer and the
            closing ``0``) and ``lengths (B,)`` (``N_b + P + U_b + 2``).
        """
        audio, n = self.audio_embeddings(enc)  # (B, N, E), (B,)
        B, N, _ = audio.shape
        device = audio.device
        P, U = self.prompt_ids.numel(), answers.shape[1]
        u = answer_lengths.to(device)
        answers = answers.to(device).masked_fill(~frame_mask(u, U), BOUNDARY_ID)
        # The text part, [0] prompt answer [0] (+ padding 0s): (B, P + U + 2).
        edge = answers.new_full((B, 1), BOUNDARY_ID)
        text = torch.cat([edge, self.prompt_ids.expand(B, P), answers, edge], dim=1)
        lengths = n + P + u + 2
        s = torch.arange(int(lengths.max()), device=device)[None, :]  # (1, L) sequence position
        is_audio = (s >= 1) & (s <= n[:, None])  # (B, L)
        text_at = torch.where(s > n[:, None], s - n[:, None], 0).clamp(max=text.shape[1] - 1)
        text_embeds = self.lm.embed(text.gather(1, text_at))  # (B, L, E)
        audio_at = (s - 1).clamp(0, max(N - 1, 0)).expand(B, -1)
        audio_embeds = audio.gather(1, audio_at[..., None].expand(-1, -1, audio.shape[-1]))
        embeds = torch.where(is_audio[..., None], audio_embeds.to(text_embeds.dtype), text_embeds)
        next_at = (s + 1 - n[:, None]).clamp(0, text.shape[1] - 1)  # text index of position s+1
        targets = text.gather(1, next_at)
        first = (n + P)[:, None]  # the last prompt position predicts y_1
        mask = (s >= first) & (s <= first + u[:, None])
        return embeds, targets, mask, lengths

    def _answers(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """``batch``'s targets trimmed to ``(B, U)`` and their lengths, checked."""
        u = batch.target_lengths.long()
        U = int(u.max()) if u.numel() else 0
        answers = batch.targets[:, :U].long()
        valid = frame_mask(u.to(answers.device), U)
        bad = valid & ((answers <= BOUNDARY_ID) | (answers >= self.vocab_size))
        if bool(bad.any()):
            raise ValueError(
                f"target token {int(answers[bad][0])} is not a text token: targets must lie in "
                f"[1, {self.vocab_size}) (0 is the LM's sequence boundary); check that the "
                f"head's vocab_size equals the tokenizer's"
            )
        return answers, u

    def loss(self, enc: EncoderOutput, batch: Batch) -> dict[str, Tensor]:
        """Cross-entropy of the answer tokens and the closing boundary, per token.

        Returns:
            ``{"loss": scalar, "accuracy": scalar}`` (accuracy: argmax hits over the predicted
            positions of the whole batch).
        """
        answers, u = self._answers(batch)
        embeds, targets, mask, _ = self.sequences(enc, answers, u)
        logits, _ = self.lm(embeds)  # (B, L, V); right padding never reaches a real position
        nll = sequence_nll(logits, targets, mask)  # (B,)
        hits = ((logits.argmax(dim=-1) == targets) & mask).sum()
        accuracy = hits.float() / mask.sum().clamp(min=1)
        return {"loss": (nll / (u.to(nll.device) + 1)).mean(), "accuracy": accuracy.detach()}

    @torch.no_grad()
    def decode(
        self,
        enc: EncoderOutput,
        method: str = "greedy",
        max_new_tokens: int | None = None,
        beam_size: int = 4,
        length_penalty: float = 1.0,
        tokenizer: Any = None,
    ) -> list[Hypothesis]:
        """Greedy or beam search after ``[0] audio prompt``, batched, with a KV cache.

        Args:
            enc: encoder output ``(B, T, D)`` with ``lengths (B,)``.
            method: ``"greedy"`` or ``"beam"`` (the AED head's searches, see the module
                docstring).
            max_new_tokens: cap on generated tokens per utterance, after which the closing
                boundary is forced (default: the head's ``max_new_tokens``).
            beam_size: hypotheses kept per utterance (``"beam"``).
            length_penalty: the beam search's final ranking divides log-probabilities by
                ``length ** length_penalty``.
            tokenizer: if given, ``Hypothesis.text`` is ``tokenizer.decode(tokens)``.

        Returns:
            One :class:`Hypothesis` per item; ``score`` is the log-probability of the generated
            tokens and the closing boundary.
        """
        if method not in ("greedy", "beam"):
            raise ValueError(
                f"unknown llm_adapter decoding method '{method}'; use 'greedy' or 'beam'"
            )
        B = enc.features.shape[0]
        empty = torch.zeros(B, 0, dtype=torch.long, device=enc.features.device)
        embeds, _, _, lengths = self.sequences(enc, empty, torch.zeros_like(enc.lengths))
        limit = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        # The prefix ends at the prompt: its closing boundary (position length - 1) is dropped.
        scorer = LmScorer(self.lm, embeds, lengths - 1)
        max_lengths = torch.full((B,), limit, dtype=torch.long, device=embeds.device)
        if method == "greedy":
            hyps = greedy_search(scorer, max_lengths, BOUNDARY_ID)
        else:
            hyps = beam_search(scorer, max_lengths, BOUNDARY_ID, beam_size, length_penalty)
        return with_text(hyps, tokenizer)
