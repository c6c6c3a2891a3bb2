"""The words of composed scenes (:mod:`suite.data.scenes`): the things, attributes and
relations a scene holds, the captions that state them in varied phrasings, the facts a caption
states (read back from any caption of this grammar, a captioner's too), and which compositions
are held out of training.

Facts are strings: ``object truck``, ``count truck 2``, ``colour circle red``, ``size truck
small``, ``relation truck left_of circle`` (``right of`` and ``below`` are stated as their
converse ``left of`` and ``above``; ``next to`` in name order).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

CIFAR10_CLASSES = tuple("airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck".split(","))
_FASHION = (
    "t-shirt:t shirt,trouser:trousers,pullover,dress,coat,sandal,shirt,sneaker,bag,ankle boot"
)
# Fashion-MNIST's labels (suite.data.images) -> the names captions use (normalized text).
FASHION_LABELS = {k: v or k for k, _, v in (e.partition(":") for e in _FASHION.split(","))}
FASHION_CLASSES = tuple(FASHION_LABELS.values())
SHAPES = ("circle", "square", "triangle", "star", "diamond")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 210),
    "orange": (245, 140, 30),
}
RELATIONS = ("left of", "above", "next to")

_PLURALS = {"deer": "deer", "dress": "dresses", "trousers": "pairs of trousers"}
_SINGULARS = {"trousers": "pair of trousers"}
_COUNT_WORDS = {1: "a", 2: "two", 3: "three"}
_WORD_COUNTS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3}
# Phrasings of each relation, as (words, converse): the converse ones put the second group first.
_RELATION_WORDS = {
    "left of": [("to the left of", False), ("left of", False), ("to the right of", True)],
    "above": [("above", False), ("over", False), ("below", True), ("under", True)],
    "next to": [("next to", False), ("beside", False)],
}
_PREFIXES = ("", "there is ", "a picture of ", "an image of ")


def singular(name: str) -> str:
    return _SINGULARS.get(name, name)


def plural(name: str) -> str:
    return _PLURALS.get(name, name + "s")


def kind_of(name: str) -> str:
    if name in SHAPES:
        return "shape"
    return "cifar10" if name in CIFAR10_CLASSES else "fashion_mnist"


# --- scenes as facts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneGroup:
    """``count`` copies of one thing with shared attributes.

    Attributes:
        name: class or shape name (normalized text: "t shirt", "circle").
        kind: ``cifar10``, ``fashion_mnist`` or ``shape``.
        colour: fill or tint; ``None`` for an untinted image.
        size: ``small``, ``large`` or ``None`` (medium).
        count: copies, 1-3.
        boxes: each copy's ``(x0, y0, x1, y1)``.
        images: the source image ids of an image group's copies.
    """

    name: str
    kind: str
    colour: str | None
    size: str | None
    count: int
    boxes: tuple[tuple[int, int, int, int], ...] = ()
    images: tuple[str, ...] = ()


def scene_facts(groups: Sequence[SceneGroup], relations: Iterable[Sequence[Any]]) -> set[str]:
    """``object N``, ``count N C``, ``colour N C``, ``size N S`` of each group and ``relation A
    R B`` of each relation (``left_of``, ``above``, ``next_to``; ``next to`` in name order)."""
    facts = set()
    for g in groups:
        facts |= {f"object {g.name}", f"count {g.name} {g.count}"}
        if g.colour:
            facts.add(f"colour {g.name} {g.colour}")
        if g.size:
            facts.add(f"size {g.name} {g.size}")
    for a, rel, b in relations:
        facts.add(relation_fact(groups[a].name, rel, groups[b].name))
    return facts


def relation_fact(a: str, rel: str, b: str) -> str:
    if rel == "next to":
        a, b = sorted((a, b))
    return f"relation {a} {rel.replace(' ', '_')} {b}"


# --- captions ---------------------------------------------------------------------------------


def noun_phrase(group: SceneGroup) -> str:
    words = [w for w in (group.size, group.colour) if w]
    noun = singular(group.name) if group.count == 1 else plural(group.name)
    words.append(noun)
    first = _COUNT_WORDS[group.count]
    if first == "a" and words[0][0] in "aeiou":
        first = "an"
    return " ".join([first, *words])


def phrasings(groups: Sequence[SceneGroup], relations: Sequence[Sequence[Any]]) -> list[str]:
    """Every caption of the scene the grammar allows (prefixes x relation words x order)."""
    if not relations:
        bodies = [(noun_phrase(groups[0]), groups[0].count)]
    else:
        a, rel, b = relations[0]
        bodies = []
        for words, converse in _RELATION_WORDS[rel]:
            first, second = (groups[b], groups[a]) if converse else (groups[a], groups[b])
            bodies.append((f"{noun_phrase(first)} {words} {noun_phrase(second)}", first.count))
            if rel == "next to":
                text = f"{noun_phrase(second)} {words} {noun_phrase(first)}"
                bodies.append((text, second.count))
    out = []
    for body, count in bodies:
        for prefix in _PREFIXES:
            if prefix == "there is " and count > 1:
                prefix = "there are "
            out.append(prefix + body)
    return out


def _vocabulary() -> list[tuple[list[str], str, int]]:
    """``(words, name, count)`` of every noun form, longest first (so "t shirt" wins over
    "shirt" and "pair of trousers" over nothing)."""
    forms = []
    for name in (*CIFAR10_CLASSES, *FASHION_CLASSES, *SHAPES):
        forms.append((singular(name).split(), name, 1))
        if plural(name) != singular(name):
            forms.append((plural(name).split(), name, 2))
    return sorted(forms, key=lambda f: -len(f[0]))


_NOUNS = _vocabulary()
_RELATION_PHRASES = sorted(
    (
        (words.split(), rel, converse)
        for rel, ws in _RELATION_WORDS.items()
        for words, converse in ws
    ),
    key=lambda r: -len(r[0]),
)


def caption_facts(caption: str) -> set[str]:
    """The facts a caption of the scene grammar states, read back from its words: each noun,
    the count, size and colour words just before it, and a relation phrase between two nouns.
    Unknown words are skipped, so a partly wrong caption still yields what it gets right."""
    words = caption.split()
    found: list[tuple[int, int, str, int | None, str | None, str | None]] = []  # NPs
    i = 0
    while i < len(words):
        for form, name, number in _NOUNS:
            if words[i : i + len(form)] == form:
                count, size, colour, j = None, None, None, i - 1
                while j >= 0 and found_start(found) <= j:
                    w = words[j]
                    if w in COLOURS and colour is None:
                        colour = w
                    elif w in ("small", "large") and size is None:
                        size = w
                    elif w in _WORD_COUNTS and count is None:
                        count = _WORD_COUNTS[w]
                        break
                    else:
                        break
                    j -= 1
                if count is None:
                    count = 1 if number == 1 else None
                found.append((i, i + len(form), name, count, size, colour))
                i += len(form)
                break
        else:
            i += 1
    facts = set()
    for _, _, name, count, size, colour in found:
        facts.add(f"object {name}")
        if count is not None:
            facts.add(f"count {name} {count}")
        if size:
            facts.add(f"size {name} {size}")
        if colour:
            facts.add(f"colour {name} {colour}")
    for left, right in zip(found, found[1:], strict=False):
        between = words[left[1] : right[0]]
        for k in range(len(between)):
            match = next((r for r in _RELATION_PHRASES if between[k : k + len(r[0])] == r[0]), None)
            if match:
                _, rel, converse = match
                a, b = (right[2], left[2]) if converse else (left[2], right[2])
                facts.add(relation_fact(a, rel, b))
                break
    return facts


def found_start(found: list[tuple[Any, ...]]) -> int:
    """The first word after the last noun phrase read (modifiers are looked for after it)."""
    return found[-1][1] if found else 0


# --- held-out compositions --------------------------------------------------------------------


def held_out_compositions(names: Sequence[str], seed: int) -> dict[str, list[str]]:
    """The compositions train scenes never show, as facts: one colour per thing (colours in
    turn, so each is held out for some things and seen with the rest), one size for every
    fifth thing, and about 8% of the relation triples."""
    rng = random.Random(f"compositions/{seed}")
    order = list(names)
    rng.shuffle(order)
    colours = list(COLOURS)
    colour = [f"colour {n} {colours[(i + rng.randrange(6)) % 6]}" for i, n in enumerate(order)]
    size = [f"size {n} {rng.choice(['small', 'large'])}" for n in order[::5]]
    triples = []
    for a in names:
        for b in names:
            for rel in RELATIONS:
                fact = relation_fact(a, rel, b)
                if rel == "next to" and a > b:
                    continue
                h = hashlib.sha256(f"{seed}/{fact}".encode()).digest()[0]
                if h < 21:  # 21/256, about 8%
                    triples.append(fact)
    return {"colour": sorted(colour), "size": sorted(size), "relation": sorted(set(triples))}
