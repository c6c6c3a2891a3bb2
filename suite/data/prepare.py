"""Lhotse cut manifests for real corpora (``suite data prepare CORPUS CORPUS_DIR OUT_DIR``).

Each corpus, in the layout it is downloaded in, goes through lhotse's own recipe. LibriSpeech
goes through ``lhotse.recipes.prepare_librispeech`` (``lhotse.recipes.prepare_librispeech``), which
writes ``librispeech_{recordings,supervisions}_{part}.jsonl.gz`` and reuses them when run again.
On top of those we write one cut manifest per part, ``librispeech_cuts_{part}.jsonl.gz``, whose
supervision texts went through :func:`suite.text.normalize_text` (LibriSpeech is upper case), so
training, tokenizer fitting and WER scoring all see the same text.

Because lhotse caches its manifests by part name, point each corpus at its own ``OUT_DIR``.

LJSpeech (``LJSpeech-1.1/``: ``metadata.csv`` and ``wavs/``) and CMU ARCTIC (``cmu_us_*_arctic/``
folders with ``wav/`` and ``etc/txt.done.data``) have no official split; lhotse's
``prepare_ljspeech`` and ``prepare_cmu_arctic`` read them, and we split by sentence as the shared
data pack does (``int(sha1(key)[:8], 16) % 20``: 0 test, 1 dev, else train; the key is the LJ
clip id or the ARCTIC prompt id), writing ``{ljspeech,cmu_arctic}_cuts_{split}.jsonl.gz`` with
normalized texts and ``custom["source"]``. The sentences the pack holds out (:data:`HELD_OUT`)
are left out of every split.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from lhotse import CutSet, SupervisionSet
from lhotse.recipes.librispeech import LIBRISPEECH, MINI_LIBRISPEECH, prepare_librispeech
from lhotse.utils import fastcopy

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
        corpus: corpus name; one of :data:`CORPORA` (``"librispeech"``, ``"ljspeech"``,
            ``"cmu_arctic"``).
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


# Held out of the shared pack for use elsewhere (its README): no split here holds them either.
HELD_OUT = frozenset(
    [f"arctic_a000{i}" for i in range(1, 7)] + ["arctic_a0024", "LJ002-0020", "LJ002-0035"]
)


def sentence_split(key: str) -> str:
    """``test``, ``dev`` or ``train`` for a sentence key, by the shared pack's rule."""
    h = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % 20
    return "test" if h == 0 else "dev" if h == 1 else "train"


def _find(corpus_dir: Path, name: str, marker: str, fix: str) -> Path:
    if not corpus_dir.is_dir():
        raise UserError(f"{name} folder {corpus_dir} does not exist; {fix}")
    for root in (corpus_dir, *sorted(p for p in corpus_dir.iterdir() if p.is_dir())):
        if next(root.glob(marker), None) is not None:
            return root
    raise UserError(f"found no {marker} in {corpus_dir} or the folders in it; {fix}")


def _write_split_cuts(
    name: str, manifests: dict, key: Callable[[str], str], text_of: Callable, out_dir: Path
) -> dict[str, Path]:
    """Cuts of lhotse's recordings and supervisions, by sentence split, normalized and marked."""
    supervisions = SupervisionSet.from_segments(
        fastcopy(s, text=normalize_text(text_of(s)), custom={**(s.custom or {}), "source": name})
        for s in manifests["supervisions"]
        if key(s.recording_id) not in HELD_OUT
    )
    cuts = CutSet.from_manifests(recordings=manifests["recordings"], supervisions=supervisions)
    cuts = cuts.filter(lambda c: len(c.supervisions) > 0)
    splits: dict[str, list] = {}
    for cut in cuts:
        cut = cut.with_id(cut.recording_id).with_custom("source", name)
        splits.setdefault(sentence_split(key(cut.recording_id)), []).append(cut)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for split in ("train", "dev", "test"):
        if split not in splits:
            continue
        path = out_dir / f"{name}_cuts_{split}.jsonl.gz"
        with atomic_path(path, suffix=".jsonl.gz") as tmp:
            CutSet(splits[split]).to_file(tmp)
        hours = sum(c.duration for c in splits[split]) / 3600
        print(f"{name} {split}: {len(splits[split])} utterances, {hours:.2f} h -> {path}")
        written[split] = path
    return written


def _prepare_ljspeech(corpus_dir: Path, out_dir: Path, num_jobs: int) -> dict[str, Path]:
    from lhotse.recipes import prepare_ljspeech

    fix = "pass the unpacked LJSpeech-1.1 folder (metadata.csv and wavs/) or the folder above it"
    root = _find(corpus_dir, "LJSpeech", "metadata.csv", fix)
    manifests = prepare_ljspeech(root)
    # The third column of metadata.csv, numbers and abbreviations written out.
    return _write_split_cuts(
        "ljspeech",
        manifests,
        key=lambda rec_id: rec_id,
        text_of=lambda s: (s.custom or {}).get("normalized_text") or s.text,
        out_dir=out_dir,
    )


def _prepare_cmu_arctic(corpus_dir: Path, out_dir: Path, num_jobs: int) -> dict[str, Path]:
    from lhotse.recipes import prepare_cmu_arctic

    fix = "pass the folder holding the unpacked cmu_us_<speaker>_arctic folders"
    _find(corpus_dir, "CMU ARCTIC", "**/etc/txt.done.data", fix)
    manifests = prepare_cmu_arctic(corpus_dir)
    return _write_split_cuts(
        "cmu_arctic",
        manifests,
        key=lambda rec_id: rec_id.split("-", 1)[1],  # <speaker>-arctic_a0001: the prompt
        text_of=lambda s: s.text,
        out_dir=out_dir,
    )


CORPORA: dict[str, Callable[[Path, Path, int], dict[str, Path]]] = {
    "librispeech": _prepare_librispeech,
    "ljspeech": _prepare_ljspeech,
    "cmu_arctic": _prepare_cmu_arctic,
}
