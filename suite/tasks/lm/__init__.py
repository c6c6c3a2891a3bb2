"""The ``lm`` task: a small causal LM pre-trained on the corpus text.

The LM is the LLM-adapter head's decoder and the CTC head's shallow-fusion LM. Each split is a
cut manifest (its transcripts; no audio is loaded) or a text file of one sentence a line (a
``.txt`` such as ``suite data text`` writes; lines are normalized, empty ones skipped). The
training text may grow with sentences from the synthetic corpus's own generator
(:class:`~suite.data.sentences.SentenceGenerator`, ``data.generator_seed``); a generated
sentence that is a dev or test sentence is dropped, so the LM never trains on held-out text. The
tokenizer is trained on the training split's sentences alone, exactly as an ``asr`` recipe's,
and the ASR recipe then reuses the LM package's.

The model is :class:`~suite.heads.lm.TransformerLM` (``model.lm``); the loss is next-token
cross-entropy over sentences read as ``[0, y_1 .. y_U]`` and ending by predicting ``0``,
averaged over tokens; batches are ``data.batch_size`` random sentences per rank. Evaluation is
the perplexity (``exp`` of the mean nats per predicted token, the closing ``0`` included; lower
is better). Packages load as a :class:`LanguageModel`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lhotse import CutSet
from torch import Tensor, nn

from suite import registry
from suite.config import ModelConfig, Recipe
from suite.errors import UserError
from suite.interfaces import Batch, Tokenizer
from suite.tasks.base import IndexSampler, Task
from suite.text import normalize_text


@dataclass
class TextData:
    """The training text: the manifest's transcripts first, then any generated sentences."""

    texts: list[str]
    num_transcripts: int


def transcripts(cuts: CutSet) -> list[str]:
    """The normalized, non-empty supervision texts of ``cuts``, in manifest order."""
    texts = (normalize_text(s.text or "") for c in cuts for s in c.supervisions)
    return [t for t in texts if t]


def generated_text(count: int, seed: int, excluded: set[str]) -> list[str]:
    """``count`` sentences from the corpus's generator, as the synthesizer normalizes them,
    none of them in ``excluded``."""
    from suite.data.sentences import SentenceGenerator, speakable

    out: list[str] = []
    for raw in SentenceGenerator(seed):
        if len(out) == count:
            break
        text = normalize_text(speakable(raw))
        if text and text not in excluded:
            out.append(text)
    return out


def read_sentences(path: Path, what: str) -> list[str]:
    """The normalized, non-empty lines of the text file ``path`` (one sentence a line)."""
    if not path.is_file():
        raise UserError(
            f"{what} text {path} does not exist; write one sentence a line (`suite data text` "
            "makes data/text/{train,dev,test}.txt) or set data.corpus_dir=..."
        )
    try:
        with path.open(encoding="utf-8") as f:
            texts = [normalize_text(line) for line in f]
    except UnicodeDecodeError as e:
        raise UserError(f"{what} text {path} is not UTF-8 text ({e.reason}); re-save it") from None
    texts = [t for t in texts if t]
    if not texts:
        raise UserError(f"{what} text {path} holds no sentences")
    return texts


def split_sentences(path: Path, what: str) -> list[str]:
    """The sentences of a split: a ``.txt`` file's lines or a cut manifest's transcripts."""
    from suite.tasks.asr import load_cuts

    if path.suffix == ".txt":
        return read_sentences(path, what)
    return transcripts(load_cuts(path, what))


class TextDataset:
    """Sentences by index in, a :class:`~suite.interfaces.Batch` of token ids out:
    ``inputs (B, U+1)`` = ``[0, y...]``, ``targets (B, U+1)`` = ``[y..., 0]``, ``lengths``
    the ``U_b + 1`` real positions. Tokenizes on the fly (a batch is cheap to encode)."""

    def __init__(self, texts: list[str], tokenizer: Tokenizer) -> None:
        self.texts, self.tokenizer = texts, tokenizer

    def __getitem__(self, item: list[int] | tuple[list[int], int]) -> Batch:
        indices = item[0] if isinstance(item, tuple) else item
        return text_batch([self.tokenizer.encode(self.texts[i]) for i in indices])


def text_batch(sequences: list[list[int]]) -> Batch:
    """Token-id sentences as an LM :class:`~suite.interfaces.Batch` (see :class:`TextDataset`)."""
    from suite.heads.lm import text_batch as shifted

    inputs, targets = shifted(sequences)
    lengths = torch.tensor([len(s) + 1 for s in sequences], dtype=torch.long)
    return Batch(inputs=inputs, lengths=lengths, targets=targets, target_lengths=lengths)


def sentence_nll(lm: nn.Module, batch: Batch) -> Tensor:
    """Summed nats of each sentence of ``batch`` (``(B,)``)."""
    from suite.heads.lm import sequence_nll

    logits, _ = lm(lm.embed(batch.inputs))
    positions = torch.arange(batch.inputs.shape[1], device=batch.inputs.device)
    return sequence_nll(logits, batch.targets, positions[None] < batch.lengths[:, None])


@registry.register("task", "lm")
class LmTask(Task):
    """Causal LM pre-training; see the module docstring."""

    name = "lm"
    metric = ("perplexity", "min")
    amount = "tokens"

    def load_split(self, recipe: Recipe, split: str) -> TextData | list[str] | None:
        data = recipe.data
        if split != "train":
            path = data.manifest(split)
            return split_sentences(path, split) if path.is_file() else None
        texts = split_sentences(data.single_manifest("train", self.name), "training")
        count = len(texts)
        if data.generated_sentences:
            held_out: set[str] = set()
            for other in ("dev", "test"):
                if data.manifest(other).is_file():
                    held_out |= set(split_sentences(data.manifest(other), other))
            texts += generated_text(data.generated_sentences, data.generator_seed, held_out)
        self._train = TextData(texts, count)
        return self._train

    def tokenizer(self, recipe: Recipe, train: TextData, directory: Path) -> Tokenizer:
        from suite.tokenizers import load_tokenizer, train_tokenizer

        if directory.is_dir():
            return load_tokenizer(directory)
        return train_tokenizer(
            recipe.model.tokenizer, train.texts[: train.num_transcripts], directory
        )

    def dataset(self, recipe: Recipe, model: nn.Module, training: bool, seed: int) -> TextDataset:
        train = getattr(self, "_train", None) or self.load_split(recipe, "train")
        return TextDataset(train.texts, model.tokenizer)

    def sampler(
        self,
        recipe: Recipe,
        train: TextData,
        model: nn.Module,
        seed: int,
        rank: int,
        world_size: int,
    ) -> IndexSampler:
        return IndexSampler(len(train.texts), recipe.data.batch_size, seed, rank, world_size)

    def batch_amount(self, batch: Batch, model: nn.Module) -> float:
        return float(batch.lengths.sum())

    def build_model(self, config: ModelConfig, tokenizer: Tokenizer | None) -> nn.Module:
        from suite.heads.lm import TransformerLM

        if tokenizer is None:
            raise UserError("an lm needs a tokenizer (model.tokenizer)")
        if "vocab_size" in config.lm:
            raise UserError(
                "model.lm.vocab_size comes from the tokenizer; set model.tokenizer.vocab_size"
            )
        lm = TransformerLM(vocab_size=tokenizer.vocab_size, **config.lm)
        lm.tokenizer = tokenizer  # a plain attribute: packages save it beside the weights
        return lm

    def loss(self, model: nn.Module, batch: Batch) -> dict[str, Tensor]:
        nll = sentence_nll(model, batch)
        return {"loss": nll.sum() / batch.lengths.sum()}

    def optimizer_groups(self, model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        """Weight decay on matrices only, not on norms, biases or gains (as GPT-2)."""
        params = [p for p in model.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.dim() >= 2]},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]

    def describe(self, config: ModelConfig) -> str:
        return f"TransformerLM `{config.lm}`; tokenizer `{config.tokenizer}`"

    def package_config(self, model: nn.Module) -> dict[str, Any]:
        return {"model": dict(model.config)}

    def load_model(self, config: dict[str, Any], tokenizer: Tokenizer | None) -> nn.Module:
        from suite.heads.lm import TransformerLM

        lm = TransformerLM(**config["model"])
        lm.tokenizer = tokenizer
        return lm

    def evaluate(
        self, model: nn.Module, items: CutSet | list[str], **options: Any
    ) -> dict[str, float]:
        """The perplexity of ``model`` on ``items``: sentences, or the transcripts of cuts."""
        texts = items if isinstance(items, list) else transcripts(items)
        return {"perplexity": LanguageModel(model).perplexity(texts)}

    def pipeline(self, model: nn.Module, name: str = "") -> LanguageModel:
        return LanguageModel(model, name=name)

    def add_commands(self, commands: Any) -> None:
        score = commands.add_parser("score", help="an lm package's log-probability of sentences")
        score.add_argument("model", help="an lm package folder (written by `suite train`)")
        score.add_argument("texts", nargs="+", help="sentences to score")
        score.set_defaults(func=_score)


class LanguageModel:
    """What :func:`suite.load` gives for an ``lm`` package: sentence scores and perplexity.

    Args:
        lm: the loaded LM (with its ``tokenizer``).
        name: where it was loaded from (shown in messages).
    """

    def __init__(self, lm: nn.Module, name: str = "", batch_size: int = 256) -> None:
        self.lm, self.name, self.batch_size = lm, name, batch_size

    @torch.no_grad()
    def _nll(self, texts: list[str]) -> tuple[list[float], list[int]]:
        tokenizer = self.lm.tokenizer
        device = next(self.lm.parameters()).device
        was_training = self.lm.training
        self.lm.eval()
        nats: list[float] = []
        counts: list[int] = []
        try:
            for start in range(0, len(texts), self.batch_size):
                chunk = [
                    tokenizer.encode(normalize_text(t))
                    for t in texts[start : start + self.batch_size]
                ]
                batch = text_batch(chunk).to(device)
                nats += sentence_nll(self.lm, batch).tolist()
                counts += batch.lengths.tolist()
        finally:
            self.lm.train(was_training)
        return nats, counts

    def score(self, texts: str | list[str]) -> list[float]:
        """Each sentence's log-probability in nats (normalized text, sentence end included)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return [-n for n in self._nll(texts)[0]]

    def perplexity(self, texts: list[str]) -> float:
        """``exp`` of the mean nats per predicted token over ``texts``."""
        nats, counts = self._nll(list(texts))
        return math.exp(sum(nats) / max(sum(counts), 1))


def _score(args: Any) -> None:
    import suite

    lm = suite.load(args.model)
    if not isinstance(lm, LanguageModel):
        raise UserError(f"{args.model} is not an lm package; `suite models` lists tasks")
    for text, logp in zip(args.texts, lm.score(args.texts), strict=True):
        print(f"{logp:.3f}\t{text}")
