"""The ``asr`` task: speech in, text out.

Data are lhotse cut manifests (``data.corpus_dir`` + ``data.train``/``dev``/``test``; the
training split may be a weighted mix of manifests, :mod:`suite.data.mixing`), batched by the
recipe's sampler and featurized by :class:`~suite.tasks.asr.dataset.AsrDataset`; the
model is a :class:`~suite.model.TaskModel` (frontend, encoder, CTC/RNN-T/AED/LLM-adapter
heads, BPE tokenizer); evaluation is WER (primary, lower is better), CER and RTFx, split by
whether a synthetic voice was used in training and by ``custom.source`` where cuts mark one;
packages load as a :class:`Transcriber`.

What only speech recognition needs lives here, not in the shared model or trainer: in-place
distillation from full context (``model.context_distillation``) and attaching an LM to a CTC
head (:func:`~suite.tasks.asr.pipeline.attach_lm`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lhotse import CutSet
from torch import Tensor, nn

from suite import registry
from suite.config import ModelConfig, Recipe, recipe_from_dict
from suite.data.mixing import MixSampler, MixSource, WeightedMix
from suite.errors import UserError
from suite.interfaces import Batch, EncoderOutput, Tokenizer
from suite.model import TaskModel, build_model, model_spec
from suite.tasks.asr.pipeline import Transcriber, attach_lm, default_stream_context
from suite.tasks.base import Task

__all__ = ["AsrTask", "Transcriber", "attach_lm", "default_stream_context", "load_cuts"]


def load_cuts(path: Path, what: str) -> CutSet:
    """Open a cut manifest, with an error that says how to make one."""
    if not path.is_file():
        raise UserError(
            f"{what} manifest {path} does not exist; create a corpus with "
            f"`suite data synth-speech --out {path.parent}` or set data.corpus_dir=..."
        )
    try:
        return CutSet.from_file(path).to_eager()
    except Exception as e:  # lhotse raises what its reader raises: JSON, gzip, key errors
        raise UserError(
            f"{what} manifest {path} is not a lhotse cut manifest ({type(e).__name__}); pass a "
            "cuts .jsonl.gz such as `suite data synth-speech` writes"
        ) from None


@registry.register("task", "asr")
class AsrTask(Task):
    """Speech recognition; see the module docstring."""

    name = "asr"
    metric = ("wer", "min")
    amount = "audio_sec"

    def load_split(self, recipe: Recipe, split: str) -> CutSet | None:
        """The cuts of ``split``; a mixed training split is a lazy ``CutSet`` over a
        :class:`~suite.data.mixing.WeightedMix` whose epoch the sampler sets."""
        sources = recipe.data.sources(split)
        if split != "train":
            path = sources[0][0]
            return load_cuts(path, split) if path.is_file() else None
        if isinstance(recipe.data.train, str):
            return load_cuts(sources[0][0], "training")
        mix = [MixSource(str(path), load_cuts(path, "training"), w) for path, w in sources]
        return CutSet(WeightedMix(mix, seed=recipe.train.seed))

    def tokenizer(self, recipe: Recipe, train: CutSet, directory: Path) -> Tokenizer:
        """The one already in ``directory`` (a resumed run), else a copy of
        ``train.init_from``'s when its heads are copied too (their output layers need those
        ids), else the recipe's: its ``model_file``, or one trained on the texts of ``train``,
        every source of a mix once (deterministic: the same texts give the same vocabulary).
        A run that copies only ``[frontend, encoder]`` puts a new head on them, so it takes
        the recipe's vocabulary (e.g. an LM's, to fuse with it)."""
        from suite.model import resolve
        from suite.tokenizers import load_tokenizer, train_tokenizer

        if directory.is_dir():
            return load_tokenizer(directory)
        include = recipe.train.init_include
        copies_heads = include is None or any(p.split(".")[0] == "heads" for p in include)
        if recipe.train.init_from is not None and copies_heads:
            tokenizer = load_tokenizer(resolve(recipe.train.init_from) / "tokenizer")
            tokenizer.save(directory)
            return tokenizer
        cuts = train.data.all_cuts() if isinstance(train.data, WeightedMix) else train
        texts = (c.supervisions[0].text for c in cuts if c.supervisions)
        return train_tokenizer(recipe.model.tokenizer, texts, directory)

    def dataset(self, recipe: Recipe, model: nn.Module, training: bool, seed: int) -> Any:
        from suite.tasks.asr.dataset import AsrDataset

        # Its own frontend: features are computed on the CPU, in the data loader's workers.
        frontend = registry.create_from_spec("frontend", recipe.model.frontend)
        augment = recipe.data.augment if training else None
        return AsrDataset(model.tokenizer, frontend, augment, training=training, seed=seed)

    def sampler(
        self, recipe: Recipe, train: CutSet, model: nn.Module, seed: int, rank: int, world_size: int
    ) -> Any:
        from suite.data.sampling import build_sampler

        sampler = build_sampler(
            train,
            recipe.data.sampler,
            recipe.data.max_duration,
            seed=seed,
            world_size=world_size,
            rank=rank,
            tokenizer=model.tokenizer,  # 2D buckets count output tokens
        )
        return MixSampler(train.data, sampler) if isinstance(train.data, WeightedMix) else sampler

    def batch_amount(self, batch: Batch, model: nn.Module) -> float:
        return float(batch.lengths.sum()) * model.frontend.hop_ms / 1000

    def build_model(self, config: ModelConfig, tokenizer: Tokenizer | None) -> TaskModel:
        if tokenizer is None:
            raise UserError("an asr model needs a tokenizer (model.tokenizer)")
        return check_distillation(build_model(config, tokenizer))

    def loss(self, model: nn.Module, batch: Batch) -> dict[str, Tensor]:
        """The heads' weighted losses. With ``model.context_distillation``, each CTC head's KL
        to the full-context teacher (``{head}_distill``, 0 on a step that draws full context)
        is added with that weight (dual-mode ASR, Yu et al. 2021)."""
        weight = model.config.context_distillation if model.training else 0.0
        if not weight:
            return model.loss(batch)
        enc, teacher = _with_full_context_teacher(model, batch)
        out = model.head_losses(enc, batch)
        for name, head in model.heads.items():
            if hasattr(head, "distillation_loss"):
                zero = out["loss"].new_zeros(())
                term = zero if teacher is None else head.distillation_loss(enc, teacher)
                out[f"{name}_distill"] = term.detach()
                out["loss"] = out["loss"] + weight * term
        return out

    def package_config(self, model: nn.Module) -> dict[str, Any]:
        return {"model": model_spec(model)}

    def load_model(self, config: dict[str, Any], tokenizer: Tokenizer | None) -> TaskModel:
        if tokenizer is None:
            raise UserError("an asr package needs its tokenizer/ folder; re-export the package")
        return build_model(recipe_from_dict({"model": config["model"]}).model, tokenizer)

    def evaluate(self, model: nn.Module, items: CutSet, **options: Any) -> dict[str, float]:
        """WER, CER and RTFx on ``items``; with ``max_duration=`` (seconds per batch) and
        decoding options (``head=``, ``method=``, ...). Synthetic test sets that mark voices
        also give ``wer_seen_voices`` and ``wer_held_out_voices`` (and, where they mark their
        synthesizer, ``wer_seen_engines`` and ``wer_held_out_engines``); cuts that mark their
        ``custom.source`` give ``wer_<source>`` per source."""
        from suite.tasks.asr.evaluation import by_group, evaluate_cuts

        scores = evaluate_cuts(model, items, **options)
        out = {"wer": scores.wer, "cer": scores.cer, "rtfx": scores.rtfx}
        for seen, group in by_group(scores, "voice_seen_in_train").items():
            out[f"wer_{'seen' if seen else 'held_out'}_voices"] = group.wer
        for seen, group in by_group(scores, "engine_seen_in_train").items():
            out[f"wer_{'seen' if seen else 'held_out'}_engines"] = group.wer
        for source, group in sorted(by_group(scores, "source").items()):
            out[f"wer_{source}"] = group.wer
        return out

    def eval_options(self, recipe: Recipe) -> dict[str, Any]:
        return {"max_duration": recipe.data.max_duration}

    def describe(self, config: ModelConfig) -> str:
        return (
            f"frontend `{config.frontend}`; encoder `{config.encoder}`; heads `{config.heads}`; "
            f"tokenizer `{config.tokenizer}`"
        )

    def format_metrics(self, metrics: dict[str, float]) -> str:
        return "  ".join(
            f"{k} {v:.2%}" if k.startswith(("wer", "cer")) else f"{k} {v:.1f}"
            for k, v in metrics.items()
        )

    def pipeline(self, model: nn.Module, name: str = "") -> Transcriber:
        return Transcriber(model, name=name)

    def add_commands(self, commands: Any) -> None:
        from suite.tasks.asr.cli import add_commands

        add_commands(commands)


def check_distillation(model: TaskModel) -> TaskModel:
    """``model``, unless its ``config.context_distillation`` has nothing to distil: that needs
    a streaming encoder trained with several contexts and a CTC head (a teaching error)."""
    if model.config.context_distillation and not (
        getattr(model.encoder, "att_contexts", None)
        and any(hasattr(h, "distillation_loss") for h in model.heads.values())
    ):
        raise UserError(
            "model.context_distillation needs a streaming encoder trained with several "
            "contexts (encoder.att_contexts) and a CTC head; set it to 0 or add them"
        )
    return model


def _with_full_context_teacher(
    model: TaskModel, batch: Batch
) -> tuple[EncoderOutput, EncoderOutput | None]:
    """The encoder under this step's drawn context, and the same encoder at full context
    (evaluating, no gradient) when the drawn one is chunked; ``None`` when it is full."""
    from suite.nn.context import call_context  # model families import lazily

    encoder = model.encoder
    context = call_context(encoder, "auto")
    enc = encoder(batch.inputs, batch.lengths, att_context=context)
    if context is None:
        return enc, None
    training = encoder.training  # a frozen encoder stays in evaluation mode
    encoder.eval()
    try:
        with torch.no_grad():
            teacher = encoder(batch.inputs, batch.lengths, att_context=None)
    finally:
        encoder.train(training)
    return enc, teacher
