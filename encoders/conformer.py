"""FastConformer encoder, built ready for cache-aware streaming.

Implements "Fast Conformer with Linearly Scalable Attention for Efficient Speech Recognition"
(Rekesh et al., 2023), i.e. NeMo's FastConformer, with the causal and chunked-context options of
"Stateful Conformer with Cache-based Inference for Streaming ASR" (Noroozi et al., 2024).

Dims legend: B - batch, T - input frames, T' - encoder frames (T / subsampling factor),
F - input feature bins, F' - bins after subsampling, C - subsampling channels,
D - model width (d_model), H - heads, Dh - head width (D / H), K - depthwise conv kernel.

As in the paper:
    * 8x subsampling by three stride-2 3x3 convolutions (the 2nd and 3rd depthwise-separable,
      NeMo's ``dw_striding``) with C channels, flattened over frequency and mapped to D.
    * Conformer blocks (macaron): half-step feed-forward, multi-head self-attention, convolution
      module (pointwise conv + GLU, depthwise conv, norm, SiLU, pointwise conv), half-step
      feed-forward, LayerNorm. Depthwise kernel 9.

What differs:
    * Rotary position embedding (RoPE) on q and k replaces Transformer-XL relative positions.
      RoPE makes the q.k product depend only on the frame distance, without an extra
      position-bias term, so attention stays a plain ``scaled_dot_product_attention`` call that
      fused kernels can replace, and a streaming cache can hold keys already rotated by their
      absolute frame index.
    * LayerNorm, not BatchNorm, in the convolution module: batch statistics would mix padding
      and other utterances into each item, breaking padding invariance and streaming parity.
    * Padded frames are zeroed before every time convolution (subsampling and depthwise), so a
      valid frame sees exactly the zeros it would see if its utterance were alone in the batch.
    * ``causal=True`` pads every time convolution on the left only; with
      ``att_context=(left, right)`` (chunked-limited attention) an output frame then depends on
      no input beyond its attention chunk's right edge. ``causal_subsampling=False`` keeps the
      subsampling symmetric, so that edge is the end of the chunk's last input window.
    * No dropout on attention probabilities: it would put randomness inside the attention seam
      (``suite.kernels.attention``); dropout is applied to each residual branch instead.

Cache-aware streaming, as in the Stateful Conformer paper: ``att_contexts`` trains with several
contexts at once (one sampled per training step), ``att_context`` picks the one used at
inference, and ``init_state`` / ``streaming_forward`` run a causal model chunk by chunk with
the state of :class:`ConformerState`. Concatenated streaming outputs equal :meth:`forward` with
the same context (tested in ``tests/test_contracts.py``). What differs from the paper: the
encoder buffers subsampled frames until their attention chunk is complete (the paper's runtime
feeds whole chunks from outside), so callers may pass any number of feature frames per step;
and the attention cache holds keys already rotated by their absolute positions. The shared
blocks live in ``suite.encoders.blocks``.

Beyond the paper, a context may look ahead: ``(left, right, ahead)`` gives each chunk the
``ahead`` frames after it at every layer, as Emformer's right context (Shi et al., 2021), by
block processing (:class:`~suite.encoders.blocks.Lookahead`); a streaming step then runs each
ready chunk with its look-ahead frames and keeps only the chunk in its caches. A chunk waits for
``right + 1 + ahead`` frames, and no frame is left without look-ahead (the last frame of a plain
chunk has none).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from suite.encoders.blocks import (
    ConvModule,
    ConvSubsampling,
    FeedForward,
    Lookahead,
    SelfAttention,
    StreamStep,
    as_context,
    cache_frames,
    call_context,
    dropped,
    frame_mask,
    lookahead,
    normed,
    on_real_rows,
    real_rows,
    rotate,
    split_ready,
    stream_context,
    stream_step,
    take,
    training_contexts,
)
from suite.interfaces import EncoderOutput, StreamingEncoder
from suite.kernels.attention import Context, lookahead_frames
from suite.registry import register_encoder

# Re-exported: these lived here before ``blocks.py`` and are imported from here.
__all__ = [
    "Conformer",
    "ConformerBlock",
    "ConformerState",
    "ConvModule",
    "ConvSubsampling",
    "FeedForward",
    "SelfAttention",
    "frame_mask",
    "rotate",
]


class ConformerBlock(nn.Module):
    """Macaron Conformer block: ½FF, self-attention, conv module, ½FF, LayerNorm.

    Args:
        d_model: D.
        num_heads: H.
        ff_mult: feed-forward expansion.
        conv_kernel: K.
        dropout: dropout on every residual branch and inside the feed-forwards.
        causal: causal depthwise convolution.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        ff_mult: int,
        conv_kernel: int,
        dropout: float,
        causal: bool,
    ):
        super().__init__()
        self.ff1 = FeedForward(d_model, ff_mult, dropout)
        self.attn = SelfAttention(d_model, num_heads)
        self.conv = ConvModule(d_model, conv_kernel, causal)
        self.ff2 = FeedForward(d_model, ff_mult, dropout)
        self.norm_out = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        lengths: Tensor,
        valid: Tensor,
        context: Context,
        rows: Tensor | None = None,
        tokens: Lookahead | None = None,
    ) -> Tensor:
        """``x (B, T', D)``, ``lengths (B,)``, ``valid (B, T', 1)`` -> ``(B, T', D)``.

        ``rows`` (:func:`~suite.encoders.blocks.real_rows` of ``valid``) makes the feed-forwards
        skip padding frames; what padding frames hold never reaches a real one either way.
        With ``tokens`` (a look-ahead context), ``x`` and ``valid`` are over its tokens.
        """
        x = x + 0.5 * dropped(self.dropout, on_real_rows(self.ff1, x, rows))
        x = x + dropped(self.dropout, self.attn(x, lengths, context, tokens=tokens))
        x = x + dropped(self.dropout, self.conv(x, valid, tokens))
        x = x + 0.5 * dropped(self.dropout, on_real_rows(self.ff2, x, rows))
        return self.norm_out(x)

    def streaming_forward(
        self, x: Tensor, step: StreamStep, cache: tuple[Tensor, Tensor, Tensor]
    ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        """One block on new frames ``x (B, T, D)`` of ``step``.

        ``cache`` is ``(keys, values, conv)`` as in :class:`ConformerState`; returns the output
        and the advanced cache.
        """
        keys, values, conv = cache
        x = torch.add(x, dropped(self.dropout, self.ff1(x)), alpha=0.5)
        out, keys, values = self.attn.streaming_forward(x, step, keys, values)
        x = x + dropped(self.dropout, out)
        out, conv = self.conv.streaming_forward(x, step, conv)
        x = x + dropped(self.dropout, out)
        x = torch.add(x, dropped(self.dropout, self.ff2(x)), alpha=0.5)
        return normed(self.norm_out, x), (keys, values, conv)


@dataclass
class ConformerState:
    """What :meth:`Conformer.streaming_forward` carries between steps, for B streams.

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


def front_state(
    subsampling: ConvSubsampling, batch_size: int, context: tuple[int, int], device: Any
) -> dict[str, Any]:
    """The fields of a fresh :class:`ConformerState` that precede the layer caches."""
    zeros = torch.zeros(batch_size, dtype=torch.long, device=device)
    return {
        "context": context,
        "seen": zeros,
        "subsampling": subsampling.init_cache(batch_size, device),
        "pending": torch.zeros(
            batch_size,
            context[1] + lookahead_frames(context),
            subsampling.out.out_features,
            device=device,
        ),
        "pending_lengths": zeros,
        "offsets": zeros,
    }


def layer_cache(
    layer: nn.Module, batch_size: int, context: tuple[int, int], stride: int, device: Any
) -> tuple[Tensor, Tensor, Tensor]:
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


def stack_caches(caches: Sequence[tuple[Tensor, Tensor, Tensor]]) -> dict[str, list[Tensor]]:
    """Per-layer ``(keys, values, conv)`` tuples as the state's ``keys``/``values``/``conv``."""
    return {
        "keys": [c[0] for c in caches],
        "values": [c[1] for c in caches],
        "conv": [c[2] for c in caches],
    }


def streaming_front(
    subsampling: ConvSubsampling,
    dropout: nn.Module,
    chunk: Tensor,
    chunk_lengths: Tensor,
    state: ConformerState,
    final: bool | Tensor,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """The first half of a streaming step, shared by the encoders of this family.

    Subsamples the new feature frames (cached) and cuts the frames whose attention
    chunk is complete (all of them for streams in ``final``).

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
    x, n, cache = subsampling.streaming_forward(
        chunk, lengths, state.subsampling, state.seen, flags
    )
    block, n, pending, pending_lengths = split_ready(
        state.pending,
        state.pending_lengths,
        dropped(dropout, x),
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


@register_encoder(
    "conformer",
    presets={
        # Tests and smoke runs: 0.24M parameters.
        "tiny": {"d_model": 64, "num_layers": 2, "num_heads": 2, "subsampling_channels": 64},
        # The shipped ASR model: 5.9M parameters, 23.5 MB in fp32 (with a CTC head over up to
        # ~1k tokens), so the package stays under 25 MB without quantization. The subsampling
        # convolutions run on 100 frames/s x 80 bins and are memory-bound on CPU: 64 channels
        # instead of 128 halves a training step (4.4 s -> 2.1 s for 240 s of audio, 2 cores)
        # for 2% fewer parameters.
        "small": {
            "d_model": 176,
            "num_layers": 8,
            "num_heads": 4,
            "subsampling_channels": 64,
        },
        # FastConformer-M widths (d_model 256, 16 layers): 25M parameters.
        "medium": {
            "d_model": 256,
            "num_layers": 16,
            "num_heads": 4,
            "subsampling_channels": 256,
        },
    },
)
class Conformer(StreamingEncoder):
    """FastConformer encoder: 8x conv subsampling, then macaron Conformer blocks.

    Args:
        input_dim: F, feature bins per input frame (e.g. 80 log-mel bins).
        d_model: D, model width; also ``output_dim``.
        num_layers: number of Conformer blocks.
        num_heads: attention heads; ``d_model / num_heads`` must be even (rotary pairs).
        ff_mult: feed-forward expansion factor.
        conv_kernel: K, odd depthwise kernel of the convolution module.
        subsampling_factor: time reduction of the front convolutions, a power of two.
        subsampling_channels: C, channels of the subsampling convolutions (default D).
        dropout: dropout on residual branches, inside feed-forwards and after subsampling.
        causal: make every time convolution causal (left padding only); needed for streaming.
        causal_subsampling: ``False`` pads the subsampling symmetrically in a causal model, so
            each frame sees its whole input window (NeMo's ``causal_downsampling``): at 4x a
            chunk's last 30 ms of features then reach its own frames, at no added latency
            (streams emit a frame when its window is complete). ``None``: as ``causal``.
        att_context: ``None`` for full-context attention, or ``(left, right)`` in encoder
            frames for chunked-limited attention (``left == -1``: unlimited left), or
            ``(left, right, ahead)`` with ``ahead`` look-ahead frames per chunk (causal only,
            ``left >= 0``). Used at inference and streaming; may be reassigned between calls.
            Defaults to the first of ``att_contexts`` when those are given.
        att_contexts: contexts to train with, one drawn per training-mode ``forward`` call
            with torch's global generator (entries may be ``None``: full context). ``None``
            trains with ``att_context``.
        att_context_probs: how often each of ``att_contexts`` is drawn (``None``: uniformly),
            e.g. to weight the smallest chunk that a model streams with.
    """

    def __init__(
        self,
        input_dim: int = 80,
        d_model: int = 176,
        num_layers: int = 8,
        num_heads: int = 4,
        ff_mult: int = 4,
        conv_kernel: int = 9,
        subsampling_factor: int = 8,
        subsampling_channels: int | None = None,
        dropout: float = 0.1,
        causal: bool = False,
        causal_subsampling: bool | None = None,
        att_context: Sequence[int] | None = None,
        att_contexts: Sequence[Sequence[int] | None] | None = None,
        att_context_probs: Sequence[float] | None = None,
    ):
        super().__init__()
        self.input_dim = input_dim
        self.output_dim = d_model
        self.causal = causal
        self.att_contexts, self.att_context_probs = training_contexts(
            att_contexts, att_context_probs
        )
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
        self.layers = nn.ModuleList(
            ConformerBlock(d_model, num_heads, ff_mult, conv_kernel, dropout, causal)
            for _ in range(num_layers)
        )

    @property
    def att_context(self) -> Context:
        """``None`` (full context) or ``(left, right)`` chunked-limited context in frames."""
        return self._att_context

    @att_context.setter
    def att_context(self, value: Sequence[int] | None) -> None:
        # Recipes give YAML lists; keep a hashable tuple (the chunk mask is cached on it).
        self._att_context = as_context(value)

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
        context = call_context(self, att_context)
        x, lengths = self.subsampling(x, lengths)  # (B, T', D), (B,)
        x = self.run_blocks(self.dropout(x), lengths, context)
        return EncoderOutput(features=x, lengths=lengths)

    def run_blocks(self, x: Tensor, lengths: Tensor, context: Context) -> Tensor:
        """The block stack on subsampled frames ``x (B, T', D)`` with ``lengths (B,)``, padding
        frames zeroed at the end (``suite bench encoder`` times this part alone)."""
        valid = frame_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)  # (B, T', 1)
        if lookahead_frames(context):
            if not self.causal:
                raise ValueError(
                    f"att_context {context} looks ahead past each chunk, which needs causal=True"
                )
            tokens = lookahead(lengths, x.shape[1], context, self.layers[0].conv.kernel)
            real = tokens.valid.to(x.dtype)
            h = x[:, tokens.source] * real  # every token's frame
            for layer in self.layers:
                h = layer(h, lengths, real, context, None, tokens)
            return h[:, : x.shape[1]] * valid  # the frames; the look-ahead copies are dropped
        rows = real_rows(valid)
        for layer in self.layers:
            x = layer(x, lengths, valid, context, rows)
        return x * valid

    def init_state(
        self,
        batch_size: int,
        device: Any = None,
        att_context: Sequence[int] | None = None,
    ) -> ConformerState:
        """The state of ``batch_size`` fresh streams.

        Args:
            batch_size: B.
            device: where the caches live (default: the model's device).
            att_context: the ``(left, right)`` or ``(left, right, ahead)`` to stream with
                (default: ``self.att_context``); needs ``causal=True`` and ``left >= 0``.
        """
        context = stream_context(
            self.att_context if att_context is None else as_context(att_context),
            self.causal,
            type(self).__name__,
        )
        device = self.subsampling.out.weight.device if device is None else device
        caches = [layer_cache(layer, batch_size, context, 1, device) for layer in self.layers]
        return ConformerState(
            **front_state(self.subsampling, batch_size, context, device),
            **stack_caches(caches),
        )

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
        block, n, front = streaming_front(
            self.subsampling, self.dropout, chunk, chunk_lengths, state, final
        )
        caches = list(zip(state.keys, state.values, state.conv, strict=True))
        if lookahead_frames(state.context):
            block = self._lookahead_step(block, n, front["pending_lengths"], state, caches)
        elif block.shape[1] > 0:
            positions = state.offsets[:, None] + torch.arange(block.shape[1], device=n.device)
            step = stream_step(
                frame_mask(n, block.shape[1]),
                positions,
                state.context,
                cache_frames(state.context),
                self.layers[0].attn.inv_freq,
            )
            for i, layer in enumerate(self.layers):
                block, caches[i] = layer.streaming_forward(block, step, caches[i])
            if step.keep is not None:
                block = block * step.keep.to(block.dtype)
        new_state = dataclasses.replace(state, **front, **stack_caches(caches))
        return EncoderOutput(features=block, lengths=n), new_state

    def _lookahead_step(
        self,
        block: Tensor,
        n: Tensor,
        pending: Tensor,
        state: ConformerState,
        caches: list[tuple[Tensor, Tensor, Tensor]],
    ) -> Tensor:
        """The layers on ``n`` ready frames of ``block`` under a look-ahead context: chunk by
        chunk, each with the look-ahead frames after it (the next chunk's, or of ``pending``
        frames), the caches moving past the chunk's frames only (see
        :class:`~suite.encoders.blocks.Lookahead`). Updates ``caches``; returns
        ``(B, max n, D)`` with frames past each stream's ``n`` zeroed."""
        _, right, ahead = state.context
        size = right + 1
        shown = n + pending.clamp(max=ahead)  # frames of block: ready ones and look-ahead
        ready = int(n.max()) if n.numel() else 0
        outs = [block[:, :0]]  # no chunk ready: no frames
        for start in range(0, ready, size):
            chunk = (n - start).clamp(0, size)  # (B,) this chunk's frames (0: none left)
            width = torch.where(chunk > 0, (shown - start).clamp(0, size + ahead), 0)
            x = take(block, start, size + ahead, dim=1)  # (B, size + ahead, D)
            positions = state.offsets[:, None] + start + torch.arange(size + ahead, device=n.device)
            # The caches hold exactly the chunk's left context: every valid key is visible.
            step = stream_step(
                frame_mask(width, size + ahead),
                positions,
                None,
                cache_frames(state.context),
                self.layers[0].attn.inv_freq,
                committed=chunk,
            )
            for i, layer in enumerate(self.layers):
                x, caches[i] = layer.streaming_forward(x, step, caches[i])
            outs.append(x[:, :size])
        out = torch.cat(outs, dim=1)[:, :ready]  # a final step's last chunk may be partial
        return out * frame_mask(n, out.shape[1])[..., None].to(out.dtype)
