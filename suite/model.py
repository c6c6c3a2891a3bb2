"""The task model composed from registry parts, and the model-package format.

A task model is ``Frontend + Encoder + Heads (+ Tokenizer)`` (after icefall's ``AsrModel``):
parts are passed in, never subclassed. A model package is a folder with ``config.yaml``
(``task:`` and what that task needs to rebuild the model, e.g. the recipe's ``model``
section), ``model.safetensors``, the tokenizer's files under ``tokenizer/`` when the task has
text, and a ``README.md`` model card. Loading never unpickles; the package's task says which
model and which pipeline (:func:`suite.load`) it gives.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file
from torch import Tensor, nn

from suite import registry
from suite.config import ModelConfig
from suite.errors import UserError
from suite.interfaces import Batch, EncoderOutput, Frontend, Head, Hypothesis, Tokenizer
from suite.io import write_package

PACKAGE_FILES = ("config.yaml", "model.safetensors")
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


class TaskModel(nn.Module):
    """Inputs through a frontend and an encoder, then one or more heads (after icefall's
    ``AsrModel``: parts are passed in, never subclassed). The first head decodes by default.

    Args:
        frontend: turns raw signals (audio ``(B, S)``, images ``(B, C, H, W)``) into what the
            encoder reads.
        encoder: any registered encoder.
        heads: task heads by name (e.g. ``{"ctc": CtcHead(...)}``).
        tokenizer: text <-> ids for the heads, for tasks with text.
        config: the ``model`` section that built these parts (saved with the package).
    """

    def __init__(
        self,
        frontend: Frontend,
        encoder: nn.Module,
        heads: dict[str, Head],
        tokenizer: Tokenizer | None = None,
        config: ModelConfig | None = None,
    ) -> None:
        super().__init__()
        if not heads:
            raise ValueError("a TaskModel needs at least one head")
        self.frontend = frontend
        self.encoder = encoder
        self.heads = nn.ModuleDict(heads)
        self.tokenizer = tokenizer
        self.config = config if config is not None else ModelConfig()

    @property
    def sample_rate(self) -> int:
        return self.frontend.sample_rate

    def encode(self, inputs: Tensor, lengths: Tensor, **options: Any) -> EncoderOutput:
        return self.encoder(inputs, lengths, **options)

    def head_losses(self, enc: EncoderOutput, batch: Batch) -> dict[str, Tensor]:
        """Every head's loss on ``enc``, weighted by ``config.loss_weights`` (default 1) and
        summed into ``"loss"``; each head's own terms are reported beside it as
        ``{head}_{term}``."""
        out: dict[str, Tensor] = {}
        total = 0
        for name, head in self.heads.items():
            terms = head.loss(enc, batch)
            total = total + self.config.loss_weights.get(name, 1.0) * terms["loss"]
            out.update({f"{name}_{k}": v.detach() for k, v in terms.items()})
        out["loss"] = total
        return out

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        """The training loss of ``batch``: :meth:`head_losses` of the encoder's output."""
        return self.head_losses(self.encode(batch.inputs, batch.lengths), batch)

    @torch.inference_mode()
    def recognize(
        self, inputs: Tensor, lengths: Tensor, head: str | None = None, **options: Any
    ) -> list[Hypothesis]:
        """Decode an encoder-input batch (e.g. features ``(B, T, F)``) into hypotheses."""
        name = head or next(iter(self.heads))
        if name not in self.heads:
            raise UserError(f"no head '{name}'; this model's heads: {', '.join(self.heads)}")
        enc = self.encode(inputs, lengths)
        return self.heads[name].decode(enc, tokenizer=self.tokenizer, **options)

    @torch.inference_mode()
    def recognize_audio(
        self, audio: Tensor, lengths: Tensor, head: str | None = None, **options: Any
    ) -> list[Hypothesis]:
        """Decode a raw-signal batch (audio ``(B, S)`` at ``sample_rate``) through the
        frontend."""
        features, feat_lengths = self.frontend(audio, lengths)
        return self.recognize(features, feat_lengths, head, **options)


def build_model(config: ModelConfig, tokenizer: Tokenizer | None = None) -> TaskModel:
    """Compose a :class:`TaskModel` from the recipe's ``model`` section.

    The encoder gets the frontend's ``input_dim``; heads get ``input_dim`` (the encoder's
    width) and, with a tokenizer, ``vocab_size``; a head whose constructor also takes
    ``tokenizer`` (one that encodes text of its own, as the LLM adapter's prompt) gets it too.
    """
    frontend = registry.create_from_spec("frontend", config.frontend)
    encoder = registry.create_from_spec("encoder", config.encoder, **encoder_inputs(frontend))
    heads = {}
    for name, spec in config.heads.items():
        extra: dict[str, Any] = {"input_dim": encoder.output_dim}
        if tokenizer is not None:
            extra["vocab_size"] = tokenizer.vocab_size
            if "tokenizer" in inspect.signature(registry.lookup("head", spec["name"])).parameters:
                extra["tokenizer"] = tokenizer
        heads[name] = registry.create_from_spec("head", spec, **extra)
    return TaskModel(frontend, encoder, heads, tokenizer, config)


def encoder_inputs(frontend: Frontend) -> dict[str, Any]:
    """What an encoder is told of its input by the frontend before it: the feature width of
    audio (``input_dim``), or the image size and channels of images (timm's ``img_size``,
    ``in_chans``), and of videos also the most frames a clip holds (``num_frames``)."""
    if hasattr(frontend, "input_dim"):
        return {"input_dim": frontend.input_dim}
    images = {"img_size": list(frontend.input_size), "in_chans": frontend.channels}
    if isinstance(getattr(frontend, "num_frames", None), int):  # not the fbank's method
        return {**images, "num_frames": frontend.num_frames}
    return images


def model_spec(model: TaskModel) -> dict[str, Any]:
    """The ``model`` section that rebuilds ``model`` from its package alone: a head built from
    files outside the package (the LLM adapter's LM package) gives its own spec."""
    spec = dataclasses.asdict(model.config)
    for name, head in model.heads.items():
        if hasattr(head, "packaged_spec"):
            spec["heads"][name] = head.packaged_spec(spec["heads"][name])
    return spec


def save_package(
    model: nn.Module,
    directory: str | Path,
    state: dict[str, Tensor] | None = None,
    card: str | None = None,
    task: str = "asr",
    weights_dtype: torch.dtype | None = None,
) -> Path:
    """Write ``model`` as a package folder of ``task`` (each file atomically).

    Args:
        model: the model to save.
        directory: the package folder (created).
        state: weights to save instead of ``model.state_dict()`` (e.g. an EMA copy).
        card: the model card's markdown; an existing card is kept when ``None``.
        task: the registered task whose package this is; it says what ``config.yaml`` holds.
        weights_dtype: store the floating-point parameters in this dtype (``torch.float16`` or
            ``torch.bfloat16``: half the file); buffers (filterbanks, windows, statistics) stay
            as they are. Loading casts them back to the model's dtype. ``None``: as they are.
    """
    spec = registry.create("task", task)
    config = {"task": task, **spec.package_config(model)}
    tokenizer = getattr(model, "tokenizer", None)
    weights = state or model.state_dict()
    if weights_dtype is not None:
        params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
        weights = {
            k: v.to(weights_dtype) if k in params and v.is_floating_point() else v
            for k, v in weights.items()
        }
    return write_package(directory, config, weights, tokenizer, card)


def resolve(name_or_path: str | Path) -> Path:
    """The package folder of a shipped name or a path, with an error listing the names."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if (PRETRAINED_DIR / str(name_or_path)).is_dir():
        return PRETRAINED_DIR / str(name_or_path)
    shipped = ", ".join(p.parent.name for p in sorted(PRETRAINED_DIR.glob("*/config.yaml")))
    raise UserError(
        f"no model '{name_or_path}': not a folder and not a shipped model; shipped: {shipped}"
    )


def package_task(directory: str | Path) -> str:
    """The task a package folder holds (``asr`` for packages that predate the field)."""
    directory = Path(directory)
    missing = [name for name in PACKAGE_FILES if not (directory / name).exists()]
    if missing:
        raise UserError(
            f"{directory} is not a model package: missing {', '.join(missing)}; a package holds "
            f"{', '.join(PACKAGE_FILES)} (written by `suite train` into RUN/model)"
        )
    raw = yaml.safe_load((directory / "config.yaml").read_text())
    if not isinstance(raw, dict):
        raise UserError(f"{directory}/config.yaml is not a mapping; re-export the package")
    return str(raw.get("task", "asr"))


def load_package(
    directory: str | Path, device: str | torch.device = "cpu", task: str | None = None
) -> nn.Module:
    """Load a model package folder written by :func:`save_package` (no pickle).

    Args:
        directory: the package folder.
        device: where the model goes.
        task: the task the caller needs (e.g. ``"asr"``); a package of another task is a
            teaching error. ``None`` takes any task.

    Returns:
        The task's model in evaluation mode (a :class:`TaskModel` for ``asr``).
    """
    from suite.tokenizers import load_tokenizer

    directory = Path(directory)
    held = package_task(directory)
    if task is not None and held != task:
        raise UserError(
            f"{directory} holds a '{held}' package, not a '{task}' one; "
            f"load it with suite.load('{directory}')"
        )
    spec = registry.create("task", held)
    raw = yaml.safe_load((directory / "config.yaml").read_text())
    tokenizer_dir = directory / "tokenizer"
    tokenizer = load_tokenizer(tokenizer_dir) if tokenizer_dir.is_dir() else None
    model = spec.load_model(raw, tokenizer)
    model.load_state_dict(load_file(str(directory / "model.safetensors")))
    return model.to(device).eval()
