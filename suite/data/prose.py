"""Prose out of documentation formats: paragraphs of running text, then sentences.

Each reader takes a file's text and yields its paragraphs as plain text, one string each, with
the markup gone and code left out: HTML (``<pre>`` blocks, scripts, navigation), POD (verbatim
paragraphs, ``=begin``/``=end`` blocks), man pages in roff (``.nf``/``.EX`` blocks), dictd
databases, SWORD OSIS Bible modules, WordNet example sentences, fortune files and plain text.
Inline code (``<code>``, ``C<...>``) that is not a single plain word becomes :data:`CODE`, so
that the sentence around it can be dropped by the cleaner instead of being read with a hole.

:func:`split_sentences` splits a paragraph at sentence ends, but not after abbreviations
(``Dr.``, ``e.g.``), initials (``J. R. R. Tolkien``) or decimal points.
"""

from __future__ import annotations

import gzip
import html
import re
import struct
import zlib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

from suite.verbalize import NO_BREAK_ABBREVIATIONS

# Stands in for inline code; a sentence holding it is not prose.
CODE = "\u2400"

_SPACES = re.compile(r"\s+")
_PLAIN_WORD = re.compile(r"[A-Za-z][a-z]{1,14}")


def _code_or_word(text: str) -> str:
    text = text.strip()
    return text if _PLAIN_WORD.fullmatch(text) else CODE


# -- HTML (and the OSIS XML of SWORD modules) ------------------------------------------------

_BLOCK_TAGS = frozenset(
    "p div li ul ol dl dt dd td th tr table h1 h2 h3 h4 h5 h6 br hr blockquote section article"
    " header footer title caption figcaption body form option chapter lg aside milestone".split()
)
_SKIP_TAGS = frozenset("script style pre head textarea svg math object note title nav".split())
# Sphinx and DocBook navigation, permalinks and sidebars.
_SKIP_CLASSES = frozenset("sphinxsidebar related footer headerlink navheader navfooter".split())
_INLINE_CODE_TAGS = frozenset("code tt kbd samp var".split())


class _ProseParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._words: list[str] = []
        self._skip: list[str] = []  # open tags whose content is skipped (outermost first)
        self._code: list[str] | None = None

    def _flush(self) -> None:
        text = _SPACES.sub(" ", "".join(self._words)).strip()
        if text:
            self.paragraphs.append(text)
        self._words = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip:
            if tag == self._skip[0]:
                self._skip.append(tag)
            return
        classes = set((dict(attrs).get("class") or "").split())
        if tag in _SKIP_TAGS or classes & _SKIP_CLASSES:
            self._skip.append(tag)
            if tag in _BLOCK_TAGS or tag == "pre":
                self._flush()
        elif tag in _INLINE_CODE_TAGS and self._code is None:
            self._code = []
        elif tag in _BLOCK_TAGS:
            self._flush()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if not self._skip and tag in _BLOCK_TAGS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if self._skip:
            if tag == self._skip[0]:
                self._skip.pop()
            return
        if tag in _INLINE_CODE_TAGS and self._code is not None:
            self._words.append(_code_or_word("".join(self._code)))
            self._code = None
        elif tag in _BLOCK_TAGS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        (self._code if self._code is not None else self._words).append(data)


def html_paragraphs(text: str) -> list[str]:
    """The paragraphs of running text in an HTML page (or OSIS XML)."""
    parser = _ProseParser()
    parser.feed(text)
    parser.close()
    parser._flush()
    return parser.paragraphs


# -- POD (Perl's documentation) ---------------------------------------------------------------

_POD_CODE = re.compile(r"([A-Z])(<+)(\s?)")
_POD_ENTITIES = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/", "quot": '"', "amp": "&"}


def _pod_inline(text: str) -> str:
    """Formatting codes (``B<...>``, ``C<< ... >>``, ``L<text|target>``) resolved."""
    out, i = [], 0
    while i < len(text):
        m = _POD_CODE.match(text, i)
        if not m or m.group(1) not in "BICLEFSXZ":
            out.append(text[i])
            i += 1
            continue
        code, opening = m.group(1), m.group(2)
        closing = ">" * len(opening)
        start = m.end()
        if len(opening) == 1:  # single brackets nest: count them
            depth, j = 1, start
            while j < len(text) and depth:
                depth += {"<": 1, ">": -1}.get(text[j], 0) if text[j - 1] not in "-=" else 0
                j += 1
            inner, i = text[start : j - 1], j
        else:
            end = text.find(" " + closing, start)
            end = len(text) if end < 0 else end
            inner, i = text[start:end], end + 1 + len(closing)
        if code in "BIS":
            out.append(_pod_inline(inner))
        elif code == "E":
            out.append(_POD_ENTITIES.get(inner, chr(int(inner)) if inner.isdigit() else ""))
        elif code == "L":
            label, bar, _ = inner.partition("|")
            out.append(_pod_inline(label) if bar else CODE)
        elif code in "CF":
            out.append(_code_or_word(_pod_inline(inner)))
    return "".join(out)


def pod_paragraphs(text: str) -> Iterator[str]:
    """The text paragraphs of a POD document; verbatim (indented) paragraphs are code."""
    skipping = None
    for block in re.split(r"\n[ \t]*\n", text):
        if not block.strip():
            continue
        if skipping is not None:
            if block.startswith(f"=end {skipping}") or block.startswith("=cut"):
                skipping = None
            continue
        if block.startswith("="):
            command, _, rest = block.partition(" ")
            if command == "=begin":
                skipping = rest.split()[0] if rest.split() else ""
            elif command in ("=item", "=head1", "=head2", "=head3", "=head4") and "\n" in rest:
                # An item whose description follows on the next lines of the same paragraph.
                yield _SPACES.sub(" ", _pod_inline(rest.split("\n", 1)[1])).strip()
            continue
        if block[0] in " \t":
            continue
        yield _SPACES.sub(" ", _pod_inline(block)).strip()


# -- roff man pages ---------------------------------------------------------------------------

_ROFF_NAMED = {"em": " - ", "en": "-", "aq": "'", "dq": '"', "lq": '"', "rq": '"', "oq": "'"}
_ROFF_NAMED |= {"cq": "'", "co": "(c)", "rg": "(R)", "bu": "", "mi": "-", "hy": "-", "ti": "~"}
_ROFF_ESCAPE = re.compile(
    r"\\(?:f(?:\[[^\]]*\]|\(..|.)|s[-+]?\d+|\(([a-z]{2})|\[([a-z]{2,})\]|\*(?:\(..|\[[^\]]*\]|.)"
    r"|[&|^:c%]|(-)|(e)|( ))",
    re.IGNORECASE,
)
_ROFF_BREAKS = frozenset("SH SS PP LP P TP IP HP sp br TQ RS RE in ti bp ne".split())


def _roff_escape(m: re.Match) -> str:
    named = m.group(1) or m.group(2)
    if named:
        return _ROFF_NAMED.get(named.lower(), "")
    if m.group(3):
        return "-"
    if m.group(4):
        return "\\"
    if m.group(5):
        return " "
    return ""


def roff_paragraphs(text: str) -> Iterator[str]:
    """The text paragraphs of a man page; ``.nf``/``.EX`` blocks (examples, synopses) are code."""
    words: list[str] = []
    in_code = False
    for line in text.splitlines():
        if line.startswith((".", "'")):
            request, _, rest = line[1:].lstrip().partition(" ")
            if request in ("nf", "EX"):
                in_code = True
            elif request in ("fi", "EE"):
                in_code = False
            if in_code:
                continue
            if request in _ROFF_BREAKS:
                yield from _roff_flush(words)
            if request in ("SH", "SS", "TH", "TP", "IP") or request.startswith('\\"'):
                continue
            if request in ("B", "I", "SM", "SB"):
                words.append(rest.replace('"', ""))
            elif request in ("BR", "RB", "IR", "RI", "BI", "IB"):
                words.append("".join(_roff_args(rest)))  # alternating fonts, no spaces
            continue
        if in_code:
            continue
        if not line.strip():
            yield from _roff_flush(words)
        else:
            words.append(line)
    yield from _roff_flush(words)


def _roff_args(rest: str) -> list[str]:
    return [a or b for a, b in re.findall(r'"([^"]*)"|(\S+)', rest)]


def _roff_flush(words: list[str]) -> Iterator[str]:
    if words:
        text = _SPACES.sub(" ", _ROFF_ESCAPE.sub(_roff_escape, " ".join(words))).strip()
        words.clear()
        if text:
            yield text


# -- dictionaries, Bibles, WordNet, fortunes, plain text ---------------------------------------

_DICT_REFERENCE = re.compile(r"[{}]")
_DICT_NOTE = re.compile(r"^\s*\[(?:1913 Webster|WordNet 1\.5|PJC|Jargon File)[^\]]*\]\s*$")
# Subject and usage labels before a definition: FOLDOC's "<storage, algorithm>", the Jargon
# File's "[common]".
_DICT_LABELS = re.compile(r"^(?:(?:<[^<>]*>|\[[^\[\]]*\])\s*)+")
_GCIDE_ATTRIBUTION = re.compile(r"\s?--\s?[A-Z][^-]*$")
_ATTRIBUTION = re.compile(r"\s--\s?[A-Z][\w .,'&]*$|^\s*--\s?\S.*$")


def dictd_paragraphs(text: str) -> Iterator[str]:
    """Definition paragraphs of a dictd database (decompressed ``.dict.dz``).

    ``{cross references}`` keep their words; source notes (``[1913 Webster]``) and quotation
    attributions (``--Milton.``) are dropped.
    """
    for block in re.split(r"\n[ \t]*\n", text):
        lines = []
        for line in block.splitlines():
            if _DICT_NOTE.match(line):
                continue
            lines.append(_ATTRIBUTION.sub("", line.rstrip()))
        paragraph = _SPACES.sub(" ", _DICT_REFERENCE.sub("", " ".join(lines))).strip()
        paragraph = _DICT_LABELS.sub("", paragraph)
        if paragraph:
            yield paragraph


_OSIS_SKIP = re.compile(r"<(note|title)\b[^>]*(?<!/)>.*?</\1>", re.DOTALL)
_OSIS_BREAK = re.compile(r"<(?:div|chapter|milestone|p)\b[^>]*>|</(?:div|p)>")
_OSIS_LINE = re.compile(r"</?(?:l|lb|lg)\b[^>]*>")  # poetry lines: a space, not a break
_TAG = re.compile(r"<[^>]*>")


def osis_paragraphs(text: str) -> Iterator[str]:
    """Paragraphs of OSIS XML: notes and titles left out, a break at every division marker.

    Regular expressions instead of :func:`html_paragraphs`: a Bible's word-by-word ``<w>``
    tags make an HTML parser some ten times slower, and OSIS has no code or scripts to skip.
    """
    for block in _OSIS_BREAK.split(_OSIS_SKIP.sub("", text)):
        block = _TAG.sub("", _OSIS_LINE.sub(" ", block)).replace("¶", " ")
        paragraph = _SPACES.sub(" ", html.unescape(block)).strip()
        if paragraph:
            yield paragraph


def gcide_quotations(text: str) -> Iterator[str]:
    """The attributed quotations of the GCIDE dictionary (decompressed ``.dict.dz``).

    Its definitions are phrases ("To entomb; to bury."), not sentences; the quotations that
    illustrate them are sentences from literature, indented deeper than the definitions and
    closed by an attribution (``--Milton.``), which is dropped.
    """
    for block in re.split(r"\n[ \t]*\n", text):
        lines = [line for line in block.splitlines() if not _DICT_NOTE.match(line)]
        if not lines or not lines[0].startswith(" " * 9):
            continue
        quotation = _SPACES.sub(" ", " ".join(lines)).strip()
        attribution = _GCIDE_ATTRIBUTION.search(quotation)
        if attribution:
            yield quotation[: attribution.start()].strip()


def sword_paragraphs(index: Path) -> Iterator[str]:
    """Paragraphs of one testament of a SWORD zText Bible module (OSIS markup).

    ``index`` is its block index (``ot.bzs`` or ``nt.bzs``, ``.czs`` for modules stored a
    chapter per block: offset, size, unpacked size per zlib block of the ``.bzz``/``.czz``
    beside it). Verses run on within a paragraph, so a sentence
    that spans verses stays whole.
    """
    raw, blocks = index.with_suffix(index.suffix[:-1] + "z").read_bytes(), index.read_bytes()
    for i in range(0, len(blocks) - 11, 12):
        offset, size, _ = struct.unpack("<III", blocks[i : i + 12])
        yield from osis_paragraphs(zlib.decompress(raw[offset : offset + size]).decode())


_WORDNET_EXAMPLE = re.compile(r'"([^"]+)"')


def wordnet_examples(text: str) -> Iterator[str]:
    """The quoted example sentences of a WordNet ``data.*`` file (after each gloss's ``|``)."""
    for line in text.splitlines():
        if line.startswith("  "):  # the license header
            continue
        _, bar, gloss = line.partition(" | ")
        if bar:
            yield from _WORDNET_EXAMPLE.findall(gloss)


def fortune_paragraphs(text: str) -> Iterator[str]:
    """The fortunes of a fortune file (``%`` lines between them), attributions left out."""
    for fortune in re.split(r"^%$", text, flags=re.MULTILINE):
        lines = [_ATTRIBUTION.sub("", line.rstrip()) for line in fortune.splitlines()]
        paragraph = _SPACES.sub(" ", " ".join(lines)).strip()
        if paragraph:
            yield paragraph


_ENDS_SENTENCE = re.compile(r"[.!?][\"')\]]*$")


def plain_paragraphs(text: str) -> Iterator[str]:
    """Paragraphs of plain text: blank lines separate them and wrapped lines are joined.

    A block whose lines all end a sentence, or none of which does, is taken as one sentence
    per line (a list of sentences, with or without final punctuation) instead.
    """
    for block in re.split(r"\n[ \t]*\n", text):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        ends = [bool(_ENDS_SENTENCE.search(line)) for line in lines]
        if len(lines) > 1 and (all(ends) or not any(ends)):
            yield from lines
        elif lines:
            yield " ".join(lines)


def read_text(path: Path) -> str:
    """A file's text: gzip-compressed (``.gz``, ``.dz``) or not, UTF-8.

    Bytes that are not UTF-8 become U+FFFD (the cleaner drops sentences holding one): some
    packages mix encodings within one file, so decoding it all as Latin-1 would garble the rest.
    """
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8", errors="replace")


# -- sentences --------------------------------------------------------------------------------

_BOUNDARY = re.compile(r"([.!?]+)([\"'”’)\]]*)\s+(?=[\"'“‘(\[]?[A-Z0-9])")
_INITIAL = re.compile(r"(?:^|[\s(])(?:[A-Z]|(?:[A-Za-z]\.)+[A-Za-z])$")


def split_sentences(paragraph: str) -> list[str]:
    """The sentences of a paragraph of prose, in order, stripped.

    A sentence ends at ``.``, ``!`` or ``?`` (and any closing quotes or brackets) before
    whitespace and a capital letter, digit or opening quote, except after an abbreviation that
    never ends a sentence, an initial or a dotted acronym.
    """
    sentences, start = [], 0
    for m in _BOUNDARY.finditer(paragraph):
        if m.group(1) == ".":
            before = paragraph[start : m.start()]
            word = before.rsplit(None, 1)[-1].lower() + "." if before.strip() else ""
            if word.lstrip("(\"'") in NO_BREAK_ABBREVIATIONS or _INITIAL.search(before):
                continue
        sentences.append(paragraph[start : m.end()].strip())
        start = m.end()
    tail = paragraph[start:].strip()
    return [s for s in [*sentences, tail] if s]
