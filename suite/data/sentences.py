"""Text for speech synthesis: a seeded generator of English sentences, or lines of a text file.

The generator is a small probabilistic grammar (statements, questions, commands, subordinate
and relative clauses, reported speech, numbers, times, dates, prices, names and places) over
word lists of about 2,400 common English words by part of speech and meaning
(:mod:`suite.data.lexicon`).
Nouns, verbs and adjectives are grouped by meaning (people, animals, food, things, places,
ideas, events, vehicles) so that verbs take fitting objects and adjectives fitting nouns; the
sentences are grammatical (agreement, tense, articles, do-support) if not always sensible.

Everything is offline and deterministic: ``SentenceGenerator(seed)`` yields the same sentences
for the same seed on every machine (``random.Random`` is portable across platforms).

:func:`speakable` turns any sentence into the text handed to the synthesizer: the words of its
:func:`~suite.text.normalize_text` transcript, keeping only the sentence punctuation that shapes
prosody (``,`` ``.`` ``?`` ``!``), so the audio speaks exactly the transcript.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

from suite.data.lexicon import Noun, Verb, article, lexicon
from suite.errors import UserError
from suite.text import normalize_text

MIN_WORDS, MAX_WORDS = 4, 20

# Person of a subject, for agreement: first/second/third, singular/plural.
_FIRST_SG, _SECOND, _THIRD_SG, _FIRST_PL, _THIRD_PL = "1s", "2", "3s", "1p", "3p"
_SUBJECT_PRONOUNS = (("I", _FIRST_SG), ("you", _SECOND), ("he", _THIRD_SG), ("she", _THIRD_SG))
_SUBJECT_PRONOUNS += (("we", _FIRST_PL), ("they", _THIRD_PL))
_OBJECT_PRONOUNS = ("me", "you", "him", "her", "us", "them")
_TENSES = ("past", "present", "future", "progressive", "perfect", "modal")
_MODALS = ("can", "could", "should", "must", "might", "would", "may")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August")
_MONTHS += ("September", "October", "November", "December")
_PLACE_PREPOSITIONS = ("in", "at", "near", "behind", "outside", "inside", "next to", "opposite")
_PLACE_PREPOSITIONS += ("in front of", "across from", "around", "beside")
_CURRENCIES = ("dollars", "pounds", "euros")
_UNITS = ("kilometers", "miles", "meters", "minutes", "hours", "kilograms", "liters")
# Tense -> time phrases that agree with it.
_TIMES = {
    "past": (
        "yesterday",
        "last night",
        "last week",
        "last month",
        "last year",
        "this morning",
        "the other day",
        "a few days ago",
        "{n} days ago",
        "{n} years ago",
        "on {day}",
        "in {month}",
        "at {clock} yesterday",
        "earlier today",
        "last summer",
    ),
    "present": (
        "every day",
        "every morning",
        "every evening",
        "on {day}s",
        "at weekends",
        "in the afternoon",
        "twice a week",
        "once a month",
        "in winter",
        "after work",
        "before breakfast",
        "at {clock}",
    ),
    "future": (
        "tomorrow",
        "tonight",
        "next week",
        "next month",
        "next year",
        "on {day}",
        "in {month}",
        "later today",
        "soon",
        "in {n} days",
        "at {clock} tomorrow",
        "the day after tomorrow",
        "this weekend",
    ),
    "progressive": ("now", "right now", "at the moment", "today", "this week", "this afternoon"),
    "perfect": ("already", "recently", "this year", "since {day}", "for {n} hours", "before"),
}
_CONJUNCTIONS = {
    "past": ("when", "because", "although", "before", "after", "while", "since", "as soon as"),
    "present": ("when", "because", "although", "if", "unless", "whenever", "even though"),
    "future": ("when", "if", "unless", "as soon as", "before", "after", "once"),
}
_PUNCTUATION_KEPT = {".": ".", ",": ",", "?": "?", "!": "!", ";": ",", ":": ","}

# What a verb frame takes as object: noun classes, with "name"/"pronoun"/"city" as extras.
_OBJECT_KINDS = {
    "thing": ("thing",),
    "food": ("food",),
    "creature": ("person", "animal", "name", "pronoun"),
    "person": ("person", "name", "pronoun"),
    "place": ("place", "place", "city"),
    "idea": ("idea",),
    "event": ("event",),
    "vehicle": ("vehicle",),
}
_SUBJECT_KINDS = ("pronoun", "pronoun", "name", "person", "person", "animal", "names")


class SentenceGenerator:
    """An endless, seeded stream of varied English sentences of 4 to 20 words.

    Args:
        seed: the same seed gives the same sentences, in the same order.

    Example:
        >>> gen = SentenceGenerator(0)
        >>> sentence = next(gen)  # e.g. "The tired nurse will visit Paris next week."
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(f"sentences/{seed}")
        self.lex = lexicon()
        self._kinds = (
            (self._statement, 30),
            (self._complex, 16),
            (self._yes_no_question, 10),
            (self._wh_question, 10),
            (self._command, 9),
            (self._reported, 7),
            (self._relative, 5),
            (self._copula, 6),
            (self._numbers, 12),
            (self._exclamation, 2),
        )

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return self.sentence()

    def sentence(self) -> str:
        """One sentence, capitalized and punctuated, of ``MIN_WORDS``..``MAX_WORDS`` words."""
        makers, weights = zip(*self._kinds, strict=True)
        while True:
            make = self.rng.choices(makers, weights)[0]
            text = make()
            if MIN_WORDS <= len(normalize_text(text).split()) <= MAX_WORDS:
                return text[0].upper() + text[1:]

    # -- words -------------------------------------------------------------------------------

    def _pick(self, items):
        return self.rng.choice(items)

    def _adjective(self, kind: str) -> str:
        table = self.lex.adjectives
        return self._pick(table.get(kind) or table["thing"])

    def _noun(self, kind: str) -> Noun:
        return self._pick(self.lex.nouns[kind])

    def _countable(self, kind: str) -> Noun:
        while (noun := self._noun(kind)).plural is None:
            pass
        return noun

    def _number(self, low: int = 2, high: int = 99) -> int:
        return self.rng.randint(low, high)

    def _clock(self) -> str:
        hour = self.rng.randint(1, 12)
        if self.rng.random() < 0.3:
            return f"{hour} o'clock"
        # Minutes below ten would be read "seven five", not "seven oh five"; avoid them.
        return f"{hour}:{self._pick((10, 15, 20, 25, 30, 35, 40, 45, 50, 55))}"

    def _fill(self, template: str) -> str:
        return template.format(
            n=self._number(2, 12),
            day=self._pick(_DAYS),
            month=self._pick(_MONTHS),
            clock=self._clock(),
        )

    def _time(self, tense: str) -> str:
        return self._fill(self._pick(_TIMES[tense]))

    # -- phrases -----------------------------------------------------------------------------

    def _noun_phrase(
        self, kind: str, plural: bool | None = None, adjective: float = 0.4
    ) -> tuple[str, bool]:
        """``det [adj] noun`` and whether it is grammatically plural (random unless given)."""
        noun = self._noun(kind)
        if plural is None:
            plural = self.rng.random() < 0.3
        if noun.plural is None:  # uncountable: singular agreement, no "a"
            plural = False
            det = self._pick(("the", "some", "my", "our", "their", "this", "that", "more"))
            word = noun.singular
        elif plural:
            det = self._pick(("the", "my", "your", "our", "their", "these", "those", "some"))
            det = det if self.rng.random() > 0.15 else str(self._number(2, 20))
            word = noun.plural
        else:
            det = self._pick(("the", "the", "a", "my", "your", "his", "her", "our", "this"))
            det = self._pick(("that", "every", "one")) if self.rng.random() < 0.08 else det
            word = noun.singular
        if self.rng.random() < adjective:
            word = f"{self._adjective(kind)} {word}"
        if det == "a":
            det = article(word)
        return f"{det} {word}", plural

    def _subject(self, kinds: tuple[str, ...] = _SUBJECT_KINDS) -> tuple[str, str, str]:
        """A subject as ``(text, person, meaning class)``."""
        kind = self._pick(kinds)
        if kind == "pronoun":
            text, person = self._pick(_SUBJECT_PRONOUNS)
            return text, person, "person"
        if kind == "name":
            return self._pick(self.lex.names["given"]), _THIRD_SG, "person"
        if kind == "names":
            first, second = self.rng.sample(self.lex.names["given"], 2)
            return f"{first} and {second}", _THIRD_PL, "person"
        phrase, plural = self._noun_phrase(kind)
        return phrase, _THIRD_PL if plural else _THIRD_SG, kind

    def _object(self, frame: str) -> str:
        kind = self._pick(_OBJECT_KINDS[frame])
        if kind == "name":
            return self._pick(self.lex.names["given"])
        if kind == "pronoun":
            return self._pick(_OBJECT_PRONOUNS)
        if kind == "city":
            return self._pick(self.lex.names["city"] + self.lex.names["country"])
        return self._noun_phrase(kind)[0]

    def _place(self) -> str:
        if self.rng.random() < 0.25:
            return f"in {self._pick(self.lex.names['city'] + self.lex.names['country'])}"
        return f"{self._pick(_PLACE_PREPOSITIONS)} the {self._noun('place').singular}"

    def _verb(self, frame: str) -> Verb:
        return self._pick(self.lex.verbs[frame])

    @staticmethod
    def _be(person: str, past: bool = False) -> str:
        if past:
            return "was" if person in (_FIRST_SG, _THIRD_SG) else "were"
        return {_FIRST_SG: "am", _THIRD_SG: "is"}.get(person, "are")

    def _conjugate(self, verb: Verb, person: str, tense: str, negative: bool = False) -> str:
        """The verb group for a tense: ``past``, ``present``, ``future``, ``progressive``,
        ``perfect`` or ``modal``."""
        third = person == _THIRD_SG
        if tense == "past":
            return f"did not {verb.base}" if negative else verb.past
        if tense == "present":
            if negative:
                return f"{'does' if third else 'do'}n't {verb.base}"
            return verb.third if third else verb.base
        if tense == "future":
            going = self.rng.random() < 0.3
            if going:
                be = self._be(person)
                return f"{be} {'not ' if negative else ''}going to {verb.base}"
            return f"won't {verb.base}" if negative else f"will {verb.base}"
        if tense == "progressive":
            return f"{self._be(person)} {'not ' if negative else ''}{verb.gerund}"
        if tense == "perfect":
            have = "has" if third else "have"
            return f"{have} {'not ' if negative else ''}{verb.participle}"
        modal = self._pick(_MODALS)
        return f"{modal} {'not ' if negative else ''}{verb.base}"

    def _predicate(self, person: str, tense: str, allow_clause: bool = True) -> str:
        """Verb group plus complement and optional adverbial, agreeing with ``person``."""
        frames = list(_OBJECT_KINDS) + ["intransitive", "intransitive", "infinitive"]
        if allow_clause:
            frames.append("clause")
        frame = self._pick(frames)
        verb = self._verb(frame)
        negative = self.rng.random() < 0.12
        group = self._conjugate(verb, person, tense, negative)
        if tense == "present" and not negative and self.rng.random() < 0.25:
            group = f"{self._pick(self.lex.adverbs['frequency'])} {group}"
        if frame == "intransitive":
            parts = [group]
            if self.rng.random() < 0.5:
                parts.append(self._place())
        elif frame == "infinitive":
            inner_frame = self._pick(list(_OBJECT_KINDS))
            inner = self._verb(inner_frame)
            parts = [group, "to", inner.base, self._object(inner_frame)]
        elif frame == "clause":
            sub_subject, sub_person, _ = self._subject()
            sub_tense = self._pick(("past", "present", "future", "perfect"))
            parts = [group, "that", sub_subject, self._predicate(sub_person, sub_tense, False)]
        else:
            parts = [group, self._object(frame)]
            if self.rng.random() < 0.25:
                parts.append(self._place())
        if frame != "clause" and self.rng.random() < 0.2:
            parts.append(self._pick(self.lex.adverbs["manner"]))
        return " ".join(parts)

    def _clause(
        self, tense: str | None = None, time: float = 0.35, allow_clause: bool = True
    ) -> str:
        tense = tense or self._pick(_TENSES)
        subject, person, _ = self._subject()
        parts = [subject, self._predicate(person, tense, allow_clause)]
        if tense in _TIMES and self.rng.random() < time:
            parts.append(self._time(tense))
        return " ".join(parts)

    # -- sentence kinds ----------------------------------------------------------------------

    def _statement(self) -> str:
        return self._clause() + "."

    def _copula(self) -> str:
        subject, person, kind = self._subject(("pronoun", "name", "person", "animal", "thing"))
        be = self._be(person, past=self.rng.random() < 0.4)
        if kind == "person" and person in (_FIRST_SG, _THIRD_SG) and self.rng.random() < 0.3:
            noun = self._noun("person").singular
            return f"{subject} {be} {article(noun)} {noun}."
        adverb = self._pick(("", "", "very ", "really ", "quite ", "a little ", "not "))
        return f"{subject} {be} {adverb}{self._adjective(kind)}."

    def _complex(self) -> str:
        frame_tense = self._pick(("past", "present", "future"))
        conjunction = self._pick(_CONJUNCTIONS[frame_tense])
        sub_tense = {"past": "past", "present": "present", "future": "present"}[frame_tense]
        if conjunction == "while" and self.rng.random() < 0.5:
            sub_tense = "progressive_past"
        sub = self._subordinate(sub_tense)
        main = self._clause(frame_tense, time=0.15)
        if self.rng.random() < 0.5:
            return f"{conjunction} {sub}, {main}."
        return f"{main} {conjunction} {sub}."

    def _subordinate(self, tense: str) -> str:
        subject, person, _ = self._subject()
        if tense == "progressive_past":
            verb = self._verb("intransitive")
            return f"{subject} {self._be(person, past=True)} {verb.gerund}"
        return f"{subject} {self._predicate(person, tense, allow_clause=False)}"

    def _reported(self) -> str:
        subject, person, _ = self._subject(("pronoun", "name", "person", "names"))
        verb = self._verb("clause")
        tense = self._pick(("past", "present", "perfect"))
        group = self._conjugate(verb, person, tense)
        inner = self._clause(self._pick(("past", "future", "present", "modal")), 0.3, False)
        that = "that " if self.rng.random() < 0.6 else ""
        return f"{subject} {group} {that}{inner}."

    def _relative(self) -> str:
        frame = self._pick(("thing", "food", "place", "idea", "event", "vehicle"))
        noun = self._noun(frame)
        head = f"the {noun.singular}"
        rel_subject, _, _ = self._subject(("pronoun", "name", "person"))
        verb = self._verb(frame)
        rel = self._pick(("that", "which", ""))  # "the tower he painted" needs no pronoun
        clause = " ".join(w for w in (head, rel, rel_subject, verb.past) if w)
        if self.rng.random() < 0.5:
            past = self.rng.random() < 0.6
            be = self._be(_THIRD_SG, past)
            return f"{clause} {be} {self._pick(('very ', 'quite ', ''))}{self._adjective(frame)}."
        subject, person, _ = self._subject(("pronoun", "name"))
        main = self._verb(frame)
        return f"{subject} {self._conjugate(main, person, 'past')} {clause}."

    def _yes_no_question(self) -> str:
        subject, person, kind = self._subject()
        if subject == "I" and self.rng.random() < 0.5:
            subject, person = "you", _SECOND
        shape = self._pick(("do", "did", "modal", "be", "have", "progressive"))
        third = person == _THIRD_SG
        frame = self._pick(list(_OBJECT_KINDS))
        verb = self._verb(frame)
        rest = f"{verb.base} {self._object(frame)}"
        if shape == "do":
            head = "does" if third else "do"
        elif shape == "did":
            head = "did"
        elif shape == "modal":
            head = self._pick(("can", "could", "will", "should", "would", "may"))
        elif shape == "be":
            head = self._be(person, past=self.rng.random() < 0.4)
            rest = f"{self._pick(('really ', 'still ', ''))}{self._adjective(kind)}"
        elif shape == "have":
            head = "has" if third else "have"
            rest = f"{self._pick(('ever ', 'already ', ''))}{verb.participle} {self._object(frame)}"
        else:
            head = self._be(person)
            rest = f"{verb.gerund} {self._object(frame)}"
        tail = f" {self._place()}" if self.rng.random() < 0.25 else ""
        return f"{head} {subject} {rest}{tail}?"

    def _wh_question(self) -> str:
        subject, person, _ = self._subject()
        third = person == _THIRD_SG
        frame = self._pick(list(_OBJECT_KINDS))
        verb = self._verb(frame)
        aux = self._pick(("did", "does" if third else "do", "will", "can", "should"))
        shape = self.rng.randrange(8)
        if shape == 0:
            return f"what {aux} {subject} {verb.base}?"
        if shape == 1:
            noun = self._noun(frame if frame in self.lex.nouns else "thing")
            return f"which {noun.singular} {aux} {subject} {verb.base}?"
        if shape == 2:
            plural = self._noun(self._pick(("thing", "food", "animal", "person"))).plural
            if plural is None:
                return f"how much {self._noun('food').singular} {aux} {subject} need?"
            return (
                f"how many {plural} {aux} {subject} {self._pick(('see', 'need', 'buy', 'find'))}?"
            )
        if shape == 3:
            return f"who {verb.past} {self._object(frame)}?"
        if shape == 4:
            place = self._noun("place").singular
            return f"what time does the {place} {self._pick(('open', 'close'))}?"
        if shape == 5:
            return f"how much does the {self._noun('thing').singular} cost?"
        if shape == 6:
            event = self._noun("event").singular
            return f"how long {self._pick(('did', 'will'))} the {event} last?"
        wh = self._pick(("where", "when", "why", "how"))
        return f"{wh} {aux} {subject} {verb.base} {self._object(frame)}?"

    def _command(self) -> str:
        frame = self._pick(list(_OBJECT_KINDS) + ["intransitive"])
        verb = self._verb(frame)
        rest = verb.base if frame == "intransitive" else f"{verb.base} {self._object(frame)}"
        if self.rng.random() < 0.35:
            rest += f" {self._place()}"
        elif self.rng.random() < 0.3:
            rest += f" {self._pick(self.lex.adverbs['manner'])}"
        shape = self._pick(("please ", "", "don't ", "let's ", "never ", "remember to ", "try to "))
        end = "!" if self.rng.random() < 0.2 else "."
        if shape == "" and self.rng.random() < 0.4:
            return f"{rest}, please{end}"
        return f"{shape}{rest}{end}"

    def _exclamation(self) -> str:
        kind = self._pick(("thing", "place", "animal", "event", "food", "idea"))
        noun = self._noun(kind)
        adjective = self._adjective(kind)
        if noun.plural is None:
            return f"what {adjective} {noun.singular} this is!"
        return f"what {article(adjective)} {adjective} {noun.singular} that was!"

    def _numbers(self) -> str:
        rng, pick = self.rng, self._pick
        shape = rng.randrange(10)
        subject, person, _ = self._subject(("pronoun", "name", "person", "names"))
        if shape == 0:
            noun = self._countable(pick(("thing", "food", "animal")))
            count = rng.choice((self._number(2, 30), self._number(30, 999)))
            verb = pick(("bought", "found", "counted", "needed", "saw", "ordered"))
            when = f" {self._time('past')}" if rng.random() < 0.4 else ""
            return f"{subject} {verb} {count} {noun.plural}{when}."
        if shape == 1:
            noun = self._noun("thing")
            price = f"{self._number(1, 500)}"
            if rng.random() < 0.3:
                price += f".{rng.randint(1, 9)}"
            head = f"the {noun.singular}" if noun.plural is None else f"this {noun.singular}"
            return f"{head} costs {price} {pick(_CURRENCIES)}."
        if shape == 2:
            vehicle = pick(("train", "bus", "ferry", "plane", "tram", "coach"))
            verb = pick(("leaves", "arrives", "departs", "stops here"))
            return f"the next {vehicle} {verb} at {self._clock()}."
        if shape == 3:
            event = self._noun("event").singular
            day = rng.randint(1, 28)
            suffix = {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd"}.get(day, "th")
            when = pick(("is", "was", "will be"))
            return f"the {event} {when} on the {day}{suffix} of {pick(_MONTHS)}."
        if shape == 4:
            noun = self._countable(pick(("person", "animal", "thing")))
            count = self._number(2, 250)
            place = self._noun("place").singular
            return f"there {pick(('are', 'were'))} {count} {noun.plural} in the {place}."
        if shape == 5:
            place = self._noun("place").singular
            distance = f"{self._number(1, 40)}" + (
                f".{rng.randint(1, 9)}" if rng.random() < 0.3 else ""
            )
            unit = pick(("kilometers", "miles"))
            return f"the {place} is about {distance} {unit} from here."
        if shape == 6:
            floor = rng.randint(1, 30)
            suffix = {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd"}.get(floor, "th")
            place = self._noun("place").singular
            return f"{subject} {self._be(person)} on the {floor}{suffix} floor of the {place}."
        if shape == 7:
            amount = self._number(5, 90)
            unit = pick(("minutes", "hours", "days", "weeks"))
            verb = pick(("waited", "worked", "walked", "studied", "slept", "practiced"))
            return f"{subject} {verb} for {amount} {unit} {self._place()}."
        if shape == 8:
            percent = self._number(5, 95)
            noun = self._countable(pick(("person", "animal")))
            be = pick(("were", "are"))
            return (
                f"about {percent} percent of the {noun.plural} {be} {self._adjective(noun.kind)}."
            )
        amount = f"{self._number(2, 20)}"
        unit = pick(("kilograms", "liters", "meters", "cups", "boxes", "bags"))
        noun = self._noun(pick(("food", "thing")))
        stuff = noun.singular if noun.plural is None else noun.plural
        need = "needs" if person == _THIRD_SG else "need"
        return f"{subject} {need} {amount} {unit} of {stuff}."


def speakable(text: str) -> str:
    """The text to synthesize for ``text``: its normalized words plus sentence punctuation.

    ``normalize_text(speakable(t)) == normalize_text(t)`` for ordinary text: numbers are spelled
    out the way the transcript spells them, and the only other characters kept (``, . ? !``) are
    not spoken but shape the synthesizer's pauses and intonation.
    """
    out = []
    for token in text.split():
        core = token.rstrip("\"')]}")
        mark = _PUNCTUATION_KEPT.get(core[-1:], "") if core else ""
        words = normalize_text(token)
        if words:
            out.append(words + mark)
        elif mark and out and out[-1][-1:] not in _PUNCTUATION_KEPT:
            out[-1] += mark  # a lone mark, as in "wait !"
    return " ".join(out)


def read_text_file(path: str | Path) -> Iterator[str]:
    """The non-empty lines of a UTF-8 text file, stripped, in order.

    Raises:
        UserError: if the file does not exist or is not UTF-8 text (raised on first use).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"text file {path} does not exist or is not a file; pass --text a UTF-8 file with "
            "one sentence per line, or leave --text out to use the built-in sentence generator"
        )
    return _lines(path)


def _lines(path: Path) -> Iterator[str]:
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    yield line
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text ({e}); convert it, e.g. with iconv") from None
