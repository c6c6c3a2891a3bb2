"""AsrDataset: lhotse cuts in, a padded Batch out, augmented only when training."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet
from lhotse.dataset import SimpleCutSampler
from torch.utils.data import DataLoader

from suite.audio import AudioError, AudioWarning, load_audio
from suite.config import AugmentConfig
from suite.errors import UserError
from suite.features import Fbank
from suite.interfaces import Batch
from suite.tasks.asr.dataset import AsrDataset
from suite.text import ALPHABET

SR = 16000


class CharTokenizer:
    """Characters of normalized text -> ids 1.., so that 0 stays blank/padding."""

    def encode(self, text: str) -> list[int]:
        return [ALPHABET.index(c) + 1 for c in text]


def write_corpus(
    root: Path, items: list[tuple[str, float, str]], sr: int = SR, channels: int = 1
) -> CutSet:
    """One wav file and one supervision per ``(id, seconds, text)``."""
    rng = np.random.default_rng(0)
    recordings, supervisions = [], []
    for rec_id, seconds, text in items:
        path = root / f"{rec_id}.wav"
        samples = rng.normal(0, 0.1, (int(seconds * sr), channels)).astype(np.float32)
        sf.write(str(path), samples, sr)
        recording = Recording.from_file(path, recording_id=rec_id)
        recordings.append(recording)
        supervisions.append(
            SupervisionSegment(
                id=f"{rec_id}-sup", recording_id=rec_id, start=0.0, duration=seconds, text=text
            )
        )
    return CutSet.from_manifests(
        recordings=RecordingSet.from_recordings(recordings),
        supervisions=SupervisionSet.from_segments(supervisions),
    )


ITEMS = [("a", 1.0, "Hello, World!"), ("b", 0.55, "it's 2 cats"), ("c", 0.8, "ok")]


@pytest.fixture()
def cuts(tmp_path) -> CutSet:
    return write_corpus(tmp_path, ITEMS)


def only_batch(dataset: AsrDataset, cuts: CutSet, **sampler) -> list[Batch]:
    sampler = SimpleCutSampler(cuts, shuffle=False, **sampler)
    return list(DataLoader(dataset, sampler=sampler, batch_size=None))


def test_batch_shapes_lengths_targets_and_order(cuts):
    fbank = Fbank()
    [batch] = only_batch(AsrDataset(CharTokenizer(), fbank), cuts, max_cuts=3)
    assert isinstance(batch, Batch)
    assert batch.ids == [c.id for c in cuts]  # order of the cuts
    assert batch.texts == ["hello world", "it's two cats", "ok"]  # normalized references
    samples = torch.tensor([round(s * SR) for _, s, _ in ITEMS])
    frames = fbank.num_frames(samples)
    assert batch.lengths.dtype == torch.int64 and batch.lengths.tolist() == frames.tolist()
    assert batch.inputs.shape == (3, int(frames.max()), 80)
    assert batch.inputs.dtype == torch.float32 and torch.isfinite(batch.inputs).all()

    assert batch.target_lengths.dtype == torch.int64 and batch.targets.dtype == torch.int64
    assert batch.target_lengths.tolist() == [len(t) for t in batch.texts]
    assert batch.targets.shape == (3, max(len(t) for t in batch.texts))
    for row, text, n in zip(batch.targets, batch.texts, batch.target_lengths, strict=True):
        assert row[:n].tolist() == CharTokenizer().encode(text)
        assert (row[n:] == 0).all()  # padded with blank


def test_features_equal_the_frontend_on_load_audio(cuts, tmp_path):
    fbank = Fbank()
    [batch] = only_batch(AsrDataset(CharTokenizer(), fbank), cuts, max_cuts=3)
    for i, (rec_id, _, _) in enumerate(ITEMS):
        wave = torch.from_numpy(load_audio(tmp_path / f"{rec_id}.wav"))
        alone, length = fbank(wave[None], torch.tensor([wave.shape[0]]))
        n = int(length)
        torch.testing.assert_close(batch.inputs[i, :n], alone[0], atol=1e-4, rtol=0)
        assert (batch.inputs[i, n:] == 0).all()


def test_sampler_batches_cover_every_cut(cuts):
    batches = only_batch(AsrDataset(CharTokenizer(), Fbank()), cuts, max_cuts=2)
    assert [len(b.ids) for b in batches] == [2, 1]
    assert sum((b.ids for b in batches), []) == [c.id for c in cuts]


def test_spec_augment_only_when_training(cuts):
    fbank, config = Fbank(), AugmentConfig(specaugment=True)
    [plain] = only_batch(AsrDataset(CharTokenizer(), fbank), cuts, max_cuts=3)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    [evaluation] = only_batch(AsrDataset(CharTokenizer(), fbank, config), cuts, max_cuts=3)
    assert torch.equal(evaluation.inputs, plain.inputs)  # augment given, training off

    dataset = AsrDataset(CharTokenizer(), fbank, config, training=True)
    dataset.augment.spec_augment.transform.p = 1.0  # augment every item for the test
    [train] = only_batch(dataset, cuts, max_cuts=3)
    assert torch.equal(train.lengths, plain.lengths) and train.inputs.shape == plain.inputs.shape
    for i, n in enumerate(plain.lengths.tolist()):
        assert not torch.equal(train.inputs[i, :n], plain.inputs[i, :n])
        assert (train.inputs[i, n:] == 0).all()


def test_noise_and_speed_perturbation_when_training(cuts):
    fbank = Fbank()
    [plain] = only_batch(AsrDataset(CharTokenizer(), fbank), cuts, max_cuts=3)
    config = AugmentConfig(specaugment=False, noise_prob=1.0, noise_snr_db=[10.0, 10.0])
    noisy = [
        only_batch(
            AsrDataset(CharTokenizer(), fbank, config, training=True, seed=5), cuts, max_cuts=3
        )[0]
        for _ in range(2)
    ]
    assert torch.equal(noisy[0].inputs, noisy[1].inputs)  # seeded
    assert torch.equal(noisy[0].lengths, plain.lengths)
    assert not torch.equal(noisy[0].inputs, plain.inputs)

    config = AugmentConfig(specaugment=False, speed_perturb=[0.5, 2.0])
    dataset = AsrDataset(CharTokenizer(), fbank, config, training=True, seed=0)
    samples = [round(seconds * SR) for _, seconds, _ in ITEMS]
    seen = set()
    for _ in range(6):
        [batch] = only_batch(dataset, cuts, max_cuts=3)
        assert batch.ids == plain.ids and batch.texts == plain.texts  # same cuts, same text
        seen.add(tuple(batch.lengths.tolist()))
        for length, num in zip(batch.lengths.tolist(), samples, strict=True):
            # Speed f turns num samples into num / f (lhotse rounds, hence the +-1 frame).
            allowed = {
                fbank.num_frames(round(num / f)) + d for f in (0.5, 1, 2) for d in (-1, 0, 1)
            }
            assert length in allowed
    assert len(seen) > 1  # the factor varies between batches


def test_workers_draw_different_noise(cuts):
    config = AugmentConfig(specaugment=False, noise_prob=1.0)
    dataset = AsrDataset(CharTokenizer(), Fbank(), config, training=True, seed=0)
    same_batch_twice = [cuts, cuts]
    loader = DataLoader(dataset, sampler=same_batch_twice, batch_size=None, num_workers=2)
    first, second = list(loader)
    assert first.ids == second.ids and not torch.equal(first.inputs, second.inputs)


def test_other_rates_and_stereo_are_repaired(tmp_path):
    cuts = write_corpus(tmp_path, [("s", 0.5, "stereo")], sr=8000, channels=2)
    with pytest.warns(AudioWarning, match="cut s-0 .*s.wav.*: down-mixed 2 channels"):
        [batch] = only_batch(AsrDataset(CharTokenizer(), Fbank()), cuts, max_cuts=1)
    assert batch.lengths.tolist() == [Fbank().num_frames(SR // 2)]  # resampled to 16 kHz


def audio_error(cuts: CutSet) -> str:
    with pytest.raises(AudioError) as info:
        only_batch(AsrDataset(CharTokenizer(), Fbank()), cuts, max_cuts=3)
    return str(info.value)


def test_missing_and_empty_files_name_the_cut_and_the_file(cuts, tmp_path):
    path = tmp_path / "b.wav"
    path.unlink()
    message = audio_error(cuts)
    assert "cut b-" in message and str(path) in message and "does not exist" in message
    path.touch()
    message = audio_error(cuts)
    assert "cut b-" in message and str(path) in message and "empty (0 bytes)" in message


def test_nan_audio_names_the_cut(tmp_path):
    cuts = write_corpus(tmp_path, [("n", 0.5, "nan")])
    samples = np.zeros(SR // 2, np.float32)
    samples[10] = np.nan
    sf.write(str(tmp_path / "n.wav"), samples, SR, subtype="FLOAT")
    message = audio_error(cuts)
    assert "cut n-" in message and "n.wav" in message and "NaN/Inf" in message


def test_cut_without_text_is_a_user_error(tmp_path):
    cut = write_corpus(tmp_path, [("x", 0.5, "x")])[0].with_id("x").drop_supervisions()
    cuts = CutSet.from_cuts([cut])
    with pytest.raises(UserError, match="cut x has no supervision"):
        only_batch(AsrDataset(CharTokenizer(), Fbank()), cuts, max_cuts=1)


def test_truncated_and_corrupt_files_name_the_cut(cuts, tmp_path):
    path = tmp_path / "a.wav"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # lhotse alone would pad this back to 1 s
    message = audio_error(cuts)
    assert "cut a-" in message and str(path) in message and "truncated" in message
    path.write_bytes(b"RIFF" + b"garbage" * 50)
    message = audio_error(cuts)
    assert "cut a-" in message and str(path) in message and "cannot decode" in message
