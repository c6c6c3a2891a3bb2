"""Scoring: WER and CER with jiwer on normalized text, RTFx, and per-utterance results."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jiwer
import torch
from lhotse import CutSet
from lhotse.dataset import SimpleCutSampler

from suite.text import normalize_text


@dataclass
class Scores:
    """Corpus-level error rates (fractions, not percent) and throughput."""

    wer: float
    cer: float
    num_utterances: int
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    per_utterance: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rtfx(self) -> float:
        """Seconds of audio processed per second of wall time."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else float("inf")

    def summary(self) -> dict[str, float]:
        return {
            "wer": self.wer,
            "cer": self.cer,
            "utterances": self.num_utterances,
            "audio_hours": self.audio_seconds / 3600,
            "rtfx": self.rtfx,
        }


def score(references: list[str], hypotheses: list[str]) -> Scores:
    """WER/CER of hypotheses against references, both normalized by the one normalizer."""
    refs = [normalize_text(r) for r in references]
    hyps = [normalize_text(h) for h in hypotheses]
    word_errors = words = char_errors = chars = 0
    per_utt = []
    for ref, hyp in zip(refs, hyps, strict=True):
        if ref:
            w, c = jiwer.process_words(ref, hyp), jiwer.process_characters(ref, hyp)
            we = w.substitutions + w.deletions + w.insertions
            ce = c.substitutions + c.deletions + c.insertions
        else:  # jiwer rejects empty references: every hypothesis word is an insertion
            we, ce = len(hyp.split()), len(hyp)
        word_errors, words = word_errors + we, words + len(ref.split())
        char_errors, chars = char_errors + ce, chars + len(ref)
        per_utt.append(
            {
                "ref": ref,
                "hyp": hyp,
                "word_errors": we,
                "words": len(ref.split()),
                "char_errors": ce,
                "chars": len(ref),
            }
        )
    return Scores(
        wer=word_errors / max(words, 1),
        cer=char_errors / max(chars, 1),
        num_utterances=len(refs),
        per_utterance=per_utt,
    )


def by_group(scores: Scores, key: str) -> dict[Any, Scores]:
    """Error rates per value of the per-utterance field ``key`` (rows without it are skipped).

    E.g. ``by_group(scores, "voice_seen_in_train")`` splits a synthetic test set into voices
    used in training and voices held out of it.
    """
    groups: dict[Any, list[dict[str, Any]]] = {}
    for row in scores.per_utterance:
        if key in row:
            groups.setdefault(row[key], []).append(row)
    return {
        value: Scores(
            wer=sum(r["word_errors"] for r in rows) / max(sum(r["words"] for r in rows), 1),
            cer=sum(r["char_errors"] for r in rows) / max(sum(r["chars"] for r in rows), 1),
            num_utterances=len(rows),
            per_utterance=rows,
        )
        for value, rows in groups.items()
    }


def evaluate_cuts(
    model: Any, cuts: CutSet, max_duration: float = 200.0, **decode_options: Any
) -> Scores:
    """Transcribe every cut with ``model`` (an :class:`~suite.model.TaskModel`) and score it.

    Cuts are batched longest first, as ``transcribe`` batches, so that a batch holds cuts of
    similar length: on the test split of ``recipes/asr``, greedy RTFx 100-106 in manifest order
    and 185 sorted, at the default ``max_duration``. The per-utterance results keep the
    manifest's order. Audio loading and feature extraction count towards the wall time, as they
    would for a user.
    """
    from suite.tasks.asr.dataset import AsrDataset

    listed = list(cuts)
    manifest_order = {cut.id: i for i, cut in enumerate(listed)}
    cuts = CutSet.from_cuts(sorted(listed, key=lambda cut: cut.duration, reverse=True))
    dataset = AsrDataset(model.tokenizer, model.frontend, augment=None, training=False)
    sampler = SimpleCutSampler(cuts, max_duration=max_duration, shuffle=False)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows, refs, hyps = [], [], []
    audio_seconds = 0.0
    start = time.perf_counter()
    with torch.inference_mode():
        for batch_cuts in sampler:
            batch = dataset[batch_cuts].to(device)
            hyp = model.recognize(batch.inputs, batch.lengths, **decode_options)
            audio_seconds += sum(c.duration for c in batch_cuts)
            refs += batch.texts
            hyps += [h.text for h in hyp]
            rows += [_row(cut) for cut in batch_cuts]
    wall = time.perf_counter() - start
    model.train(was_training)
    scores = score(refs, hyps)
    for row, utt in zip(rows, scores.per_utterance, strict=True):
        row.update(utt)
    scores.per_utterance = sorted(rows, key=lambda row: manifest_order[row["id"]])
    scores.audio_seconds, scores.wall_seconds = audio_seconds, wall
    return scores


def _row(cut: Any) -> dict[str, Any]:
    """The per-utterance row's identity: the cut id, and where the corpus marks it, whether its
    voice configuration was used in training."""
    row: dict[str, Any] = {"id": cut.id}
    custom = (cut.supervisions[0].custom or {}) if cut.supervisions else {}
    if "voice_seen_in_train" in custom:
        row["voice_seen_in_train"] = bool(custom["voice_seen_in_train"])
    return row


def write_results(scores: Scores, path: str | Path) -> None:
    """Write per-utterance results as JSON lines (id, ref, hyp, word_errors, words)."""
    from suite.io import atomic_write_text

    lines = [json.dumps(row) for row in scores.per_utterance]
    atomic_write_text(path, "\n".join(lines) + "\n")
