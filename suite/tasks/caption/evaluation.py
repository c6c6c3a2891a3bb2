"""Scoring captions: BLEU-4, CIDEr and ROUGE-L (``pycocoevalcap``'s pure-Python scorers, on
our normalized text, so no Java tokenizer is needed; METEOR and SPICE, which need Java, are
left out) against every reference phrasing of a scene, and attribute accuracy: the share of
scenes whose every fact (object, count, colour, size, relation; :mod:`suite.data.scene_captions`)
the caption states.
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

METRICS = ("bleu4", "cider", "rouge_l", "attribute_accuracy", "fact_recall")


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


def write_rows(scores: CaptionScores, path: str | Path) -> Path:
    """Each scene's row as JSON Lines at ``path`` (atomically)."""
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in scores.rows))
    return Path(path)
