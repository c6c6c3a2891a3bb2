"""Augmentation: noise at the asked SNR, speed perturbation of cuts, SpecAugment within lengths."""

from __future__ import annotations

import random

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet, Recording

from suite.augment import (
    Augmentation,
    NoiseMixer,
    SpecAugment,
    build_augment,
    speed_perturbation,
)
from suite.config import AugmentConfig, ConfigError

SR = 16000


def tone(num: int = SR) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 440 * np.arange(num) / SR)).astype(np.float32)


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    noise = noisy.astype(np.float64) - clean
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2))


@pytest.mark.parametrize("color", ["white", "pink"])
def test_mix_hits_the_asked_snr(color):
    clean = tone()
    noisy = NoiseMixer(1.0, seed=0).mix(clean, snr_db=12.5, color=color)
    assert noisy.dtype == np.float32 and noisy.shape == clean.shape
    assert snr_db(clean, noisy) == pytest.approx(12.5, abs=0.01)


def test_pink_noise_has_more_power_at_low_frequencies():
    clean = np.ones(SR, np.float32) * 0.1  # DC only, so the added noise is all we see above 0 Hz
    noise = NoiseMixer(1.0, seed=0).mix(clean, snr_db=0.0, color="pink") - clean
    power = np.abs(np.fft.rfft(noise)) ** 2
    low, high = power[20:200].mean(), power[2000:4000].mean()  # 20-200 Hz vs 2-4 kHz
    assert low > 10 * high


def test_noise_is_seeded_and_respects_probability():
    clean = tone()
    mixers = [NoiseMixer(0.5, (10.0, 30.0), seed=7) for _ in range(2)]
    runs = [[m(clean) for _ in range(40)] for m in mixers]
    assert all(np.array_equal(a, b) for a, b in zip(*runs, strict=True))  # same seed, same noise
    changed = [not np.array_equal(out, clean) for out in runs[0]]
    assert 8 < sum(changed) < 32  # about half of 40
    snrs = [snr_db(clean, out) for out, c in zip(runs[0], changed, strict=True) if c]
    assert all(10.0 - 1e-3 <= s <= 30.0 + 1e-3 for s in snrs)
    other = NoiseMixer(0.5, (10.0, 30.0), seed=8)
    assert any(not np.array_equal(other(clean), out) for out in runs[0][:5])


def test_noise_leaves_silence_and_prob_zero_alone():
    assert np.array_equal(NoiseMixer(1.0, seed=0)(np.zeros(100, np.float32)), np.zeros(100))
    clean = tone()
    assert NoiseMixer(0.0, seed=0)(clean) is clean


@pytest.mark.parametrize(
    "kwargs,match",
    [({"prob": 1.5}, "noise_prob"), ({"prob": 0.5, "snr_db": (30.0, 10.0)}, "noise_snr_db")],
)
def test_noise_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        NoiseMixer(**kwargs)


def test_spec_augment_masks_only_valid_frames():
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    spec = SpecAugment(time_warp_factor=None, p=1.0)  # no warp: only masks change values
    features = torch.randn(3, 300, 80) + 5.0
    lengths = torch.tensor([300, 200, 5])  # the last is too short to hold a time mask
    features[1, 200:] = 0.0
    features[2, 5:] = 0.0
    out = spec(features, lengths)
    assert out.shape == features.shape
    assert not torch.equal(out[0], features[0]) and not torch.equal(out[1, :200], features[1, :200])
    assert (out[1, 200:] == 0).all() and (out[2, 5:] == 0).all()  # padding untouched
    assert torch.equal(out[2], features[2])  # too short: unchanged rather than a crash
    # Masks are filled with the item's mean over its valid frames, never diluted by padding.
    masked = out[1, :200][out[1, :200] != features[1, :200]]
    assert masked.numel() > 0
    torch.testing.assert_close(masked, features[1, :200].mean().expand_as(masked))


def make_cuts(tmp_path, n: int = 3) -> CutSet:
    recordings = []
    for i in range(n):
        path = tmp_path / f"r{i}.wav"
        sf.write(str(path), tone(SR // 2), SR)
        recordings.append(Recording.from_file(path))
    return CutSet.from_manifests(recordings=recordings)


def test_speed_perturbation_changes_durations_and_keeps_ids(tmp_path):
    cuts = make_cuts(tmp_path, n=12)
    transform = speed_perturbation([0.9, 1.1], seed=0)
    assert transform.p == pytest.approx(2 / 3) and transform.factors == [0.9, 1.1]
    out = transform(cuts)
    assert [c.id for c in out] == [c.id for c in cuts]
    durations = {round(c.duration, 3) for c in out}
    assert durations <= {0.5, round(0.5 / 0.9, 3), round(0.5 / 1.1, 3)} and len(durations) > 1
    for cut in out:  # the audio follows the declared duration
        assert cut.load_audio().shape[1] == cut.num_samples
    again = speed_perturbation([0.9, 1.1], seed=0)(cuts)
    assert [c.duration for c in again] == [c.duration for c in out]  # seeded


def test_speed_perturbation_off_and_errors():
    assert speed_perturbation([]) is None and speed_perturbation([1.0]) is None
    with pytest.raises(ConfigError, match="speed_perturb"):
        speed_perturbation([0.9, -1.0])


def test_build_augment_from_config(tmp_path):
    default = build_augment(AugmentConfig())
    assert isinstance(default, Augmentation)
    assert default.speed is None and default.noise is None and default.spec_augment is not None

    config = AugmentConfig(
        specaugment=False, speed_perturb=[0.9, 1.1], noise_prob=1.0, noise_snr_db=[5.0, 5.0]
    )
    augment = build_augment(config, seed=3)
    assert augment.spec_augment is None and augment.speed is not None
    clean = tone()
    assert snr_db(clean, augment.transform_audio(clean)) == pytest.approx(5.0, abs=0.01)
    features = torch.randn(1, 50, 80)
    assert augment.transform_features(features, torch.tensor([50])) is features

    augment.reseed(11)
    first = augment.transform_audio(clean)
    augment.reseed(11)
    assert np.array_equal(first, augment.transform_audio(clean))
    with pytest.raises(ConfigError, match="noise_prob"):
        build_augment(AugmentConfig(noise_prob=-0.1))


def test_spec_augment_draws_only_from_its_own_seed():
    features, lengths = torch.randn(3, 200, 80), torch.tensor([200, 150, 120])
    spec = SpecAugment(p=1.0)
    masked = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)  # e.g. another DataLoader worker's torch seed
        random.seed(global_seed)
        spec.reseed(5)
        masked.append(spec(features, lengths))
    assert torch.equal(masked[0], masked[1]) and not torch.equal(masked[0], features)
    spec.reseed(6)
    assert not torch.equal(spec(features, lengths), masked[0])
