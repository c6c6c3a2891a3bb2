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
      no input beyond its attention chunk's right edge.
    * No dropout on attention probabilities: it would put randomness inside the attention seam
      (``suite.kernels.attention``); dropout is applied to each residual branch instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from suite.interfaces import Encoder, EncoderOutput
from suite.kernels.attention import Context, attention, check_context
from suite.registry import register_encoder


def frame_mask(lengths: Tensor, T: int) -> Tensor:
    """``(B, T)`` bool, True on the first ``lengths[b]`` frames of each item."""
    return torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]


class ConvSubsampling(nn.Module):
    """Striding convolutions that shorten time (and frequency) by ``factor``, then map to D.

    Each stage is a 3x3 convolution with stride 2 in time and frequency: the first a full
    convolution from one input channel, the others depthwise + pointwise (cheaper, as in the
    paper). Every stage maps ``L`` valid frames to ``ceil(L / 2)`` in both modes: non-causal
    pads one frame on each side, causal pads two frames on the left so that output frame t
    depends on input frames ``<= 2t`` only.

    Args:
        input_dim: F, feature bins per input frame.
        d_model: D, output width.
        channels: C, convolution channels.
        factor: total time reduction, a power of two.
        causal: pad time on the left only (a streaming cache then holds the last two input
            frames of each stage).
    """

    def __init__(self, input_dim: int, d_model: int, channels: int, factor: int, causal: bool):
        super().__init__()
        if factor < 2 or factor & (factor - 1):
            raise ValueError(f"subsampling_factor must be a power of two >= 2, got {factor}")
        self.num_stages = int(math.log2(factor))
        # (freq_left, freq_right, time_left, time_right) padding for F.pad on (B, C, T, F).
        self.padding = (1, 1, 2, 0) if causal else (1, 1, 1, 1)
        stages = [nn.Conv2d(1, channels, kernel_size=3, stride=2)]
        for _ in range(self.num_stages - 1):
            stages.append(
                nn.Sequential(
                    nn.Conv2d(channels, channels, kernel_size=3, stride=2, groups=channels),
                    nn.Conv2d(channels, channels, kernel_size=1),
                )
            )
        self.stages = nn.ModuleList(stages)
        freq = input_dim
        for _ in range(self.num_stages):
            freq = (freq + 1) // 2
        self.out = nn.Linear(channels * freq, d_model)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Exact ``(B,)`` output lengths: ``ceil(L / 2)`` per stage."""
        for _ in range(self.num_stages):
            lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
        return lengths

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Map ``x (B, T, F)`` with ``lengths (B,)`` to ``(B, T', D)`` and ``(B,)``."""
        x = x.unsqueeze(1)  # (B, 1, T, F)
        for stage in self.stages:
            # Zero padding frames so valid outputs see the same zeros as an unpadded input.
            x = x * frame_mask(lengths, x.shape[2])[:, None, :, None].to(x.dtype)
            x = F.relu(stage(F.pad(x, self.padding)))  # (B, C, ceil(T/2), ceil(F/2))
            lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
        B, C, T, Fq = x.shape
        x = self.out(x.transpose(1, 2).reshape(B, T, C * Fq))  # (B, T', D)
        return x, lengths


def rotate(x: Tensor, positions: Tensor, inv_freq: Tensor) -> Tensor:
    """Rotary position embedding (Su et al., RoFormer), "rotate half" layout.

    Args:
        x: ``(B, H, T, Dh)`` queries or keys; Dh even.
        positions: ``(T,)`` absolute frame index of each row (a streaming cache passes offsets).
        inv_freq: ``(Dh / 2,)`` rotation frequencies.

    Returns:
        ``x`` rotated, same shape and dtype.
    """
    # Angles in fp32: bf16 would lose whole radians at frame indices in the thousands.
    angles = positions.float()[:, None] * inv_freq[None, :]  # (T, Dh/2)
    cos = torch.cat([angles.cos(), angles.cos()], dim=-1).to(x.dtype)  # (T, Dh)
    sin = torch.cat([angles.sin(), angles.sin()], dim=-1).to(x.dtype)  # (T, Dh)
    x1, x2 = x.chunk(2, dim=-1)  # (B, H, T, Dh/2) each
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class SelfAttention(nn.Module):
    """Pre-norm multi-head self-attention with rotary positions.

    Args:
        d_model: D.
        num_heads: H; ``D / H`` must be even for the rotary pairs.
        rope_base: rotary base period.
    """

    def __init__(self, d_model: int, num_heads: int, rope_base: float = 10000.0):
        super().__init__()
        if d_model % num_heads or (d_model // num_heads) % 2:
            raise ValueError(
                f"d_model ({d_model}) must split into num_heads ({num_heads}) heads of even "
                f"width for rotary embedding; e.g. d_model=176 with 4 heads (width 44)"
            )
        self.num_heads = num_heads
        head_dim = d_model // num_heads
        self.norm = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        inv_freq = rope_base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        # Not persistent: derived from the config, so checkpoints do not carry it.
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: Tensor, lengths: Tensor, context: Context) -> Tensor:
        """``x (B, T, D)`` -> ``(B, T, D)``; pad frames are masked as keys."""
        B, T, D = x.shape
        qkv = self.qkv(self.norm(x)).view(B, T, 3, self.num_heads, D // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, H, T, Dh) each
        positions = torch.arange(T, device=x.device)
        q, k = rotate(q, positions, self.inv_freq), rotate(k, positions, self.inv_freq)
        out = attention(q, k, v, lengths, context)  # (B, H, T, Dh)
        return self.proj(out.transpose(1, 2).reshape(B, T, D))


class ConvModule(nn.Module):
    """Conformer convolution module: pointwise + GLU, depthwise, LayerNorm, SiLU, pointwise.

    Args:
        d_model: D.
        kernel: K, odd depthwise kernel size.
        causal: pad the depthwise convolution on the left by ``K - 1`` frames, so a frame
            never sees later ones (a streaming cache then holds the last ``K - 1`` frames).
    """

    def __init__(self, d_model: int, kernel: int, causal: bool):
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd (e.g. 9), got {kernel}")
        self.padding = (kernel - 1, 0) if causal else ((kernel - 1) // 2, (kernel - 1) // 2)
        self.norm_in = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel, groups=d_model)
        self.norm_mid = nn.LayerNorm(d_model)
        self.pointwise_out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """``x (B, T, D)`` with ``valid (B, T, 1)`` float frame mask -> ``(B, T, D)``."""
        x = F.glu(self.pointwise_in(self.norm_in(x)), dim=-1)  # (B, T, D)
        x = (x * valid).transpose(1, 2)  # (B, D, T); zeros stand in for padding
        x = self.depthwise(F.pad(x, self.padding)).transpose(1, 2)  # (B, T, D)
        return self.pointwise_out(F.silu(self.norm_mid(x)))


class FeedForward(nn.Sequential):
    """Pre-norm feed-forward: LayerNorm, Linear(D, mult*D), SiLU, dropout, Linear(mult*D, D)."""

    def __init__(self, d_model: int, mult: int, dropout: float):
        super().__init__(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, mult * d_model),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(mult * d_model, d_model),
        )


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

    def forward(self, x: Tensor, lengths: Tensor, valid: Tensor, context: Context) -> Tensor:
        """``x (B, T', D)``, ``lengths (B,)``, ``valid (B, T', 1)`` -> ``(B, T', D)``."""
        x = x + 0.5 * self.dropout(self.ff1(x))
        x = x + self.dropout(self.attn(x, lengths, context))
        x = x + self.dropout(self.conv(x, valid))
        x = x + 0.5 * self.dropout(self.ff2(x))
        return self.norm_out(x)


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
class Conformer(Encoder):
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
        att_context: ``None`` for full-context attention, or ``(left, right)`` in encoder
            frames for chunked-limited attention (``left == -1``: unlimited left). May be
            reassigned between calls to pick a context at inference.
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
        att_context: Sequence[int] | None = None,
    ):
        super().__init__()
        self.input_dim = input_dim
        self.output_dim = d_model
        self.causal = causal
        self.att_context = att_context  # validated by the property setter
        self.subsampling = ConvSubsampling(
            input_dim, d_model, subsampling_channels or d_model, subsampling_factor, causal
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
        context = None if value is None else tuple(int(v) for v in value)
        check_context(context)
        self._att_context = context

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Exact ``(B,)`` encoder lengths for ``(B,)`` input lengths (``ceil`` per stride-2)."""
        return self.subsampling.output_lengths(lengths)

    def forward(self, x: Tensor, lengths: Tensor) -> EncoderOutput:
        """Encode ``x (B, T, F)`` with valid ``lengths (B,)``.

        Returns:
            ``EncoderOutput(features (B, T', D), lengths (B,))``; padded frames are zero.
        """
        if x.dim() != 3 or x.shape[-1] != self.input_dim:
            raise ValueError(
                f"Conformer expects features (B, T, {self.input_dim}), got {tuple(x.shape)}; "
                f"set input_dim to the frontend's feature size"
            )
        x, lengths = self.subsampling(x, lengths)  # (B, T', D), (B,)
        x = self.dropout(x)
        valid = frame_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)  # (B, T', 1)
        for layer in self.layers:
            x = layer(x, lengths, valid, self.att_context)
        return EncoderOutput(features=x * valid, lengths=lengths)
