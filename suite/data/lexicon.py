"""The word lists behind the sentence generator, and the English morphology that inflects them.

``words/*.txt`` hold about 2,400 common English words by part of speech and meaning class
(people, animals, food, things, places, ideas, events, vehicles). An entry gives only the forms
that rules cannot make: ``child/children`` for an irregular plural, ``chocolate/-`` for an
uncountable noun, ``go/went/gone`` for an irregular verb; the other forms (plurals, third person,
past, gerund) follow the spelling rules below.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources

_NO_AN_PREFIXES = ("uni", "use", "usu", "uti", "eu", "one", "ure")
_SILENT_H = ("hour", "honest", "honor", "heir")


@dataclass(frozen=True)
class Noun:
    """A noun with its plural (``None`` for an uncountable noun) and its meaning class."""

    singular: str
    plural: str | None
    kind: str


@dataclass(frozen=True)
class Verb:
    """A verb's five forms."""

    base: str
    third: str
    past: str
    participle: str
    gerund: str


def _vowel_groups(word: str) -> int:
    return len(re.findall(r"[aeiou]+", word))


def _doubles_final(word: str) -> bool:
    # Monosyllables ending consonant-vowel-consonant double it: stop -> stopped, stopping.
    return (
        _vowel_groups(word) == 1
        and re.search(r"[^aeiou][aeiou][bdgklmnprtv]$", word) is not None
        and not word.startswith("qu")
    )


def _third_person(base: str) -> str:
    if base == "have":
        return "has"
    if re.search(r"(s|sh|ch|x|z|o)$", base):
        return base + "es"
    if re.search(r"[^aeiou]y$", base):
        return base[:-1] + "ies"
    return base + "s"


def _regular_past(base: str) -> str:
    if base.endswith("e"):
        return base + "d"
    if re.search(r"[^aeiou]y$", base):
        return base[:-1] + "ied"
    if _doubles_final(base):
        return base + base[-1] + "ed"
    return base + "ed"


def _gerund(base: str, past: str) -> str:
    if base.endswith("ie"):
        return base[:-2] + "ying"
    if base.endswith("e") and not base.endswith(("ee", "ye", "oe")) and base != "be":
        return base[:-1] + "ing"
    if _doubles_final(base) or past == base + base[-1] + "ed":
        return base + base[-1] + "ing"
    return base + "ing"


def _plural(singular: str) -> str:
    last = singular.split()[-1]
    head = singular[: len(singular) - len(last)]
    if re.search(r"(s|sh|ch|x|z)$", last):
        return head + last + "es"
    if re.search(r"[^aeiou]y$", last):
        return head + last[:-1] + "ies"
    return head + last + "s"


def article(word: str) -> str:
    """``"a"`` or ``"an"`` for the word that follows, by its (approximate) first sound."""
    w = word.lower()
    if w.startswith(_SILENT_H):
        return "an"
    if w[:1] in "aeiou" and not w.startswith(_NO_AN_PREFIXES):
        return "an"
    return "a"


def _read_sections(name: str) -> dict[str, list[str]]:
    text = resources.files("suite.data").joinpath("words", name).read_text(encoding="utf-8")
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
        elif current is not None:
            current.extend(line.split())
    return sections


@dataclass(frozen=True)
class Lexicon:
    """The word lists by part of speech and meaning class (see ``words/*.txt``)."""

    nouns: dict[str, tuple[Noun, ...]]
    verbs: dict[str, tuple[Verb, ...]]
    adjectives: dict[str, tuple[str, ...]]
    adverbs: dict[str, tuple[str, ...]]
    names: dict[str, tuple[str, ...]]

    def size(self) -> int:
        """Number of distinct words (all forms' bases) in the lists."""
        words = {n.singular for ns in self.nouns.values() for n in ns}
        words |= {v.base for vs in self.verbs.values() for v in vs}
        for table in (self.adjectives, self.adverbs, self.names):
            words |= {w for ws in table.values() for w in ws}
        return len(words)


def _noun(entry: str, kind: str) -> Noun:
    singular, _, plural = entry.replace("_", " ").partition("/")
    if plural == "-":
        return Noun(singular, None, kind)
    return Noun(singular, plural or _plural(singular), kind)


def _verb(entry: str) -> Verb:
    forms = entry.split("/")
    base = forms[0]
    past = forms[1] if len(forms) > 1 else _regular_past(base)
    participle = forms[2] if len(forms) > 2 else past
    gerund = forms[3] if len(forms) > 3 else _gerund(base, past)
    return Verb(base, _third_person(base), past, participle, gerund)


@functools.lru_cache(maxsize=1)
def lexicon() -> Lexicon:
    """The word lists, parsed once per process."""

    def dedupe(items: list[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(items))

    return Lexicon(
        nouns={
            k: tuple(_noun(e, k) for e in dedupe(v)) for k, v in _read_sections("nouns.txt").items()
        },
        verbs={
            k: tuple(_verb(e) for e in dedupe(v)) for k, v in _read_sections("verbs.txt").items()
        },
        adjectives={k: dedupe(v) for k, v in _read_sections("adjectives.txt").items()},
        adverbs={k: dedupe(v) for k, v in _read_sections("adverbs.txt").items()},
        names={k: dedupe(v) for k, v in _read_sections("names.txt").items()},
    )
