"""Scoring captions: BLEU-4, CIDEr and ROUGE-L (``pycocoevalcap``'s pure-Python scorers, on
our normalized text, so no Java tokenizer is needed; METEOR and SPICE, which need Java, are
left out) against every reference phrasing of a scene, and attribute accuracy: the share of
scenes whose every fact (object, count, colour, size, relation; :mod:`suite.data.scene_captions`)
the caption states.

Sound scenes (:mod:`suite.data.sounds`) are scored from their metadata with
:func:`~suite.data.sounds.score_caption`: event recall (the scene's classes the caption names)
and precision (the classes it names that are in the scene), count accuracy, order accuracy
(over the scenes with two foreground groups, the only ones with an order to get wrong) and
attribute accuracy (scenes whose every event, count, background and the order are right).

Composed clips (:mod:`suite.data.video_scenes`) are scored from their metadata with the clip
grammar's :func:`~suite.data.video_captions.caption_clip_facts`: object accuracy (clips whose
caption names exactly the clip's things), motion accuracy (over the clips where something
moves, the only ones with a direction to get wrong: the caption's moving things and their
directions are the clip's), event accuracy (every event, thing and action, in order and none
extra: :func:`~suite.data.video_captions.events_correct`), attribute accuracy (every fact of
the clip stated) and fact recall.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suite.data.scene_captions import caption_facts
from suite.data.scenes import SceneManifest
from suite.io import atomic_write_text
from suite.text import normalize_text

METRICS = ("bleu4", "cider", "rouge_l", "attribute_accuracy", "fact_recall")
SOUND_METRICS = (
    "bleu4",
    "cider",
    "rouge_l",
    "attribute_accuracy",
    "event_recall",
    "event_precision",
    "order_accuracy",
    "count_accuracy",
)


@dataclass
class CaptionScores:
    """Corpus scores and each scene's caption.

    Attributes:
        bleu4, cider, rouge_l: the COCO caption metrics against all reference phrasings.
        attribute_accuracy: scenes whose every reference fact the caption states.
        fact_recall: reference facts stated, over all facts.
        rows: per scene: ``id``, ``hypothesis``, ``reference``, ``missing`` facts, ``novel``.
    """

    bleu4: float
    cider: float
    rouge_l: float
    attribute_accuracy: float
    fact_recall: float
    rows: list[dict[str, Any]] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in METRICS}


def text_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """BLEU-4, CIDEr and ROUGE-L of ``hypotheses`` against their ``references`` (lists)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if not hypotheses:
        return {"bleu4": 0.0, "cider": 0.0, "rouge_l": 0.0}
    # An empty caption would be an empty token list, which the scorers' counters cannot take.
    res = {str(i): [h or "<empty>"] for i, h in enumerate(hypotheses)}
    gts = {str(i): list(refs) for i, refs in enumerate(references)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    return {"bleu4": float(bleu[3]), "cider": float(cider), "rouge_l": float(rouge)}


def score_captions(scenes: SceneManifest, hypotheses: Sequence[str]) -> CaptionScores:
    """Score one caption per scene of ``scenes`` (in order)."""
    if len(hypotheses) != len(scenes):
        raise ValueError(f"got {len(hypotheses)} captions for {len(scenes)} scenes")
    rows, exact, found, total = [], 0, 0, 0
    for item, hypothesis in zip(scenes, hypotheses, strict=True):
        facts = item.facts()
        missing = sorted(facts - caption_facts(hypothesis))
        exact += not missing
        found += len(facts) - len(missing)
        total += len(facts)
        rows.append(
            {
                "id": item.id,
                "hypothesis": hypothesis,
                "reference": item.caption,
                "missing": missing,
                "novel": list(item.novel),
            }
        )
    text = text_scores(hypotheses, [item.captions or (item.caption,) for item in scenes])
    return CaptionScores(
        **text,
        attribute_accuracy=exact / max(len(scenes), 1),
        fact_recall=found / max(total, 1),
        rows=rows,
    )


@dataclass
class SoundCaptionScores:
    """Corpus scores of sound-scene captions and each scene's row.

    Attributes:
        bleu4, cider, rouge_l: the COCO caption metrics against all reference phrasings.
        attribute_accuracy: scenes whose caption is right in every event, count and order.
        event_recall, event_precision: means over scenes of the classes named.
        order_accuracy: scenes with two foreground groups named in the right order (1.0 when
            no scene has two).
        count_accuracy: mean over scenes of the foreground groups whose count is right.
        rows: per scene: ``id``, ``hypothesis``, ``reference``, ``recall``, ``precision``,
            ``counts``, ``order``, ``novel``.
    """

    bleu4: float
    cider: float
    rouge_l: float
    attribute_accuracy: float
    event_recall: float
    event_precision: float
    order_accuracy: float
    count_accuracy: float
    rows: list[dict[str, Any]] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in SOUND_METRICS}


def score_sound_captions(scenes: Sequence[Any], hypotheses: Sequence[str]) -> SoundCaptionScores:
    """Score one caption per sound scene (:class:`~suite.tasks.caption.audio_data.SoundItem`)
    of ``scenes``, in order."""
    from suite.data.sounds import score_caption
    from suite.tasks.caption.audio_data import restore_commas

    if len(hypotheses) != len(scenes):
        raise ValueError(f"got {len(hypotheses)} captions for {len(scenes)} scenes")
    rows = []
    for item, hypothesis in zip(scenes, hypotheses, strict=True):
        score = score_caption(restore_commas(hypothesis), item.fields())
        rows.append(
            {
                "id": item.id,
                "hypothesis": hypothesis,
                "reference": item.caption,
                **score,
                "ordered": len(item.groups) > 1,
                "novel": list(item.novel),
            }
        )
    n = max(len(rows), 1)
    ordered = [row["order"] for row in rows if row["ordered"]]
    exact = [all(row[k] == 1.0 for k in ("recall", "precision", "counts", "order")) for row in rows]
    # Punctuation is the tokenizer's to drop, not the captioner's to get right.
    text = text_scores(
        [normalize_text(h) for h in hypotheses],
        [[normalize_text(c) for c in item.captions or (item.caption,)] for item in scenes],
    )
    return SoundCaptionScores(
        **text,
        attribute_accuracy=sum(exact) / n,
        event_recall=sum(row["recall"] for row in rows) / n,
        event_precision=sum(row["precision"] for row in rows) / n,
        order_accuracy=sum(ordered) / len(ordered) if ordered else 1.0,
        count_accuracy=sum(row["counts"] for row in rows) / n,
        rows=rows,
    )


VIDEO_METRICS = (
    "bleu4",
    "cider",
    "rouge_l",
    "attribute_accuracy",
    "fact_recall",
    "object_accuracy",
    "motion_accuracy",
    "event_accuracy",
)


@dataclass
class VideoCaptionScores:
    """Corpus scores of clip captions and each clip's row.

    Attributes:
        bleu4, cider, rouge_l: the COCO caption metrics against all reference phrasings.
        attribute_accuracy: clips whose every fact (things, colours, sizes, events, order) the
            caption states.
        fact_recall: the clips' facts stated, over all facts.
        object_accuracy: clips whose caption names exactly the clip's things.
        motion_accuracy: over clips where something moves, those whose caption states exactly
            the clip's motions (thing and direction); 1.0 when none moves.
        event_accuracy: clips whose caption states every event, in order, and none extra.
        rows: per clip: ``id``, ``hypothesis``, ``reference``, ``missing`` facts, ``objects``,
            ``motion`` (``None`` for a clip without one), ``events``, ``novel``.
    """

    bleu4: float
    cider: float
    rouge_l: float
    attribute_accuracy: float
    fact_recall: float
    object_accuracy: float
    motion_accuracy: float
    event_accuracy: float
    rows: list[dict[str, Any]] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in VIDEO_METRICS}


def _kind(facts: set[str], prefix: str) -> set[str]:
    return {f for f in facts if f.startswith(prefix)}


def _motions(facts: set[str]) -> set[str]:
    """The ``event THING moves_DIRECTION`` facts."""
    return {f for f in _kind(facts, "event ") if f.rsplit(" ", 1)[1].startswith("moves_")}


def score_video_captions(clips: Sequence[Any], hypotheses: Sequence[str]) -> VideoCaptionScores:
    """Score one caption per clip (:class:`~suite.data.videos.ClipItem`) of ``clips``, in
    order."""
    from suite.data.video_captions import caption_clip_facts, events_correct

    if len(hypotheses) != len(clips):
        raise ValueError(f"got {len(hypotheses)} captions for {len(clips)} clips")
    rows, found, total = [], 0, 0
    for item, hypothesis in zip(clips, hypotheses, strict=True):
        facts, said = item.facts(), caption_clip_facts(hypothesis)
        missing = sorted(facts - said)
        moves = _motions(facts)
        found += len(facts) - len(missing)
        total += len(facts)
        rows.append(
            {
                "id": item.id,
                "hypothesis": hypothesis,
                "reference": item.caption,
                "missing": missing,
                "objects": _kind(said, "object ") == _kind(facts, "object "),
                "motion": _motions(said) == moves if moves else None,
                "events": events_correct(hypothesis, facts),
                "novel": list(item.novel),
            }
        )
    n = max(len(rows), 1)
    moving = [row["motion"] for row in rows if row["motion"] is not None]
    text = text_scores(hypotheses, [item.captions or (item.caption,) for item in clips])
    return VideoCaptionScores(
        **text,
        attribute_accuracy=sum(not row["missing"] for row in rows) / n,
        fact_recall=found / max(total, 1),
        object_accuracy=sum(row["objects"] for row in rows) / n,
        motion_accuracy=sum(moving) / len(moving) if moving else 1.0,
        event_accuracy=sum(row["events"] for row in rows) / n,
        rows=rows,
    )


def write_rows(
    scores: CaptionScores | SoundCaptionScores | VideoCaptionScores, path: str | Path
) -> Path:
    """Each scene's row as JSON Lines at ``path`` (atomically)."""
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in scores.rows))
    return Path(path)
