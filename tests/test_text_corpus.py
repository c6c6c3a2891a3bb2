"""The open-domain text corpus: prose extraction, cleaning, verbalization, splits and the CLI.

Debian packages are faked under a temporary root (dpkg's status and file lists, a copyright
file, the package's files), so no package needs to be installed.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest

from suite.cli import main
from suite.data import prose, text_corpus
from suite.data.sentences import SentenceGenerator
from suite.data.text_corpus import build_text_corpus, clean_sentence, copyright_license
from suite.errors import UserError
from suite.text import normalize_text
from suite.verbalize import verbalize

HTML = """<html><head><title>Ignored title</title><script>var x = 1;</script></head><body>
<div class="related">Previous topic. Next topic here now.</div>
<h1>Reading Files<a class="headerlink" href="#r">¶</a></h1>
<p>The reader opens the file and returns its lines.
It keeps 3.5 MB in memory, about 20% of the budget.</p>
<p>Call <code>open_file()</code> before reading the data.</p>
<p>The <code>print</code> function writes text to the screen.</p>
<pre>for line in open("data.txt"):
    print(line)  # This comment is code, not prose.</pre>
<ul><li>Visit https://example.com for the latest news today.</li>
<li>Dr. Smith wrote the first version in 1990.</li></ul>
</body></html>
"""
HTML_SENTENCES = {
    "the reader opens the file and returns its lines",
    "it keeps three point five megabytes in memory about twenty percent of the budget",
    "the print function writes text to the screen",
    "doctor smith wrote the first version in nineteen ninety",
}

POD = """=head1 NAME

perlfixture - a fixture

=head1 DESCRIPTION

Perl reads B<every> line of the I<input> before it starts.
The function C<$x-E<gt>run()> is code and drops its sentence.

    my $verbatim = "This indented paragraph is code.";
    print $verbatim;

=begin html

<p>This block is for HTML output only.</p>

=end html

See L<the manual|perlfunc> for the details of each function.

=cut
"""
POD_SENTENCES = {
    "perl reads every line of the input before it starts",
    "see the manual for the details of each function",
}

MAN = r""".TH FIXTURE 1 2024-01-01 "fixture 1.0"
.SH NAME
fixture \- a man page fixture
.SH DESCRIPTION
The
.B fixture
program copies each input file to the standard output.
The copy keeps \fIevery\fP byte of the file.
.PP
.nf
fixture \-v input.txt > output.txt
This line is in a no-fill block.
.fi
.PP
The program exits with status 0 on success.
"""
MAN_SENTENCES = {
    "the fixture program copies each input file to the standard output",
    "the copy keeps every byte of the file",
    "the program exits with status zero on success",
}

PLAIN = """The meeting starts at 10:30 a.m. on Jan. 5th, 2004.
Prof. Jones paid $3.50 for 2 cups of tea.
The meeting starts at 10:30 a.m. on Jan. 5th, 2004.

The rate rose by 3.5% in the 1990s, i.e. faster than
the year before. See /usr/share/doc for more notes now.

    int main(void) { return 0; }
"""
PLAIN_SENTENCES = {
    "the meeting starts at ten thirty a m on january fifth two thousand and four",
    "professor jones paid three dollars and fifty cents for two cups of tea",
    "the rate rose by three point five percent in the nineteen nineties that is faster than the "
    "year before",
}

FORTUNES = """A journey of a thousand miles begins with a single step.
		-- Lao Tzu
%
The reader opens the file and returns its lines.
%
Short one.
%
"""
FORTUNE_SENTENCES = {"a journey of a thousand miles begins with a single step"}

OSIS = (
    '<div type="x-p" sID="p1"/><chapter n="1" osisID="Gen.1" sID="Gen.1"/>'
    '<title type="main">The Creation</title><w lemma="strong:H7225">In</w> the beginning, '
    "God created the heavens and the earth.<note>A footnote stays out of the text.</note> "
    'The earth was formless and empty.<div type="x-p" eID="p1"/>'
)
OSIS_SENTENCES = {
    "in the beginning god created the heavens and the earth",
    "the earth was formless and empty",
}


def _sword(text: str) -> dict[str, bytes]:
    block = zlib.compress(text.encode())
    return {"ot.bzs": struct.pack("<III", 0, len(block), len(text.encode())), "ot.bzz": block}


def _install(root: Path, package: str, files: dict[str, str | bytes], license_: str) -> None:
    """Fake an installed Debian package under ``root``."""
    for path, content in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True, exist_ok=True)
    (info / f"{package}.list").write_text("/.\n/usr\n" + "\n".join(files) + "\n")
    status = root / "var/lib/dpkg/status"
    with open(status, "a") as f:
        f.write(f"Package: {package}\nStatus: install ok installed\nVersion: 1.0-{package}\n\n")
    doc = root / f"usr/share/doc/{package}"
    doc.mkdir(parents=True, exist_ok=True)
    (doc / "copyright").write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        f"Files: *\nCopyright: someone\nLicense: {license_}\n\nFiles: debian/*\nLicense: GPL-2+\n"
    )


@pytest.fixture
def debian_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    sword = "/usr/share/sword/modules/texts/ztext/web"
    _install(root, "python3.11-doc", {"/usr/share/doc/python3.11/html/a.html": HTML}, "PSF-2.0")
    _install(root, "perl-doc", {"/usr/share/perl/5.36.0/pod/perlfixture.pod": POD}, "Artistic")
    _install(root, "manpages", {"/usr/share/man/man1/fixture.1": MAN}, "GPL-2+")
    _install(
        root,
        "sword-text-web",
        {f"{sword}/{name}": data for name, data in _sword(OSIS).items()},
        "public-domain",
    )
    _install(root, "fortunes", {"/usr/share/games/fortunes/wisdom": FORTUNES}, "BSD")
    _install(root, "fortunes-min", {"/usr/share/games/fortunes/wisdom.dat": b"\x00\x01"}, "BSD")
    return root


SOURCES = ["web-bible", "python-doc", "perl-doc", "manpages", "fortunes"]


# -- verbalization ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "spoken"),
    [
        ("It is 3.5 times bigger.", "it is three point five times bigger"),
        ("About 20% of them, or 7 %.", "about twenty percent of them or seven percent"),
        ("Dr. Who met Mr. Lee and Mrs. Day.", "doctor who met mister lee and missus day"),
        (
            "It costs $1,250.75 or £1.",
            "it costs one thousand two hundred and fifty dollars and "
            "seventy five cents or one pound",
        ),
        ("Leave at 7:05 p.m. or 9 am.", "leave at seven oh five p m or nine a m"),
        (
            "In 1984 we had 1984 apples.",
            "in nineteen eighty four we had one thousand nine hundred and eighty four apples",
        ),
        ("See pp. 10-12, e.g. Fig. 3.", "see pages ten to twelve for example figure three"),
        ("It was -4 °C on the 21st.", "it was minus four degrees celsius on the twenty first"),
        ("St. Paul lives on Main St. now.", "saint paul lives on main street now"),
        ("Add 2 + 2 in C++ & C#.", "add two plus two in c plus plus and c sharp"),
        (
            "Use 1/2 cup and 0.05 g, etc.",
            "use one half cup and zero point zero five grams et cetera",
        ),
        ("He waited . . . and left…", "he waited and left"),
    ],
)
def test_verbalize_writes_numbers_symbols_and_abbreviations_as_words(written, spoken):
    assert normalize_text(verbalize(written)) == spoken


def test_verbalize_reads_the_grammar_as_normalize_text_does():
    # The grammar's transcripts (normalize_text alone) must not change meaning in the corpus.
    generator = SentenceGenerator(0)
    for _ in range(3000):
        sentence = next(generator)
        assert normalize_text(verbalize(sentence)) == normalize_text(sentence), sentence


# -- extraction and cleaning --------------------------------------------------------------------


def test_split_sentences_keeps_abbreviations_initials_and_decimals():
    paragraph = (
        "Dr. Smith met J. R. R. Tolkien in the U.S. in 1950. He paid 3.5 dollars! "
        'Was it e.g. a test? "Yes," she said. Done'
    )
    assert prose.split_sentences(paragraph) == [
        "Dr. Smith met J. R. R. Tolkien in the U.S. in 1950.",
        "He paid 3.5 dollars!",
        "Was it e.g. a test?",
        '"Yes," she said.',
        "Done",
    ]


def test_html_leaves_out_code_blocks_scripts_and_navigation():
    text = " ".join(prose.html_paragraphs(HTML))
    assert "print(line)" not in text and "var x" not in text and "Next topic" not in text
    assert "Ignored title" not in text and "¶" not in text
    assert prose.CODE in text  # open_file() is code; the plain word `print` is kept
    assert "The print function" in text


def test_plain_text_joins_wrapped_lines_and_keeps_sentence_lists():
    assert list(prose.plain_paragraphs("one line\nand its wrap.\n\nfirst item\nsecond item")) == [
        "one line and its wrap.",
        "first item",
        "second item",
    ]


def test_dictionaries_keep_definitions_and_quotations_without_notes():
    entry = (
        'Ferment \\Fer*ment"\\, v. t.\n   To cause ferment in; to excite.\n   [1913 Webster]\n\n'
        "         Ye vigorous swains! while youth ferments your blood.\n"
        "                                                  --Pope.\n   [1913 Webster]\n\n"
        "   <language> {Lisp} is a list processing language.\n"
    )
    assert list(prose.dictd_paragraphs(entry)) == [
        'Ferment \\Fer*ment"\\, v. t. To cause ferment in; to excite.',
        "Ye vigorous swains! while youth ferments your blood.",
        "Lisp is a list processing language.",
    ]
    assert list(prose.gcide_quotations(entry)) == [
        "Ye vigorous swains! while youth ferments your blood."
    ]


@pytest.mark.parametrize(
    ("sentence", "reason"),
    [
        ("Run x = compute(y) before the loop ends.", "code"),
        ("Read the guide at https://example.org today please.", "code"),
        ("Edit /etc/fstab and the file system mounts.", "code"),
        ("Set <b>bold</b> text in the page header.", "code"),
        ("The parser calls getValue on every node here.", "code"),
        ("Version 3.11.2 fixed the bug in the parser.", "code"),
        ("the sentence starts lowercase and is not prose", "shape"),
        ("A heading without a final period", "shape"),
        ("Too short.", "words"),
        ("Word " * 45 + "end.", "words"),
        ("The word Россия is the Russian name of the country.", "script"),
        ("The 12 3 45 678 9 10 11 12 13 14 15.", "letters"),
    ],
)
def test_clean_sentence_rejects_what_is_not_prose(sentence, reason):
    assert clean_sentence(sentence) == (None, reason)


def test_clean_sentence_keeps_sentence_punctuation_in_the_spoken_form():
    spoken, reason = clean_sentence("Well, Dr. Lee, is it 5 o'clock yet?")
    assert reason == ""
    assert spoken == "well, doctor lee, is it five o'clock yet?"
    assert clean_sentence("the grammar writes lowercase", shaped=False)[0] is not None


def test_copyright_license_reads_dep5_and_free_form_files():
    dep5 = "Format: https://x/\n\nFiles: *\nLicense: GPL-2+\n\nFiles: debian/*\nLicense: MIT\n"
    assert copyright_license(dep5) == "GPL-2+"
    gpl = "GCIDE is free software; under the terms of the GNU General Public License as "
    gpl += "published by the Free Software Foundation; either version 2, or (at your option)"
    gpl += " any later version."
    assert copyright_license(gpl) == "GPL-2+"
    gfdl = "under the terms of the GNU Free Documentation\n   License, Version 1.1 or any later"
    assert copyright_license(gfdl + " version. (GFDL currently version 1.2)") == "GFDL-1.1+"
    assert copyright_license("The Devil's Dictionary is in the public domain.") == ("public-domain")


# -- the corpus ---------------------------------------------------------------------------------


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_corpus_from_packages_and_extra_files(debian_root, tmp_path):
    extra = tmp_path / "notes.txt"
    extra.write_text(PLAIN)
    out = tmp_path / "text"
    summary = build_text_corpus(
        out,
        sources=SOURCES,
        extra=[extra],
        grammar=30,
        dev=0.2,
        test=0.2,
        root=debian_root,
        jobs=1,
        log=None,
    )
    splits = {split: _lines(out / f"{split}.txt") for split in text_corpus.SPLITS}
    everything = [line for lines in splits.values() for line in lines]
    assert len(everything) == len(set(everything)) == summary["sentences"]  # deduplicated
    expected = HTML_SENTENCES | POD_SENTENCES | MAN_SENTENCES | PLAIN_SENTENCES
    expected |= FORTUNE_SENTENCES | OSIS_SENTENCES
    from_files = set(everything) - {normalize_text(s) for s in _grammar_sentences(30)}
    assert from_files == expected
    # Disjoint splits, each sentence where its hash puts it; the spoken lines match line by line.
    for split, lines in splits.items():
        assert all(text_corpus.split_of(s, 0, 0.2, 0.2) == split for s in lines)
        spoken = _lines(out / f"{split}.spoken.txt")
        assert [normalize_text(s) for s in spoken] == lines
        line_sources = _lines(out / f"{split}.source.txt")
        assert len(line_sources) == len(lines) and set(line_sources) <= set(summary["sources"])
        for line, source in zip(lines, line_sources, strict=True):
            if line in HTML_SENTENCES:
                assert source == "python-doc"
    assert all(splits.values())  # 50-odd sentences at 20% each: every split has some
    sources = summary["sources"]
    # The fortune repeats a python-doc sentence: the earlier source keeps it.
    assert sources["fortunes"]["duplicates"] == 1 and sources["fortunes"]["total"] == 1
    assert sources["extra:notes.txt"]["duplicates"] == 1
    assert sources["python-doc"]["packages"] == [
        {
            "name": "python3.11-doc",
            "version": "1.0-python3.11-doc",
            "license": "PSF-2.0",
            "copyright": "/usr/share/doc/python3.11-doc/copyright",
        }
    ]
    assert [p["name"] for p in sources["fortunes"]["packages"]] == ["fortunes", "fortunes-min"]
    assert sources["grammar"]["total"] > 20
    assert summary["word_types"] == len({w for s in everything for w in s.split()})
    assert json.loads((out / "summary.json").read_text()) == summary


def _grammar_sentences(n: int) -> list[str]:
    generator = SentenceGenerator(0)
    return [next(generator) for _ in range(n)]


def test_splits_depend_on_the_seed_only(debian_root, tmp_path):
    kwargs = dict(sources=SOURCES, dev=0.3, test=0.3, root=debian_root, jobs=1, log=None)
    build_text_corpus(tmp_path / "a", seed=1, **kwargs)
    build_text_corpus(tmp_path / "b", seed=1, **kwargs)
    build_text_corpus(tmp_path / "c", seed=2, **kwargs)
    a, b, c = ([_lines(tmp_path / d / f"{s}.txt") for s in text_corpus.SPLITS] for d in "abc")
    assert a == b
    assert a != c and sorted(sum(a, [])) == sorted(sum(c, []))


def test_missing_package_names_it_and_the_fix(debian_root, tmp_path):
    with pytest.raises(UserError, match=r"dict-jargon not installed.*jargon.*make data"):
        build_text_corpus(tmp_path, sources=["jargon"], root=debian_root, log=None)


@pytest.mark.parametrize("bad", ["missing.txt", "folder"])
def test_unreadable_extra_file_is_a_clear_error(debian_root, tmp_path, bad):
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match="--extra .*" + bad):
        build_text_corpus(
            tmp_path / "out", sources=[], extra=[tmp_path / bad], root=debian_root, log=None
        )


def test_unknown_source_lists_the_known_ones(tmp_path):
    with pytest.raises(UserError, match="unknown text source.*wordnet"):
        build_text_corpus(tmp_path, sources=["nope"], log=None)


def test_cli_writes_the_splits_and_summary(debian_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(text_corpus, "ROOT", debian_root)
    extra = tmp_path / "notes.txt"
    extra.write_text(PLAIN)
    out = tmp_path / "text"
    argv = ["data", "text", "--out", str(out), "--sources", "python-doc,perl-doc"]
    assert main([*argv, "--extra", str(extra), "--grammar", "10", "--jobs", "1"]) == 0
    for split in text_corpus.SPLITS:
        assert (out / f"{split}.txt").is_file() and (out / f"{split}.spoken.txt").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["sources"]) == {"python-doc", "perl-doc", "extra:notes.txt", "grammar"}
    assert "word types" in capsys.readouterr().out
    assert main(["data", "text", "--out", str(out), "--sources", "jargon"]) == 2
    assert "make data" in capsys.readouterr().err
