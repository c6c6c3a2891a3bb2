"""Pre-norm multi-head self-attention with rotary positions, offline and cache-aware streaming.

Dims legend: B - batch (streams), T - frames, D - model width, H - heads, Dh - head width,
M - cached frames.

The streaming path follows "Stateful Conformer with Cache-based Inference for Streaming ASR"
(Noroozi et al., 2024), except that the cache holds keys already rotated by their absolute frame
index (rotary positions) instead of un-encoded activations, so no relative-position term has to
be recomputed per step. The attention arithmetic itself is :mod:`suite.kernels.attention`'s.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from suite.kernels.attention import Context, attention, cached_attention, masked_attention
from suite.kernels.backends import check_backend, resolve, self_attention
from suite.nn import NormLayer
from suite.nn.frames import append, frame_mask, take
from suite.nn.lookahead import Lookahead, blocked_attention
from suite.nn.rotary import apply_rotary, rotary_frequencies, rotary_tables
from suite.nn.step import StreamStep


class RotaryAttentionBase(nn.Module):
    """The parts of a pre-norm multi-head self-attention with rotary positions: the input
    normalization, the joint query/key/value projection, the output projection and the rotary
    frequencies. Subclasses write ``forward``: :class:`SelfAttention` here, and the language
    model's causal, KV-cached one (:class:`suite.heads.lm.CausalSelfAttention`).

    Args:
        d_model: D.
        num_heads: H; ``D / H`` must be even for the rotary pairs.
        rope_base: rotary base period.
        norm_layer: the input normalization (Squeezeformer passes a learned scale and bias).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        rope_base: float = 10000.0,
        norm_layer: NormLayer = nn.LayerNorm,
    ):
        super().__init__()
        if d_model % num_heads or (d_model // num_heads) % 2:
            fit = -(-d_model // (2 * num_heads)) * 2 * num_heads  # the next width that splits
            raise ValueError(
                f"d_model ({d_model}) must split into num_heads ({num_heads}) heads of even "
                f"width for rotary embedding; e.g. d_model={fit} with {num_heads} heads "
                f"(width {fit // num_heads})"
            )
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.norm = norm_layer(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        inv_freq = rotary_frequencies(self.head_dim, rope_base)
        # Not persistent: derived from the config, so checkpoints do not carry it.
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def _qkv(self, x: Tensor) -> Tensor:
        """``x (B, T, D)`` -> normalized, projected ``(B, T, 3, H, Dh)`` queries, keys, values."""
        B, T, _ = x.shape
        return self.qkv(self.norm(x)).view(B, T, 3, self.num_heads, self.head_dim)


class SelfAttention(RotaryAttentionBase):
    """Pre-norm multi-head self-attention with rotary positions, offline and streaming.

    Constructor arguments as :class:`RotaryAttentionBase` (``d_model``, ``num_heads``,
    ``rope_base``, ``norm_layer``), and ``backend``, which runs the offline attention (see
    :mod:`suite.kernels.backends`): ``"auto"`` takes the Triton packed kernel for CUDA tensors
    and SDPA otherwise; ``"sdpa"``, ``"flex"``, ``"reference"`` and ``"triton"`` force one. A
    plain attribute: :func:`set_attention_backend` switches a built model's layers.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        rope_base: float = 10000.0,
        norm_layer: NormLayer = nn.LayerNorm,
        backend: str = "auto",
    ):
        super().__init__(d_model, num_heads, rope_base, norm_layer)
        self.backend = check_backend(backend)

    def forward(
        self,
        x: Tensor,
        lengths: Tensor,
        context: Context,
        stride: int = 1,
        tokens: Lookahead | None = None,
    ) -> Tensor:
        """``x (B, T, D)`` -> ``(B, T, D)``; pad frames are masked as keys.

        ``stride`` is the full-rate frames per frame of ``x`` (2 in Squeezeformer's middle
        blocks): chunked contexts count full-rate frames. With ``tokens`` (a look-ahead
        context), ``x`` holds its tokens and their mask replaces ``lengths`` and ``context``.
        """
        B, T, D = x.shape
        qkv = self._qkv(x)  # (B, T, 3, H, Dh)
        if tokens is None and resolve(self.backend, x.device) == "triton":
            from suite.kernels.varlen import padded_attention

            # Read in place from the joint projection; rotary is applied inside the kernel.
            q, k, v = qkv.unbind(2)  # (B, T, H, Dh) views
            out = padded_attention(q, k, v, lengths, context, stride, inv_freq=self.inv_freq)
            return self.proj(out.reshape(B, T, D))
        positions = torch.arange(T, device=x.device) if tokens is None else tokens.positions
        cos, sin = rotary_tables(positions, self.inv_freq, qkv.dtype)  # (T, Dh)
        # Queries and keys rotated in one pass, before the heads move ahead of time.
        qk = apply_rotary(qkv[:, :, :2], cos[:, None, None], sin[:, None, None])
        q, k = qk.permute(2, 0, 3, 1, 4)  # (B, H, T, Dh) each
        v = qkv[:, :, 2].transpose(1, 2)  # (B, H, T, Dh)
        if tokens is not None:
            keep = tokens.valid[:, None].to(q.dtype)
            if tokens.blocks is None:
                out = masked_attention(q, k, v, tokens.mask, keep)
            else:
                out = blocked_attention(q, k, v, tokens) * keep
        elif resolve(self.backend, x.device) != "sdpa":
            out = self_attention(q, k, v, lengths, context, stride, self.backend)
        elif stride == 1 or context is None:
            out = attention(q, k, v, lengths, context)  # (B, H, T, Dh)
        else:
            pos = positions.expand(B, T)
            valid = frame_mask(lengths.to(x.device), T)
            out = cached_attention(q, k, v, pos, pos, valid, valid, context, stride)
        return self.proj(out.transpose(1, 2).reshape(B, T, D))

    def streaming_forward(
        self, x: Tensor, step: StreamStep, keys: Tensor, values: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Attend from a block of new frames to ``[cache, block]``.

        Args:
            x: ``(B, T, D)`` new frames.
            step: this step's :class:`~suite.nn.step.StreamStep` (valid frames, positions'
                rotary tables, the mask under the context the streams run with).
            keys: ``(B, H, M, Dh)`` rotated keys of each stream's last M frames, oldest first;
                slots before the stream's first frame (position < 0) are masked.
            values: ``(B, H, M, Dh)``.

        Returns:
            ``(out (B, T, D), keys, values)`` with the caches advanced past the valid frames.
        """
        B, T, D = x.shape
        qkv = self._qkv(x)  # (B, T, 3, H, Dh)
        cos, sin = step.cos, step.sin
        if cos.dtype != qkv.dtype:
            cos, sin = cos.to(qkv.dtype), sin.to(qkv.dtype)
        qk = apply_rotary(qkv[:, :, :2], cos, sin)  # queries and keys rotated in one pass
        q, k = qk.permute(2, 0, 3, 1, 4)  # (B, H, T, Dh) each
        v = qkv[:, :, 2].transpose(1, 2)
        q = q.contiguous()  # the CPU attention kernels take a strided q at a loss
        # (B, H, M + T, Dh); the next step's caches end past the frames the caches move past
        kept = step.advance if isinstance(step.advance, int) else None
        k_all, v_all = append(keys, k, 2, kept), append(values, v, 2, kept)
        keep = None if step.keep is None else step.keep[:, None].to(q.dtype)  # (B, 1, T, 1)
        out = masked_attention(q, k_all, v_all, step.mask, keep)
        M = step.cache_size  # the cache's newest slot becomes each stream's last real frame
        keys, values = take(k_all, step.advance, M, dim=2), take(v_all, step.advance, M, dim=2)
        return self.proj(out.transpose(1, 2).reshape(B, T, D)), keys, values

    def ring_step(
        self,
        x: Tensor,
        positions: Tensor,
        new_lengths: Tensor,
        cache_k: Tensor,
        cache_v: Tensor,
        cache_frames: int,
        context: Context,
        stride: int = 1,
    ) -> Tensor:
        """:meth:`streaming_forward` over ring caches with the fused Triton step
        (:func:`suite.kernels.stream.stream_attention_step`; CUDA): no host synchronization and
        static shapes, so a CUDA graph can capture it (:class:`suite.kernels.graphs.GraphedStep`).

        Args:
            x: ``(B, T, D)`` new frames.
            positions: ``(B,)`` absolute position of each stream's first new frame.
            new_lengths: ``(B,)`` real new frames per stream.
            cache_k: ``(B, H, C, Dh)`` ring of rotated keys, written in place.
            cache_v: ``(B, H, C, Dh)`` ring of values.
            cache_frames: M, frames a query reaches back.
            context: ``(left, right)``; ``stride``: full-rate frames per frame.

        Returns:
            ``(B, T, D)``.
        """
        from suite.kernels.stream import stream_attention_step

        B, T, D = x.shape
        qkv = self._qkv(x)  # (B, T, 3, H, Dh)
        pos = positions[:, None] + torch.arange(T, device=x.device)  # (B, T)
        cos, sin = rotary_tables(pos[:, :, None, None], self.inv_freq, qkv.dtype)  # (B,T,1,1,Dh)
        qk = apply_rotary(qkv[:, :, :2], cos, sin)  # (B, T, 2, H, Dh)
        out = stream_attention_step(
            qk[:, :, 0], qk[:, :, 1], qkv[:, :, 2], cache_k, cache_v, positions, new_lengths,
            cache_frames, context, stride,
        )  # fmt: skip
        return self.proj(out.reshape(B, T, D))


def set_attention_backend(model: nn.Module, backend: str) -> nn.Module:
    """Run every :class:`SelfAttention` in ``model`` through ``backend`` (see
    :mod:`suite.kernels.backends`); returns ``model``."""
    check_backend(backend)
    for module in model.modules():
        if isinstance(module, SelfAttention):
            module.backend = backend
    return model
