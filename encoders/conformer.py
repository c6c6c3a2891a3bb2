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
the state of :class:`~suite.encoders.cache_aware.ConformerState`. Concatenated streaming outputs
equal :meth:`forward` with the same context (tested in ``tests/test_contracts.py``). What this
family shares with Squeezeformer is in ``suite.encoders.cache_aware``, the blocks in
``suite.nn``.

Beyond the paper, a context may look ahead: ``(left, right, ahead)`` gives each chunk the
``ahead`` frames after it at every layer, as Emformer's right context (Shi et al., 2021), by
block processing (:class:`~suite.nn.lookahead.Lookahead`); a streaming step then runs each
ready chunk with its look-ahead frames and keeps only the chunk in its caches. A chunk waits for
``right + 1 + ahead`` frames, and no frame is left without look-ahead (the last frame of a plain
chunk has none).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from suite.encoders.cache_aware import CacheAwareEncoder, ConformerState, LayerCache
from suite.kernels.attention import Context, lookahead_frames
from suite.nn.attention import SelfAttention
from suite.nn.convolution import ConvModule
from suite.nn.feedforward import FeedForward
from suite.nn.frames import frame_mask, on_real_rows, real_rows, take
from suite.nn.lookahead import Lookahead, lookahead
from suite.nn.step import StreamStep
from suite.registry import register_encoder

__all__ = ["Conformer", "ConformerBlock", "ConformerState"]


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

        ``rows`` (:func:`~suite.nn.frames.real_rows` of ``valid``) makes the feed-forwards
        skip padding frames; what padding frames hold never reaches a real one either way.
        With ``tokens`` (a look-ahead context), ``x`` and ``valid`` are over its tokens.
        """
        x = x + 0.5 * self.dropout(on_real_rows(self.ff1, x, rows))
        x = x + self.dropout(self.attn(x, lengths, context, tokens=tokens))
        x = x + self.dropout(self.conv(x, valid, tokens))
        x = x + 0.5 * self.dropout(on_real_rows(self.ff2, x, rows))
        return self.norm_out(x)

    def streaming_forward(
        self, x: Tensor, step: StreamStep, cache: LayerCache
    ) -> tuple[Tensor, LayerCache]:
        """One block on new frames ``x (B, T, D)`` of ``step``.

        ``cache`` is ``(keys, values, conv)`` as in :class:`ConformerState`; returns the output
        and the advanced cache.
        """
        keys, values, conv = cache
        x = torch.add(x, self.dropout(self.ff1(x)), alpha=0.5)
        out, keys, values = self.attn.streaming_forward(x, step, keys, values)
        x = x + self.dropout(out)
        out, conv = self.conv.streaming_forward(x, step, conv)
        x = x + self.dropout(out)
        x = torch.add(x, self.dropout(self.ff2(x)), alpha=0.5)
        return self.norm_out(x), (keys, values, conv)


@register_encoder(
    "conformer",
    presets={
        # Tests and smoke runs: 0.24M parameters.
        "tiny": {"d_model": 64, "num_layers": 2, "num_heads": 2, "subsampling_channels": 64},
        # The shipped ASR model: 5.9M parameters, 23.5 MB in fp32 (with a CTC head over up to
        # ~1k tokens), so the package stays under 25 MB without quantization. 64 subsampling
        # channels instead of 128: the convolutions on 100 frames/s x 80 bins are memory-bound
        # on CPU, and halving them costs 2% of the parameters.
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
class Conformer(CacheAwareEncoder):
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
        causal_subsampling: ``False`` pads the subsampling symmetrically in a causal model
            (see :class:`~suite.encoders.cache_aware.CacheAwareEncoder`). ``None``: as
            ``causal``.
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
        super().__init__(
            input_dim,
            d_model,
            subsampling_factor,
            subsampling_channels,
            dropout,
            causal,
            causal_subsampling,
            att_context,
            att_contexts,
            att_context_probs,
        )
        self.layers = nn.ModuleList(
            ConformerBlock(d_model, num_heads, ff_mult, conv_kernel, dropout, causal)
            for _ in range(num_layers)
        )

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

    def stream_blocks(
        self,
        block: Tensor,
        n: Tensor,
        pending: Tensor,
        state: ConformerState,
        caches: list[LayerCache],
    ) -> tuple[Tensor, dict[str, Any]]:
        """The blocks on a step's ready frames (see
        :meth:`~suite.encoders.cache_aware.CacheAwareEncoder.stream_blocks`)."""
        if lookahead_frames(state.context):
            return self._lookahead_step(block, n, pending, state, caches), {}
        if block.shape[1] == 0:
            return block, {}
        step = self._step(state, frame_mask(n, block.shape[1]), state.offsets)
        for i, layer in enumerate(self.layers):
            block, caches[i] = layer.streaming_forward(block, step, caches[i])
        if step.keep is not None:
            block = block * step.keep.to(block.dtype)
        return block, {}

    def _lookahead_step(
        self,
        block: Tensor,
        n: Tensor,
        pending: Tensor,
        state: ConformerState,
        caches: list[LayerCache],
    ) -> Tensor:
        """The layers on ``n`` ready frames of ``block`` under a look-ahead context: chunk by
        chunk, each with the look-ahead frames after it (the next chunk's, or of ``pending``
        frames), the caches moving past the chunk's frames only (see
        :class:`~suite.nn.lookahead.Lookahead`). Updates ``caches``; returns ``(B, max n, D)``
        with frames past each stream's ``n`` zeroed."""
        _, right, ahead = state.context
        size = right + 1
        shown = n + pending.clamp(max=ahead)  # frames of block: ready ones and look-ahead
        ready = int(n.max()) if n.numel() else 0
        outs = [block[:, :0]]  # no chunk ready: no frames
        for start in range(0, ready, size):
            chunk = (n - start).clamp(0, size)  # (B,) this chunk's frames (0: none left)
            width = torch.where(chunk > 0, (shown - start).clamp(0, size + ahead), 0)
            x = take(block, start, size + ahead, dim=1)  # (B, size + ahead, D)
            valid = frame_mask(width, size + ahead)
            step = self._step(state, valid, state.offsets + start, committed=chunk)
            for i, layer in enumerate(self.layers):
                x, caches[i] = layer.streaming_forward(x, step, caches[i])
            outs.append(x[:, :size])
        out = torch.cat(outs, dim=1)[:, :ready]  # a final step's last chunk may be partial
        return out * frame_mask(n, out.shape[1])[..., None].to(out.dtype)
