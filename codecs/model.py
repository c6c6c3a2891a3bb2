"""The neural codec: a causal SEANet encoder, a residual (or group-residual) quantizer and a
causal SEANet decoder, trained with reconstruction, commitment and, after a warm-up,
adversarial and feature-matching losses (SoundStream, EnCodec, DAC).

Dims legend: B - batch, S - audio samples, T - code frames (``S / hop``), D - latent width,
Q - quantizer stages.

The model trains through the shared trainer with one optimizer: ``loss(batch)`` sums the
generator's terms and the discriminators' hinge loss. The discriminators' loss reads the
decoded audio detached (no gradient to the codec), and the generator's adversarial and
feature-matching terms read the discriminators through detached copies of their parameters
(``torch.func.functional_call``), so each side only moves by its own objective.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from suite import registry
from suite.codecs.group_quantize import GroupResidualVQ
from suite.codecs.losses import (
    MultiPeriodDiscriminator,
    MultiResolutionSTFTLoss,
    MultiScaleMelLoss,
    MultiScaleSTFTDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
)
from suite.codecs.quantize import ResidualVQ
from suite.codecs.seanet import SEANetDecoder, SEANetEncoder, State
from suite.interfaces import Batch, StreamingCodec, check_codes


@dataclass
class CodecState:
    """Streaming state of ``B`` streams (see :mod:`suite.codecs.seanet` for the layout).

    Attributes:
        encoder: per encoder layer, the inputs its causal convolution still reads
            (``(B, C, k)``, nested like the layers).
        decoder: per decoder layer, the same for convolutions, and for transposed convolutions
            the partial sums ``(B, C, kernel - stride)`` later frames add to.
        pending: ``(B, r)`` the last ``r < hop`` samples, not yet a whole hop.
    """

    encoder: State
    decoder: State
    pending: Tensor


@dataclass
class LossWeights:
    """Weights of the training loss's terms.

    Attributes:
        mel: multi-scale mel L1.
        stft: multi-resolution STFT (spectral convergence + log magnitude).
        commitment: the quantizer's commitment loss.
        adversarial: the generator's hinge loss (after ``adversarial_start`` steps).
        feature: feature matching (after ``adversarial_start`` steps).
    """

    mel: float = 15.0
    stft: float = 1.0
    commitment: float = 1.0
    adversarial: float = 1.0
    feature: float = 2.0


class NeuralCodec(StreamingCodec):
    """Encoder, quantizer and decoder passed in (plus discriminators for training).

    Args:
        encoder: waveform ``(B, 1, S)`` -> latent ``(B, D, S / hop)``, with streaming ``step``.
        quantizer: a :class:`ResidualVQ` or :class:`GroupResidualVQ` over ``D``.
        decoder: latent -> waveform, with streaming ``step``.
        sample_rate: audio rate.
        hop: samples per code frame.
        discriminators: adversaries trained beside the codec (empty: reconstruction only).
        weights: the loss terms' weights.
        adversarial_start: training steps (loss calls) before the adversarial and
            feature-matching terms switch on.
    """

    def __init__(
        self,
        encoder: nn.Module,
        quantizer: ResidualVQ | GroupResidualVQ,
        decoder: nn.Module,
        sample_rate: int,
        hop: int,
        discriminators: list[nn.Module] | None = None,
        weights: LossWeights | None = None,
        adversarial_start: int = 0,
    ) -> None:
        super().__init__()
        self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder
        self.sample_rate, self.hop = sample_rate, hop
        self.frame_rate = sample_rate / hop
        self.num_quantizers = quantizer.num_quantizers
        self.codebook_size = quantizer.codebook_size
        self.discriminators = nn.ModuleList(discriminators or [])
        self.weights = weights or LossWeights()
        self.adversarial_start = adversarial_start
        self.mel_loss = MultiScaleMelLoss(sample_rate)
        self.stft_loss = MultiResolutionSTFTLoss()
        # Loss calls in training so far: saved with checkpoints, so a resumed run switches the
        # adversarial terms on at the same step.
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    # --- bitrates --------------------------------------------------------------------------
    @property
    def bits_per_stage(self) -> float:
        """Bits per second one quantizer stage adds."""
        return self.frame_rate * math.log2(self.codebook_size)

    def bitrates(self) -> list[float]:
        """The bitrates (kbps) this codec decodes at, one per usable stage count."""
        stages = getattr(self.quantizer, "bitrate_stages", range(1, self.num_quantizers + 1))
        return [q * self.bits_per_stage / 1000 for q in stages]

    def stages_for(self, kbps: float) -> int:
        """The most stages whose bitrate is at most ``kbps``; a teaching error below the
        lowest."""
        stages = getattr(self.quantizer, "bitrate_stages", range(1, self.num_quantizers + 1))
        fitting = [q for q in stages if q * self.bits_per_stage <= kbps * 1000 + 1e-6]
        if not fitting:
            rates = ", ".join(f"{r:g}" for r in self.bitrates())
            raise ValueError(f"bitrate {kbps:g} kbps is below this codec's lowest; kbps: {rates}")
        return max(fitting)

    # --- offline ---------------------------------------------------------------------------
    def _latent(self, audio: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Zero-padded to whole hops: ``(latent (B, T, D), code_lengths (B,), audio (B, S'))``."""
        frames = (lengths + self.hop - 1) // self.hop
        total = int(frames.max()) * self.hop if frames.numel() else 0
        audio = nn.functional.pad(audio, (0, max(total - audio.shape[-1], 0)))[:, :total]
        valid = torch.arange(total, device=audio.device) < lengths[:, None]
        audio = audio * valid  # what lies past an item's end never reaches its codes
        return self.encoder(audio[:, None]).transpose(1, 2), frames, audio

    def encode(
        self, audio: Tensor, lengths: Tensor, num_quantizers: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """``audio (B, S)`` -> ``codes (B, q, T)`` and ``code_lengths (B,)``,
        ``T = ceil(S / hop)``."""
        latent, frames, _ = self._latent(audio, lengths)
        return self.quantizer.encode(latent, num_quantizers), frames

    def decode(self, codes: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``codes (B, q, T)`` -> ``audio (B, T * hop)`` and ``lengths * hop``."""
        check_codes(codes, lengths, self)
        latent = self.quantizer.decode(codes)  # (B, T, D)
        return self.decoder(latent.transpose(1, 2))[:, 0], lengths * self.hop

    # --- streaming -------------------------------------------------------------------------
    def init_state(self, batch_size: int, device: Any = None) -> CodecState:
        dtype = next(self.parameters()).dtype
        return CodecState(
            self.encoder.init_state(batch_size, device, dtype),
            self.decoder.init_state(batch_size, device, dtype),
            torch.zeros(batch_size, 0, dtype=dtype, device=device),
        )

    @staticmethod
    def _same_length(lengths: Tensor, what: str) -> int:
        if lengths.numel() and bool((lengths != lengths[0]).any()):
            raise ValueError(
                f"{what} steps every stream by the same amount; got lengths "
                f"{lengths.tolist()}: step streams of different lengths in separate states"
            )
        return int(lengths[0]) if lengths.numel() else 0

    def encode_step(
        self, chunk: Tensor, lengths: Tensor, state: CodecState, final: bool = False
    ) -> tuple[Tensor, Tensor, CodecState]:
        """New samples ``(B, S)`` -> the code frames ``(B, Q, T)`` they complete; ``final``
        pads the last partial hop with zeros, as :meth:`encode` does.

        The encoder reads whole hops only (the rest waits in ``state.pending``; a frame needs
        its whole hop anyway): its convolutions then see the same blocks however the audio is
        chunked, and on CPU the codes equal :meth:`encode`'s bit for bit, not only up to
        float rounding, which could flip a nearest codebook entry.
        """
        n = self._same_length(lengths, "encode_step")
        x = torch.cat([state.pending, chunk[:, :n].to(state.pending.dtype)], -1)
        if final:
            x = nn.functional.pad(x, (0, (-x.shape[-1]) % self.hop))
        whole = x.shape[-1] // self.hop * self.hop
        latent, enc_state = self.encoder.step(x[:, None, :whole], state.encoder)  # (B, D, T)
        codes = self.quantizer.encode(latent.transpose(1, 2))
        frames = torch.full_like(lengths, codes.shape[-1])
        return codes, frames, CodecState(enc_state, state.decoder, x[:, whole:])

    def decode_step(
        self, codes: Tensor, lengths: Tensor, state: CodecState, final: bool = False
    ) -> tuple[Tensor, Tensor, CodecState]:
        """New code frames ``(B, q, T)`` -> their ``T * hop`` samples (nothing waits: the
        decoder is causal)."""
        self._same_length(lengths, "decode_step")
        check_codes(codes, lengths, self)
        latent = self.quantizer.decode(codes).transpose(1, 2)  # (B, D, T)
        audio, dec_state = self.decoder.step(latent, state.decoder)
        return audio[:, 0], lengths * self.hop, dataclasses.replace(state, decoder=dec_state)

    # --- training --------------------------------------------------------------------------
    def forward(
        self, audio: Tensor, lengths: Tensor, num_quantizers: Tensor | None = None
    ) -> tuple[Tensor, Any]:
        """Reconstruct ``audio (B, S)`` through the quantizer (dropout in training):
        ``(audio (B, S), QuantizerOutput)``."""
        latent, frames, _ = self._latent(audio, lengths)
        mask = torch.arange(latent.shape[1], device=audio.device) < frames[:, None]
        out = self.quantizer(latent, mask, num_quantizers)
        decoded = self.decoder(out.quantized.transpose(1, 2))[:, 0]
        return decoded[:, : audio.shape[-1]], out

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        """The training loss of a batch of audio ``inputs (B, S)`` (see the module docstring)."""
        audio, lengths = batch.inputs, batch.lengths
        valid = torch.arange(audio.shape[-1], device=audio.device) < lengths[:, None]
        x = audio * valid
        decoded, out = self(x, lengths)
        y = decoded * valid
        w = self.weights
        terms = {
            "mel": self.mel_loss(y, x),
            "stft": self.stft_loss(y, x),
            "commitment": out.commitment,
        }
        loss = w.mel * terms["mel"] + w.stft * terms["stft"] + w.commitment * terms["commitment"]
        if self.discriminators and int(self.steps) >= self.adversarial_start:
            real = [d(x) for d in self.discriminators]
            fake = [d(y.detach()) for d in self.discriminators]
            terms["disc"] = sum(discriminator_loss(r, f) for r, f in zip(real, fake, strict=True))
            fake_g = [self._frozen(d, y) for d in self.discriminators]
            terms["adv"] = sum(generator_loss(f) for f in fake_g)
            terms["feat"] = sum(
                feature_matching_loss(r, f) for r, f in zip(real, fake_g, strict=True)
            )
            loss = loss + terms["disc"] + w.adversarial * terms["adv"] + w.feature * terms["feat"]
        if self.training:
            self.steps += 1
        stats = {k: torch.tensor(v) for k, v in out.stats.items()}
        return {"loss": loss, **{k: v.detach() for k, v in terms.items()}, **stats}

    @staticmethod
    def _frozen(discriminator: nn.Module, audio: Tensor) -> Any:
        """``discriminator(audio)`` with its parameters detached: gradient to ``audio`` only."""
        params = {k: v.detach() for k, v in discriminator.named_parameters()}
        return functional_call(discriminator, params, (audio,))


def build_quantizer(
    dim: int,
    num_quantizers: int,
    codebook_size: int,
    groups: int = 1,
    **options: Any,
) -> ResidualVQ | GroupResidualVQ:
    """A :class:`ResidualVQ` (``groups=1``) or :class:`GroupResidualVQ`."""
    if groups > 1:
        return GroupResidualVQ(dim, num_quantizers, codebook_size, groups, **options)
    return ResidualVQ(dim, num_quantizers, codebook_size, **options)


_PRESETS = {
    # Test-sized: seconds of CPU per step.
    "tiny": {
        "channels": 4,
        "latent_dim": 32,
        "dilations": [1, 3],
        "num_quantizers": 4,
        "codebook_size": 64,
        "discriminator_channels": 4,
    },
    # 16 kHz speech at 50 Hz, 10 bits per stage: 0.5 to 6 kbps.
    "small": {
        "channels": 16,
        "latent_dim": 64,
        "num_quantizers": 12,
        "codebook_size": 1024,
        "discriminator_channels": 16,
    },
}


@registry.register("codec", "seanet", presets=_PRESETS)
def seanet_codec(
    sample_rate: int = 16000,
    channels: int = 32,
    latent_dim: int = 128,
    ratios: list[int] | None = None,
    dilations: list[int] | None = None,
    num_quantizers: int = 12,
    codebook_size: int = 1024,
    groups: int = 1,
    codebook_dim: int | None = None,
    l2_normalize: bool = False,
    whiten: bool = False,
    codebook_update: str = "ema",
    latent_norm: bool = False,
    quantizer_dropout: float = 0.5,
    bitrate_stages: list[int] | None = None,
    dead_threshold: float = 0.05,
    quantizer_warmup: int = 0,
    discriminator_channels: int = 16,
    adversarial_start: int = 1000,
    loss_weights: dict[str, float] | None = None,
) -> NeuralCodec:
    """A causal SEANet codec with a residual (``groups=1``) or group-residual quantizer.

    Args:
        sample_rate: audio rate.
        channels: the encoder's first (and decoder's last) width.
        latent_dim: D.
        ratios: the encoder's downsampling factors (default ``[2, 4, 5, 8]``: 50 Hz at 16 kHz).
        dilations: residual units per stage (default ``[1, 3, 9]``).
        num_quantizers: Q (all groups together).
        codebook_size: entries per codebook.
        groups: group-residual VQ's groups (1: plain RVQ).
        codebook_dim: factorized code width (DAC; default: the latent width).
        l2_normalize: l2-normalized codes (DAC).
        whiten: codebooks in whitened coordinates (every direction of the input at unit
            variance; see :mod:`suite.codecs.quantize`).
        codebook_update: ``"ema"`` (EnCodec's moving averages, in standardized coordinates) or
            ``"gradient"`` (DAC's codebook loss, no data statistics: evaluation codes as
            training does).
        latent_norm: the encoder ends with a per-frame RMS normalization (bounds the
            latent's scale; see :class:`~suite.codecs.seanet.FrameRMSNorm`).
        quantizer_dropout: the probability a training sample drops later stages.
        bitrate_stages: stage counts dropout draws from (default: every count).
        dead_threshold: the fraction of the mean EMA count under which an entry restarts.
        quantizer_warmup: training steps the latent passes unquantized (and pooled) before
            k-means starts the codebooks from the trained encoder's outputs.
        discriminator_channels: width of the MS-STFT and multi-period discriminators
            (0: none, reconstruction losses only).
        adversarial_start: steps before the adversarial and feature-matching terms.
        loss_weights: overrides of :class:`LossWeights` by name.
    """
    ratios = list(ratios or [2, 4, 5, 8])
    dilations = list(dilations or [1, 3, 9])
    encoder = SEANetEncoder(
        channels, latent_dim, tuple(ratios), tuple(dilations), latent_norm=latent_norm
    )
    decoder = SEANetDecoder(channels, latent_dim, tuple(reversed(ratios)), tuple(dilations))
    quantizer = build_quantizer(
        latent_dim,
        num_quantizers,
        codebook_size,
        groups,
        quantizer_dropout=quantizer_dropout,
        bitrate_stages=bitrate_stages,
        codebook_dim=codebook_dim,
        l2_normalize=l2_normalize,
        whiten=whiten,
        update=codebook_update,
        dead_threshold=dead_threshold,
        init_after=quantizer_warmup,
    )
    discriminators: list[nn.Module] = []
    if discriminator_channels > 0:
        discriminators = [
            MultiScaleSTFTDiscriminator(channels=discriminator_channels),
            MultiPeriodDiscriminator(channels=discriminator_channels),
        ]
    unknown = set(loss_weights or {}) - {f.name for f in dataclasses.fields(LossWeights)}
    if unknown:
        names = ", ".join(f.name for f in dataclasses.fields(LossWeights))
        raise ValueError(f"unknown loss weights {sorted(unknown)}; known: {names}")
    return NeuralCodec(
        encoder,
        quantizer,
        decoder,
        sample_rate,
        math.prod(ratios),
        discriminators,
        LossWeights(**(loss_weights or {})),
        adversarial_start,
    )
