"""What the cache-aware streaming encoders of the Conformer family share.

FastConformer (``conformer.py``) and Squeezeformer (``squeezeformer.py``) both run convolutional
subsampling, then a stack of blocks with rotary self-attention and causal convolutions, and
stream chunk by chunk after "Stateful Conformer with Cache-based Inference for Streaming ASR"
(Noroozi et al., 2024). :class:`CacheAwareEncoder` holds what they share: the attention-context
options, the subsampling, the streaming state and the front half of a streaming step (subsample,
then cut the frames whose attention chunk is complete). A family writes its blocks
(:meth:`~CacheAwareEncoder.run_blocks`, :meth:`~CacheAwareEncoder.stream_blocks`).

What differs from the paper: the encoder buffers subsampled frames until their attention chunk
is complete (the paper's runtime feeds whole chunks from outside), so callers may pass any
number of feature frames per step; and the attention cache holds keys already rotated by their
absolute positions.

Dims legend: B - batch (streams), T - input frames, T' - encoder frames, F - feature bins,
C_s / F_s - channels / bins entering subsampling stage s, D - model width, H - heads,
Dh - head width, K - depthwise kernel, M - cached frames, c - attention chunk frames.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from suite.interfaces import EncoderOutput, StreamingEncoder
from suite.kernels.attention import Context, lookahead_frames, no_lookahead
from suite.nn.context import (
    as_context,
    cache_frames,
    call_context,
    stream_context,
    training_contexts,
)
from suite.nn.frames import split_ready
from suite.nn.step import StreamStep, stream_step
from suite.nn.subsampling import ConvSubsampling

LayerCache = tuple[Tensor, Tensor, Tensor]  # one block's (keys, values, conv)


@dataclass
class ConformerState:
    """What :meth:`CacheAwareEncoder.streaming_forward` carries between steps, for B streams.

    Every tensor is batch-first, so states of separate streams concatenate along dim 0
    (``suite.streaming.concat_states``) and streams of different ages step together.
    ``c = right + 1`` is the attention chunk and ``M = (left // c) * c`` the cached frames.

    Attributes:
        context: ``(left, right)`` or ``(left, right, ahead)`` chunked-limited context, in
            encoder frames, these streams run with (fixed for a stream's life).
        seen: ``(B,)`` int64 feature frames each stream has consumed.
        subsampling: per subsampling stage, ``(B, C_s, 2, F_s)``: the stage's last two input
            frames (its causal left padding; zeros for a fresh stream).
        pending: ``(B, c - 1 + ahead, D)`` subsampled frames waiting for their chunk to fill
            (and its look-ahead to come), left-aligned; they start at a chunk boundary.
        pending_lengths: ``(B,)`` int64 valid frames in ``pending``.
        offsets: ``(B,)`` int64 encoder frames each stream has emitted (a multiple of ``c``
            until its final step); the absolute position of its next frame.
        keys: per layer, ``(B, H, M, Dh)`` keys of the stream's last M frames, already
            rotated by their absolute positions, oldest first; slots before the stream's
            first frame are ignored by the attention mask.
        values: per layer, ``(B, H, M, Dh)``.
        conv: per layer, ``(B, K - 1, D)`` the last inputs of the causal depthwise conv.
    """

    context: tuple[int, int]
    seen: Tensor
    subsampling: list[Tensor]
    pending: Tensor
    pending_lengths: Tensor
    offsets: Tensor
    keys: list[Tensor]
    values: list[Tensor]
    conv: list[Tensor]


class CacheAwareEncoder(StreamingEncoder):
    """Subsampling, attention contexts and the streaming state of the Conformer family.

    Subclasses build ``self.layers`` (blocks with ``attn`` and ``conv`` modules, whose caches
    :class:`ConformerState` holds) and write :meth:`run_blocks` and :meth:`stream_blocks`.

    Args:
        input_dim: F, feature bins per input frame.
        d_model: D, model width; also ``output_dim``.
        subsampling_factor: time reduction of the front convolutions, a power of two.
        subsampling_channels: channels of the subsampling convolutions (default D).
        dropout: dropout after subsampling (the blocks take their own).
        causal: every time convolution causal (left padding only); needed for streaming.
        causal_subsampling: ``False`` pads the subsampling symmetrically in a causal model, so
            each frame sees its whole input window (NeMo's ``causal_downsampling``): at 4x a
            chunk's last 30 ms of features then reach its own frames, at no added latency
            (streams emit a frame when its window is complete). ``None``: as ``causal``.
        att_context: ``None`` (full context) or a chunked-limited context in encoder frames,
            used at inference and streaming; may be reassigned between calls. Defaults to the
            first of ``att_contexts`` when those are given.
        att_contexts: contexts to train with, one drawn per training-mode ``forward`` call
            with torch's global generator (entries may be ``None``: full context). ``None``
            trains with ``att_context``.
        att_context_probs: how often each of ``att_contexts`` is drawn (``None``: uniformly).
    """

    #: Whether the family runs ``(left, right, ahead)`` contexts (block processing).
    runs_lookahead = True

    def __init__(
        self,
        input_dim: int,
        d_model: int,
        subsampling_factor: int,
        subsampling_channels: int | None,
        dropout: float,
        causal: bool,
        causal_subsampling: bool | None,
        att_context: Sequence[int] | None,
        att_contexts: Sequence[Sequence[int] | None] | None,
        att_context_probs: Sequence[float] | None,
    ):
        super().__init__()
        self.input_dim = input_dim
        self.output_dim = d_model
        self.causal = causal
        self.att_contexts, self.att_context_probs = training_contexts(
            att_contexts, att_context_probs
        )
        for context in self.att_contexts or []:
            self._checked(context)
        if att_context is None and self.att_contexts:
            att_context = self.att_contexts[0]
        self.att_context = att_context  # validated by the property setter
        self.subsampling = ConvSubsampling(
            input_dim,
            d_model,
            subsampling_channels or d_model,
            subsampling_factor,
            causal if causal_subsampling is None else causal_subsampling,
        )
        self.dropout = nn.Dropout(dropout)

    @property
    def att_context(self) -> Context:
        """``None`` (full context) or the chunked-limited context in encoder frames."""
        return self._att_context

    @att_context.setter
    def att_context(self, value: Sequence[int] | None) -> None:
        # Recipes give YAML lists; keep a hashable tuple (the chunk mask is cached on it).
        self._att_context = self._checked(as_context(value))

    def _checked(self, context: Context) -> Context:
        """``context``, or a teaching error where the family runs no look-ahead contexts."""
        return context if self.runs_lookahead else no_lookahead(context, type(self).__name__)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Exact ``(B,)`` encoder lengths for ``(B,)`` input lengths (``ceil`` per stride-2)."""
        return self.subsampling.output_lengths(lengths)

    def _check_features(self, x: Tensor) -> None:
        if x.dim() != 3 or x.shape[-1] != self.input_dim:
            raise ValueError(
                f"{type(self).__name__} expects features (B, T, {self.input_dim}), got "
                f"{tuple(x.shape)}; set input_dim to the frontend's feature size"
            )

    def forward(
        self, x: Tensor, lengths: Tensor, att_context: Sequence[int] | None | str = "auto"
    ) -> EncoderOutput:
        """Encode ``x (B, T, F)`` with valid ``lengths (B,)``.

        Args:
            x: features ``(B, T, F)``.
            lengths: valid frames ``(B,)``.
            att_context: ``"auto"``: in training mode with ``att_contexts`` one of them, drawn
                for this call, otherwise the encoder's ``att_context``; or the context for this
                call: ``None`` (full) or ``(left, right)`` (e.g. a full-context teacher).

        Returns:
            ``EncoderOutput(features (B, T', D), lengths (B,))``; padded frames are zero.
        """
        self._check_features(x)
        context = self._checked(call_context(self, att_context))
        x, lengths = self.subsampling(x, lengths)  # (B, T', D), (B,)
        x = self.run_blocks(self.dropout(x), lengths, context)
        return EncoderOutput(features=x, lengths=lengths)

    def run_blocks(self, x: Tensor, lengths: Tensor, context: Context) -> Tensor:
        """The block stack on subsampled frames ``x (B, T', D)`` with ``lengths (B,)``, padding
        frames zeroed at the end (``suite bench encoder`` times this part alone)."""
        raise NotImplementedError

    def layer_stride(self, index: int) -> int:
        """Full-rate encoder frames per frame at block ``index`` (1: the full rate)."""
        return 1

    def _fresh_state(
        self, batch_size: int, device: Any, att_context: Sequence[int] | None
    ) -> dict[str, Any]:
        """The fields of :class:`ConformerState` for ``batch_size`` fresh streams."""
        context = stream_context(
            self.att_context if att_context is None else self._checked(as_context(att_context)),
            self.causal,
            type(self).__name__,
        )
        device = self.subsampling.out.weight.device if device is None else device
        zeros = torch.zeros(batch_size, dtype=torch.long, device=device)
        width = (batch_size, context[1] + lookahead_frames(context), self.output_dim)
        caches = [
            _layer_cache(layer, batch_size, context, self.layer_stride(i), device)
            for i, layer in enumerate(self.layers)
        ]
        return {
            "context": context,
            "seen": zeros,
            "subsampling": self.subsampling.init_cache(batch_size, device),
            "pending": torch.zeros(width, device=device),
            "pending_lengths": zeros,
            "offsets": zeros,
            **_stack_caches(caches),
        }

    def init_state(
        self, batch_size: int, device: Any = None, att_context: Sequence[int] | None = None
    ) -> ConformerState:
        """The state of ``batch_size`` fresh streams.

        Args:
            batch_size: B.
            device: where the caches live (default: the model's device).
            att_context: the context to stream with (default: ``self.att_context``); needs
                ``causal=True`` and ``left >= 0``.
        """
        return ConformerState(**self._fresh_state(batch_size, device, att_context))

    def streaming_forward(
        self,
        chunk: Tensor,
        chunk_lengths: Tensor,
        state: ConformerState,
        final: bool | Tensor = False,
    ) -> tuple[EncoderOutput, ConformerState]:
        """Encode the next feature frames of B streams.

        Streams may be of different ages and receive different numbers of frames (including
        none). Encoder frames are emitted once their attention chunk is complete; ``final``
        flushes a stream's last, partial chunk (the stream then ends). Concatenating each
        stream's valid outputs over all steps equals :meth:`forward` on the whole stream with
        ``att_context = state.context``.

        Args:
            chunk: ``(B, T, F)`` new feature frames, padded on the right.
            chunk_lengths: ``(B,)`` valid new frames per stream.
            state: from :meth:`init_state` or the previous step.
            final: True (all streams) or a ``(B,)`` bool tensor: streams that end here.

        Returns:
            ``(EncoderOutput(features (B, T', D), lengths (B,)), new state)``; ``T'`` may be 0.
        """
        self._check_features(chunk)
        block, n, front = self._streaming_front(chunk, chunk_lengths, state, final)
        caches = list(zip(state.keys, state.values, state.conv, strict=True))
        block, fields = self.stream_blocks(block, n, front["pending_lengths"], state, caches)
        new_state = dataclasses.replace(state, **front, **_stack_caches(caches), **fields)
        return EncoderOutput(features=block, lengths=n), new_state

    def stream_blocks(
        self,
        block: Tensor,
        n: Tensor,
        pending: Tensor,
        state: ConformerState,
        caches: list[LayerCache],
    ) -> tuple[Tensor, dict[str, Any]]:
        """The blocks on the ``n (B,)`` ready frames of ``block (B, T', D)``, which starts at
        each stream's ``state.offsets`` (and shows up to ``ahead`` of the ``pending (B,)``
        frames after them). Updates ``caches`` (per layer) in place.

        Returns:
            The output ``(B, T', D)`` (frames past each stream's ``n`` zeroed) and the new
            values of the family's own state fields.
        """
        raise NotImplementedError

    def _streaming_front(
        self, chunk: Tensor, chunk_lengths: Tensor, state: ConformerState, final: bool | Tensor
    ) -> tuple[Tensor, Tensor, dict[str, Any]]:
        """Subsample the new feature frames (cached) and cut the frames whose attention chunk
        is complete (all of them for streams in ``final``).

        Returns:
            ``block (B, T', D)`` starting at each stream's ``state.offsets``, its valid
            ``lengths (B,)``, and the new values of the state's non-layer fields.
        """
        if chunk.shape[0] != state.seen.shape[0]:
            raise ValueError(
                f"chunk holds {chunk.shape[0]} streams but the state {state.seen.shape[0]}; "
                "build the state with init_state(batch_size=chunk.shape[0])"
            )
        device = state.seen.device
        chunk, lengths = chunk.to(device), chunk_lengths.to(device).long()
        flags = torch.as_tensor(final, dtype=torch.bool, device=device).expand(chunk.shape[0])
        x, n, cache = self.subsampling.streaming_forward(
            chunk, lengths, state.subsampling, state.seen, flags
        )
        block, n, pending, pending_lengths = split_ready(
            state.pending,
            state.pending_lengths,
            self.dropout(x),
            n,
            state.context[1] + 1,
            flags,
            lookahead_frames(state.context),
        )
        front = {
            "seen": state.seen + lengths,
            "subsampling": cache,
            "pending": pending,
            "pending_lengths": pending_lengths,
            "offsets": state.offsets + n,
        }
        return block, n, front

    def _step(
        self,
        state: ConformerState,
        valid: Tensor,
        first: Tensor,
        stride: int = 1,
        committed: Tensor | None = None,
    ) -> StreamStep:
        """The :class:`~suite.nn.step.StreamStep` of a block of frames ``valid (B, T)`` whose
        first is at position ``first (B,)`` of each stream, at ``stride`` full-rate frames per
        frame, under the streams' context. A look-ahead step (``committed``: the chunk's frames)
        sees every valid key: its caches hold exactly the chunk's left context.
        """
        positions = first[:, None] + torch.arange(valid.shape[1], device=valid.device)  # (B, T)
        context = state.context if committed is None else None
        M = cache_frames(state.context, stride)
        inv_freq = self.layers[0].attn.inv_freq
        return stream_step(valid, positions, context, M, inv_freq, stride, committed)


def _layer_cache(
    layer: nn.Module, batch_size: int, context: tuple[int, ...], stride: int, device: Any
) -> LayerCache:
    """Zero ``(keys, values, conv)`` caches of one block with ``attn`` and ``conv`` modules,
    running at ``stride`` full-rate frames per frame."""
    attn, conv = layer.attn, layer.conv
    M = cache_frames(context, stride)
    kv = (batch_size, attn.num_heads, M, attn.head_dim)
    conv_shape = (batch_size, conv.kernel - 1, conv.depthwise.in_channels)
    return (
        torch.zeros(kv, device=device),
        torch.zeros(kv, device=device),
        torch.zeros(conv_shape, device=device),
    )


def _stack_caches(caches: Sequence[LayerCache]) -> dict[str, list[Tensor]]:
    """Per-layer ``(keys, values, conv)`` tuples as the state's ``keys``/``values``/``conv``."""
    return {
        "keys": [c[0] for c in caches],
        "values": [c[1] for c in caches],
        "conv": [c[2] for c in caches],
    }
