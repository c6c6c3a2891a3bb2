"""The one text normalizer: corpus synthesis, tokenizer training and WER scoring all use it.

Lower case, numbers spelled out (``21st`` -> ``twenty first``, ``3.5`` -> ``three point five``),
apostrophes inside words kept (``don't``), every other punctuation mark removed, whitespace
collapsed. Accented letters are folded to ASCII so the character set stays ``a-z ' space``.
"""

from __future__ import annotations

import re
import unicodedata

from num2words import num2words

_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_NOT_ALLOWED = re.compile(r"[^a-z' ]+")
_STRAY_APOSTROPHE = re.compile(r"(?<![a-z])'|'(?![a-z])")
_SPACES = re.compile(r"\s+")

# Characters of normalized text, in a fixed order (the character tokenizer's vocabulary).
ALPHABET = " '" + "abcdefghijklmnopqrstuvwxyz"


def _spell(number: str, ordinal: bool = False) -> str:
    if ordinal:
        words = num2words(int(number), to="ordinal")
    else:
        words = num2words(float(number) if "." in number else int(number))
    return f" {words} "


def normalize_text(text: str) -> str:
    """Normalize ``text`` for training and scoring (see the module docstring)."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = text.replace("\u2019", "'").replace("&", " and ")
    text = _ORDINAL.sub(lambda m: _spell(m.group(1), ordinal=True), text)
    text = _NUMBER.sub(lambda m: _spell(m.group(0)), text)
    text = text.lower().replace("-", " ")
    text = _NOT_ALLOWED.sub(" ", text)
    text = _STRAY_APOSTROPHE.sub(" ", text)
    return _SPACES.sub(" ", text).strip()
