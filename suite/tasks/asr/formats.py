"""Transcripts as text: plain text, JSON, SubRip (``.srt``) and WebVTT (``.vtt``), as written by
``suite transcribe --format``.

Subtitles group words into cues of one line: a cue ends before a word that would make it longer
than :data:`MAX_CUE_CHARS` characters (42, the line length broadcasters' subtitle guidelines
use) or :data:`MAX_CUE_SECONDS` long, and at a pause of :data:`CUE_PAUSE` seconds. A cue stays
on screen from its first word's start to its last word's end, at least :data:`MIN_CUE_SECONDS`
(CTC word ends come early: see :mod:`~suite.tasks.asr.alignment`) but never into the next cue.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from suite.tasks.asr.alignment import Transcript, Word

FORMATS = ("txt", "json", "srt", "vtt")
MAX_CUE_CHARS = 42
MAX_CUE_SECONDS = 5.0
CUE_PAUSE = 1.0
MIN_CUE_SECONDS = 1.0


@dataclass(frozen=True)
class Cue:
    """One subtitle: ``text`` shown from ``start`` to ``end`` seconds."""

    start: float
    end: float
    text: str


def cues(words: Sequence[Word]) -> list[Cue]:
    """The subtitle cues of timed words (see the module docstring)."""
    groups: list[list[Word]] = []
    for w in words:
        group = groups[-1] if groups else None
        if (
            group is None
            or len(" ".join(x.word for x in group)) + 1 + len(w.word) > MAX_CUE_CHARS
            or w.end - group[0].start > MAX_CUE_SECONDS
            or w.start - group[-1].end >= CUE_PAUSE
        ):
            groups.append([w])
        else:
            group.append(w)
    out = []
    for i, group in enumerate(groups):
        start = group[0].start
        end = max(group[-1].end, start + MIN_CUE_SECONDS)
        if i + 1 < len(groups):
            end = max(min(end, groups[i + 1][0].start), group[-1].end)
        out.append(Cue(start, end, " ".join(w.word for w in group)))
    return out


def clock(seconds: float, decimal: str = ".") -> str:
    """``HH:MM:SS.mmm`` (``decimal=","``: SubRip's ``HH:MM:SS,mmm``)."""
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{decimal}{ms:03d}"


def to_txt(result: str | Transcript) -> str:
    """The text; for a transcript with words, one ``[start --> end] text`` line per cue."""
    if isinstance(result, str) or not result.words:
        return (result if isinstance(result, str) else result.text) + "\n"
    return "".join(f"[{clock(c.start)} --> {clock(c.end)}] {c.text}\n" for c in cues(result.words))


def to_json(result: str | Transcript, file: str | None = None, indent: int | None = None) -> str:
    """One JSON object: ``{"file", "text"}``, and for a transcript also ``"duration"`` and
    ``"words"`` (``[{"word", "start", "end", "confidence"}]``, seconds)."""
    head = {"file": file} if file is not None else {}
    body = {"text": result} if isinstance(result, str) else result.as_dict()
    return json.dumps({**head, **body}, indent=indent, ensure_ascii=False) + "\n"


def to_srt(result: Transcript) -> str:
    """SubRip subtitles: numbered cues with ``HH:MM:SS,mmm`` times."""
    return "".join(
        f"{i}\n{clock(c.start, ',')} --> {clock(c.end, ',')}\n{c.text}\n\n"
        for i, c in enumerate(cues(result.words), start=1)
    )


def to_vtt(result: Transcript) -> str:
    """WebVTT subtitles: the ``WEBVTT`` header, then cues with ``HH:MM:SS.mmm`` times."""
    return "WEBVTT\n\n" + "".join(
        f"{clock(c.start)} --> {clock(c.end)}\n{c.text}\n\n" for c in cues(result.words)
    )


def render(result: str | Transcript, fmt: str, file: str | None = None) -> str:
    """``result`` in format ``fmt`` (one of :data:`FORMATS`); subtitles need a transcript.

    Args:
        result: a text, or a :class:`~suite.tasks.asr.alignment.Transcript`.
        fmt: ``"txt"``, ``"json"``, ``"srt"`` or ``"vtt"``.
        file: the audio file it came from (JSON names it).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "txt":
        return to_txt(result)
    if fmt == "json":
        return to_json(result, file)
    if not isinstance(result, Transcript):
        raise ValueError(f"{fmt} subtitles need word times: transcribe with timestamps=True")
    return to_srt(result) if fmt == "srt" else to_vtt(result)
