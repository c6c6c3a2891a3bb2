"""Tokenizers: characters and sentencepiece BPE, both with id 0 reserved for blank/padding.

Every tokenizer works on text normalized by :func:`suite.text.normalize_text` (``a-z ' space``)
and round-trips it exactly: ``decode(encode(t)) == t``. ``decode`` drops blank (0) ids, so the
output of a CTC/RNN-T decoder, or a padded target row, decodes as is.

A tokenizer folder holds ``tokenizer.json`` (``{"name", "kwargs", "files"}``: the registry name,
the constructor's keyword arguments, and which of them name files inside the folder) plus any
files it names (``tokenizer.model`` for BPE). No pickle.

Typical use::

    tok = train_tokenizer({"name": "bpe", "vocab_size": 256}, texts, run_dir / "tokenizer")
    tok = load_tokenizer(run_dir / "tokenizer")
"""

from __future__ import annotations

import io
import itertools
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import sentencepiece as spm

from suite.errors import UserError
from suite.interfaces import Tokenizer
from suite.io import atomic_path, atomic_write_text
from suite.registry import (
    RegistryError,
    list_tokenizers,
    lookup,
    register_tokenizer,
    resolve_options,
)
from suite.text import ALPHABET, normalize_text

CONFIG_FILE = "tokenizer.json"
BPE_MODEL_FILE = "tokenizer.model"


@register_tokenizer("char")
class CharTokenizer(Tokenizer):
    """One id per character of ``alphabet``; no training.

    Ids: 0 blank, ``1..len(alphabet)`` the characters in order, then one id for any other
    character (normalized text never has one; it decodes to nothing).

    Args:
        alphabet: the characters, in id order (default: :data:`suite.text.ALPHABET`). Saved with
            the tokenizer, so a model package keeps its vocabulary if the default ever changes.
    """

    def __init__(self, alphabet: str = ALPHABET) -> None:
        if not alphabet or len(set(alphabet)) != len(alphabet):
            raise UserError(
                f"a char tokenizer needs distinct characters; got alphabet={alphabet!r}"
            )
        self.alphabet = alphabet
        self.unk_id = len(alphabet) + 1
        self._ids = {c: i + 1 for i, c in enumerate(alphabet)}

    @property
    def vocab_size(self) -> int:
        """Blank + the alphabet + the unknown-character id."""
        return len(self.alphabet) + 2

    def encode(self, text: str) -> list[int]:
        """Ids of the characters of ``text`` (normalized text has no unknown characters)."""
        return [self._ids.get(c, self.unk_id) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``; blank and unknown ids produce nothing."""
        chars = []
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise ValueError(
                    f"token id {i} is outside the vocabulary (0..{self.vocab_size - 1})"
                )
            if 0 < i < self.unk_id:
                chars.append(self.alphabet[i - 1])
        return "".join(chars)

    def save(self, directory: str | Path) -> None:
        """Write ``tokenizer.json`` into ``directory``."""
        _write_config(directory, "char", {"alphabet": self.alphabet}, {})


@register_tokenizer("bpe")
class BpeTokenizer(Tokenizer):
    """Sentencepiece BPE (Sennrich et al., 2016, via Kudo & Richardson, 2018).

    Ids: 0 blank (sentencepiece's ``pad``, which encoding never produces), 1 unknown, then the
    pieces. Every character of :data:`suite.text.ALPHABET` is a piece whatever the training text
    held, so any normalized text round-trips.

    Build one with :meth:`train` (or :func:`train_tokenizer`), or load a trained model file.

    Args:
        vocab_size: pieces including blank and unknown; at least ``len(ALPHABET) + 2`` (30).
        model_file: a trained sentencepiece model with the id layout above.
    """

    def __init__(self, vocab_size: int = 256, model_file: str | Path | None = None) -> None:
        if model_file is None:
            raise UserError(
                "a bpe tokenizer needs a trained model: build it with "
                "suite.tokenizers.train_tokenizer({'name': 'bpe', 'vocab_size': ...}, texts, "
                "out_dir), or pass model_file=<path to tokenizer.model>"
            )
        path = Path(model_file)
        if not path.is_file():
            raise UserError(f"no sentencepiece model at {path}; train one with train_tokenizer")
        self._init_from_proto(path.read_bytes(), source=str(path))
        if self.vocab_size != vocab_size:
            raise UserError(
                f"{path} holds {self.vocab_size} pieces but vocab_size={vocab_size} was asked; "
                f"pass vocab_size={self.vocab_size} or retrain the tokenizer"
            )

    def _init_from_proto(self, proto: bytes, source: str) -> None:
        self._proto = proto
        self._sp = spm.SentencePieceProcessor(model_proto=proto)
        if self._sp.pad_id() != 0 or self._sp.unk_id() != 1:
            raise UserError(
                f"{source} has pad id {self._sp.pad_id()} and unk id {self._sp.unk_id()}; suite "
                "needs pad (blank) 0 and unk 1: retrain it with train_tokenizer"
            )
        self.unk_id = 1

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 256) -> BpeTokenizer:
        """Train on ``texts`` (normalized here; empty lines skipped) and return the tokenizer.

        Training is deterministic (one thread, no sentence sampling) and silent.

        Raises:
            UserError: the texts hold no words, or ``vocab_size`` does not fit them.
        """
        minimum = len(ALPHABET) + 2  # blank + unk + every character, with space as '▁'
        if vocab_size < minimum:
            raise UserError(
                f"bpe vocab_size={vocab_size} is too small: it needs at least {minimum} "
                "(blank, unknown and every character of normalized text)"
            )
        sentences = _nonempty_normalized(texts)
        first = next(sentences, None)
        if first is None:
            raise UserError("cannot train a bpe tokenizer: the training texts are empty")
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=itertools.chain([first], sentences),
                model_writer=model,
                model_type="bpe",
                vocab_size=vocab_size,
                pad_id=0,
                unk_id=1,
                bos_id=-1,
                eos_id=-1,
                # Text is already normalized; sentencepiece's NFKC rules must not change it.
                normalization_rule_name="identity",
                character_coverage=1.0,
                required_chars=ALPHABET.replace(" ", ""),
                num_threads=1,  # determinism: merges must not depend on thread scheduling
                minloglevel=2,  # warnings and info go to stderr from C++, unasked for
            )
        except RuntimeError as e:
            raise UserError(_explain_training_error(str(e), vocab_size)) from None
        tokenizer = cls.__new__(cls)
        tokenizer._init_from_proto(model.getvalue(), source="the trained model")
        return tokenizer

    @property
    def vocab_size(self) -> int:
        """Number of pieces, blank and unknown included."""
        return self._sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        """Piece ids of ``text``; never 0."""
        return self._sp.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``; blank ids are dropped."""
        kept = [int(i) for i in ids if int(i) != 0]
        for i in kept:
            if not 0 < i < self.vocab_size:
                raise ValueError(
                    f"token id {i} is outside the vocabulary (0..{self.vocab_size - 1})"
                )
        return self._sp.decode(kept)

    def pieces(self, ids: Iterable[int]) -> list[str]:
        """The pieces of ``ids`` (for inspection; ``'▁'`` marks a word start)."""
        return [self._sp.id_to_piece(int(i)) for i in ids]

    def save(self, directory: str | Path) -> None:
        """Write ``tokenizer.model`` and then ``tokenizer.json`` into ``directory``."""
        directory = Path(directory)
        with atomic_path(directory / BPE_MODEL_FILE) as tmp:
            tmp.write_bytes(self._proto)
        _write_config(
            directory, "bpe", {"vocab_size": self.vocab_size}, {"model_file": BPE_MODEL_FILE}
        )

    # DataLoader workers started with "spawn" pickle the dataset and its tokenizer; the
    # processor itself is a C++ object, so send the model bytes instead.
    def __getstate__(self) -> dict[str, Any]:
        return {"proto": self._proto}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._init_from_proto(state["proto"], source="a pickled tokenizer")


def _nonempty_normalized(texts: Iterable[str]) -> Iterator[str]:
    for text in texts:
        text = normalize_text(text)
        if text:
            yield text


def _explain_training_error(message: str, vocab_size: int) -> str:
    too_high = re.search(r"Vocabulary size too high.*?<= (\d+)", message)
    if too_high:
        return (
            f"bpe vocab_size={vocab_size} is too large for the training texts, which only "
            f"support {too_high.group(1)} pieces: lower vocab_size to {too_high.group(1)} or "
            "less, or train on more text"
        )
    return f"sentencepiece could not train a bpe model (vocab_size={vocab_size}): {message}"


def _write_config(
    directory: str | Path, name: str, kwargs: dict[str, Any], files: dict[str, str]
) -> None:
    # Written last by ``save``, so a folder with tokenizer.json always has the files it names.
    config = {"name": name, "kwargs": kwargs, "files": files}
    atomic_write_text(Path(directory) / CONFIG_FILE, json.dumps(config, indent=2) + "\n")


def train_tokenizer(spec: dict[str, Any], texts: Iterable[str], out_dir: str | Path) -> Tokenizer:
    """Build the tokenizer a recipe asks for, train it if it needs training, and save it.

    Args:
        spec: a recipe's ``tokenizer:`` mapping, ``{"name": ..., "preset": ..., **kwargs}``,
            e.g. ``{"name": "bpe", "vocab_size": 256}``.
        texts: training texts (normalized here; read once, only by tokenizers that train).
        out_dir: folder receiving ``tokenizer.json`` and the tokenizer's own files.

    Returns:
        The tokenizer, equal to ``load_tokenizer(out_dir)``.

    Raises:
        UserError: unknown name or option, empty texts, or a vocabulary the texts cannot fill.
    """
    spec = dict(spec)
    if "name" not in spec:
        known = ", ".join(list_tokenizers())
        raise RegistryError(f"a tokenizer spec needs a 'name'; registered: {known}")
    name = spec.pop("name")
    options = resolve_options("tokenizer", name, spec.pop("preset", None), **spec)
    cls = lookup("tokenizer", name)
    trainer = getattr(cls, "train", None)
    if trainer is not None and options.get("model_file") is None:
        options.pop("model_file", None)
        tokenizer = trainer(texts, **options)
    else:
        tokenizer = cls(**options)
    tokenizer.save(out_dir)
    return tokenizer


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Read back a tokenizer that :meth:`Tokenizer.save` wrote into ``directory``."""
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise UserError(
            f"no {CONFIG_FILE} in {directory}; expected a folder written by train_tokenizer "
            "or Tokenizer.save"
        )
    try:
        config = json.loads(path.read_text())
        name, kwargs, files = config["name"], dict(config["kwargs"]), dict(config.get("files", {}))
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a tokenizer config ({e}); rewrite it with save()") from None
    kwargs.update({key: directory / file for key, file in files.items()})
    return lookup("tokenizer", name)(**resolve_options("tokenizer", name, **kwargs))
