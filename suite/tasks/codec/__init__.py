"""The ``codec`` task: a neural audio codec (audio -> discrete codes -> audio).

Data are lhotse cut or recording manifests (``data.corpus_dir`` + ``data.train``/``dev``/
``test``, each one manifest or a list joined; see :mod:`suite.tasks.codec.dataset`); training
batches are ``data.batch_size`` random crops of ``data.segment`` seconds per rank, with the
recipe's noise mixed in. The model is the registered codec of ``model.codec`` (``{name,
preset, **options}``, e.g. ``seanet``: :mod:`suite.codecs.model`), whose ``loss`` holds the
reconstruction, commitment and, after ``adversarial_start`` steps, adversarial terms; every
part trains through the shared trainer. Evaluation is the multi-scale mel distance of the round
trip at the highest bitrate (primary, lower is better) and at every bitrate, with SI-SDR, on at
most :attr:`CodecTask.eval_items` dev utterances. Packages load as an
:class:`~suite.tasks.codec.pipeline.AudioCodec`; the CLI adds ``suite codec encode|decode``.
"""

from __future__ import annotations

from typing import Any

from lhotse import CutSet
from torch import nn

from suite import registry
from suite.config import ModelConfig, Recipe
from suite.errors import UserError
from suite.interfaces import Batch, Tokenizer
from suite.tasks.base import Task
from suite.tasks.codec.dataset import crop_dataset, load_split
from suite.tasks.codec.pipeline import AudioCodec, CodecSession

__all__ = ["AudioCodec", "CodecSession", "CodecTask", "build_codec"]


def build_codec(spec: dict[str, Any]) -> nn.Module:
    """The codec of a ``model.codec`` spec ``{name, preset, **options}``; the spec is kept on
    it (``codec.spec``) for the package's ``config.yaml``."""
    if not spec or "name" not in spec:
        raise UserError(
            f"the codec task needs model.codec with a 'name'; registered codecs: "
            f"{', '.join(registry.names('codec'))}"
        )
    try:
        codec = registry.create_from_spec("codec", spec)
    except (TypeError, ValueError) as e:
        raise UserError(f"model.codec: {e}") from None
    codec.spec = dict(spec)  # a plain attribute: what the package's config.yaml holds
    return codec


@registry.register("task", "codec")
class CodecTask(Task):
    """Neural audio codec training; see the module docstring.

    Attributes:
        eval_items: dev utterances scored at each validation (the first ones of the split).
    """

    name = "codec"
    metric = ("mel_distance", "min")
    amount = "audio_sec"
    eval_items = 32

    def load_split(self, recipe: Recipe, split: str) -> CutSet | None:
        cuts = load_split(recipe, split)
        if split == "dev" and cuts is not None:
            cuts = cuts.subset(first=min(self.eval_items, len(cuts)))
        return cuts

    def dataset(self, recipe: Recipe, model: nn.Module, training: bool, seed: int) -> Any:
        return crop_dataset(recipe, load_split(recipe, "train"), model.sample_rate, training)

    def batch_amount(self, batch: Batch, model: nn.Module) -> float:
        return float(batch.lengths.sum()) / model.sample_rate

    def build_model(self, config: ModelConfig, tokenizer: Tokenizer | None) -> nn.Module:
        return build_codec(config.codec)

    def package_config(self, model: nn.Module) -> dict[str, Any]:
        return {"model": {"codec": model.spec}}

    def load_model(self, config: dict[str, Any], tokenizer: Tokenizer | None) -> nn.Module:
        return build_codec(config["model"]["codec"])

    def evaluate(self, model: nn.Module, items: CutSet, **options: Any) -> dict[str, float]:
        """Mel distance and SI-SDR of the round trip at every bitrate (see the module
        docstring)."""
        from suite.tasks.codec.dataset import CropDataset
        from suite.tasks.codec.evaluation import evaluate_codec

        return evaluate_codec(model, CropDataset(items, model.sample_rate, segment=None))

    def describe(self, config: ModelConfig) -> str:
        return f"codec `{config.codec}`"

    def format_metrics(self, metrics: dict[str, float]) -> str:
        shown = {
            k: v for k, v in metrics.items() if k in ("mel_distance", "si_sdr", "perplexity_min")
        }
        return "  ".join(f"{k} {v:.3f}" for k, v in shown.items())

    def pipeline(self, model: nn.Module, name: str = "") -> AudioCodec:
        return AudioCodec(model, name=name)

    def add_commands(self, commands: Any) -> None:
        from suite.tasks.codec.cli import add_commands

        add_commands(commands)
