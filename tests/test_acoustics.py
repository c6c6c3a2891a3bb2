"""Real acoustics in the training data path: recorded noise, reverberation, band limits."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from suite.augment import build_augment
from suite.config import AugmentConfig, ConfigError
from suite.data.acoustics import (
    BandLimit,
    NoiseBank,
    RealNoise,
    band_limit,
    mix_at_snr,
    power,
    read_noise_pack,
    reverberate,
)
from suite.data.shared import ENV_VAR, shared_data_dir
from suite.errors import UserError

SR = 16000


def speech_like(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """A tone with a syllable-rate envelope and a little noise: power varies over time."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    wave = np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return (0.3 * wave + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    return 10 * np.log10(power(clean) / power(noisy - clean))


def room_ir(peak: int = 40, taps: int = 4000, seed: int = 0) -> np.ndarray:
    """A small pre-delay, a direct-path peak at ``peak``, then an exponentially decaying tail."""
    rng = np.random.default_rng(seed)
    ir = np.zeros(taps, dtype=np.float32)
    ir[:peak] = 0.01 * rng.standard_normal(peak)
    ir[peak] = 1.0
    tail = np.arange(taps - peak - 1)
    ir[peak + 1 :] = 0.3 * rng.standard_normal(tail.shape) * np.exp(-tail / 600)
    return ir


@pytest.fixture()
def noise_pack(tmp_path) -> Path:
    """A noise pack laid out as the shared one: manifest.jsonl with path and kind."""
    rng = np.random.default_rng(1)
    files = {
        "background/hum.wav": ("background", 0.2 * rng.standard_normal(3 * SR)),
        "sounds/dog/1.wav": ("sound", 0.5 * rng.standard_normal(SR // 2)),
        "short/tap.wav": ("short", 0.5 * rng.standard_normal(SR // 10)),
        "ir/room.flac": ("ir", room_ir()),
    }
    lines = []
    for rel, (kind, samples) in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / rel, samples.astype(np.float32), SR)
        lines.append(json.dumps({"path": rel, "kind": kind}))
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


def everything(noise_dir: Path, **more: object) -> AugmentConfig:
    values = dict(
        specaugment=False,
        noise_dir=str(noise_dir),
        real_noise_prob=1.0,
        real_noise_kinds=["background", "sound", "short"],
        reverb_prob=0.7,
        lowpass_prob=0.5,
        telephone_prob=0.3,
    )
    return AugmentConfig(**{**values, **more})


def test_same_seed_same_audio_in_any_worker(noise_pack):
    waves = [speech_like(1.3, seed=i) for i in range(6)]
    augment = build_augment(everything(noise_pack), seed=0)

    def batch(aug, seed):
        aug.reseed(seed)
        return [aug.transform_audio(w) for w in waves]

    first = batch(augment, 11)
    worker = pickle.loads(pickle.dumps(augment))  # what a DataLoader worker gets
    for a, b in zip(first, batch(worker, 11), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(first, batch(augment, 11), strict=True):  # again, with a warm cache
        np.testing.assert_array_equal(a, b)
    other = batch(augment, 12)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    assert all(
        a.shape == w.shape and a.dtype == np.float32 for a, w in zip(first, waves, strict=True)
    )
    assert all(not np.array_equal(a, w) for a, w in zip(first, waves, strict=True))


@pytest.mark.parametrize("snr", [-5.0, 0.0, 7.5, 20.0])
def test_recorded_noise_is_mixed_at_the_asked_snr(noise_pack, snr):
    speech = speech_like(2.0)
    noise = RealNoise(NoiseBank(noise_pack, ["background", "sound"], SR), 1.0, (snr, snr), seed=3)
    for _ in range(5):
        assert snr_db(speech, noise(speech)) == pytest.approx(snr, abs=1e-3)
    silent = np.zeros(SR, dtype=np.float32)
    assert mix_at_snr(silent, np.ones(SR, np.float32), 5.0) is silent
    assert RealNoise(noise.bank, 0.0, (0.0, 0.0))(speech) is speech


def test_short_noises_are_placed_once_not_looped(noise_pack):
    speech = speech_like(2.0)
    noise = RealNoise(NoiseBank(noise_pack, ["short"], SR), 1.0, (10.0, 10.0), seed=0)
    added = noise(speech) - speech
    assert np.count_nonzero(added) == SR // 10  # one 0.1 s tap somewhere in 2 s


def test_reverb_keeps_length_and_alignment():
    speech = speech_like(1.0)
    delay = np.zeros(300, np.float32)
    delay[120] = 0.5  # a pure delay: the direct path alone
    np.testing.assert_allclose(reverberate(speech, delay), speech, atol=1e-5)
    wet = reverberate(speech, room_ir(peak=40))
    assert wet.shape == speech.shape and power(wet) == pytest.approx(power(speech), rel=1e-4)
    # The wet signal lines up with the dry one: its cross-correlation peaks at lag 0.
    click = np.zeros(SR, np.float32)
    click[5000] = 1.0
    assert int(np.argmax(np.abs(reverberate(click, room_ir(peak=40))))) == 5000
    # On white noise, the output's cross-correlation with the input is the IR shifted by the
    # cut: it peaks at lag 0 (a tone would be ambiguous by its period).
    white = np.random.default_rng(0).standard_normal(SR).astype(np.float32)
    wet = reverberate(white, room_ir(peak=40))
    lags = np.arange(-200, 201)
    corr = [float(np.dot(wet[200:-200], np.roll(white, lag)[200:-200])) for lag in lags]
    assert lags[int(np.argmax(corr))] == 0


def band_energy(x: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum())


def test_band_limits_remove_energy_outside_the_band():
    white = np.random.default_rng(0).standard_normal(SR).astype(np.float32)
    low = band_limit(white, SR, 0.0, 3000.0)
    assert band_energy(low, 3000, 8000) < 1e-8 * band_energy(white, 3000, 8000)
    assert band_energy(low, 0, 2900) == pytest.approx(band_energy(white, 0, 2900), rel=1e-3)
    phone = BandLimit(SR, telephone_prob=1.0, seed=0)(white)
    assert band_energy(phone, 3400, 8000) < 1e-8 * band_energy(white, 3400, 8000)
    assert band_energy(phone, 0, 300) < 1e-8 * band_energy(white, 0, 300)
    assert band_energy(phone, 400, 3300) == pytest.approx(band_energy(white, 400, 3300), rel=1e-3)
    lowpass = BandLimit(SR, lowpass_prob=1.0, lowpass_hz=(2000.0, 2500.0), seed=0)
    assert band_energy(lowpass(white), 2500, 8000) < 1e-8 * band_energy(white, 2500, 8000)
    with pytest.raises(ConfigError, match="lowpass_hz"):
        BandLimit(SR, lowpass_prob=1.0, lowpass_hz=(3000.0, 9000.0))


def test_missing_or_unreadable_noise_files_say_which_and_how_to_fix(noise_pack, tmp_path):
    (noise_pack / "sounds/dog/1.wav").unlink()
    with pytest.raises(ConfigError, match=r"sounds/dog/1.wav is missing.*noise_dir"):
        build_augment(everything(noise_pack))
    (noise_pack / "sounds/dog/1.wav").write_bytes(b"not audio at all")
    bank = NoiseBank(noise_pack, ["sound"], SR)
    with pytest.raises(ConfigError, match=r"cannot read noise file .*1.wav"):
        bank.draw(np.random.default_rng(0))
    with pytest.raises(ConfigError, match="does not exist"):
        read_noise_pack(tmp_path / "nowhere")
    # A folder without a manifest is read as background noise (and ir/ as impulse responses).
    plain = noise_pack / "background"
    assert [f.kind for f in read_noise_pack(plain)] == ["background"]
    with pytest.raises(ConfigError, match="no file of kind ir"):
        NoiseBank(plain, ["ir"], SR)


def test_without_a_pack_the_error_names_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "absent"))
    with pytest.raises(UserError, match=f"{ENV_VAR}.*real_noise_prob|real_noise_prob.*{ENV_VAR}"):
        build_augment(AugmentConfig(real_noise_prob=0.5))
    assert build_augment(AugmentConfig(lowpass_prob=1.0)).band_limit is not None  # needs no pack


@pytest.mark.skipif(shared_data_dir() is None, reason="the shared data pack is not here")
def test_the_shared_noise_pack_mixes_and_reverberates():
    config = AugmentConfig(specaugment=False, real_noise_prob=1.0, reverb_prob=1.0)
    augment = build_augment(config, seed=0)
    assert set(augment.real_noise.bank.by_kind) == {"background", "sound"}
    assert len(augment.reverb.bank.by_kind["ir"]) == 4
    speech = speech_like(1.5)
    for seed in range(3):
        augment.reseed(seed)
        out = augment.transform_audio(speech)
        assert out.shape == speech.shape and np.isfinite(out).all()


def test_a_batch_sounds_the_same_in_the_main_process_and_in_a_worker(noise_pack, tmp_path):
    import torch
    from lhotse import CutSet, Recording, SupervisionSegment
    from torch.utils.data import DataLoader

    from suite.features import Fbank
    from suite.tasks.asr.dataset import AsrDataset
    from suite.tokenizers import CharTokenizer

    cuts = []
    for i in range(3):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, speech_like(0.8 + 0.2 * i, seed=i), SR)
        rec = Recording.from_file(path, recording_id=f"u{i}")
        sup = SupervisionSegment(f"u{i}", f"u{i}", 0.0, rec.duration, text="hello")
        cut = rec.to_cut().with_id(f"u{i}")
        cut.supervisions = [sup]
        cuts.append(cut)
    batch = CutSet(cuts)
    dataset = AsrDataset(CharTokenizer(), Fbank(), everything(noise_pack), training=True, seed=0)
    here = dataset[(batch, 42)].inputs
    assert torch.equal(here, dataset[(batch, 42)].inputs)
    loader = DataLoader(dataset, sampler=[(batch, 42)], batch_size=None, num_workers=1)
    assert torch.equal(here, next(iter(loader)).inputs)
    assert not torch.equal(here, dataset[(batch, 43)].inputs)


@pytest.mark.slow  # importing pyroomacoustics alone takes about 10 s on 2 busy cores
def test_simulated_rooms_are_seeded_and_keep_timing():
    pytest.importorskip("pyroomacoustics")
    from suite.data.acoustics import SimulatedRoom

    room = SimulatedRoom(SR, 1.0, (0.3, 0.6), seed=0)
    speech = speech_like(1.0)
    room.reseed(4)
    first = room(speech)
    worker = pickle.loads(pickle.dumps(room))
    worker.reseed(4)
    np.testing.assert_array_equal(first, worker(speech))
    assert first.shape == speech.shape and power(first) == pytest.approx(power(speech), rel=1e-4)
    click = np.zeros(SR // 2, np.float32)
    click[3000] = 1.0
    room.reseed(7)
    assert int(np.argmax(np.abs(room(click)))) == 3000
    with pytest.raises(ConfigError, match="room_rt60"):
        SimulatedRoom(SR, 1.0, (0.05, 0.3))
    augment = build_augment(AugmentConfig(specaugment=False, room_prob=1.0), seed=1)
    assert augment.room is not None and augment.transform_audio(speech).shape == speech.shape
