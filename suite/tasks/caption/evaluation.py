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


def write_rows(scores: CaptionScores | SoundCaptionScores, path: str | Path) -> Path:
    """Each scene's row as JSON Lines at ``path`` (atomically)."""
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in scores.rows))
    return Path(path)
