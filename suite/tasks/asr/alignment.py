"""Word timestamps and confidences: the decoded tokens force-aligned to a CTC head's posteriors.

The hypothesis' tokens are aligned to the CTC head's per-frame log-probabilities with
``torchaudio.functional.forced_align`` (the Viterbi path through the CTC topology, as in
torchaudio's forced-alignment tutorial), whichever head decoded them: a CTC head with an LM, or
an attention or transducer head beside a CTC head. Tokens group into words where a
sentencepiece piece starts with ``'▁'`` (a space token with a character tokenizer).

Times: encoder frame ``t`` covers ``[t, t + 1) * frame_seconds`` of the audio, where
``frame_seconds`` is the frontend's hop times the encoder's subsampling (10 ms x 4 = 40 ms for
the shipped models). A word starts at the first frame of its first token and ends after the last
frame of its last token. CTC posteriors are peaky: a token holds one or two frames and the
blanks after it belong to no token, so ``end`` marks where the word is recognized, often before
its sound has died away; ``start`` is the reliable edge.

Confidence: the mean posterior of the word's tokens over the frames aligned to them, in [0, 1]
(a word whose tokens the acoustic model was sure of scores near 1; a word an LM spelled against
the acoustics scores low).

Dims legend: T - encoder frames, V - vocabulary (incl. blank), U - tokens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from suite.errors import UserError


@dataclass(frozen=True)
class Word:
    """One recognized word with its time span in seconds and its confidence in [0, 1]."""

    word: str
    start: float
    end: float
    confidence: float


@dataclass(frozen=True)
class Transcript:
    """What ``transcribe(..., timestamps=True)`` returns per input.

    Attributes:
        text: the transcription, as ``transcribe`` returns it without timestamps.
        words: the words of ``text`` in order, with times from the start of the audio.
        duration: seconds of audio transcribed.
    """

    text: str
    words: tuple[Word, ...] = ()
    duration: float = 0.0

    def shifted(self, seconds: float) -> Transcript:
        """A copy whose word times are ``seconds`` later (a chunk's place in a long file)."""
        words = tuple(
            dataclasses.replace(w, start=w.start + seconds, end=w.end + seconds) for w in self.words
        )
        return dataclasses.replace(self, words=words)

    def as_dict(self) -> dict[str, Any]:
        """``{"text", "duration", "words": [{"word", "start", "end", "confidence"}]}``: times
        rounded to milliseconds, confidences to three decimals (what ``--format json``
        writes)."""
        return {
            "text": self.text,
            "duration": round(self.duration, 3),
            "words": [
                {
                    "word": w.word,
                    "start": round(w.start, 3),
                    "end": round(w.end, 3),
                    "confidence": round(w.confidence, 3),
                }
                for w in self.words
            ],
        }


def join(parts: Sequence[tuple[float, Transcript]], duration: float) -> Transcript:
    """One transcript of consecutive chunks given as ``(offset seconds, transcript)``."""
    text = " ".join(t.text for _, t in parts if t.text)
    words = tuple(w for offset, t in parts for w in t.shifted(offset).words)
    return Transcript(text=text, words=words, duration=duration)


def frame_seconds(model: Any) -> float:
    """Seconds of audio per encoder frame: the frontend's hop times the encoder's subsampling.

    The subsampling is read off ``encoder.output_lengths`` (frames in -> frames out), so any
    encoder family that reports its output lengths works.
    """
    hop = getattr(model.frontend, "hop_length", None)
    output_lengths = getattr(model.encoder, "output_lengths", None)
    if hop is None or output_lengths is None:
        raise UserError(
            f"word timestamps need the frontend's hop (hop_length) and the encoder's "
            f"output_lengths; {type(model.frontend).__name__} + {type(model.encoder).__name__} "
            "lack one of them: transcribe without timestamps=True"
        )
    frames = 1 << 16
    factor = frames / int(output_lengths(torch.tensor([frames]))[0])
    return hop * factor / model.sample_rate


def alignment_head(model: Any, head: str | None = None) -> Any:
    """The CTC head that times ``head``'s tokens: ``head`` itself when it is a CTC head, else
    the model's first CTC head; a teaching error when the model has none."""
    from suite.registry import lookup

    ctc = lookup("head", "ctc")
    name = head or next(iter(model.heads))
    if name in model.heads and isinstance(model.heads[name], ctc):
        return model.heads[name]
    for other in model.heads.values():
        if isinstance(other, ctc):
            return other
    kinds = ", ".join(f"{n} ({type(h).__name__})" for n, h in model.heads.items())
    raise UserError(
        f"word timestamps come from a CTC head's frame posteriors, and this model has none "
        f"(heads: {kinds}); transcribe without timestamps=True, or train the model with a CTC "
        "head beside its decoding head (recipes/asr has such recipes)"
    )


def word_pieces(tokenizer: Any, tokens: Sequence[int]) -> list[str]:
    """Each token's text with word starts as a leading space: sentencepiece's ``'▁'``, or the
    space token of a character tokenizer."""
    if hasattr(tokenizer, "pieces"):
        return [p.replace("\u2581", " ") for p in tokenizer.pieces(tokens)]
    return [tokenizer.decode([t]) for t in tokens]


def align_words(
    log_probs: Tensor,
    tokens: Sequence[int],
    pieces: Sequence[str],
    seconds_per_frame: float,
    blank_id: int = 0,
    duration: float | None = None,
) -> list[Word]:
    """Words of one utterance with their spans and confidences (see the module docstring).

    Args:
        log_probs: ``(T, V)`` the CTC head's log-probabilities over the utterance's valid
            frames.
        tokens: ``(U,)`` the hypothesis' token ids.
        pieces: each token's text from :func:`word_pieces` (a leading space starts a word).
        seconds_per_frame: from :func:`frame_seconds`.
        blank_id: the CTC blank.
        duration: seconds of audio, if known: no time lies past it (the last frame may reach
            a little beyond the last sample).

    Returns:
        The words in order; empty for no tokens, or tokens that cannot fit in ``T`` frames (each
        needs a frame, and a repeated token a blank between).
    """
    import torchaudio.functional as AF

    U, T = len(tokens), log_probs.shape[0]
    repeats = sum(a == b for a, b in zip(tokens, tokens[1:], strict=False))
    if U == 0 or U + repeats > T:
        return []
    lp = log_probs.detach().float().cpu()[None]  # (1, T, V)
    targets = torch.tensor([list(tokens)], dtype=torch.int32)  # (1, U)
    path, scores = AF.forced_align(lp, targets, blank=blank_id)  # (1, T) each
    spans = AF.merge_tokens(path[0], scores[0].exp(), blank=blank_id)  # U spans, in order
    words: list[Word] = []
    text, first, last, posteriors = "", 0, 0, 0.0
    count = 0

    def close() -> None:
        if text.strip():
            words.append(
                Word(
                    word=text.strip(),
                    start=first * seconds_per_frame,
                    end=last * seconds_per_frame,
                    confidence=posteriors / max(count, 1),
                )
            )

    for span, piece in zip(spans, pieces, strict=True):
        if piece.startswith(" ") or not text.strip():
            close()
            text, first, posteriors, count = "", span.start, 0.0, 0
        text += piece
        last = span.end
        posteriors += span.score * (span.end - span.start)  # span.score: its frames' mean
        count += span.end - span.start
    close()
    if duration is not None:
        words = [
            dataclasses.replace(w, start=min(w.start, duration), end=min(w.end, duration))
            for w in words
        ]
    return words
