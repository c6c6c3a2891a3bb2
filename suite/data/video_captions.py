"""The words of composed clips (:mod:`suite.data.video_scenes`): what the things in a clip do,
the captions that say it in varied phrasings ("a small truck moves left then a red cat
appears", "a red cat appears after a small truck moves left"), the facts a caption states (read
back from any caption of this grammar, a captioner's too), and which compositions are held out
of training.

Things and their attributes are those of the image scenes (:mod:`suite.data.scene_captions`);
a clip holds one or two of them, one copy each. Facts are strings:

* ``object cat``, ``colour cat red``, ``size cat small`` (as scenes; no count: always one);
* ``event cat moves_left`` for each event: ``moves_left``, ``moves_right``, ``moves_up``,
  ``moves_down``, ``appears``, ``disappears``;
* ``order truck moves_left cat appears`` for each two events in a row (first, then second);
* ``sequence moves_left appears``: the same without the things.

Captions are normalized text (lowercase letters, spaces), as the caption task trains on.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from suite.data.scene_captions import SceneGroup, caption_facts, noun_phrase, scene_facts
from suite.text import normalize_text

DIRECTIONS = ("left", "right", "up", "down")
ACTIONS = tuple(f"moves_{d}" for d in DIRECTIONS) + ("appears", "disappears")
# Verb phrases of each action; the first is the plain one.
_VERBS = {
    "moves_left": ("moves left", "moves to the left", "goes left", "slides left"),
    "moves_right": ("moves right", "moves to the right", "goes right", "slides right"),
    "moves_up": ("moves up", "goes up", "rises"),
    "moves_down": ("moves down", "goes down", "drops"),
    "appears": ("appears", "comes into view", "shows up"),
    "disappears": ("disappears", "vanishes", "goes out of view"),
}
_VERB_PHRASES = sorted(
    ((words.split(), action) for action, ws in _VERBS.items() for words in ws),
    key=lambda v: -len(v[0]),
)
# Two events in time order: (template, whether the second event is written first).
_JOINS = (
    ("{a} then {b}", False),
    ("{a} and then {b}", False),
    ("first {a} then {b}", False),
    ("{a} and after that {b}", False),
    ("after {a} {b}", False),
    ("{a} before {b}", False),
    ("{b} after {a}", True),
)
_PREFIXES = ("", "in this clip ", "in the video ")


@dataclass(frozen=True)
class ClipEvent:
    """What one thing does in a clip.

    Attributes:
        object: index of the thing in the clip's groups.
        action: one of :data:`ACTIONS`.
        start: first frame of the event.
        end: last frame of the event (inclusive).
    """

    object: int
    action: str
    start: int = 0
    end: int = 0


def clip_facts(groups: Sequence[SceneGroup], events: Sequence[ClipEvent]) -> set[str]:
    """Every fact of a clip (see the module docstring); ``events`` in time order."""
    facts = {f for f in scene_facts(groups, ()) if not f.startswith("count ")}
    named = [(groups[e.object].name, e.action) for e in events]
    facts |= {f"event {name} {action}" for name, action in named}
    for (a, x), (b, y) in zip(named, named[1:], strict=False):
        facts |= {f"order {a} {x} {b} {y}", f"sequence {x} {y}"}
    return facts


def manifest_facts(objects: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]]) -> set[str]:
    """Every fact of a clip from its manifest line's ``objects`` and ``events`` (what each of
    its captions states)."""
    groups = [SceneGroup(o["name"], o["kind"], o["colour"], o["size"], 1) for o in objects]
    timed = [ClipEvent(e["object"], e["action"], e["start"], e["end"]) for e in events]
    return clip_facts(groups, timed)


def event_facts(facts: set[str]) -> set[str]:
    """The facts a motion score looks at: each event's thing and action, and their order."""
    return {f for f in facts if f.split(" ", 1)[0] in ("event", "order")}


def events_correct(caption: str, reference: set[str]) -> bool:
    """Whether ``caption`` names every event of the reference facts (thing and action, so a
    motion's direction too) in the right order, and no event that did not happen."""
    return event_facts(caption_clip_facts(caption)) == event_facts(reference)


# --- captions ---------------------------------------------------------------------------------


def phrasings(
    groups: Sequence[SceneGroup], events: Sequence[ClipEvent], rng: random.Random, count: int = 6
) -> list[str]:
    """``count`` distinct captions of the clip (fewer when the grammar has fewer), each stating
    every fact: every thing with its attributes, every event, and their order."""
    out: list[str] = []
    for _ in range(count * 20):
        prefix = rng.choice(_PREFIXES)
        clauses = []
        for k, event in enumerate(events):
            verb = rng.choice(_VERBS[event.action])
            group = groups[event.object]
            if k and event.object == events[k - 1].object:
                subject = rng.choice(("it ", f"the {group.name} ", ""))
                if not subject and k == 1:
                    clauses.append(("", verb))  # "a cat appears and then moves left"
                    continue
            else:
                subject = noun_phrase(group) + " "
            clauses.append((subject, verb))
        if len(clauses) == 1:
            body = "".join(clauses[0])
        else:
            (sa, va), (sb, vb) = clauses
            joins = _JOINS if sb else [j for j in _JOINS if j[0].startswith("{a} and")]
            template, reverse = rng.choice(joins)
            if reverse and sb in ("it ", f"the {groups[events[1].object].name} "):
                continue  # the pronoun would come before its noun
            body = template.format(a=f"{sa}{va}".strip(), b=f"{sb}{vb}".strip())
        text = normalize_text(prefix + body)
        if text not in out:
            out.append(text)
        if len(out) == count:
            break
    return out


def caption_clip_facts(caption: str) -> set[str]:
    """The facts a caption of the clip grammar states, read back from its words: noun phrases
    (with :func:`~suite.data.scene_captions.caption_facts`), verb phrases bound to the last
    noun before them ("it" and a missing subject mean that one too), and their order ("Y after
    X" puts X first). Unknown words are skipped."""
    words = normalize_text(caption).split()
    items: list[tuple[int, str, str]] = []  # (position, "noun"/"verb", name or action)
    i = 0
    while i < len(words):
        match = next((v for v in _VERB_PHRASES if words[i : i + len(v[0])] == v[0]), None)
        if match:
            items.append((i, "verb", match[1]))
            i += len(match[0])
            continue
        i += 1
    facts: set[str] = set()
    events: list[tuple[str, str]] = []
    start, subject = 0, None
    for position, _, action in items:
        clause = " ".join(words[start:position])
        found = caption_facts(clause)
        names = [f.split(" ", 1)[1] for f in found if f.startswith("object ")]
        if names:  # the last noun of the clause (a clause of this grammar has one)
            subject = max(names, key=lambda n: clause.rfind(n))
            facts |= {f for f in found if not f.startswith(("count ", "relation "))}
        if subject is not None:
            event = (subject, action)
            if _after_between(words, start, position) and events:
                events.insert(len(events) - 1, event)  # "Y after X": X came first
            else:
                events.append(event)
        start = position + 1
    for name, action in events:
        facts.add(f"event {name} {action}")
    for (a, x), (b, y) in zip(events, events[1:], strict=False):
        facts |= {f"order {a} {x} {b} {y}", f"sequence {x} {y}"}
    return facts


def _after_between(words: list[str], start: int, stop: int) -> bool:
    """Whether the word "after" joins this clause to the one before (not "after X Y", where
    the clause after "after" comes first anyway)."""
    return start > 0 and "after" in words[start:stop] and "that" not in words[start:stop]


# --- held-out compositions --------------------------------------------------------------------


def held_out_events(names: Sequence[str], seed: int) -> dict[str, list[str]]:
    """The compositions training clips never show, as facts: one action per thing (actions in
    turn, so each is held out for some things and seen with the rest), and three of the thirty
    ordered pairs of different actions, each action in one of them (so no action loses more
    of its training clips than another)."""
    rng = random.Random(f"clip-compositions/{seed}")
    order = list(names)
    rng.shuffle(order)
    offset = rng.randrange(len(ACTIONS))
    event = [f"event {n} {ACTIONS[(i + offset) % len(ACTIONS)]}" for i, n in enumerate(order)]
    actions = list(ACTIONS)
    rng.shuffle(actions)
    pairs = [f"sequence {a} {b}" for a, b in zip(actions[::2], actions[1::2], strict=True)]
    return {"event": sorted(event), "sequence": sorted(pairs)}
