"""The sentence generator and text-file reader behind ``suite data synth-speech``."""

from __future__ import annotations

import re
from importlib import resources
from itertools import islice

import pytest

from suite.data.lexicon import article, lexicon
from suite.data.sentences import (
    MAX_WORDS,
    MIN_WORDS,
    SentenceGenerator,
    read_text_file,
    speakable,
)
from suite.errors import UserError
from suite.text import ALPHABET, normalize_text


def take(seed: int, n: int) -> list[str]:
    return list(islice(SentenceGenerator(seed), n))


def test_same_seed_same_sentences_other_seed_others():
    assert take(7, 300) == take(7, 300)
    assert take(7, 300) != take(8, 300)


def test_sentences_are_varied():
    batch = take(0, 1000)
    assert len(set(batch)) > 950
    words = {w for s in batch for w in normalize_text(s).split()}
    assert len(words) > 1500
    assert sum(s.endswith("?") for s in batch) > 100  # questions
    assert sum(s.startswith(("Please ", "Don't ", "Let's ")) for s in batch) > 20  # commands
    assert sum(bool(re.search(r"\d", s)) for s in batch) > 50  # numbers, times, dates, prices
    assert sum("," in s for s in batch) > 30  # fronted subordinate clauses


def test_sentence_shape_and_normalization():
    for s in take(1, 1000):
        assert (s[0].isupper() or s[0].isdigit()) and s[-1] in ".?!", s
        transcript = normalize_text(s)
        assert MIN_WORDS <= len(transcript.split()) <= MAX_WORDS, s
        assert set(transcript) <= set(ALPHABET), s
        spoken = speakable(s)
        assert normalize_text(spoken) == transcript, s
        # Only the transcript's words plus prosody punctuation reach the synthesizer.
        assert re.fullmatch(r"[a-z' ,.?!]+", spoken), spoken
        assert spoken.replace(",", "").replace(".", "").replace("?", "").replace("!", "") == (
            transcript
        )


def test_speakable_spells_numbers_and_keeps_prosody_marks():
    assert speakable("Meet me at 7:30, OK?") == "meet me at seven thirty, ok?"
    assert speakable("It costs 3.5 euros!") == "it costs three point five euros!"
    assert speakable('He said "stop"; then left.') == "he said stop, then left."
    assert speakable("the 21st floor") == "the twenty first floor"
    assert speakable("!!! ...") == ""


def test_inflection_rules():
    lex = lexicon()
    verbs = {v.base: v for vs in lex.verbs.values() for v in vs}
    assert (verbs["stop"].past, verbs["stop"].gerund) == ("stopped", "stopping")
    assert (verbs["carry"].third, verbs["carry"].past) == ("carries", "carried")
    assert (verbs["make"].gerund, verbs["tie"].gerund, verbs["agree"].gerund) == (
        "making",
        "tying",
        "agreeing",
    )
    assert (verbs["visit"].past, verbs["prefer"].gerund) == ("visited", "preferring")
    assert (verbs["take"].past, verbs["take"].participle) == ("took", "taken")
    assert (verbs["watch"].third, verbs["go"].third) == ("watches", "goes")
    nouns = {n.singular: n for ns in lex.nouns.values() for n in ns}
    assert nouns["box"].plural == "boxes" and nouns["city"].plural == "cities"
    assert nouns["child"].plural == "children" and nouns["rice"].plural is None
    assert nouns["police officer"].plural == "police officers"
    assert [article(w) for w in ("apple", "hour", "university", "banana", "umbrella")] == [
        "an",
        "an",
        "a",
        "a",
        "an",
    ]


def test_lexicon_has_a_few_thousand_words():
    lex = lexicon()
    assert lex.size() > 2000
    assert set(lex.verbs) >= {"intransitive", "thing", "person", "clause", "infinitive"}


def test_read_text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("  first line \n\n\t\nsecond line\n", encoding="utf-8")
    assert list(read_text_file(path)) == ["first line", "second line"]


def test_read_text_file_errors_teach(tmp_path):
    with pytest.raises(UserError, match="does not exist.*--text"):
        read_text_file(tmp_path / "missing.txt")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(UserError, match="not UTF-8"):
        list(read_text_file(binary))


def test_word_files_are_package_data():
    # The lists ship with the package (pyproject package-data), not beside the repository.
    assert (resources.files("suite.data") / "words" / "nouns.txt").is_file()
