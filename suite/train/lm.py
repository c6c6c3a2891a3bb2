"""Pre-training the small causal LM of the LLM-adapter head on the corpus text: ``suite train-lm``.

The text is the training split's transcripts, read from its cut manifest, optionally with more
sentences from the corpus's own generator (:class:`~suite.data.sentences.SentenceGenerator`,
another seed); a generated sentence that is a dev or test transcript is dropped, so the LM never
trains on held-out text. The tokenizer is trained on the training transcripts alone, exactly as
``suite train`` trains an ASR recipe's, and the ASR recipe then reuses the LM package's.

The loss is next-token cross-entropy over sentences read as ``[0, y_1 .. y_U]`` and ending by
predicting ``0`` (see :mod:`suite.heads.lm`), averaged over tokens. Every ``train.val_every``
steps the dev perplexity (``exp`` of the mean nats per predicted token, the closing ``0``
included) is measured, and the best LM so far is written to ``OUT/model`` as an LM package.

A run folder holds ``config.yaml`` (the merged recipe), ``metrics.jsonl`` and ``model/``. Runs
take minutes on CPU, so there are no checkpoints to resume from: a folder that holds a run is
refused.
"""

from __future__ import annotations

import json
import math
import random
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from suite.config import load_config, save_recipe
from suite.errors import UserError
from suite.heads.lm import TransformerLM, lm_loss, save_lm_package
from suite.interfaces import Tokenizer
from suite.text import normalize_text
from suite.tokenizers import train_tokenizer
from suite.train.trainer import load_cuts, lr_at, resolve_device


@dataclass
class LmDataConfig:
    """Where the text comes from."""

    corpus_dir: str = "data/espeak"
    train: str = "espeak_cuts_train.jsonl.gz"  # relative paths resolve against corpus_dir
    dev: str = "espeak_cuts_dev.jsonl.gz"
    test: str = "espeak_cuts_test.jsonl.gz"  # only read to keep its text out of training
    # Extra training sentences from the corpus's sentence generator (0: transcripts only).
    generated_sentences: int = 0
    generator_seed: int = 1  # the corpus itself was generated with another seed (0 by default)

    def manifest(self, split: str) -> Path:
        """Path of the cut manifest of ``split`` (``train``, ``dev`` or ``test``)."""
        path = Path(getattr(self, split))
        return path if path.is_absolute() else Path(self.corpus_dir) / path


@dataclass
class LmModelConfig:
    """The LM's :class:`~suite.heads.lm.TransformerLM` options and the tokenizer spec."""

    lm: dict[str, Any] = field(
        default_factory=lambda: {"d_model": 128, "num_layers": 2, "num_heads": 4}
    )
    tokenizer: dict[str, Any] = field(default_factory=lambda: {"name": "bpe", "vocab_size": 256})


@dataclass
class LmTrainConfig:
    """Optimisation and bookkeeping."""

    out_dir: str = "runs/lm"
    seed: int = 0
    max_steps: int = 2000
    batch_size: int = 64  # sentences per step
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0
    val_every: int = 500
    log_every: int = 50
    device: str = "auto"


@dataclass
class LmRecipe:
    """An LM pre-training recipe (``recipes/lm/*.yaml``)."""

    data: LmDataConfig = field(default_factory=LmDataConfig)
    model: LmModelConfig = field(default_factory=LmModelConfig)
    train: LmTrainConfig = field(default_factory=LmTrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_lm_recipe(path: str | Path, overrides: list[str] | None = None) -> LmRecipe:
    """Load an LM recipe YAML with ``key.sub=value`` overrides, every key and type checked."""
    recipe = load_config(path, LmRecipe, overrides)
    if "vocab_size" in recipe.model.lm:
        raise UserError(
            f"{path}: model.lm.vocab_size comes from the tokenizer; set "
            "model.tokenizer.vocab_size instead"
        )
    return recipe


def transcripts(path: Path, what: str) -> list[str]:
    """The normalized, non-empty supervision texts of a cut manifest, in manifest order."""
    texts = (normalize_text(s.text or "") for c in load_cuts(path, what) for s in c.supervisions)
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


@torch.no_grad()
def perplexity(lm: TransformerLM, sequences: list[list[int]], batch_size: int = 256) -> float:
    """``exp`` of the mean nats per predicted token (each sentence's closing ``0`` included)."""
    was_training = lm.training
    lm.eval()
    device = next(lm.parameters()).device
    nats, tokens = 0.0, 0
    for start in range(0, len(sequences), batch_size):
        nll, counts = lm_loss(lm, sequences[start : start + batch_size], device)
        nats, tokens = nats + float(nll.sum()), tokens + int(counts.sum())
    lm.train(was_training)
    return math.exp(nats / max(tokens, 1))


class LmTrainer:
    """Pre-trains the recipe's LM into ``train.out_dir`` (see the module docstring).

    Args:
        recipe: the merged recipe (saved as ``config.yaml`` in the run folder).
        progress: print a line per ``train.log_every`` steps to stderr.
    """

    def __init__(self, recipe: LmRecipe, progress: bool = True) -> None:
        self.recipe, self.cfg = recipe, recipe.train
        self.run_dir = Path(self.cfg.out_dir)
        self.progress = progress
        if (self.run_dir / "metrics.jsonl").exists():
            raise UserError(
                f"{self.run_dir} already holds an LM run; set train.out_dir=... for a new one"
            )
        random.seed(self.cfg.seed)
        torch.manual_seed(self.cfg.seed)
        self.device = resolve_device(self.cfg.device)
        data = recipe.data
        train_texts = transcripts(data.manifest("train"), "training")
        dev_texts = transcripts(data.manifest("dev"), "dev")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_recipe(recipe, self.run_dir / "config.yaml")
        self.tokenizer: Tokenizer = train_tokenizer(
            recipe.model.tokenizer, train_texts, self.run_dir / "tokenizer"
        )
        self.num_transcripts = len(train_texts)
        if data.generated_sentences:
            held_out = set(dev_texts)
            if data.manifest("test").is_file():
                held_out |= set(transcripts(data.manifest("test"), "test"))
            train_texts += generated_text(data.generated_sentences, data.generator_seed, held_out)
        self.train_ids = [self.tokenizer.encode(t) for t in train_texts]
        self.dev_ids = [self.tokenizer.encode(t) for t in dev_texts]
        self.lm = TransformerLM(vocab_size=self.tokenizer.vocab_size, **recipe.model.lm)
        self.lm.to(self.device)
        decay = [p for p in self.lm.parameters() if p.dim() >= 2]  # no decay on norms and biases
        rest = [p for p in self.lm.parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.cfg.weight_decay}, {"params": rest}],
            lr=self.cfg.lr,
            betas=(0.9, 0.95),
            weight_decay=0.0,
        )
        self.command = " ".join(shlex.quote(a) for a in ["suite", *sys.argv[1:]])
        self.best: tuple[float, int] | None = None  # (dev perplexity, step)

    def _batches(self):
        """Random batches of training sentences, epoch after epoch, reshuffled each epoch."""
        order = list(range(len(self.train_ids)))
        rng = random.Random(self.cfg.seed)
        size = self.cfg.batch_size
        while True:
            rng.shuffle(order)
            for start in range(0, len(order) - size + 1, size):
                yield [self.train_ids[i] for i in order[start : start + size]]

    def _log(self, step: int, values: dict[str, float]) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self.progress:
            shown = "  ".join(f"{k} {v:.4g}" for k, v in values.items())
            print(f"step {step}: {shown}", file=sys.stderr, flush=True)

    def _card(self, ppl: float, step: int, tokens_seen: int) -> str:
        params = sum(p.numel() for p in self.lm.parameters())
        data = self.recipe.data
        extra = (
            f" plus {data.generated_sentences} generated sentences (seed {data.generator_seed},"
            " dev and test transcripts excluded)"
            if data.generated_sentences
            else ""
        )
        return (
            f"# Causal LM pre-trained by suite\n\n"
            f"- Recipe command: `{self.command}`\n"
            f"- Text: the {self.num_transcripts} transcripts of `{data.manifest('train')}`"
            f"{extra}\n"
            f"- Model: TransformerLM `{self.lm.config}`, {params / 1e6:.2f} M parameters; "
            f"tokenizer `{self.recipe.model.tokenizer}`\n"
            f"- Result: dev perplexity {ppl:.2f} (per token, sentence end included) at step "
            f"{step}, after {tokens_seen} training tokens\n\n"
            f"Use it in an ASR recipe as the `llm_adapter` head's `lm:` (see "
            f"`recipes/asr/espeak_conformer_llm_cpu.yaml`).\n"
        )

    def train(self) -> Path:
        """Run until ``train.max_steps``; returns the LM package's folder (the best dev LM)."""
        cfg = self.cfg
        batches = self._batches()
        self.lm.train()
        tokens_seen, window_tokens, window_start = 0, 0, time.perf_counter()
        for step in range(1, cfg.max_steps + 1):
            lr = lr_at(step - 1, cfg.lr, cfg.warmup_steps, cfg.max_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            nll, counts = lm_loss(self.lm, next(batches), self.device)
            loss = nll.sum() / counts.sum()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.lm.parameters(), cfg.grad_clip)
            self.optimizer.step()
            tokens_seen += int(counts.sum())
            window_tokens += int(counts.sum())
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                speed = window_tokens / max(time.perf_counter() - window_start, 1e-9)
                values = {"loss": loss.item(), "lr": lr, "grad_norm": float(grad_norm)}
                self._log(step, {**values, "tokens_per_sec": speed})
                window_tokens, window_start = 0, time.perf_counter()
            if step % cfg.val_every == 0 or step == cfg.max_steps:
                ppl = perplexity(self.lm, self.dev_ids)
                self._log(step, {"dev_perplexity": ppl})
                if self.best is None or ppl <= self.best[0]:
                    self.best = (ppl, step)
                    save_lm_package(
                        self.lm,
                        self.tokenizer,
                        self.run_dir / "model",
                        card=self._card(ppl, step, tokens_seen),
                    )
        return self.run_dir / "model"


def train_lm(recipe: LmRecipe, progress: bool = True) -> Path:
    """Pre-train ``recipe``'s LM; see :class:`LmTrainer`."""
    return LmTrainer(recipe, progress=progress).train()
