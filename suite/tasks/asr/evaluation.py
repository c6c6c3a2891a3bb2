"""Scoring: WER and CER with jiwer on normalized text, RTFx, and per-utterance results."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jiwer
from lhotse import CutSet

from suite.audio import AudioError
from suite.errors import UserError
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
    failed: list[dict[str, Any]] = field(default_factory=list)  # cuts not scored: id, error

    @property
    def rtfx(self) -> float:
        """Seconds of audio processed per second of wall time."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else float("inf")

    def summary(self) -> dict[str, float]:
        return {
            "wer": self.wer,
            "cer": self.cer,
            "utterances": self.num_utterances,
            "failed": len(self.failed),
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
    used in training and voices held out of it; ``by_group(scores, "source")`` a pooled test
    set into its corpora (``custom.source``, as ``suite data real-speech`` marks them).
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
    model: Any,
    cuts: CutSet,
    max_duration: float = 200.0,
    errors: str = "raise",
    **decode_options: Any,
) -> Scores:
    """Transcribe every cut with ``model`` (an :class:`~suite.model.TaskModel`) and score it.

    Cuts are batched longest first, as ``transcribe`` batches, so that a batch holds cuts of
    similar length: on the test split of ``recipes/asr``, greedy RTFx 100-106 in manifest order
    and 185 sorted, at the default ``max_duration``. The per-utterance results keep the
    manifest's order. Audio loading and feature extraction count towards the wall time, as they
    would for a user. Silent cuts and cuts too short for one frame are hypothesised as "", as
    :meth:`~suite.tasks.asr.pipeline.Transcriber.transcribe` does.

    Args:
        model: the model to score.
        cuts: cuts with audio and reference text.
        max_duration: seconds of audio per batch.
        errors: what to do with cuts whose audio or text cannot be read: ``"raise"`` an
            :class:`~suite.tasks.asr.pipeline.InputsError` naming every one of them (nothing is
            decoded after the first), or ``"skip"`` them: they are left out of the scores and
            listed in :attr:`Scores.failed`.
        **decode_options: passed to the head's ``decode`` (``head=``, ``method=``, ...).

    Raises:
        InputsError: with ``errors="raise"``, one or more cuts cannot be read.
    """
    from suite.tasks.asr.dataset import cut_text, load_cut_audio
    from suite.tasks.asr.pipeline import InputsError, transcribe_waveforms

    if errors not in ("raise", "skip"):
        raise UserError(f"errors must be raise or skip; got {errors!r}")
    listed = list(cuts)
    manifest_order = {cut.id: i for i, cut in enumerate(listed)}
    ordered = sorted(listed, key=lambda cut: cut.duration, reverse=True)
    was_training = model.training
    model.eval()
    rows, refs, hyps = [], [], []
    failures: dict[int, AudioError] = {}
    audio_seconds = 0.0
    start = time.perf_counter()
    for batch_cuts in _batches(ordered, max_duration):
        audio, texts, good = [], [], []
        for cut in batch_cuts:
            try:
                text, samples = cut_text(cut), load_cut_audio(cut, model.sample_rate)
            except UserError as e:  # AudioError, or a cut without a transcript
                error = e if isinstance(e, AudioError) else AudioError(str(e))
                failures[manifest_order[cut.id]] = error
                continue
            texts.append(text)
            audio.append(samples)
            good.append(cut)
        if failures and errors == "raise":
            continue  # only look for the other bad cuts, to name them all
        hyps += transcribe_waveforms(
            model, audio, batch_size=None, names=[c.id for c in good], **decode_options
        )
        audio_seconds += sum(c.duration for c in good)
        refs += texts
        rows += [cut_row(cut) for cut in good]
    wall = time.perf_counter() - start
    model.train(was_training)
    if failures and errors == "raise":
        failures = dict(sorted(failures.items()))
        raise InputsError(failures, len(listed), what="cuts", action="score")
    scores = score(refs, hyps)
    for row, utt in zip(rows, scores.per_utterance, strict=True):
        row.update(utt)
    scores.per_utterance = sorted(rows, key=lambda row: manifest_order[row["id"]])
    scores.failed = [{"id": listed[i].id, "error": str(e)} for i, e in sorted(failures.items())]
    scores.audio_seconds, scores.wall_seconds = audio_seconds, wall
    return scores


GROUP_KEYS = ("voice_seen_in_train", "engine_seen_in_train", "engine", "source", "kind")


def held_out_kind(row: dict[str, Any]) -> str | None:
    """What a synthetic test utterance holds out: ``held_out_engine`` (its synthesizer was
    never heard in training), ``held_out_voice`` (a voice configuration never heard), ``seen``;
    ``None`` for cuts that mark neither."""
    if row.get("engine_seen_in_train") is False:
        return "held_out_engine"
    if "voice_seen_in_train" in row:
        return "seen" if row["voice_seen_in_train"] else "held_out_voice"
    return None


def summary_with_groups(scores: Scores) -> dict[str, Any]:
    """:meth:`Scores.summary` plus ``groups``: per :data:`GROUP_KEYS` field the cuts mark
    (``kind`` is :func:`held_out_kind`), each value's ``wer``, ``cer``, ``utterances``, ``words``
    and ``word_errors`` (what ``suite evaluate --json`` prints)."""
    rows = [{**row, "kind": held_out_kind(row)} for row in scores.per_utterance]
    rows = [{k: v for k, v in row.items() if v is not None} for row in rows]
    marked = Scores(scores.wer, scores.cer, scores.num_utterances, per_utterance=rows)
    groups = {}
    for key in GROUP_KEYS:
        found = by_group(marked, key)
        if found:
            groups[key] = {
                str(value).lower() if isinstance(value, bool) else str(value): {
                    "wer": g.wer,
                    "cer": g.cer,
                    "utterances": g.num_utterances,
                    "words": sum(r["words"] for r in g.per_utterance),
                    "word_errors": sum(r["word_errors"] for r in g.per_utterance),
                }
                for value, g in sorted(found.items(), key=lambda kv: str(kv[0]))
            }
    words = sum(r["words"] for r in rows)
    totals = {"words": words, "word_errors": sum(r["word_errors"] for r in rows)}
    return {**scores.summary(), **totals, "groups": groups}


def _batches(cuts: list[Any], max_duration: float) -> list[list[Any]]:
    """Consecutive cuts whose durations add up to at most ``max_duration`` (a longer cut alone),
    as lhotse's ``SimpleCutSampler`` batches them."""
    batches: list[list[Any]] = []
    total = 0.0
    for cut in cuts:
        if batches and total + cut.duration <= max_duration:
            batches[-1].append(cut)
            total += cut.duration
        else:
            batches.append([cut])
            total = cut.duration
    return batches


def cut_row(cut: Any) -> dict[str, Any]:
    """The per-utterance row's identity: the cut id, and where the corpus marks them, whether
    its voice configuration and its synthesizer (``engine``) were used in training and which
    source (corpus) it comes from."""
    row: dict[str, Any] = {"id": cut.id}
    custom = (cut.supervisions[0].custom or {}) if cut.supervisions else {}
    for key in ("voice_seen_in_train", "engine_seen_in_train"):
        if key in custom:
            row[key] = bool(custom[key])
    if "engine" in custom:
        row["engine"] = str(custom["engine"])
    source = custom.get("source") or (getattr(cut, "custom", None) or {}).get("source")
    if source is not None:
        row["source"] = str(source)
    return row


def write_results(scores: Scores, path: str | Path) -> None:
    """Write per-utterance results as JSON lines (id, ref, hyp, word_errors, words), then one
    line (id, error) per cut that could not be scored."""
    from suite.io import atomic_write_text

    lines = [json.dumps(row) for row in [*scores.per_utterance, *scores.failed]]
    atomic_write_text(path, "\n".join(lines) + "\n")
