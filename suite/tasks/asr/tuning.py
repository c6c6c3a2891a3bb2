"""Shallow-fusion tuning: the LM weight and length bonus of a CTC head's beam search, chosen by
WER on a dev manifest (``suite evaluate PKG DEV --tune-lm [--write]``).

The encoder runs once per utterance; every point of the grid only runs the head's decoding
again over the kept encoder outputs, so a grid of 25 points costs about 25 beam searches, not
25 evaluations. Each point's WER equals ``suite evaluate`` with the same options: the cuts are
batched as :func:`~suite.tasks.asr.evaluation.evaluate_cuts` batches them and decoded by the
same ``head.decode``; silent cuts and cuts too short for one frame are hypothesised as "".
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from suite.errors import UserError
from suite.interfaces import EncoderOutput
from suite.tasks.asr.evaluation import Scores, _batches, score

TUNING_CARD_SECTION = "## LM fusion tuning"  # the model-card section write_decoding writes
LM_WEIGHTS = (0.3, 0.6, 0.9, 1.2, 1.5)
LENGTH_BONUSES = (0.0, 1.0, 2.0, 3.0, 4.0)


@dataclass(frozen=True)
class GridPoint:
    """One decoding setting and its scores on the tuning manifest."""

    lm_weight: float
    length_bonus: float
    wer: float
    cer: float
    seconds: float  # wall time of decoding the whole manifest (the encoder excluded)


@dataclass
class Tuning:
    """The grid's results on one manifest, the greedy (no LM) baseline beside them."""

    head: str
    beam_size: int
    greedy: Scores
    points: list[GridPoint] = field(default_factory=list)
    audio_seconds: float = 0.0
    encode_seconds: float = 0.0
    failed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best(self) -> GridPoint:
        """The point of lowest WER; ties go to lower CER, then the smaller LM weight and bonus
        (the cheaper, less aggressive setting)."""
        return min(self.points, key=lambda p: (p.wer, p.cer, p.lm_weight, p.length_bonus))

    def table(self) -> str:
        """A markdown table of WER, LM weights by rows and length bonuses by columns; the best
        point in bold."""
        weights = sorted({p.lm_weight for p in self.points})
        bonuses = sorted({p.length_bonus for p in self.points})
        at = {(p.lm_weight, p.length_bonus): p for p in self.points}
        best = self.best
        lines = [
            "| LM weight \\ length bonus | " + " | ".join(f"{b:g}" for b in bonuses) + " |",
            "|---|" + "---:|" * len(bonuses),
        ]
        for w in weights:
            cells = []
            for b in bonuses:
                p = at.get((w, b))
                text = "" if p is None else f"{p.wer:.2%}"
                cells.append(f"**{text}**" if p is best else text)
            lines.append(f"| {w:g} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def summary(self) -> dict[str, Any]:
        """What ``--json`` prints: the grid, the greedy baseline and the chosen point."""
        best = self.best
        return {
            "head": self.head,
            "beam_size": self.beam_size,
            "utterances": self.greedy.num_utterances,
            "audio_hours": self.audio_seconds / 3600,
            "greedy": {"wer": self.greedy.wer, "cer": self.greedy.cer},
            "grid": [vars(p) for p in self.points],
            "best": vars(best),
        }


@dataclass
class Encoded:
    """A manifest's encoder outputs, kept to be decoded again and again.

    Attributes:
        references: one text per readable cut.
        batches: per batch its :class:`~suite.interfaces.EncoderOutput` ``(B, T, D)`` and the
            indices (into ``references``) of its items; silent and too-short cuts are in no
            batch (their hypothesis is "").
        failed: ``{"id", "error"}`` per cut that could not be read.
        audio_seconds: audio of the readable cuts.
    """

    references: list[str] = field(default_factory=list)
    batches: list[tuple[EncoderOutput, list[int]]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    audio_seconds: float = 0.0


def encode_cuts(model: Any, cuts: Any, max_duration: float = 200.0) -> Encoded:
    """The encoder outputs of every readable cut, batched as
    :func:`~suite.tasks.asr.evaluation.evaluate_cuts` batches them (longest first)."""
    from suite.data.collate import pad_sequences
    from suite.tasks.asr.dataset import cut_text, load_cut_audio
    from suite.tasks.asr.pipeline import is_silent

    rate = model.sample_rate
    num_frames = getattr(model.frontend, "num_frames", None)
    device = next(model.parameters()).device
    ordered = sorted(cuts, key=lambda cut: cut.duration, reverse=True)
    out = Encoded()
    for batch_cuts in _batches(ordered, max_duration):
        audio, index = [], []
        for cut in batch_cuts:
            try:
                text, samples = cut_text(cut), load_cut_audio(cut, rate)
            except UserError as e:  # AudioError, or a cut without a transcript
                out.failed.append({"id": cut.id, "error": str(e)})
                continue
            out.references.append(text)
            out.audio_seconds += cut.duration
            if (num_frames is None or num_frames(len(samples)) > 0) and not is_silent(
                samples, rate
            ):
                audio.append(samples)
                index.append(len(out.references) - 1)
        if not audio:
            continue
        batch, lengths = pad_sequences(audio)  # (B, S), (B,)
        with torch.inference_mode():
            features, frames = model.frontend(batch.to(device), lengths.to(device))  # (B, T, F)
            out.batches.append((model.encode(features, frames), index))  # (B, T', D)
    return out


def decode_encoded(
    model: Any,
    head: str,
    batches: list[tuple[EncoderOutput, list[int]]],
    count: int,
    **decode_options: Any,
) -> list[str]:
    """The text of each of ``count`` utterances, decoded by ``head`` from kept encoder outputs
    (utterances in no batch: "")."""
    texts = [""] * count
    with torch.inference_mode():
        for enc, index in batches:
            hyps = model.heads[head].decode(enc, tokenizer=model.tokenizer, **decode_options)
            for i, hyp in zip(index, hyps, strict=True):
                texts[i] = hyp.text
    return texts


def lm_head(model: Any, head: str | None = None) -> str:
    """The name of the CTC head whose LM is tuned, or a teaching error when it has none."""
    name = head or next(iter(model.heads))
    if name not in model.heads:
        raise UserError(f"no head '{name}'; this model's heads: {', '.join(model.heads)}")
    if getattr(model.heads[name], "lm", None) is None:
        raise UserError(
            f"head '{name}' decodes without a language model, so there is no LM weight to tune; "
            "attach one first: `suite models attach-lm MODEL LM_PACKAGE --out DIR`, then tune DIR"
        )
    return name


def tune_lm(
    model: Any,
    cuts: Any,
    lm_weights: tuple[float, ...] = LM_WEIGHTS,
    length_bonuses: tuple[float, ...] = LENGTH_BONUSES,
    head: str | None = None,
    beam_size: int | None = None,
    max_duration: float = 200.0,
) -> Tuning:
    """Score every ``(lm_weight, length_bonus)`` pair of the beam search on ``cuts``.

    Args:
        model: an asr :class:`~suite.model.TaskModel` whose CTC head carries an LM.
        cuts: a dev manifest's cuts (tune on dev, never on test).
        lm_weights: the LM weights to try (0 is the beam search without the LM).
        length_bonuses: the per-token bonuses to try.
        head: the CTC head (default: the first).
        beam_size: the beam width (default: the head's own).
        max_duration: seconds of audio per encoder batch.

    Raises:
        UserError: the head has no LM, or no cut could be read.
    """
    name = lm_head(model, head)
    beam = beam_size or model.heads[name].options["beam_size"]
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    encoded = encode_cuts(model, cuts, max_duration)
    encode_seconds = time.perf_counter() - start
    refs, batches = encoded.references, encoded.batches
    if not refs:
        raise UserError(f"none of the {len(encoded.failed)} cuts could be read; nothing to tune on")
    greedy = score(refs, decode_encoded(model, name, batches, len(refs), method="greedy"))
    tuning = Tuning(
        name,
        beam,
        greedy,
        audio_seconds=encoded.audio_seconds,
        encode_seconds=encode_seconds,
        failed=encoded.failed,
    )
    for weight in lm_weights:
        for bonus in length_bonuses:
            start = time.perf_counter()
            hyps = decode_encoded(
                model,
                name,
                batches,
                len(refs),
                method="beam",
                beam_size=beam,
                lm_weight=weight,
                length_bonus=bonus,
            )
            scores = score(refs, hyps)
            seconds = time.perf_counter() - start
            tuning.points.append(GridPoint(weight, bonus, scores.wer, scores.cer, seconds))
    model.train(was_training)
    return tuning


def write_decoding(package: str | Path, tuning: Tuning, manifest: str) -> Path:
    """Store the best point of ``tuning`` as the package's decoding defaults (its
    ``config.yaml``: the head's ``lm_weight``, ``length_bonus`` and ``beam_size``) and its grid
    as a model-card section (replacing an earlier one), so ``transcribe`` decodes with them.

    Args:
        package: the package folder (a shipped name's folder too).
        tuning: from :func:`tune_lm` on this package's model.
        manifest: what was tuned on, for the card.
    """
    from suite.io import atomic_write_text

    package = Path(package)
    config = yaml.safe_load((package / "config.yaml").read_text())
    best = tuning.best
    spec = config["model"]["heads"][tuning.head]
    spec.update(lm_weight=best.lm_weight, length_bonus=best.length_bonus)
    spec["beam_size"] = tuning.beam_size
    card_path = package / "README.md"
    card = card_path.read_text() if card_path.is_file() else f"# {package.name}\n"
    earlier = rf"\n{TUNING_CARD_SECTION}\n.*?(?=\n## |\Z)"
    card = re.sub(earlier, "", card, flags=re.S).rstrip("\n") + "\n"
    settings = (  # as `suite models attach-lm` wrote them into its section
        f"lm_weight={best.lm_weight}, length_bonus={best.length_bonus}, "
        f"beam_size={tuning.beam_size}"
    )
    card = re.sub(r"lm_weight=[-\d.e]+, length_bonus=[-\d.e]+, beam_size=\d+", settings, card)
    card += (
        f"\n{TUNING_CARD_SECTION}\n\nLM weight and length bonus of the `{tuning.head}` head's "
        f"beam search (beam {tuning.beam_size}), WER on `{manifest}` "
        f"({tuning.greedy.num_utterances} utterances; greedy without the LM: "
        f"{tuning.greedy.wer:.2%}); the package decodes with the best, LM weight "
        f"{best.lm_weight:g} and length bonus {best.length_bonus:g} (`suite evaluate --tune-lm "
        "--write`):\n\n" + tuning.table() + "\n"
    )
    atomic_write_text(package / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    atomic_write_text(card_path, card)
    return package
