"""An open-domain English sentence corpus, built offline from Debian packages of prose.

``suite data text --out data/text`` reads the documentation, dictionaries, Bibles and quotation
files that Debian packages install (:data:`SOURCES`; ``make data`` installs them), plus any text
file given with ``--extra`` and, optionally, sentences of the built-in grammar
(:class:`~suite.data.sentences.SentenceGenerator`). For each file it

1. extracts paragraphs of running text, markup stripped and code left out (:mod:`suite.data.prose`),
2. splits them into sentences and keeps those that read as prose (:func:`clean_sentence`: no
   code, URLs, paths or markup, letters mostly, 4-40 words once spoken),
3. writes numbers, symbols and abbreviations as words (:func:`suite.verbalize.verbalize`) and
   normalizes (:func:`suite.text.normalize_text`),

then drops duplicates (the first source keeps a sentence: the grammar, then :data:`SOURCES` in
order, then the ``--extra`` files) and assigns each sentence to train, dev or test by a hash of
the seed and the normalized sentence, so a sentence lands in the same split whatever else the
corpus holds.

Output in the ``--out`` folder: ``{train,dev,test}.txt`` (one normalized sentence per line),
``{split}.spoken.txt`` (the same lines keeping ``, . ? !``, which shape a synthesizer's prosody;
:func:`~suite.text.normalize_text` of a line gives the normalized line), ``{split}.source.txt``
(each line's source, to weight or pick sources) and ``summary.json`` (counts per source and
split, word types, and each source's package, version and license as its Debian copyright file
states it). Lines are in a fixed pseudo-random order, so any prefix mixes all sources.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from suite.data import prose
from suite.data.sentences import SentenceGenerator, speakable
from suite.errors import UserError
from suite.text import normalize_text
from suite.verbalize import verbalize

MIN_WORDS, MAX_WORDS = 4, 40
# Where Debian installs packages (tests point it at a fixture tree).
ROOT = Path("/")
SPLITS = ("train", "dev", "test")


def _html(path: Path) -> Iterable[str]:
    return prose.html_paragraphs(prose.read_text(path))


def _pod(path: Path) -> Iterable[str]:
    return prose.pod_paragraphs(prose.read_text(path))


def _man(path: Path) -> Iterable[str]:
    return prose.roff_paragraphs(prose.read_text(path))


def _dictd(path: Path) -> Iterable[str]:
    return prose.dictd_paragraphs(prose.read_text(path))


def _gcide(path: Path) -> Iterable[str]:
    return prose.gcide_quotations(prose.read_text(path))


def _sword(path: Path) -> Iterable[str]:
    return prose.sword_paragraphs(path)


def _wordnet(path: Path) -> Iterable[str]:
    return prose.wordnet_examples(prose.read_text(path))


def _fortune(path: Path) -> Iterable[str]:
    return prose.fortune_paragraphs(prose.read_text(path))


def _plain(path: Path) -> Iterable[str]:
    return prose.plain_paragraphs(prose.read_text(path))


# Reader name -> a file's paragraphs. Names, not functions, travel to the worker processes.
READERS: dict[str, Callable[[Path], Iterable[str]]] = {
    "html": _html,
    "pod": _pod,
    "man": _man,
    "dictd": _dictd,
    "gcide": _gcide,
    "sword": _sword,
    "wordnet": _wordnet,
    "fortune": _fortune,
    "plain": _plain,
}


@dataclass(frozen=True)
class Source:
    """Files of prose that one or more Debian packages install.

    Args:
        name: the source's name in ``--sources`` and the summary.
        packages: the Debian packages whose installed files are read.
        pattern: which of their files (``fnmatch`` on the installed path).
        reader: a :data:`READERS` name.
        shaped: keep only sentences that start with a capital letter, digit or quote and end
            with ``.``, ``!`` or ``?`` (prose); ``False`` for lists of sentences and examples.
        exclude: files to leave out (``fnmatch`` patterns), e.g. translations.
    """

    name: str
    packages: tuple[str, ...]
    pattern: str
    reader: str
    shaped: bool = True
    exclude: tuple[str, ...] = ()


# In order of precedence: a sentence found in several sources counts for the first. Read in
# this order too, and the pool hands results back in order, so the corpus is deterministic.
SOURCES: tuple[Source, ...] = (
    Source("wordnet", ("wordnet-base",), "/usr/share/wordnet/data.*", "wordnet", shaped=False),
    Source("web-bible", ("sword-text-web",), "/usr/share/sword/modules/*.[bc]zs", "sword"),
    Source(
        "python-doc",
        ("python3.11-doc",),
        "/usr/share/doc/python3.11/html/*.html",
        "html",
        exclude=("*/whatsnew/changelog.html",),  # issue references, not prose
    ),
    Source(
        "postgresql-doc",
        ("postgresql-doc-15",),
        "/usr/share/doc/postgresql-doc-15/html/*.html",
        "html",
    ),
    Source("perl-doc", ("perl-doc",), "/usr/share/perl/*/pod/*.pod", "pod"),
    Source(
        "linux-doc",
        ("linux-doc-6.1",),
        "/usr/share/doc/linux-doc-6.1/html/*.html",
        "html",
        exclude=("*/html/translations/*",),
    ),
    Source("git-doc", ("git-doc",), "/usr/share/doc/git-doc/*.html", "html"),
    Source(
        "debian-reference", ("debian-reference-en",), "/usr/share/debian-reference/*.html", "html"
    ),
    Source(
        "developers-reference",
        ("developers-reference",),
        "/usr/share/developers-reference/*.html",
        "html",
    ),
    Source(
        "debian-handbook",
        ("debian-handbook",),
        "/usr/share/doc/debian-handbook/html/en-US/*.html",
        "html",
    ),
    Source("django-doc", ("python-django-doc",), "/usr/share/doc/python-django-doc/*.html", "html"),
    Source("sqlite-doc", ("sqlite3-doc",), "/usr/share/doc/sqlite3/*.html", "html"),
    Source("manpages", ("manpages",), "/usr/share/man/man*", "man"),
    Source("jargon", ("dict-jargon",), "/usr/share/dictd/*.dict.dz", "dictd"),
    Source("foldoc", ("dict-foldoc",), "/usr/share/dictd/*.dict.dz", "dictd"),
    Source("devils-dictionary", ("dict-devil",), "/usr/share/dictd/*.dict.dz", "dictd"),
    Source(
        "fortunes",
        ("fortunes", "fortunes-min"),
        "/usr/share/games/fortunes/*",
        "fortune",
        exclude=("*.dat", "*.u8"),  # indexes and links
    ),
    Source("gcide-quotations", ("dict-gcide",), "/usr/share/dictd/*.dict.dz", "gcide"),
    Source("henry-commentary", ("sword-comm-mhcc",), "/usr/share/sword/modules/*.[bc]zs", "sword"),
    Source("spurgeon-psalms", ("sword-comm-tdavid",), "/usr/share/sword/modules/*.[bc]zs", "sword"),
)
SOURCE_NAMES = tuple(s.name for s in SOURCES)


def debian_packages(sources: Iterable[Source] = SOURCES) -> list[str]:
    """The Debian packages the sources read, each once, in order (what ``make data`` installs)."""
    return list(dict.fromkeys(p for s in sources for p in s.packages))


# -- sentences --------------------------------------------------------------------------------

# Text that is not prose to read aloud: code, markup, URLs, paths, e-mail, version numbers.
_NOT_PROSE = re.compile(
    r"[{}\[\]<>=_\\|`^~*#@]|https?:|www\.|::|->|\(\)|[a-z]\([a-z0-9]|\$[A-Za-z(]"
    r"|(?<![\w.])\.?/\w|\w/\w+/|[A-Za-z]{2,}\.[A-Za-z]{2,}|\d\.\d+\.\d|%[a-z]|\b[a-z]+[A-Z]\w*"
    r"|\d+-\d+-\d|\b[A-Z]{2,}[a-z]+[A-Z]|\+\+|(?:^|\s)--?[a-z]|\b[a-z]+-\d{3,}|[;:]\s*$"
    r"|\ufffd|" + prose.CODE
)
_SHAPE = re.compile(r"[\"'“‘(]?[A-Z0-9].*[.!?][\"'”’)]*")
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")
_PLAIN_CHAR = re.compile(r"[A-Za-z0-9\s,.;:'\"?!()\-‘’“”$%£€&/]")
_DIGITS = re.compile(r"\d")
_BEYOND_LATIN = re.compile(r"[^\x00-\u024f]")
_ALL_CAPS = re.compile(r"\b[A-Z]{2,}\b")


def clean_sentence(sentence: str, shaped: bool = True) -> tuple[str | None, str]:
    """The speakable form of ``sentence``, or ``None`` and why it is not prose.

    Returns:
        ``(spoken, "")`` where ``spoken`` is the verbalized sentence with only ``, . ? !``
        kept (``normalize_text(spoken)`` is its normalized form), or ``(None, reason)`` with
        ``reason`` one of ``long``, ``shape``, ``code``, ``script``, ``letters``, ``caps``,
        ``words``.
    """
    sentence = sentence.strip()
    if len(sentence) > 400:
        return None, "long"
    if shaped and not _SHAPE.fullmatch(sentence):
        return None, "shape"
    if _NOT_PROSE.search(sentence):
        return None, "code"
    if any(c.isalpha() for c in _BEYOND_LATIN.findall(sentence)):
        return None, "script"  # Greek, Cyrillic, CJK...: would be dropped, not read
    plain, digits = len(_PLAIN_CHAR.findall(sentence)), len(_DIGITS.findall(sentence))
    if plain < 0.95 * len(sentence) or digits > 0.25 * len(sentence):
        return None, "letters"  # tables, formulas, lists of numbers
    words = sentence.split()
    if len(_ALL_CAPS.findall(sentence)) > max(2, len(words) // 4):
        return None, "caps"
    spoken = speakable(verbalize(sentence))
    normalized = normalize_text(spoken).split()
    if not MIN_WORDS <= len(normalized) <= MAX_WORDS:
        return None, "words"
    if not all(_WORD.fullmatch(w) for w in normalized) or max(map(len, normalized)) > 24:
        return None, "words"
    if sum(len(w) == 1 and w not in ("a", "i") for w in normalized) > 2:
        return None, "words"  # variable names and spelled-out letters
    return spoken, ""


def file_sentences(path: Path, reader: str, shaped: bool = True) -> tuple[list[str], Counter]:
    """The spoken forms of the clean sentences of one file, and counts of what was dropped."""
    kept, counts = [], Counter()
    for paragraph in READERS[reader](path):
        for sentence in prose.split_sentences(paragraph):
            spoken, reason = clean_sentence(sentence, shaped)
            counts["candidates"] += 1
            if spoken is None:
                counts[f"rejected_{reason}"] += 1
            else:
                kept.append(spoken)
    return kept, counts


def _unit_hash(normalized: str, seed: int) -> float:
    digest = hashlib.blake2b(f"{seed}\n{normalized}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _split(u: float, dev: float, test: float) -> str:
    return "test" if u < test else "dev" if u < test + dev else "train"


def split_of(normalized: str, seed: int, dev: float, test: float) -> str:
    """``train``, ``dev`` or ``test`` for a sentence, by a hash of the seed and the sentence."""
    return _split(_unit_hash(normalized, seed), dev, test)


# -- Debian packages ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    """An installed Debian package: its version, license and files."""

    name: str
    version: str
    license: str
    copyright: str
    files: tuple[str, ...]


def _dpkg_status(root: Path) -> dict[str, tuple[str, str]]:
    """Package -> (status, version) from dpkg's database under ``root``."""
    path = root / "var/lib/dpkg/status"
    status: dict[str, tuple[str, str]] = {}
    if not path.is_file():
        return status
    for stanza in path.read_text(encoding="utf-8", errors="replace").split("\n\n"):
        fields = dict(re.findall(r"^([\w-]+): ?(.*)$", stanza, flags=re.MULTILINE))
        if "Package" in fields:
            status[fields["Package"]] = (fields.get("Status", ""), fields.get("Version", ""))
    return status


# Free-form copyright files: phrase -> license name (the earliest phrase in the file wins).
_LICENSE_PHRASES = (
    ("GNU Free Documentation License", "GFDL"),
    ("GNU General Public License", "GPL"),
    ("PSF LICENSE AGREEMENT", "PSF-2.0"),
    ("Python Software Foundation License", "PSF-2.0"),
    ("public domain", "public-domain"),
    ("BSD copyright", "BSD"),
    ("BSD license", "BSD"),
)


def copyright_license(text: str) -> str:
    """The license a Debian copyright file states for the package's files.

    Machine-readable files (DEP-5): the ``License`` of the ``Files: *`` stanza. Free-form
    files: the first license named in them, with its version (``GPL-2+``, ``GFDL-1.1+``).
    """
    if text.startswith("Format:"):
        first = None
        for stanza in re.split(r"\n\s*\n", text):
            license_ = re.search(r"^License:[ \t]*(\S.*)$", stanza, flags=re.MULTILINE)
            files = re.search(r"^Files:[ \t]*(.*)$", stanza, flags=re.MULTILINE)
            if license_ and files and files.group(1).split()[:1] == ["*"]:
                return license_.group(1).strip()
            if license_ and files and first is None:
                first = license_.group(1).strip()
        if first:
            return first
    text = " ".join(text.split())  # a phrase may be wrapped across lines
    found = []
    for phrase, name in _LICENSE_PHRASES:
        at = text.lower().find(phrase.lower())
        if at >= 0:
            after = text[at : at + 300]
            version = re.search(r"[Vv]ersion (\d+(?:\.\d+)?)", after)
            if version and name in ("GPL", "GFDL"):
                later = re.search(r"(or|any) (\(at your option\) )?(any )?later", after)
                name += f"-{version.group(1)}" + ("+" if later else "")
            found.append((at, name))
    return min(found)[1] if found else "unknown (read the copyright file)"


def find_package(
    name: str, root: Path = ROOT, status: dict[str, tuple[str, str]] | None = None
) -> Package | None:
    """The installed package ``name`` under ``root``, or ``None`` if it is not installed."""
    status = _dpkg_status(root) if status is None else status
    state, version = status.get(name, ("", ""))
    info = root / "var/lib/dpkg/info"
    lists = [info / f"{name}.list", *sorted(info.glob(f"{name}:*.list"))]
    listing = next((p for p in lists if p.is_file()), None)
    if not state.endswith(" installed") or listing is None:
        return None
    files = tuple(line for line in listing.read_text().splitlines() if line.strip())
    copyright = root / f"usr/share/doc/{name}/copyright"
    license_ = (
        copyright_license(copyright.read_text(encoding="utf-8", errors="replace"))
        if copyright.is_file()
        else "unknown (no copyright file)"
    )
    return Package(name, version, license_, f"/usr/share/doc/{name}/copyright", files)


def _source_files(source: Source, packages: dict[str, Package], root: Path) -> list[Path]:
    paths = []
    for name in source.packages:
        for installed in packages[name].files:
            if not fnmatch.fnmatch(installed, source.pattern):
                continue
            if any(fnmatch.fnmatch(installed, pattern) for pattern in source.exclude):
                continue
            path = root / installed.lstrip("/")
            if path.is_file():
                paths.append(path)
    return sorted(set(paths))


# -- the corpus ---------------------------------------------------------------------------------


_EXTRA_READERS = {".html": "html", ".htm": "html", ".xhtml": "html", ".pod": "pod", ".pm": "pod"}


def _extra_reader(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s not in (".gz", ".dz")]
    suffix = suffixes[-1].lower() if suffixes else ""
    if re.fullmatch(r"\.[1-9][a-z]*|\.man", suffix):
        return "man"
    return _EXTRA_READERS.get(suffix, "plain")


def _check_extra(path: Path) -> None:
    if not path.is_file():
        raise UserError(
            f"--extra {path}: no such file; pass a text file (plain, HTML, POD or a man page, "
            "optionally .gz) that exists"
        )
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise UserError(
            f"--extra {path}: cannot read it ({e.strerror}); check its permissions"
        ) from None


def _task(args: tuple[str, str, str, bool]) -> tuple[str, list[str], Counter]:
    source, path, reader, shaped = args
    try:
        kept, counts = file_sentences(Path(path), reader, shaped)
    except (OSError, EOFError, zlib.error) as e:  # a damaged file, not a bug here
        raise UserError(f"{source}: cannot read {path} ({e})") from None
    counts["files"] += 1
    return source, kept, counts


def build_text_corpus(
    out_dir: str | Path,
    *,
    sources: Sequence[str] | None = None,
    extra: Sequence[str | Path] = (),
    grammar: int = 0,
    seed: int = 0,
    dev: float = 0.01,
    test: float = 0.01,
    jobs: int | None = None,
    root: str | Path | None = None,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Build the corpus into ``out_dir`` and return its summary (also ``summary.json``).

    Args:
        out_dir: the output folder (created; its split files are overwritten).
        sources: names from :data:`SOURCES` to read (default: all); their packages must be
            installed (``make data``).
        extra: more text files: plain text, HTML, POD or man pages (by suffix; ``.gz`` too).
            Their sentences need not be capitalized and punctuated.
        grammar: add this many sentences of the built-in grammar (``SentenceGenerator(seed)``).
        seed: seeds the split assignment and the grammar.
        dev: fraction of sentences for the dev split.
        test: fraction of sentences for the test split.
        jobs: worker processes (default: the CPU count).
        root: where the Debian packages are installed (default: :data:`ROOT`).
        log: progress messages (``None``: quiet).

    Raises:
        UserError: an unknown source, a missing package or an unreadable ``extra`` file.
    """
    started = time.monotonic()
    root, out_dir = Path(ROOT if root is None else root), Path(out_dir)
    say = log or (lambda _: None)
    names = list(SOURCE_NAMES if sources is None else sources)
    unknown = [n for n in names if n not in SOURCE_NAMES]
    if unknown:
        raise UserError(
            f"unknown text source(s) {', '.join(unknown)}; known: {', '.join(SOURCE_NAMES)}"
        )
    if not (dev >= 0 and test >= 0 and dev + test < 1):
        raise UserError(f"dev ({dev}) and test ({test}) fractions must be >= 0 and sum below 1")
    chosen = [s for s in SOURCES if s.name in names]
    status = _dpkg_status(root)
    packages = {p: find_package(p, root, status) for p in debian_packages(chosen)}
    missing = [p for p, found in packages.items() if found is None]
    if missing:
        need = [s.name for s in chosen if set(s.packages) & set(missing)]
        raise UserError(
            f"Debian package(s) {' '.join(missing)} not installed (needed by the text source(s) "
            f"{', '.join(need)}); run `make data`, which installs them, or `sudo apt-get install "
            f"{' '.join(missing)}`, or leave those sources out with --sources"
        )
    extra_paths = [Path(p) for p in extra]
    for path in extra_paths:
        _check_extra(path)

    tasks, meta = [], {}
    for source in chosen:
        files = _source_files(source, packages, root)
        if not files:
            raise UserError(
                f"text source {source.name}: its package(s) {' '.join(source.packages)} are "
                f"installed but hold no file matching {source.pattern}; reinstall them"
            )
        tasks += [(source.name, str(f), source.reader, source.shaped) for f in files]
        meta[source.name] = {
            "packages": [
                dict(name=p.name, version=p.version, license=p.license, copyright=p.copyright)
                for p in (packages[n] for n in source.packages)
            ]
        }
    for path in extra_paths:
        name = f"extra:{path.name}"
        tasks.append((name, str(path), _extra_reader(path), False))
        meta[name] = {"file": str(path)}

    corpus: dict[str, tuple[str, str]] = {}  # normalized -> (spoken, source)
    stats: dict[str, Counter] = {name: Counter() for name in meta}
    if grammar:
        generator = SentenceGenerator(seed)
        kept, counts = [], Counter()
        for _ in range(grammar):
            spoken, reason = clean_sentence(next(generator), shaped=False)
            counts["candidates"] += 1
            if spoken is None:
                counts[f"rejected_{reason}"] += 1
            else:
                kept.append(spoken)
        meta["grammar"] = {"generator": "suite.data.sentences.SentenceGenerator", "seed": seed}
        stats["grammar"] = counts
        _add(corpus, stats["grammar"], "grammar", kept)

    jobs = jobs or os.cpu_count() or 1
    say(f"reading {len(tasks)} files from {len(meta)} sources with {jobs} processes")
    with get_context("fork").Pool(jobs) if jobs > 1 else _InProcess() as pool:
        for source, kept, counts in pool.imap(_task, tasks, chunksize=4):
            stats[source].update(counts)
            _add(corpus, stats[source], source, kept)
    return _write(out_dir, corpus, meta, stats, seed, dev, test, started, say)


class _InProcess:
    """A stand-in for a process pool that runs tasks in this process, in order."""

    def __enter__(self) -> _InProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def imap(self, func, items, chunksize: int = 1) -> Iterator:
        return map(func, items)


def _add(corpus: dict, counts: Counter, source: str, kept: list[str]) -> None:
    for spoken in kept:
        normalized = normalize_text(spoken)
        if normalized in corpus:
            counts["duplicates"] += 1
        else:
            corpus[normalized] = (spoken, source)


def _write(out_dir, corpus, meta, stats, seed, dev, test, started, say) -> dict:
    # Each split in the order of the sentences' hashes: shuffled, so any prefix of a file is a
    # sample of every source, and the same on every run.
    rows: dict[str, list[tuple[float, str, str, str]]] = {split: [] for split in SPLITS}
    for normalized, (spoken, source) in corpus.items():
        u = _unit_hash(normalized, seed)
        rows[_split(u, dev, test)].append((u, normalized, spoken, source))
    out_dir.mkdir(parents=True, exist_ok=True)
    per_source = {name: Counter() for name in meta}
    source_types: dict[str, set[str]] = {name: set() for name in meta}
    summary_splits = {}
    for split, items in rows.items():
        items.sort()
        words, types = 0, set()
        for _, normalized, _, source in items:
            tokens = normalized.split()
            words += len(tokens)
            types.update(tokens)
            source_types[source].update(tokens)
            per_source[source][split] += 1
        for suffix, column in (("txt", 1), ("spoken.txt", 2), ("source.txt", 3)):
            lines = "".join(item[column] + "\n" for item in items)
            (out_dir / f"{split}.{suffix}").write_text(lines, encoding="utf-8")
        summary_splits[split] = {"sentences": len(items), "words": words, "word_types": len(types)}
    summary = {
        "seed": seed,
        "fractions": {"dev": dev, "test": test},
        "sentences": len(corpus),
        "word_types": len(set().union(*source_types.values())),
        "words": sum(v["words"] for v in summary_splits.values()),
        "splits": summary_splits,
        "sources": {
            name: meta[name]
            | {"sentences": {s: per_source[name][s] for s in SPLITS}}
            | {"total": sum(per_source[name].values()), "word_types": len(source_types[name])}
            | dict(sorted(stats[name].items()))
            for name in meta
        },
        "seconds": round(time.monotonic() - started, 1),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for name, info in summary["sources"].items():
        say(f"{name:>22}: {info['total']:>8} sentences, {info['word_types']:>7} word types")
    splits = ", ".join(f"{s} {v['sentences']}" for s, v in summary["splits"].items())
    say(
        f"{summary['sentences']} sentences ({splits}), {summary['word_types']} word types, "
        f"{summary['seconds']} s -> {out_dir}"
    )
    return summary
