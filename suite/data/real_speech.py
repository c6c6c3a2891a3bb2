"""Cut manifests for the shared pack's recorded speech (``suite data real-speech``).

The pack (``<shared>/speech-real/``, see :mod:`suite.data.shared`) holds one folder per source
with lhotse recording and supervision manifests per split, whose audio paths are relative to
``speech-real/``. This module turns them into cut manifests a recipe can train and evaluate on:

- ``<out>/<source>_cuts_<split>.jsonl.gz``, one per source and split, and
- ``<out>/real_cuts_<split>.jsonl.gz``, all sources of a split pooled;

with absolute audio paths (the audio stays where it is), transcripts through
:func:`suite.text.normalize_text`, and ``custom["source"]`` on every cut and supervision, which
``suite evaluate`` and :meth:`~suite.tasks.asr.AsrTask.evaluate` group scores by.
"""

from __future__ import annotations

import re
from pathlib import Path

from lhotse import CutSet, RecordingSet, SupervisionSet
from lhotse.utils import fastcopy

from suite.data.shared import require_shared_data
from suite.errors import UserError
from suite.io import atomic_path
from suite.text import normalize_text

SPLITS = ("train", "dev", "test")
POOLED = "real"
_RECORDINGS = re.compile(r"(?P<source>.+)_recordings_(?P<split>[a-z]+)\.jsonl\.gz")


def find_sources(root: Path) -> dict[str, list[str]]:
    """Source name -> its splits (in :data:`SPLITS` order) found under ``root``."""
    found: dict[str, list[str]] = {}
    for path in sorted(root.glob("*/*_recordings_*.jsonl.gz")):
        match = _RECORDINGS.fullmatch(path.name)
        if match and match["source"] == path.parent.name:
            found.setdefault(match["source"], []).append(match["split"])
    order = {split: i for i, split in enumerate(SPLITS)}
    return {k: sorted(v, key=lambda s: order.get(s, len(order))) for k, v in found.items()}


def source_cuts(root: Path, source: str, split: str) -> CutSet:
    """The cuts of one source and split: absolute audio paths, normalized text, marked source.

    Raises:
        UserError: a manifest or an audio file it names is missing.
    """
    folder = root / source
    recordings_path = folder / f"{source}_recordings_{split}.jsonl.gz"
    supervisions_path = folder / f"{source}_supervisions_{split}.jsonl.gz"
    if not supervisions_path.is_file():
        raise UserError(
            f"{recordings_path} has no supervisions beside it ({supervisions_path.name}); "
            "restore the speech-real folder of the shared data pack"
        )
    # Paths in the pack are relative to speech-real/: make them absolute, never copy audio.
    recordings = RecordingSet.from_file(recordings_path).with_path_prefix(root.resolve())
    missing = [r.sources[0].source for r in recordings if not Path(r.sources[0].source).is_file()]
    if missing:
        raise UserError(
            f"{len(missing)} audio files of {recordings_path} are missing, e.g. {missing[0]}; "
            "restore the shared data pack (its README lists the sources) or drop the source "
            "with --sources"
        )
    supervisions = SupervisionSet.from_segments(
        fastcopy(
            s,
            text=normalize_text(s.text or ""),
            custom={**(s.custom or {}), "source": source},
        )
        for s in SupervisionSet.from_file(supervisions_path)
    )
    cuts = CutSet.from_manifests(recordings=recordings, supervisions=supervisions)
    # One utterance per recording: keep the pack's ids, which results files refer to.
    return CutSet.from_cuts(
        cut.with_id(cut.recording_id).with_custom("source", source) for cut in cuts
    )


def prepare_real_speech(
    out_dir: str | Path, root: str | Path | None = None, sources: list[str] | None = None
) -> dict[str, dict[str, Path]]:
    """Write cut manifests for the pack's recorded speech, per source and pooled per split.

    Args:
        out_dir: folder for the manifests (created if missing).
        root: the ``speech-real`` folder; by default the shared data pack's.
        sources: only these sources (default: every source found).

    Returns:
        Source name (and ``"real"`` for the pooled manifests) -> split -> manifest path.

    Raises:
        UserError: no pack, an unknown source, or missing files.
    """
    root = Path(root) if root is not None else require_shared_data("speech-real", "real-speech")
    found = find_sources(root)
    if not found:
        raise UserError(
            f"found no <source>/<source>_recordings_<split>.jsonl.gz under {root}; pass the "
            "shared data pack's speech-real folder"
        )
    unknown = sorted(set(sources or []) - set(found))
    if unknown:
        raise UserError(f"unknown source(s) {', '.join(unknown)}; {root} has {', '.join(found)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, dict[str, Path]] = {}
    pooled: dict[str, list] = {}
    for source, splits in found.items():
        if sources and source not in sources:
            continue
        for split in splits:
            cuts = source_cuts(root, source, split)
            written.setdefault(source, {})[split] = _write(cuts, out_dir, source, split)
            pooled.setdefault(split, []).extend(cuts)
    for split, cuts in pooled.items():
        written.setdefault(POOLED, {})[split] = _write(CutSet(cuts), out_dir, POOLED, split)
    return written


def _write(cuts: CutSet, out_dir: Path, name: str, split: str) -> Path:
    path = out_dir / f"{name}_cuts_{split}.jsonl.gz"
    with atomic_path(path, suffix=".jsonl.gz") as tmp:  # lhotse picks the format by suffix
        cuts.to_file(tmp)
    hours = sum(c.duration for c in cuts) / 3600
    print(f"{name} {split}: {len(cuts)} utterances, {hours:.2f} h -> {path}")
    return path
