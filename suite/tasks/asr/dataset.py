"""The ASR dataset: a batch of lhotse cuts in, a padded :class:`~suite.interfaces.Batch` out.

Dims legend: B - batch (cuts), S - audio samples, T - frames, F - feature bins, U - tokens.

As in lhotse's ``K2SpeechRecognitionDataset``, the sampler decides which cuts form a batch and
this map-style dataset only turns them into tensors (use it with
``DataLoader(dataset, sampler=sampler, batch_size=None)``). Audio goes through the same checks as
:func:`suite.audio.load_audio`, so a bad file fails with one message naming the cut and the file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from lhotse import CutSet
from lhotse.cut import Cut
from torch.utils.data import Dataset, get_worker_info

from suite.audio import (
    AudioError,
    check_audio_file,
    check_sample_rate,
    prepare_samples,
    read_audio_file,
)
from suite.augment import Augmentation, build_augment
from suite.config import AugmentConfig
from suite.data.collate import pad_sequences
from suite.errors import UserError
from suite.interfaces import Batch, Frontend
from suite.text import normalize_text


class _Encoder(Protocol):
    def encode(self, text: str) -> list[int]: ...


def _source_path(cut: Cut) -> Path | None:
    """The file a cut's audio comes from, when it comes from exactly one file."""
    recording = getattr(cut, "recording", None)
    if recording is None or len(recording.sources) != 1:
        return None
    source = recording.sources[0]
    return Path(source.source) if source.type == "file" else None


def _describe(cut: Cut) -> str:
    path = _source_path(cut)
    return f"cut {cut.id} ({path})" if path is not None else f"cut {cut.id}"


def _check_file(cut: Cut, path: Path, check: Callable[[Path], object]) -> None:
    """Run an audio-file check, naming the cut in its error as well as the file."""
    try:
        check(path)
    except AudioError as e:
        raise AudioError(f"cut {cut.id}: {e}") from None


def load_cut_audio(cut: Cut, sample_rate: int) -> np.ndarray:
    """Load a cut's audio as ``(S,)`` float32 mono at ``sample_rate``, checked like a file.

    Args:
        cut: a lhotse cut with a recording.
        sample_rate: the rate the frontend expects; other rates are resampled by lhotse.

    Returns:
        ``(S,)`` float32 samples.

    Raises:
        AudioError: the cut's file is missing, empty, corrupt or truncated, or its samples are
            empty or not finite; the message names the cut and the file.
    """
    path = _source_path(cut)
    if path is not None:
        # Cheap checks lhotse does not make: it tries every backend on a missing file, and pads
        # a truncated one by up to 0.5 s without a word.
        _check_file(cut, path, check_audio_file)
    check_sample_rate(cut.sampling_rate, "sampling_rate", f"cut {cut.id}")
    if cut.sampling_rate != sample_rate:
        cut = cut.resample(sample_rate)  # lazy: lhotse resamples while loading
    try:
        samples = cut.load_audio()  # (C, S)
    except Exception as e:  # lhotse wraps each backend's failure in its own exception type
        if path is not None:
            _check_file(cut, path, read_audio_file)  # says why: corrupt, truncated, ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AudioError(
            f"cannot load the audio of {_describe(cut)}: {reason}; fix the recording or drop "
            "the cut from the manifest"
        ) from e
    return prepare_samples(samples, sample_rate, sample_rate, name=_describe(cut))


def cut_text(cut: Cut) -> str:
    if not cut.supervisions:
        raise UserError(
            f"cut {cut.id} has no supervision, so there is no reference transcript; "
            "drop it with cuts.filter(lambda c: len(c.supervisions) > 0)"
        )
    texts = [s.text for s in sorted(cut.supervisions, key=lambda s: s.start)]
    if any(t is None for t in texts):
        raise UserError(
            f"cut {cut.id} has a supervision without text; add the transcript to the manifest "
            "or drop the cut"
        )
    # Several supervisions in one cut are consecutive segments of one transcript.
    return normalize_text(" ".join(texts))


class AsrDataset(Dataset):
    """Turns a batch of cuts into a :class:`~suite.interfaces.Batch` of log-mel features.

    In training mode it speed-perturbs the cuts, mixes noise into the waveforms and applies
    SpecAugment to the features, as ``augment`` asks. Features are computed on CPU in one
    batched call of ``frontend``.

    Args:
        tokenizer: has ``encode(text) -> list[int]``; id 0 is blank/padding.
        frontend: an audio :class:`~suite.interfaces.Frontend` (e.g. ``Fbank``).
        augment: the recipe's augmentation; ``None`` means none even when training.
        training: apply ``augment``; evaluation datasets leave it off.
        seed: seeds speed and noise augmentation in the main process. In DataLoader workers they
            are reseeded from the worker's seed, so workers never repeat each other.
    """

    def __init__(
        self,
        tokenizer: _Encoder,
        frontend: Frontend,
        augment: AugmentConfig | None = None,
        training: bool = False,
        seed: int | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.frontend = frontend
        self.training = training
        self.augment: Augmentation | None = (
            build_augment(augment, seed, frontend.sample_rate) if augment is not None else None
        )
        self._seeded_worker: int | None = None

    def _augmenting(self) -> bool:
        if not self.training or self.augment is None:
            return False
        worker = get_worker_info()
        # Every worker starts from a copy of the same generators; reseed each with its own seed.
        if worker is not None and self._seeded_worker != worker.id:
            self.augment.reseed(worker.seed)
            self._seeded_worker = worker.id
        return True

    def __getitem__(self, item: CutSet | tuple[CutSet, int]) -> Batch:
        """Load, augment, featurize and tokenize one batch of cuts.

        Args:
            item: the batch, as yielded by a lhotse sampler, or ``(cuts, seed)``: a seed for
                this batch's augmentation draws, so that a batch is augmented the same way in
                any worker and after a resume (the trainer passes one per batch).

        Returns:
            A :class:`Batch` in the order of ``cuts``: ``features (B, T, F)``, ``lengths (B,)``,
            ``targets (B, U)`` padded with 0, ``target_lengths (B,)``, normalized texts and
            cut ids.
        """
        cuts, seed = item if isinstance(item, tuple) else (item, None)
        augmenting = self._augmenting()
        if augmenting and seed is not None:
            self.augment.reseed(seed)
        if augmenting:
            cuts = self.augment.transform_cuts(cuts)
        cuts = list(cuts)
        if not cuts:
            raise UserError("got an empty batch of cuts; the sampler should never yield one")
        sample_rate = self.frontend.sample_rate
        waves = [load_cut_audio(cut, sample_rate) for cut in cuts]
        if augmenting:
            waves = [self.augment.transform_audio(w) for w in waves]

        audio, lengths = pad_sequences(waves)  # (B, S), (B,)
        with torch.no_grad():
            features, frame_lengths = self.frontend(audio, lengths)  # (B, T, F), (B,)
        if augmenting:
            features = self.augment.transform_features(features, frame_lengths)

        texts = [cut_text(cut) for cut in cuts]
        tokens = [self.tokenizer.encode(text) for text in texts]
        targets, target_lengths = pad_sequences(tokens, dtype=torch.long)  # (B, U), (B,)
        return Batch(
            inputs=features,
            lengths=frame_lengths.long(),
            targets=targets,
            target_lengths=target_lengths,
            texts=texts,
            ids=[cut.id for cut in cuts],
        )
