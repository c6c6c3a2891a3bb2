"""Audio for codec training: manifests of recordings or cuts, and random crops of them.

Dims legend: B - batch (crops), S - audio samples.

A split is one lhotse manifest or a list of them (``data.train: [{manifest: PATH}, ...]``, the
recipe's mix syntax; a codec joins them, so their weights must be equal), each relative to
``data.corpus_dir``: a cut manifest (``suite data synth-speech``) or a
recording manifest (as the real speech of ``../shared/data/speech-real/``, whose relative file
paths are found under ``data.corpus_dir``, the manifest's folder or the folder above it). Training
batches are ``data.batch_size`` crops of ``data.segment`` seconds drawn at seeded random
offsets (shorter audio is zero-padded, with its length); noise from ``data.augment`` is mixed in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from lhotse import CutSet, RecordingSet

from suite.augment import build_augment
from suite.config import ConfigError, Recipe
from suite.data.collate import pad_sequences
from suite.errors import UserError
from suite.interfaces import Batch
from suite.tasks.asr.dataset import load_cut_audio


def _load_one(path: Path, prefix: Path) -> CutSet:
    from lhotse import load_manifest

    try:
        manifest = load_manifest(path)
    except Exception as e:  # lhotse raises what its reader raises: JSON, gzip, key errors
        raise UserError(
            f"{path} is not a lhotse manifest ({type(e).__name__}); give cut or recording "
            "manifests (.jsonl.gz)"
        ) from None
    if isinstance(manifest, RecordingSet):
        first = Path(next(iter(manifest)).sources[0].source) if len(manifest) else Path("/")
        if not first.is_absolute() and not first.exists():
            # Relative to the corpus folder, the manifest's folder, or the one above it (as in
            # speech-real, whose paths start with the source's folder).
            bases = [prefix, path.parent, path.parent.parent]
            base = next((b for b in bases if (b / first).exists()), prefix)
            manifest = manifest.with_path_prefix(str(base))
        return CutSet.from_manifests(recordings=manifest)
    if isinstance(manifest, CutSet):
        return manifest
    raise UserError(
        f"{path} holds {type(manifest).__name__}; a codec split is cut or recording manifests"
    )


def load_split(recipe: Recipe, split: str) -> CutSet | None:
    """The cuts of ``split``: its manifests (each resolved against ``data.corpus_dir``) joined;
    ``None`` for a missing dev or test split."""
    data = recipe.data
    sources = data.sources(split)
    if len({weight for _, weight in sources}) > 1:
        raise ConfigError(
            f"the codec task joins the manifests of 'data.{split}'; give them equal weights "
            "(weighted mixes are for the asr task)"
        )
    paths = [path for path, _ in sources]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        if split != "train":
            return None
        raise UserError(
            f"training manifest {missing[0]} does not exist; synthesize speech with "
            f"`suite data synth-speech --out DIR` or point data.corpus_dir and data.train at "
            "recording manifests (e.g. ../shared/data/speech-real)"
        )
    cuts = [_load_one(p, Path(data.corpus_dir)) for p in paths]
    joined = cuts[0] if len(cuts) == 1 else CutSet.from_cuts(c for cs in cuts for c in cs)
    return joined.to_eager()


class CropDataset:
    """``dataset[(indices, seed)]`` is a batch of crops of the cuts at ``indices``.

    Args:
        cuts: the split.
        sample_rate: the codec's rate (other rates are resampled on load).
        segment: crop length in seconds (``None``: whole utterances).
        augment: the recipe's augmentation (noise mixing), or ``None``.
    """

    def __init__(
        self, cuts: CutSet, sample_rate: int, segment: float | None, augment: Any = None
    ) -> None:
        self.cuts = list(cuts)
        self.sample_rate, self.augment = sample_rate, augment
        self.samples = None if segment is None else int(round(segment * sample_rate))

    def __len__(self) -> int:
        return len(self.cuts)

    def __getitem__(self, item: Any) -> Batch:
        indices, seed = item if isinstance(item, tuple) else (item, 0)
        rng = np.random.default_rng(seed)
        if self.augment is not None:
            self.augment.reseed(seed)
        waves = []
        for i in indices:
            wave = load_cut_audio(self.cuts[i], self.sample_rate)
            if self.samples is not None and len(wave) > self.samples:
                start = int(rng.integers(0, len(wave) - self.samples + 1))
                wave = wave[start : start + self.samples]
            if self.augment is not None:
                wave = self.augment.transform_audio(wave)
            waves.append(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)))
        audio, lengths = pad_sequences(waves)  # (B, S), (B,)
        return Batch(inputs=audio, lengths=lengths.long(), ids=[self.cuts[i].id for i in indices])


def crop_dataset(recipe: Recipe, cuts: CutSet, sample_rate: int, training: bool) -> CropDataset:
    """The training crops (with the recipe's noise) or whole evaluation utterances."""
    augment = build_augment(recipe.data.augment) if training else None
    segment = recipe.data.segment if training else None
    return CropDataset(cuts, sample_rate, segment, augment)
