"""Attention contexts of chunked-limited attention: checked, drawn in training, streamed with.

A context is ``None`` (full context), ``(left, right)`` or ``(left, right, ahead)`` in encoder
frames (see :mod:`suite.kernels.attention`). Training with several contexts at once, one drawn
per step, and choosing one at inference follow "Stateful Conformer with Cache-based Inference
for Streaming ASR" (Noroozi et al., 2024); the option names are NeMo's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from suite.kernels.attention import Context, check_context


def as_context(value: Sequence[int] | None) -> Context:
    """A validated, hashable ``(left, right)`` or ``(left, right, ahead)`` (recipes give YAML
    lists; a zero look-ahead is dropped) or ``None``."""
    context = None if value is None else tuple(int(v) for v in value)
    check_context(context)
    if context is not None and len(context) == 3 and context[2] == 0:
        context = context[:2]
    return context


def sample_context(contexts: Sequence[Context], probs: Tensor | None = None) -> Context:
    """One of ``contexts``, drawn with torch's global generator (seeded by the trainer):
    uniformly, or with ``probs`` (one per context, summing to 1)."""
    if probs is None:
        return contexts[int(torch.randint(len(contexts), ()))]
    return contexts[int(torch.multinomial(probs, 1))]


def call_context(encoder: nn.Module, att_context: Sequence[int] | None | str) -> Context:
    """The context one ``forward`` call of a streaming encoder runs with: ``att_context`` when
    given (``None``: full context); for ``"auto"`` one drawn from the encoder's
    ``att_contexts`` in training mode, else its ``att_context``."""
    if att_context != "auto":
        return as_context(att_context)
    if encoder.training and encoder.att_contexts:
        return sample_context(encoder.att_contexts, encoder.att_context_probs)
    return encoder.att_context


def training_contexts(
    att_contexts: Sequence[Sequence[int] | None] | None, probs: Sequence[float] | None
) -> tuple[list[Context] | None, Tensor | None]:
    """An encoder's ``att_contexts`` as contexts and ``att_context_probs`` as a tensor, checked:
    ``None`` trains with the inference context, and ``None`` probabilities draw uniformly."""
    contexts = None if att_contexts is None else [as_context(c) for c in att_contexts]
    if contexts is not None and not contexts:
        raise ValueError("att_contexts must list at least one context, or be None")
    if probs is None:
        return contexts, None
    if contexts is None or len(probs) != len(contexts):
        raise ValueError(
            f"att_context_probs needs one probability per entry of att_contexts, got "
            f"{list(probs)} for {contexts}"
        )
    t = torch.tensor([float(p) for p in probs], dtype=torch.float64)
    if bool((t < 0).any()) or abs(float(t.sum()) - 1.0) > 1e-6:
        raise ValueError(f"att_context_probs must be non-negative and sum to 1, got {list(probs)}")
    return contexts, t


def stream_context(context: Context, causal: bool, who: str) -> tuple[int, ...]:
    """The ``(left, right)`` a stream runs with; explains what makes a model unstreamable."""
    if not causal:
        raise ValueError(
            f"{who} was built with causal=False: its convolutions look at future frames, so "
            "streaming could not match offline results; train (or build) it with causal=True"
        )
    if context is None or context[0] < 0:
        raise ValueError(
            f"{who} streams with a chunked context of finite left size, got att_context="
            f"{context}; pass att_context=(left, right) with left >= 0, e.g. (70, 13) for "
            "14-frame chunks and 5 chunks of history (the context the model was trained with)"
        )
    return context


def cache_frames(context: tuple[int, ...], stride: int = 1) -> int:
    """Frames an attention cache keeps at a layer of ``stride`` full-rate frames per frame.

    Chunked-limited attention reaches back ``left // (right + 1)`` whole chunks; at half the
    frame rate those chunks hold ``ceil(... / 2)`` frames at most.
    """
    left, right = context[:2]
    size = right + 1
    frames = (left // size) * size  # full-rate frames in the reachable earlier chunks
    return (frames + stride - 1) // stride
