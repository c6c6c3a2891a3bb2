"""The contracts every component honours; tests in ``tests/test_contracts.py`` enforce them.

Dims legend: B - batch, T - frames (time steps), D - model width, F - feature bins,
S - audio samples, U - target tokens, C/H/W - image channels/height/width.

Every public boundary is batch-first ``(B, T, D)`` plus ``lengths: (B,)`` int64.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn


@dataclass
class EncoderOutput:
    """What an encoder returns: ``features (B, T, D)`` and valid ``lengths (B,)`` int64."""

    features: Tensor
    lengths: Tensor


@dataclass
class Batch:
    """A modality-neutral training/evaluation batch, built by a task's dataset.

    Attributes:
        inputs: ``(B, T, F)`` features, ``(B, C, H, W)`` images, ``(B, S)`` audio or ``(B, U)``
            token ids, as the task's model reads them.
        lengths: ``(B,)`` int64 valid steps per item (frames, samples or tokens; an image's
            tokens are all valid).
        targets: ``(B, U)`` int64 token ids padded with 0, or ``None`` (e.g. a codec or MAE
            batch, whose target is its input).
        target_lengths: ``(B,)`` int64 valid tokens per item, or ``None``.
        texts: normalized reference texts, when the task has them.
        ids: item ids (cut ids), in batch order.
        prompts: per-item task or prompt (e.g. ``"transcribe"``, ``"caption"``), when a model
            serves several; empty otherwise.
    """

    inputs: Tensor
    lengths: Tensor
    targets: Tensor | None = None
    target_lengths: Tensor | None = None
    texts: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)

    def to(self, device: Any, non_blocking: bool = False) -> Batch:
        """A copy with every tensor moved to ``device``."""

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return dataclasses.replace(
            self,
            inputs=move(self.inputs),
            lengths=move(self.lengths),
            targets=move(self.targets),
            target_lengths=move(self.target_lengths),
        )

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def require_targets(self, who: str) -> tuple[Tensor, Tensor]:
        """``(targets, target_lengths)``, with a teaching error naming ``who`` when absent."""
        if self.targets is None or self.target_lengths is None:
            raise ValueError(
                f"{who} needs token targets in the batch (targets, target_lengths); this batch "
                "has none: train it with a task whose dataset gives text targets (e.g. asr)"
            )
        return self.targets, self.target_lengths


@dataclass
class Hypothesis:
    """One decoding result: token ids, their text, and the decoder's score (log-prob)."""

    tokens: list[int]
    text: str = ""
    score: float = 0.0


def with_text(hyps: list[Hypothesis], tokenizer: Any = None) -> list[Hypothesis]:
    """Fill each ``Hypothesis.text`` with ``tokenizer.decode(tokens)`` (unchanged if ``None``)."""
    if tokenizer is not None:
        for hyp in hyps:
            hyp.text = tokenizer.decode(hyp.tokens)
    return hyps


def partial_hypotheses(
    tokens: list[list[int]], scores: Tensor, tokenizer: Any = None
) -> list[Hypothesis]:
    """The hypotheses of B streams from a streaming decoder's state: copies of each stream's
    ``tokens`` so far with its score ``scores (B,)``, and their text when a tokenizer is given."""
    hyps = [
        Hypothesis(tokens=list(t), score=s) for t, s in zip(tokens, scores.tolist(), strict=True)
    ]
    return with_text(hyps, tokenizer)


def check_encoder_output(enc: EncoderOutput, input_dim: int, head: str) -> None:
    """Raise a teaching error unless ``enc`` is ``(B, T, input_dim)`` with ``lengths (B,)`` in
    ``[0, T]``; ``head`` names the head that checks, e.g. ``"the AED head"``."""
    shape = tuple(enc.features.shape)
    if len(shape) != 3 or shape[-1] != input_dim:
        raise ValueError(
            f"{head} expects encoder features (B, T, {input_dim}), got {shape}; "
            "build the head with input_dim=<the encoder's output_dim>"
        )
    if tuple(enc.lengths.shape) != shape[:1]:
        raise ValueError(f"expected lengths of shape ({shape[0]},), got {tuple(enc.lengths.shape)}")
    if shape[0] and not 0 <= int(enc.lengths.min()) <= int(enc.lengths.max()) <= shape[1]:
        raise ValueError(f"lengths must lie in [0, T={shape[1]}], got {enc.lengths.tolist()}")


def checked_targets(
    batch: Batch, vocab_size: int, blank_id: int, pad_id: int | None = None
) -> tuple[Tensor, Tensor]:
    """``batch``'s targets trimmed to ``(B, U)`` int64 and their lengths ``(B,)`` int64.

    Raises a teaching error unless every real token is a label: in ``[0, vocab_size)`` and not
    ``blank_id``. Positions past each length keep the batch's padding, or hold ``pad_id`` when
    it is given.
    """
    targets, target_lengths = batch.require_targets("this head")
    target_lengths = target_lengths.long()
    U = int(target_lengths.max()) if target_lengths.numel() else 0
    if U > targets.shape[1]:
        raise ValueError(f"target_lengths reach {U} but targets hold {targets.shape[1]}")
    targets = targets[:, :U].long()
    valid = torch.arange(U, device=targets.device)[None] < target_lengths[:, None]  # (B, U)
    bad = valid & ((targets < 0) | (targets >= vocab_size) | (targets == blank_id))
    if bool(bad.any()):
        raise ValueError(
            f"target token {int(targets[bad][0])} is not a label: targets must lie in "
            f"[0, {vocab_size}) and not be the blank {blank_id}; check that the "
            f"head's vocab_size equals the tokenizer's"
        )
    if pad_id is not None:
        targets = targets.masked_fill(~valid, pad_id)
    return targets, target_lengths


class Frontend(nn.Module):
    """Turns raw signals into what an encoder reads, and says what that is.

    Audio frontends take ``audio (B, S)`` float waveforms at ``sample_rate`` and ``lengths (B,)``
    in samples, and return ``(features (B, T, input_dim), lengths (B,))``. Image frontends take
    ``(B, C, H, W)`` and give the encoder images of ``input_size``.

    Attributes:
        input_dim: the feature width ``F`` the encoder is built for (audio).
        sample_rate: the audio rate the frontend expects (audio).
        input_size: ``(H, W)`` of the images the encoder is built for (images).
    """

    input_dim: int
    sample_rate: int
    input_size: tuple[int, int]

    @abstractmethod
    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]: ...


class Encoder(nn.Module):
    """Maps ``x (B, T, F)`` with ``lengths (B,)`` to an :class:`EncoderOutput` of width
    ``output_dim``."""

    output_dim: int

    @abstractmethod
    def forward(self, x: Tensor, lengths: Tensor) -> EncoderOutput: ...


class StreamingEncoder(Encoder):
    """An encoder that also runs chunk by chunk with an explicit, documented state.

    Concatenated ``streaming_forward`` outputs equal ``forward`` under the same context setting.
    The state is batch-first, so the states of separate streams concatenate along dim 0.
    """

    @abstractmethod
    def init_state(
        self, batch_size: int, device: Any = None, att_context: Sequence[int] | None = None
    ) -> Any:
        """Fresh state for ``batch_size`` streams with chunked context ``(left, right)``."""

    @abstractmethod
    def streaming_forward(
        self, chunk: Tensor, chunk_lengths: Tensor, state: Any, final: bool | Tensor = False
    ) -> tuple[EncoderOutput, Any]:
        """Encode new feature frames ``(B, T, F)``; ``final`` flushes what waits for context."""


class Head(nn.Module):
    """A task head on top of any encoder: a training loss and a decoder.

    Two optional hooks, used by ``suite.model``: a head whose constructor takes ``tokenizer``
    is given the task model's (to encode text of its own, e.g. a prompt), and a head built from
    files outside the model package defines ``packaged_spec(spec) -> spec``, the registry spec
    that rebuilds it from the package alone (the LLM adapter, whose LM comes from an LM package).

    Attributes:
        allows_packing: whether the loss stays right when one example is several utterances
            joined one after another (``data.sampler.pack``): true for a sequence loss over the
            whole example (CTC, RNN-T); false, the default, for a head that models one
            utterance per example (e.g. a decoder trained to stop at its end).
    """

    allows_packing: ClassVar[bool] = False

    @abstractmethod
    def loss(self, enc: EncoderOutput, batch: Batch) -> dict[str, Tensor]:
        """Returns a dict of scalar tensors that holds at least ``"loss"``."""

    @abstractmethod
    def decode(self, enc: EncoderOutput, **options: Any) -> list[Hypothesis]:
        """One hypothesis per batch item, in batch order."""


class Codec(nn.Module):
    """A neural audio codec: waveforms to discrete codes and back (``codec`` registry kind).

    Codes are ``(B, Q, T)`` int64: ``Q`` quantizer stages (residual or grouped) of
    ``codebook_size`` entries each, at ``frame_rate`` frames per second of audio at
    ``sample_rate``. A codec trained with quantizer dropout decodes from the first ``q <= Q``
    stages too (a lower bitrate: ``q * log2(codebook_size) * frame_rate`` bits per second).

    Attributes:
        sample_rate: the audio rate the codec reads and writes.
        frame_rate: code frames per second.
        num_quantizers: Q.
        codebook_size: entries per codebook.
    """

    sample_rate: int
    frame_rate: float
    num_quantizers: int
    codebook_size: int

    @abstractmethod
    def encode(
        self, audio: Tensor, lengths: Tensor, num_quantizers: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """``audio (B, S)`` with ``lengths (B,)`` in samples -> ``codes (B, q, T)`` int64 and
        ``code_lengths (B,)`` in frames; ``q`` is ``num_quantizers`` (default: all)."""

    @abstractmethod
    def decode(self, codes: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``codes (B, q, T)`` with ``lengths (B,)`` in frames -> ``audio (B, S)`` and its
        ``lengths (B,)`` in samples."""


class StreamingCodec(Codec):
    """A codec that also runs chunk by chunk with an explicit state; concatenated
    ``encode_step`` codes equal ``encode``'s, and concatenated ``decode_step`` samples equal
    ``decode``'s (fp32 tolerance)."""

    @abstractmethod
    def init_state(self, batch_size: int, device: Any = None) -> Any:
        """Fresh encoder and decoder state for ``batch_size`` streams."""

    @abstractmethod
    def encode_step(
        self, chunk: Tensor, lengths: Tensor, state: Any, final: bool = False
    ) -> tuple[Tensor, Tensor, Any]:
        """New samples ``(B, S)`` -> the code frames they complete ``(B, Q, T)``, their
        lengths and the new state; ``final`` flushes what waits for more samples."""

    @abstractmethod
    def decode_step(
        self, codes: Tensor, lengths: Tensor, state: Any, final: bool = False
    ) -> tuple[Tensor, Tensor, Any]:
        """New code frames -> the samples they complete, their lengths and the new state."""


def check_codes(codes: Tensor, lengths: Tensor, codec: Codec) -> None:
    """Raise a teaching error unless ``codes`` are ``(B, q, T)`` int64 entries of ``codec``'s
    codebooks with ``q <= num_quantizers`` and ``lengths (B,)`` in ``[0, T]``."""
    if codes.dim() != 3 or codes.dtype != torch.long:
        raise ValueError(f"codes must be (B, Q, T) int64, got {tuple(codes.shape)} {codes.dtype}")
    if not 1 <= codes.shape[1] <= codec.num_quantizers:
        raise ValueError(
            f"codes have {codes.shape[1]} quantizer stages; this codec has 1 to "
            f"{codec.num_quantizers}"
        )
    if codes.numel() and not 0 <= int(codes.min()) <= int(codes.max()) < codec.codebook_size:
        raise ValueError(f"code entries must lie in [0, {codec.codebook_size})")
    if tuple(lengths.shape) != codes.shape[:1] or (
        lengths.numel() and not 0 <= int(lengths.min()) <= int(lengths.max()) <= codes.shape[2]
    ):
        raise ValueError(f"code lengths must be ({codes.shape[0]},) in [0, {codes.shape[2]}]")


class Tokenizer(ABC):
    """Text to token ids and back. Id 0 is reserved for padding/blank in every tokenizer."""

    blank_id: int = 0

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abstractmethod
    def decode(self, ids: list[int]) -> str: ...

    @abstractmethod
    def save(self, directory: str | Path) -> None:
        """Write the tokenizer's files into ``directory`` (no pickle)."""
