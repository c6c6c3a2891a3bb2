"""Training-time augmentation: speed perturbation, real acoustics, additive noise, SpecAugment.

Dims legend: B - batch, T - frames, F - feature bins, S - audio samples.

Each transform acts where it is cheapest and most faithful, and :class:`Augmentation` applies
them in this order:

1. speed perturbation on lhotse cuts (``cut.perturb_speed`` via lhotse's ``PerturbSpeed``), which
   also rescales the supervisions' times (Ko et al., 2015, "Audio augmentation for speech
   recognition");
2. on each waveform, in this order: reverberation with a recorded room impulse response, then
   in a simulated room, recorded noise at a random SNR (:mod:`suite.data.acoustics`), white or
   pink noise at a random SNR (:class:`NoiseMixer`), then a band-limited channel (low-pass or
   telephone band);
3. SpecAugment (Park et al., 2019) on the padded feature batch, using lhotse's implementation on
   each item's valid frames only (:class:`SpecAugment`), so padding never shifts the mask mean,
   the mask budget, or the time-warp centre.

:func:`build_augment` builds all three from a recipe's :class:`~suite.config.AugmentConfig`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from lhotse import CutSet
from lhotse.dataset.cut_transforms import PerturbSpeed
from lhotse.dataset.signal_transforms import SpecAugment as LhotseSpecAugment
from torch import Tensor

from suite.config import AugmentConfig, ConfigError
from suite.data.acoustics import BandLimit, NoiseBank, RealNoise, Reverb, SimulatedRoom
from suite.data.shared import require_shared_data

NOISE_COLORS = ("white", "pink")


def _colored_noise(color: str, length: int, rng: np.random.Generator) -> np.ndarray:
    """``(S,)`` float32 noise of unit mean power; pink noise has power falling as ``1 / f``."""
    white = rng.standard_normal(length)
    if color == "white":
        noise = white
    elif color == "pink":
        spectrum = np.fft.rfft(white)
        freqs = np.arange(spectrum.shape[0], dtype=np.float64)
        freqs[0] = 1.0  # keep DC finite; its amplitude is removed just below
        spectrum /= np.sqrt(freqs)  # amplitude ~ 1/sqrt(f)  ->  power ~ 1/f
        spectrum[0] = 0.0
        noise = np.fft.irfft(spectrum, n=length)
    else:
        raise ConfigError(f"unknown noise color '{color}'; choose one of {', '.join(NOISE_COLORS)}")
    power = float(np.mean(noise**2))
    return (noise / math.sqrt(power) if power > 0 else noise).astype(np.float32)


class NoiseMixer:
    """Adds white or pink noise to a waveform at a random SNR, with probability ``prob``.

    Args:
        prob: probability of mixing noise into a given waveform.
        snr_db: ``(low, high)``; the SNR in dB is drawn uniformly from this range.
        colors: noise colors to draw from uniformly (``"white"``, ``"pink"``).
        seed: seed of the mixer's own generator; ``None`` draws fresh entropy.
    """

    def __init__(
        self,
        prob: float,
        snr_db: tuple[float, float] = (10.0, 30.0),
        colors: tuple[str, ...] = NOISE_COLORS,
        seed: int | None = None,
    ) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ConfigError(f"'noise_prob' must lie in [0, 1], got {prob}")
        if len(snr_db) != 2 or snr_db[0] > snr_db[1]:
            raise ConfigError(
                f"'noise_snr_db' must be [low, high] in dB with low <= high, got {list(snr_db)}"
            )
        for color in colors:
            if color not in NOISE_COLORS:
                raise ConfigError(f"unknown noise color '{color}'; choose from {NOISE_COLORS}")
        self.prob = float(prob)
        self.snr_db = (float(snr_db[0]), float(snr_db[1]))
        self.colors = tuple(colors)
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed: int) -> None:
        """Restart the generator, e.g. with a per-worker seed in a DataLoader worker."""
        self.rng = np.random.default_rng(seed)

    def mix(self, samples: np.ndarray, snr_db: float, color: str = "white") -> np.ndarray:
        """``samples (S,)`` plus ``color`` noise scaled to exactly ``snr_db`` dB below them.

        Digital silence has no defined SNR and is returned unchanged.
        """
        signal_power = float(np.mean(np.square(samples, dtype=np.float64))) if samples.size else 0
        if signal_power == 0.0:
            return samples
        noise = _colored_noise(color, samples.shape[0], self.rng)
        scale = math.sqrt(signal_power / 10 ** (snr_db / 10))
        return (samples + scale * noise).astype(np.float32)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Maybe add noise to ``samples (S,)``; returns ``(S,)`` float32."""
        if self.prob == 0.0 or self.rng.random() >= self.prob:
            return samples
        snr = float(self.rng.uniform(*self.snr_db))
        color = self.colors[int(self.rng.integers(len(self.colors)))]
        return self.mix(samples, snr, color)


class SpecAugment:
    """SpecAugment on a padded batch: lhotse's implementation, run on each item's valid frames.

    lhotse's ``SpecAugment`` takes ``(B, T, F)`` but not lengths; on a padded batch it would
    mask padding, take the mask value (the mean) over padding, and size time masks by the padded
    length. Items shorter than ``ceil(1 / max_frames_mask_fraction)`` frames are left unchanged:
    they have no room for a time mask (and lhotse fails on them).

    Its draws come from its own generator (:meth:`reseed`), never the global ones, so the same
    seed masks the same frames in any DataLoader worker.

    Args:
        time_warp_factor: maximum warp in frames; ``None`` (the default) or 0 disables
            warping. Off by default, as in NeMo: on short utterances lhotse's warp of up to 80
            frames moves a large share of the frames and leaves features that speech never
            makes, and a Conformer-CTC trained with it did not leave the CTC plateau while the
            same run without it learned.
        num_feature_masks: frequency masks per item.
        features_mask_size: maximum width of a frequency mask in bins.
        num_frame_masks: time masks per item (at most; the fraction below may allow fewer).
        frames_mask_size: maximum width of a time mask in frames.
        max_frames_mask_fraction: at most this fraction of an item's frames is time-masked.
        p: probability of augmenting a given item.
    """

    def __init__(
        self,
        time_warp_factor: int | None = None,
        num_feature_masks: int = 2,
        features_mask_size: int = 27,
        num_frame_masks: int = 10,
        frames_mask_size: int = 100,
        max_frames_mask_fraction: float = 0.15,
        p: float = 0.9,
    ) -> None:
        if num_frame_masks < 1 or not 0.0 < max_frames_mask_fraction <= 1.0:
            raise ConfigError(
                "SpecAugment needs num_frame_masks >= 1 and 0 < max_frames_mask_fraction <= 1, "
                f"got {num_frame_masks} and {max_frames_mask_fraction}"
            )
        self.transform = LhotseSpecAugment(
            time_warp_factor=time_warp_factor,
            num_feature_masks=num_feature_masks,
            features_mask_size=features_mask_size,
            num_frame_masks=num_frame_masks,
            frames_mask_size=frames_mask_size,
            max_frames_mask_fraction=max_frames_mask_fraction,
            p=p,
        )
        self.min_frames = math.ceil(1.0 / max_frames_mask_fraction)
        self.random = random.Random()

    def reseed(self, seed: int) -> None:
        """Restart this transform's own generator."""
        self.random = random.Random(seed)

    def __call__(self, features: Tensor, lengths: Tensor) -> Tensor:
        """Augment ``features (B, T, F)`` within ``lengths (B,)``; padding is left as it was."""
        out = features.clone()
        # lhotse draws from the global `random` (whether to mask) and the global torch
        # generator (mask widths and places); run both from our own generator so that seeding
        # this transform fixes its draws and the caller's global state is untouched.
        outer = random.getstate()
        random.setstate(self.random.getstate())
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(random.getrandbits(63))
                for i, length in enumerate(lengths.tolist()):
                    if length >= self.min_frames:
                        item = features[i : i + 1, :length]  # (1, T_i, F)
                        out[i, :length] = self.transform(item)[0]
        finally:
            self.random.setstate(random.getstate())
            random.setstate(outer)
        return out


def speed_perturbation(factors: list[float], seed: int | None = None) -> PerturbSpeed | None:
    """lhotse's ``PerturbSpeed`` choosing uniformly among ``factors`` and no change (1.0).

    Args:
        factors: speed factors, e.g. ``[0.9, 1.1]``; 1.0 in the list is ignored.
        seed: seed of the transform's own ``random.Random``; ``None`` draws fresh entropy.

    Returns:
        The transform (``CutSet -> CutSet``, keeping cut ids), or ``None`` when there are no
        factors other than 1.0.
    """
    for factor in factors:
        if not factor > 0:
            raise ConfigError(
                f"'speed_perturb' factors must be > 0 (e.g. [0.9, 1.1]), got {factor}"
            )
    factors = [float(f) for f in factors if f != 1.0]
    if not factors:
        return None
    # PerturbSpeed applies with probability p, then picks a factor uniformly; this p makes the
    # unperturbed cut exactly as likely as each factor, as in the usual 3-way 0.9/1.0/1.1 recipe.
    p = len(factors) / (len(factors) + 1)
    return PerturbSpeed(factors=factors, p=p, randgen=random.Random(seed), preserve_id=True)


@dataclass
class Augmentation:
    """The training-time transforms of one dataset, applied at the three levels in order.

    Attributes:
        speed: cut-level speed perturbation, or ``None``.
        noise: waveform-level noise mixing, or ``None``.
        spec_augment: feature-level SpecAugment, or ``None``.
        reverb: waveform-level reverberation with recorded impulse responses, or ``None``.
        real_noise: waveform-level recorded noise, or ``None``.
        band_limit: waveform-level low-pass or telephone band, or ``None``.
        room: waveform-level reverberation in a simulated room, or ``None``.
    """

    speed: PerturbSpeed | None = None
    noise: NoiseMixer | None = None
    spec_augment: SpecAugment | None = None
    reverb: Reverb | None = None
    real_noise: RealNoise | None = None
    band_limit: BandLimit | None = None
    room: SimulatedRoom | None = None

    def reseed(self, seed: int) -> None:
        """Restart every generator from ``seed`` (each transform from its own offset)."""
        if self.spec_augment is not None:
            self.spec_augment.reseed(seed + 2)
        if self.speed is not None:
            self.speed.random = random.Random(seed)
        if self.noise is not None:
            self.noise.reseed(seed + 1)
        later = (self.reverb, self.real_noise, self.band_limit, self.room)
        for offset, transform in enumerate(later):
            if transform is not None:
                transform.reseed(seed + 3 + offset)

    def transform_cuts(self, cuts: CutSet) -> CutSet:
        """Speed-perturb a batch of cuts (a lazy change: audio is resampled when loaded)."""
        return self.speed(cuts) if self.speed is not None else cuts

    def transform_audio(self, samples: np.ndarray) -> np.ndarray:
        """Reverberate, add noise to and band-limit one waveform ``(S,)``, as configured."""
        chain = (self.reverb, self.room, self.real_noise, self.noise, self.band_limit)
        for transform in chain:
            if transform is not None:
                samples = transform(samples)
        return samples

    def transform_features(self, features: Tensor, lengths: Tensor) -> Tensor:
        """SpecAugment a padded batch ``(B, T, F)`` within ``lengths (B,)``."""
        return self.spec_augment(features, lengths) if self.spec_augment is not None else features


def build_augment(
    config: AugmentConfig, seed: int | None = None, sample_rate: int = 16000
) -> Augmentation:
    """Build the transforms a recipe's ``data.augment`` section asks for.

    Args:
        config: which transforms are on, and their ranges.
        seed: seeds every transform's generator.
        sample_rate: rate of the waveforms (band limits, and noise files are resampled to it).

    Returns:
        An :class:`Augmentation`; transforms that are off are ``None``.
    """
    noise = None
    if config.noise_prob > 0:
        noise = NoiseMixer(config.noise_prob, tuple(config.noise_snr_db), seed=seed)
    elif not 0.0 <= config.noise_prob <= 1.0:
        raise ConfigError(f"'noise_prob' must lie in [0, 1], got {config.noise_prob}")
    augmentation = Augmentation(
        speed=speed_perturbation(config.speed_perturb, seed),
        noise=noise,
        spec_augment=SpecAugment() if config.specaugment else None,
        **_acoustics(config, sample_rate),
    )
    if seed is not None:
        augmentation.reseed(seed)
    return augmentation


def _acoustics(config: AugmentConfig, sample_rate: int) -> dict[str, Any]:
    """The real-acoustics transforms that ``config`` turns on (see :mod:`suite.data.acoustics`)."""
    out: dict[str, Any] = {}
    for name in ("real_noise_prob", "reverb_prob", "room_prob", "lowpass_prob", "telephone_prob"):
        if not 0.0 <= getattr(config, name) <= 1.0:
            raise ConfigError(f"'{name}' must lie in [0, 1], got {getattr(config, name)}")

    def pack(kinds: list[str], what: str) -> NoiseBank:
        directory = config.noise_dir
        if directory is None:
            directory = require_shared_data("noise", f"data.augment.{what}")
        return NoiseBank(directory, kinds, sample_rate)

    if config.reverb_prob > 0:
        out["reverb"] = Reverb(pack(["ir"], "reverb_prob"), config.reverb_prob)
    if config.room_prob > 0:
        out["room"] = SimulatedRoom(sample_rate, config.room_prob, tuple(config.room_rt60))
    if config.real_noise_prob > 0:
        if "ir" in config.real_noise_kinds:
            raise ConfigError("'real_noise_kinds' lists ir; impulse responses are for reverb_prob")
        bank = pack(config.real_noise_kinds, "real_noise_prob")
        out["real_noise"] = RealNoise(bank, config.real_noise_prob, tuple(config.real_noise_snr_db))
    if config.lowpass_prob > 0 or config.telephone_prob > 0:
        out["band_limit"] = BandLimit(
            sample_rate, config.lowpass_prob, tuple(config.lowpass_hz), config.telephone_prob
        )
    return out
