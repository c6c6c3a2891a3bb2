"""Reconstruction and adversarial losses of neural audio codecs.

Dims legend: B - batch, S - audio samples, F - frequency bins, N - frames, C - channels.

- :class:`MultiScaleMelLoss`: L1 between log mel spectrograms at several window sizes (DAC).
- :class:`MultiResolutionSTFTLoss`: spectral convergence plus log-magnitude L1 at several
  resolutions (Parallel WaveGAN).
- :class:`MultiScaleSTFTDiscriminator` (EnCodec: 2-D convolutions over the real and imaginary
  parts of complex STFTs) and :class:`MultiPeriodDiscriminator` (HiFi-GAN: the waveform folded
  by a period). Both return ``(logits, feature maps)`` per sub-discriminator; the losses are
  hinge losses and feature matching (L1 between feature maps, relative to the real ones' mean
  magnitude, as EnCodec).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

Outputs = list[tuple[Tensor, list[Tensor]]]  # per sub-discriminator: logits, feature maps


def _magnitude(x: Tensor, n_fft: int, hop: int) -> Tensor:
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    spec = torch.stft(x, n_fft, hop, window=window, return_complex=True)  # (B, F, N)
    return spec.abs()


class MultiScaleMelLoss(nn.Module):
    """Mean over scales of L1 between log mel spectrograms (DAC's mel loss).

    Args:
        sample_rate: audio rate.
        windows: FFT sizes, one per scale (hop a quarter of each).
        mels: mel bands per scale.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        windows: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048),
        mels: tuple[int, ...] = (5, 10, 20, 40, 80, 160),
    ) -> None:
        super().__init__()
        import torchaudio

        self.windows = tuple(windows)
        for n_fft, n_mels in zip(windows, mels, strict=True):
            bank = torchaudio.functional.melscale_fbanks(
                n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate, norm="slaney"
            )  # (F, mels)
            self.register_buffer(f"bank{n_fft}", bank, persistent=False)

    def forward(self, y: Tensor, x: Tensor) -> Tensor:
        """``y`` reconstructed and ``x`` original audio ``(B, S)`` -> scalar loss."""
        total = y.new_zeros(())
        for n_fft in self.windows:
            bank = getattr(self, f"bank{n_fft}")
            my = (_magnitude(y, n_fft, n_fft // 4).transpose(1, 2) @ bank).clamp(min=1e-5)
            mx = (_magnitude(x, n_fft, n_fft // 4).transpose(1, 2) @ bank).clamp(min=1e-5)
            total = total + (my.log10() - mx.log10()).abs().mean()
        return total / len(self.windows)


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence plus log-magnitude L1, averaged over resolutions.

    Args:
        ffts: FFT sizes (hop a quarter of each).
    """

    def __init__(self, ffts: tuple[int, ...] = (512, 1024, 2048)) -> None:
        super().__init__()
        self.ffts = tuple(ffts)

    def forward(self, y: Tensor, x: Tensor) -> Tensor:
        total = y.new_zeros(())
        for n_fft in self.ffts:
            my = _magnitude(y, n_fft, n_fft // 4).clamp(min=1e-7)
            mx = _magnitude(x, n_fft, n_fft // 4).clamp(min=1e-7)
            convergence = torch.linalg.norm(mx - my) / torch.linalg.norm(mx).clamp(min=1e-7)
            total = total + convergence + (my.log() - mx.log()).abs().mean()
        return total / len(self.ffts)


class STFTDiscriminator(nn.Module):
    """One scale of EnCodec's MS-STFT discriminator: 2-D convolutions over ``(re, im)`` of a
    complex STFT, dilated along time, strided along frequency."""

    def __init__(self, n_fft: int, channels: int = 32, dilations: tuple[int, ...] = (1, 2, 4)):
        super().__init__()
        self.n_fft = n_fft
        convs = [weight_norm(nn.Conv2d(2, channels, (3, 9), padding=(1, 4)))]
        for d in dilations:
            convs.append(
                weight_norm(
                    nn.Conv2d(channels, channels, (3, 9), (1, 2), dilation=(d, 1), padding=(d, 4))
                )
            )
        convs.append(weight_norm(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1))))
        self.convs = nn.ModuleList(convs)
        self.post = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        window = torch.hann_window(self.n_fft, device=x.device, dtype=x.dtype)
        spec = torch.stft(x, self.n_fft, self.n_fft // 4, window=window, return_complex=True)
        h = torch.view_as_real(spec).permute(0, 3, 2, 1)  # (B, 2, N, F)
        features = []
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)
            features.append(h)
        return self.post(h), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """EnCodec's MS-STFT discriminator: one :class:`STFTDiscriminator` per FFT size."""

    def __init__(self, ffts: tuple[int, ...] = (1024, 512, 256), channels: int = 32) -> None:
        super().__init__()
        self.scales = nn.ModuleList(STFTDiscriminator(n, channels) for n in ffts)

    def forward(self, x: Tensor) -> Outputs:
        return [d(x) for d in self.scales]


class PeriodDiscriminator(nn.Module):
    """HiFi-GAN's discriminator of one period: the waveform folded into ``(S / p, p)``."""

    def __init__(self, period: int, channels: int = 32, layers: int = 4) -> None:
        super().__init__()
        self.period = period
        convs, width = [], 1
        for i in range(layers):
            out = channels * 2 ** min(i, 3)
            convs.append(weight_norm(nn.Conv2d(width, out, (5, 1), (3, 1), padding=(2, 0))))
            width = out
        convs.append(weight_norm(nn.Conv2d(width, width, (5, 1), padding=(2, 0))))
        self.convs = nn.ModuleList(convs)
        self.post = weight_norm(nn.Conv2d(width, 1, (3, 1), padding=(1, 0)))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        b, s = x.shape
        pad = (-s) % self.period
        h = F.pad(x, (0, pad), mode="reflect" if pad < s else "constant")
        h = h.view(b, 1, (s + pad) // self.period, self.period)  # (B, 1, S / p, p)
        features = []
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.1)
            features.append(h)
        return self.post(h), features


class MultiPeriodDiscriminator(nn.Module):
    """HiFi-GAN's multi-period discriminator."""

    def __init__(self, periods: tuple[int, ...] = (2, 3, 5, 7, 11), channels: int = 32) -> None:
        super().__init__()
        self.periods = nn.ModuleList(PeriodDiscriminator(p, channels) for p in periods)

    def forward(self, x: Tensor) -> Outputs:
        return [d(x) for d in self.periods]


def discriminator_loss(real: Outputs, fake: Outputs) -> Tensor:
    """Hinge loss of the discriminators: real logits above 1, fake ones below -1."""
    terms = [
        F.relu(1 - r).mean() + F.relu(1 + f).mean()
        for (r, _), (f, _) in zip(real, fake, strict=True)
    ]
    return sum(terms) / len(terms)


def generator_loss(fake: Outputs) -> Tensor:
    """Hinge loss of the generator: its audio's logits above 1."""
    return sum(F.relu(1 - f).mean() for f, _ in fake) / len(fake)


def feature_matching_loss(real: Outputs, fake: Outputs) -> Tensor:
    """Mean L1 between the feature maps of real and generated audio, each relative to the real
    map's mean magnitude (EnCodec), so every layer weighs alike."""
    terms = []
    for (_, fr), (_, ff) in zip(real, fake, strict=True):
        for a, b in zip(fr, ff, strict=True):
            terms.append((a.detach() - b).abs().mean() / a.detach().abs().mean().clamp(min=1e-5))
    return sum(terms) / len(terms)
