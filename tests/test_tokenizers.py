"""Tokenizers: exact round-trip of normalized text, blank id 0 never emitted, save/load, errors."""

from __future__ import annotations

import json
import pickle
import random

import pytest

from suite.errors import UserError
from suite.registry import create_tokenizer, list_tokenizers
from suite.text import ALPHABET, normalize_text
from suite.tokenizers import BpeTokenizer, CharTokenizer, load_tokenizer, train_tokenizer

WORDS = (
    "the quick brown fox jumps over a lazy dog while seven wizards quietly hex "
    "zebras don't can't it's o'clock rhythm xylophone jazz"
).split()


def _sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))) for _ in range(n)]


def _random_texts(n: int, seed: int) -> list[str]:
    """Normalized texts built from random characters: words no training text held."""
    rng = random.Random(seed)
    letters = ALPHABET.replace(" ", "")
    raw = [
        " ".join(
            "".join(rng.choice(letters) for _ in range(rng.randint(1, 9)))
            for _ in range(rng.randint(0, 8))
        )
        for _ in range(n)
    ]
    return [normalize_text(t) for t in raw] + ["", "a", "'", "don't", "x y z"]


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("bpe")
    train_tokenizer({"name": "bpe", "vocab_size": 96}, _sentences(400, seed=0), out)
    return out


@pytest.fixture(scope="module")
def tokenizers(bpe_dir) -> dict:
    return {"char": CharTokenizer(), "bpe": load_tokenizer(bpe_dir)}


def test_registry_holds_both() -> None:
    assert {"char", "bpe"} <= set(list_tokenizers())
    assert isinstance(create_tokenizer("char"), CharTokenizer)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_round_trip_and_no_blank(tokenizers: dict, kind: str) -> None:
    tok = tokenizers[kind]
    texts = _random_texts(300, seed=1) + [normalize_text(t) for t in _sentences(100, seed=2)]
    texts.append(normalize_text("On March 3rd, 2021 the U.S. paid $3.50 for Café's 21 apples!"))
    for text in texts:
        ids = tok.encode(text)
        assert all(0 < i < tok.vocab_size for i in ids), (text, ids)
        assert tok.decode(ids) == text
        # Blank ids (CTC output, target padding) decode to nothing.
        assert tok.decode([0, *ids, 0, 0]) == text


def test_char_ids_and_unknown() -> None:
    tok = CharTokenizer()
    assert tok.vocab_size == len(ALPHABET) + 2
    assert tok.encode("a b") == [ALPHABET.index("a") + 1, 1, ALPHABET.index("b") + 1]
    assert tok.encode("a?") == [ALPHABET.index("a") + 1, tok.unk_id]
    assert tok.decode(tok.encode("a?")) == "a"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([tok.vocab_size])


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_save_load_same_encodings(tokenizers: dict, kind: str, tmp_path) -> None:
    tok = tokenizers[kind]
    tok.save(tmp_path)
    config = json.loads((tmp_path / "tokenizer.json").read_text())
    assert config["name"] == kind
    again = load_tokenizer(tmp_path)
    assert type(again) is type(tok) and again.vocab_size == tok.vocab_size
    for text in _random_texts(50, seed=3):
        assert again.encode(text) == tok.encode(text)
    # DataLoader workers started with "spawn" pickle the tokenizer.
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.encode("jazz rhythm") == tok.encode("jazz rhythm")


def test_bpe_files_and_vocab(bpe_dir) -> None:
    assert sorted(p.name for p in bpe_dir.iterdir()) == ["tokenizer.json", "tokenizer.model"]
    tok = load_tokenizer(bpe_dir)
    assert isinstance(tok, BpeTokenizer) and tok.vocab_size == 96
    # Merges were learned: frequent words take fewer pieces than characters.
    assert len(tok.encode("the quick brown fox")) < len("the quick brown fox")
    assert BpeTokenizer(vocab_size=96, model_file=bpe_dir / "tokenizer.model").encode("the") == (
        tok.encode("the")
    )


def test_bpe_training_is_deterministic(tmp_path) -> None:
    texts = _sentences(300, seed=4)
    for name in ("a", "b"):
        train_tokenizer({"name": "bpe", "vocab_size": 80}, iter(texts), tmp_path / name)
    assert (tmp_path / "a" / "tokenizer.model").read_bytes() == (
        tmp_path / "b" / "tokenizer.model"
    ).read_bytes()


def test_bpe_training_normalizes_and_is_quiet(tmp_path, capfd) -> None:
    raw = [t.upper() + "!" for t in _sentences(200, seed=5)]
    tok = train_tokenizer({"name": "bpe", "vocab_size": 64}, raw, tmp_path)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    text = normalize_text(raw[0])
    assert tok.decode(tok.encode(text)) == text


def test_char_spec_saves_without_reading_texts(tmp_path) -> None:
    def never():
        raise AssertionError("the char tokenizer must not read training texts")
        yield ""

    tok = train_tokenizer({"name": "char"}, never(), tmp_path)
    assert isinstance(load_tokenizer(tmp_path), CharTokenizer)
    assert tok.vocab_size == len(ALPHABET) + 2


def test_errors(tmp_path) -> None:
    with pytest.raises(UserError, match="empty"):
        train_tokenizer({"name": "bpe", "vocab_size": 64}, ["", "  ", "?!"], tmp_path)
    with pytest.raises(UserError, match=r"lower vocab_size to \d+"):
        train_tokenizer({"name": "bpe", "vocab_size": 5000}, ["hello world"] * 10, tmp_path)
    with pytest.raises(UserError, match="at least 30"):
        train_tokenizer({"name": "bpe", "vocab_size": 20}, ["hello world"], tmp_path)
    with pytest.raises(UserError, match="valid options"):
        train_tokenizer({"name": "bpe", "vocab_sizes": 64}, ["hello"], tmp_path)
    with pytest.raises(UserError, match="registered tokenizers"):
        train_tokenizer({"name": "wordpiece"}, ["hello"], tmp_path)
    with pytest.raises(UserError, match="needs a 'name'"):
        train_tokenizer({"vocab_size": 64}, ["hello"], tmp_path)
    with pytest.raises(UserError, match="trained model"):
        create_tokenizer("bpe", vocab_size=64)
    with pytest.raises(UserError, match="no tokenizer.json"):
        load_tokenizer(tmp_path / "missing")
    assert not (tmp_path / "tokenizer.json").exists()  # failed training saved nothing
