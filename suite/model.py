"""The ASR task model, composed from registry parts, and the model-package format.

A task model is ``Frontend + Encoder + Heads + Tokenizer`` (after icefall's ``AsrModel``):
parts are passed in, never subclassed. A model package is a folder with ``config.yaml``
(the recipe's ``model`` section and the sample rate), ``model.safetensors``, the tokenizer's
files under ``tokenizer/`` and a ``README.md`` model card. Loading never unpickles.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file
from torch import Tensor, nn

from suite import registry
from suite.config import ModelConfig, recipe_from_dict
from suite.errors import UserError
from suite.interfaces import Batch, EncoderOutput, Frontend, Head, Hypothesis, Tokenizer
from suite.io import write_package

PACKAGE_FILES = ("config.yaml", "model.safetensors", "tokenizer")
LM_CARD_SECTION = "## Language model"  # the model-card section attach_lm writes


class AsrModel(nn.Module):
    """Features in, encoder, then one or more heads. The first head decodes by default.

    Args:
        frontend: turns audio ``(B, S)`` into features ``(B, T, F)``.
        encoder: any registered encoder.
        heads: task heads by name (e.g. ``{"ctc": CtcHead(...)}``).
        tokenizer: text <-> ids for every head.
        config: the ``model`` section that built these parts (saved with the package).
    """

    def __init__(
        self,
        frontend: Frontend,
        encoder: nn.Module,
        heads: dict[str, Head],
        tokenizer: Tokenizer,
        config: ModelConfig,
    ) -> None:
        super().__init__()
        if not heads:
            raise ValueError("an AsrModel needs at least one head")
        if config.context_distillation and not (
            getattr(encoder, "att_contexts", None)
            and any(hasattr(h, "distillation_loss") for h in heads.values())
        ):
            raise UserError(
                "model.context_distillation needs a streaming encoder trained with several "
                "contexts (encoder.att_contexts) and a CTC head; set it to 0 or add them"
            )
        self.frontend = frontend
        self.encoder = encoder
        self.heads = nn.ModuleDict(heads)
        self.tokenizer = tokenizer
        self.config = config

    @property
    def sample_rate(self) -> int:
        return self.frontend.sample_rate

    def encode(self, features: Tensor, lengths: Tensor) -> EncoderOutput:
        return self.encoder(features, lengths)

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        """Every head's loss, weighted by ``config.loss_weights`` (default 1) and summed;
        each head's own terms are reported beside it. With ``config.context_distillation``,
        each CTC head's KL to the full-context teacher (``{head}_distill``, 0 on a step that
        draws full context) is added with that weight."""
        distill = self.config.context_distillation if self.training else 0.0
        if not distill:
            enc, teacher = self.encode(batch.inputs, batch.lengths), None
        else:
            enc, teacher = self._with_full_context_teacher(batch)
        out: dict[str, Tensor] = {}
        total = 0
        for name, head in self.heads.items():
            terms = head.loss(enc, batch)
            total = total + self.config.loss_weights.get(name, 1.0) * terms["loss"]
            if distill and hasattr(head, "distillation_loss"):
                zero = terms["loss"].new_zeros(())
                terms["distill"] = zero if teacher is None else head.distillation_loss(enc, teacher)
                total = total + distill * terms["distill"]
            out.update({f"{name}_{k}": v.detach() for k, v in terms.items()})
        out["loss"] = total
        return out

    def _with_full_context_teacher(
        self, batch: Batch
    ) -> tuple[EncoderOutput, EncoderOutput | None]:
        """The encoder under this step's drawn context, and the same encoder at full context
        (evaluating, no gradient) when the drawn one is chunked; ``None`` when it is full."""
        from suite.encoders.blocks import call_context  # model families import lazily

        context = call_context(self.encoder, "auto")
        enc = self.encoder(batch.inputs, batch.lengths, att_context=context)
        if context is None:
            return enc, None
        training = self.encoder.training  # a frozen encoder stays in evaluation mode
        self.encoder.eval()
        try:
            with torch.no_grad():
                teacher = self.encoder(batch.inputs, batch.lengths, att_context=None)
        finally:
            self.encoder.train(training)
        return enc, teacher

    @torch.inference_mode()
    def recognize(
        self, features: Tensor, lengths: Tensor, head: str | None = None, **options: Any
    ) -> list[Hypothesis]:
        """Decode a feature batch ``(B, T, F)`` into hypotheses with text."""
        name = head or next(iter(self.heads))
        enc = self.encode(features, lengths)
        return self.heads[name].decode(enc, tokenizer=self.tokenizer, **options)

    @torch.inference_mode()
    def recognize_audio(
        self, audio: Tensor, lengths: Tensor, head: str | None = None, **options: Any
    ) -> list[Hypothesis]:
        """Decode an audio batch ``(B, S)`` at ``sample_rate``."""
        features, feat_lengths = self.frontend(audio, lengths)
        return self.recognize(features, feat_lengths, head, **options)


def build_model(config: ModelConfig, tokenizer: Tokenizer) -> AsrModel:
    """Compose an :class:`AsrModel` from the recipe's ``model`` section.

    Heads get ``input_dim`` and ``vocab_size``; a head whose constructor also takes
    ``tokenizer`` (one that encodes text of its own, as the LLM adapter's prompt) gets it too.
    """
    frontend = registry.create_from_spec("frontend", config.frontend)
    encoder = registry.create_from_spec("encoder", config.encoder, input_dim=frontend.input_dim)
    heads = {}
    for name, spec in config.heads.items():
        extra = {"input_dim": encoder.output_dim, "vocab_size": tokenizer.vocab_size}
        if "tokenizer" in inspect.signature(registry.lookup("head", spec["name"])).parameters:
            extra["tokenizer"] = tokenizer
        heads[name] = registry.create_from_spec("head", spec, **extra)
    return AsrModel(frontend, encoder, heads, tokenizer, config)


def save_package(
    model: AsrModel,
    directory: str | Path,
    state: dict[str, Tensor] | None = None,
    card: str | None = None,
) -> Path:
    """Write ``model`` as a package folder (each file atomically).

    Args:
        model: the model to save.
        directory: the package folder (created).
        state: weights to save instead of ``model.state_dict()`` (e.g. an EMA copy).
        card: the model card's markdown; an existing card is kept when ``None``.
    """
    spec = dataclasses.asdict(model.config)
    for name, head in model.heads.items():
        # A head built from files outside the package (the LLM adapter's LM package) gives the
        # spec that rebuilds it from the package alone; its weights are saved below anyway.
        if hasattr(head, "packaged_spec"):
            spec["heads"][name] = head.packaged_spec(spec["heads"][name])
    config = {"task": "asr", "model": spec}
    return write_package(directory, config, state or model.state_dict(), model.tokenizer, card)


def load_package(directory: str | Path, device: str | torch.device = "cpu") -> AsrModel:
    """Load a model package folder written by :func:`save_package` (no pickle).

    Loading a model for use also lets the process's ``malloc`` keep freed memory for reuse
    (:func:`suite.runtime.keep_freed_memory`; on 2 CPU cores, greedy transcription RTFx
    188 -> 242).
    """
    from suite.runtime import keep_freed_memory
    from suite.tokenizers import load_tokenizer

    keep_freed_memory()

    directory = Path(directory)
    missing = [name for name in PACKAGE_FILES if not (directory / name).exists()]
    if missing:
        raise UserError(
            f"{directory} is not a model package: missing {', '.join(missing)}; a package holds "
            f"{', '.join(PACKAGE_FILES)} (written by `suite train` into RUN/model)"
        )
    raw = yaml.safe_load((directory / "config.yaml").read_text())
    task = raw.get("task", "asr") if isinstance(raw, dict) else None
    if task != "asr":
        hint = " (a language model: load it with suite.heads.lm.load_lm_package)"
        raise UserError(
            f"{directory} holds a '{task}' package, not a speech recognizer"
            f"{hint if task == 'lm' else ''}"
        )
    config = recipe_from_dict({"model": raw["model"]}).model
    model = build_model(config, load_tokenizer(directory / "tokenizer"))
    model.load_state_dict(load_file(str(directory / "model.safetensors")))
    return model.to(device).eval()


def attach_lm(
    model_dir: str | Path,
    lm_dir: str | Path,
    out_dir: str | Path,
    head: str | None = None,
    **options: Any,
) -> Path:
    """Write a copy of a model package whose CTC head decodes with an LM (shallow fusion).

    The LM package's weights go inside the head (frozen), so the new package loads alone; its
    tokenizer must be the model's. An LM the head already had is replaced. The model card is
    copied with a section on the LM (replacing an earlier one).

    Args:
        model_dir: the model package.
        lm_dir: an LM package written by ``suite train-lm`` over the model's tokenizer.
        out_dir: the new package folder (may be ``model_dir`` itself).
        head: the CTC head to give the LM (default: the first CTC head).
        **options: the head's decoding defaults, e.g. ``lm_weight=1.0, length_bonus=2.5``.
    """
    model = load_package(model_dir)
    ctc = [name for name, spec in model.config.heads.items() if spec["name"] == "ctc"]
    name = head or (ctc[0] if ctc else next(iter(model.heads)))
    if name not in ctc:
        raise UserError(
            f"head '{name}' of {model_dir} is a '{model.config.heads[name]['name']}' head; only "
            f"CTC heads decode with an LM (shallow fusion); its CTC heads: {ctc or 'none'}"
        )
    config = dataclasses.replace(model.config, heads=dict(model.config.heads))
    config.heads[name] = {**config.heads[name], **options, "lm": str(lm_dir)}
    fused = build_model(config, model.tokenizer)  # the head's LM: the LM package's weights
    prefix = f"heads.{name}.lm."
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith(prefix)}
    missing, unexpected = fused.load_state_dict(kept, strict=False)
    assert not unexpected and all(k.startswith(prefix) for k in missing), (missing, unexpected)
    card_path = Path(model_dir) / "README.md"
    card = card_path.read_text() if card_path.is_file() else f"# {Path(out_dir).name}\n"
    earlier = rf"\n{LM_CARD_SECTION}\n.*?(?=\n## |\Z)"  # an earlier LM's section, to the next
    card = re.sub(earlier, "", card, flags=re.S).rstrip("\n") + "\n"
    settings = ", ".join(f"{k}={v}" for k, v in fused.heads[name].options.items())
    card += (
        f"\n{LM_CARD_SECTION}\n\nThe `{name}` head decodes with the LM package `{lm_dir}` "
        f"(frozen, inside this package) by shallow fusion in the prefix beam search ({settings}); "
        f'written by `suite models attach-lm`. `method="greedy"` decodes without it.\n'
    )
    return save_package(fused.eval(), out_dir, card=card)
