"""Where the synthetic corpus's sentences come from, and the split each one goes to.

Sentences come from the built-in grammar (:class:`~suite.data.sentences.SentenceGenerator`), a
text file, or a folder of split files that ``suite data text`` wrote. Splits are by distinct
sentence, about 90/5/5 (:func:`split_of`); a folder's sentences keep the split of their file.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

from suite.data.sentences import SentenceGenerator, read_text_file, speakable
from suite.errors import UserError
from suite.text import normalize_text

SPLITS = ("train", "dev", "test")


def split_of(distinct_index: int) -> str:
    # 1 in 20 distinct sentences to test and 1 in 20 to dev (~90/5/5); test comes first so
    # that even a tiny corpus has a test split.
    slot = distinct_index % 20
    return "test" if slot == 0 else "dev" if slot == 10 else "train"


def text_split_files(folder: Path) -> dict[str, Path]:
    """The sentence file of each split in a folder that ``suite data text`` wrote:
    ``{split}.spoken.txt`` (punctuation kept, which shapes a synthesizer's prosody), else
    ``{split}.txt``."""
    files = {}
    for split in SPLITS:
        spoken, plain = folder / f"{split}.spoken.txt", folder / f"{split}.txt"
        files[split] = spoken if spoken.is_file() else plain
        if not files[split].is_file():
            raise UserError(
                f"text folder {folder} has no {split}.spoken.txt or {split}.txt; pass a folder "
                "that `suite data text --out FOLDER` wrote, or one text file"
            )
    return files


def _split_sentences(folder: Path) -> Iterator[tuple[str, str, str]]:
    """Distinct ``(text, spoken, split)`` from a folder of split files, each sentence in the
    split its file names (so text held out of an LM's training is held out of speech too),
    drawn in the synthesizer's proportions (:func:`_split_of`); a used-up split is cycled."""
    files = text_split_files(folder)
    seen: set[str] = set()
    sources = {split: iter(read_text_file(path)) for split, path in files.items()}
    passes: dict[str, list[tuple[str, str, str]]] = {split: [] for split in SPLITS}
    cycles: dict[str, Iterator[tuple[str, str, str]]] = {}
    index = 0
    while True:
        split = split_of(index)
        index += 1
        if split in cycles:
            yield next(cycles[split])
            continue
        for raw in sources[split]:
            spoken = speakable(raw)
            text = normalize_text(spoken)
            if text and text not in seen:
                seen.add(text)
                passes[split].append((text, spoken, split))
                yield passes[split][-1]
                break
        else:  # this split's file is used up: repeat it, with new voices
            if not passes[split]:
                raise UserError(
                    f"text file {files[split]} holds no text to speak (no line has a word "
                    "after normalization)"
                )
            cycles[split] = itertools.cycle(passes[split])
            yield next(cycles[split])


def sentences(seed: int, text_file: str | Path | None) -> Iterator[tuple[str, str, str]]:
    """Distinct ``(text, spoken, split)`` in plan order. A text file is cycled once used up:
    later passes repeat its sentences (with new voices), each in the split it was given. A
    folder of split files (``suite data text``) keeps each sentence's split."""
    if text_file is not None and Path(text_file).is_dir():
        yield from _split_sentences(Path(text_file))
        return
    source = SentenceGenerator(seed) if text_file is None else read_text_file(text_file)
    seen: set[str] = set()
    first_pass: list[tuple[str, str, str]] = []
    for raw in source:
        spoken = speakable(raw)
        text = normalize_text(spoken)
        if not text or text in seen:
            continue
        item = (text, spoken, split_of(len(seen)))
        seen.add(text)
        if text_file is not None:
            first_pass.append(item)
        yield item
    if not first_pass:
        raise UserError(
            f"text file {text_file} holds no text to speak (no line has a word after "
            "normalization); give it one sentence per line, or leave --text out"
        )
    while True:
        yield from first_pass
