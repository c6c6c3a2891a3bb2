"""Lhotse cut manifests for real corpora (``suite data prepare CORPUS CORPUS_DIR OUT_DIR``).

LibriSpeech goes through lhotse's own recipe (``lhotse.recipes.prepare_librispeech``), which
writes ``librispeech_{recordings,supervisions}_{part}.jsonl.gz`` and reuses them when run again.
On top of those we write one cut manifest per part, ``librispeech_cuts_{part}.jsonl.gz``, whose
supervision texts went through :func:`suite.text.normalize_text` (LibriSpeech is upper case), so
training, tokenizer fitting and WER scoring all see the same text.

Because lhotse caches its manifests by part name, point each corpus at its own ``OUT_DIR``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from lhotse import CutSet, SupervisionSet
from lhotse.recipes.librispeech import LIBRISPEECH, MINI_LIBRISPEECH, prepare_librispeech

from suite.errors import UserError
from suite.io import atomic_path
from suite.text import normalize_text

# In lhotse's order: evaluation parts first, then training parts, then Mini LibriSpeech.
LIBRISPEECH_PARTS = tuple(LIBRISPEECH) + tuple(MINI_LIBRISPEECH)


def prepare_corpus(
    corpus: str, corpus_dir: str | Path, out_dir: str | Path, num_jobs: int | None = None
) -> dict[str, Path]:
    """Write lhotse cut manifests (normalized texts) for every part of a corpus found on disk.

    Args:
        corpus: corpus name; one of :data:`CORPORA` (``"librispeech"``).
        corpus_dir: the corpus as downloaded and unpacked.
        out_dir: folder for the manifests (created if missing).
        num_jobs: threads reading audio headers (default: up to 4, bounded by the cores).

    Returns:
        Part name -> path of its cut manifest.

    Raises:
        UserError: unknown corpus, missing folder, or no recognizable part in it.
    """
    if corpus not in CORPORA:
        raise UserError(f"unknown corpus '{corpus}'; known corpora: {', '.join(sorted(CORPORA))}")
    if num_jobs is None:
        num_jobs = min(4, os.cpu_count() or 1)
    return CORPORA[corpus](Path(corpus_dir), Path(out_dir), num_jobs)


def find_librispeech_parts(corpus_dir: str | Path) -> tuple[Path, list[str]]:
    """The folder holding LibriSpeech's parts and the parts present, in lhotse's order.

    ``corpus_dir`` may be the unpacked ``LibriSpeech/`` folder itself or the folder above it.

    Raises:
        UserError: ``corpus_dir`` is missing or holds no part with transcripts.
    """
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise UserError(
            f"LibriSpeech folder {corpus_dir} does not exist; pass the folder where the "
            "openslr.org/12 archives were unpacked (it holds LibriSpeech/dev-clean, ...)"
        )
    for root in (corpus_dir, corpus_dir / "LibriSpeech"):
        parts = [p for p in LIBRISPEECH_PARTS if _has_transcripts(root / p)]
        if parts:
            return root, parts
    raise UserError(
        f"found no LibriSpeech part in {corpus_dir} or {corpus_dir / 'LibriSpeech'}: expected "
        f"at least one of {', '.join(LIBRISPEECH_PARTS)}, each holding "
        "<speaker>/<chapter>/<speaker>-<chapter>.trans.txt and the .flac files it lists"
    )


def _has_transcripts(part_dir: Path) -> bool:
    # Checked before lhotse runs: it would cache an empty manifest for an empty part, and a
    # later run, after the audio arrives, would silently reuse it.
    return part_dir.is_dir() and next(part_dir.glob("*/*/*.trans.txt"), None) is not None


def _prepare_librispeech(corpus_dir: Path, out_dir: Path, num_jobs: int) -> dict[str, Path]:
    root, parts = find_librispeech_parts(corpus_dir)
    try:
        manifests = prepare_librispeech(
            root, dataset_parts=parts, output_dir=out_dir, num_jobs=num_jobs
        )
    except AssertionError as e:
        # lhotse asserts when a part's transcripts name no .flac file that exists.
        raise UserError(
            f"lhotse could not prepare LibriSpeech in {root} ({e}); check that every part's "
            ".flac files sit beside its .trans.txt files (was the archive unpacked completely?)"
        ) from None
    written = {}
    for part in parts:
        recordings = manifests[part]["recordings"]
        supervisions = manifests[part]["supervisions"]
        supervisions = SupervisionSet.from_segments(
            s.transform_text(normalize_text) for s in supervisions
        )
        cuts = CutSet.from_manifests(recordings=recordings, supervisions=supervisions)
        # lhotse suffixes cut ids with a counter; one utterance per recording here, so keep
        # LibriSpeech's own ids, which transcripts and WER reports refer to.
        cuts = CutSet.from_cuts(cut.with_id(cut.recording_id) for cut in cuts)
        path = out_dir / f"librispeech_cuts_{part}.jsonl.gz"
        # The temp name must end in .jsonl.gz: lhotse picks the format from the suffixes.
        with atomic_path(path, suffix=".jsonl.gz") as tmp:
            cuts.to_file(tmp)
        hours = sum(c.duration for c in cuts) / 3600
        print(f"librispeech {part}: {len(cuts)} utterances, {hours:.2f} h -> {path}")
        written[part] = path
    return written


CORPORA: dict[str, Callable[[Path, Path, int], dict[str, Path]]] = {
    "librispeech": _prepare_librispeech,
}
