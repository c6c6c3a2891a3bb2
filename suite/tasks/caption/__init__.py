"""The ``caption`` task: images, audio or videos in, a sentence out.

Data are scene manifests (``data.corpus_dir`` + ``data.train``/``dev``/``test``) as
``suite data synth-scenes`` writes them (:mod:`suite.data.scenes`): each scene's image, its
caption phrasings and the facts they state. Batches are ``data.batch_size`` random scenes per
rank, each with one of its phrasings drawn per batch. The model is a
:class:`~suite.model.TaskModel`: the image frontend, an image encoder (``vit``, ``convnext``),
and the shared heads that turn encoder tokens into text, the attention encoder-decoder
(``aed``, with its ``caption`` task token) and the LLM adapter (``llm_adapter``); no head of
its own. The BPE tokenizer is trained on the training captions (or copied from
``train.init_from``'s package when it has one: an ``mae`` package gives only its encoder,
``train.init_include=[encoder]``). Evaluation decodes a seeded sample of at most
:attr:`CaptionTask.eval_items` dev scenes and scores attribute accuracy (primary, higher is
better), fact recall, BLEU-4, CIDEr and ROUGE-L (:mod:`suite.tasks.caption.evaluation`).
Packages load as a :class:`Captioner`; ``suite caption IMG...`` and ``suite evaluate PKG
MANIFEST`` use them.

Audio captioning (after CoNeTTE) is the same task with an audio frontend (``fbank``): the
splits are sound-scene manifests as ``suite data synth-sounds`` writes them
(:mod:`suite.data.sounds`; :class:`~suite.tasks.caption.audio_data.SoundManifest`), batches are
log-mel features computed in the loader, the encoders read ``(B, T, F)`` (``audio_convnext``,
``conformer``, the encoder-free ``patch_audio``), and evaluation scores event recall and
precision, count and order accuracy from each scene's metadata beside BLEU-4, CIDEr and
ROUGE-L; attribute accuracy (the primary metric) is the share of scenes whose caption gets
every event, count and the order right.

Video captioning is the same task with the ``video`` frontend: the splits are clip manifests
as ``suite data synth-videos`` writes them (:class:`~suite.data.videos.ClipManifest`), batches
are normalized frames ``(B, N, C, H, W)`` (:mod:`suite.tasks.caption.video_data`) for a video
encoder (the encoder-free ``patch_video``), and evaluation scores object, motion-direction and
event accuracy from each clip's metadata beside attribute accuracy (every fact stated, the
primary metric), fact recall, BLEU-4, CIDEr and ROUGE-L.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from torch import nn

from suite import registry
from suite.config import ModelConfig, Recipe, recipe_from_dict
from suite.data.scenes import SceneManifest
from suite.data.videos import ClipManifest
from suite.errors import UserError
from suite.interfaces import Batch, Tokenizer
from suite.model import TaskModel, build_model, model_spec
from suite.tasks.base import Task
from suite.tasks.caption.audio_data import SoundManifest, is_sound_manifest
from suite.tasks.caption.pipeline import Captioner, CaptionSegment, ModalityError
from suite.tasks.caption.video_data import is_clip_manifest

__all__ = ["CaptionSegment", "CaptionTask", "Captioner", "ModalityError"]

AUDIO_FRONTENDS = ("fbank",)
PERCENT = (
    "attribute_accuracy",
    "fact_recall",
    "event_recall",
    "event_precision",
    "order_accuracy",
    "count_accuracy",
    "object_accuracy",
    "motion_accuracy",
    "event_accuracy",
)
# What each modality's splits hold, the command that writes them and what the frontend reads.
_SPLITS = {
    "image": ("image scenes", "synth-scenes", "images"),
    "audio": ("sound scenes", "synth-sounds", "audio (fbank)"),
    "video": ("clips", "synth-videos", "videos (video)"),
}


def _modality(config: ModelConfig) -> str:
    """What the recipe's frontend reads: ``"audio"``, ``"video"`` or ``"image"``."""
    name = config.frontend.get("name")
    return "audio" if name in AUDIO_FRONTENDS else "video" if name == "video" else "image"


def _manifest_modality(path: Path) -> str:
    return "audio" if is_sound_manifest(path) else "video" if is_clip_manifest(path) else "image"


@registry.register("task", "caption")
class CaptionTask(Task):
    """Image captioning; see the module docstring.

    Attributes:
        eval_items: dev scenes decoded at each validation (a seeded sample).
    """

    name = "caption"
    metric = ("attribute_accuracy", "max")
    amount = "images"
    eval_items = 500

    def load_split(
        self, recipe: Recipe, split: str
    ) -> SceneManifest | SoundManifest | ClipManifest | None:
        path = recipe.data.single_manifest(split, self.name)
        modality = _modality(recipe.model)
        command = _SPLITS[modality][1]
        if not path.is_file():
            if split != "train":
                return None
            raise UserError(
                f"training scenes {path} do not exist; compose them with `suite data "
                f"{command} --out {path.parent}` or set data.corpus_dir=..."
            )
        holds = _manifest_modality(path)
        if holds != modality:
            raise UserError(
                f"{path} holds {_SPLITS[holds][0]}, but the recipe's frontend reads "
                f"{_SPLITS[modality][2]}; point data.corpus_dir at the output of `suite data "
                f"{command}` or change model.frontend.name"
            )
        reader = {"audio": SoundManifest, "video": ClipManifest, "image": SceneManifest}[modality]
        scenes = reader.from_jsonl(path)
        # The training-speed log counts seconds of audio (audio_sec_per_sec) for sound scenes.
        self.amount = {"audio": "audio_sec", "video": "clips", "image": "images"}[modality]
        if split == "train":
            self._train = scenes
        return scenes

    def tokenizer(self, recipe: Recipe, train: SceneManifest, directory: Path) -> Tokenizer:
        """The run's own (a resumed run), else ``train.init_from``'s when its package has
        one, else one trained on every phrasing of the training captions."""
        from suite.model import resolve
        from suite.tokenizers import load_tokenizer, train_tokenizer

        if directory.is_dir():
            return load_tokenizer(directory)
        if recipe.train.init_from is not None:
            source = resolve(recipe.train.init_from) / "tokenizer"
            if source.is_dir():
                shutil.copytree(source, directory)
                return load_tokenizer(directory)
        texts = [caption for item in train for caption in item.captions or (item.caption,)]
        return train_tokenizer(recipe.model.tokenizer, texts, directory)

    def dataset(self, recipe: Recipe, model: nn.Module, training: bool, seed: int) -> Any:
        from suite.tasks.caption.audio_data import audio_caption_batch
        from suite.tasks.caption.dataset import CaptionDataset
        from suite.tasks.caption.video_data import video_caption_batch

        train = getattr(self, "_train", None) or self.load_split(recipe, "train")
        # Its own frontend: images and features are prepared on the CPU, in the data loader's
        # workers.
        frontend = registry.create_from_spec("frontend", recipe.model.frontend)
        if isinstance(train, SoundManifest):
            return CaptionDataset(train, frontend, model.tokenizer, training, audio_caption_batch)
        if isinstance(train, ClipManifest):
            return CaptionDataset(train, frontend, model.tokenizer, training, video_caption_batch)
        return CaptionDataset(train, frontend, model.tokenizer, training)

    def batch_amount(self, batch: Batch, model: nn.Module) -> float:
        if self.amount == "audio_sec":
            return float(batch.lengths.sum()) * model.frontend.hop_ms / 1000
        return float(len(batch))

    def build_model(self, config: ModelConfig, tokenizer: Tokenizer | None) -> TaskModel:
        if tokenizer is None:
            raise UserError("a caption model needs a tokenizer (model.tokenizer)")
        if config.frontend.get("name") not in ("image", "video", *AUDIO_FRONTENDS):
            raise UserError(
                f"the caption task reads images (model.frontend.name=image), audio "
                f"(model.frontend.name=fbank) or videos (model.frontend.name=video), got "
                f"'{config.frontend.get('name')}'"
            )
        return build_model(config, tokenizer)

    def package_config(self, model: nn.Module) -> dict[str, Any]:
        return {"model": model_spec(model)}

    def load_model(self, config: dict[str, Any], tokenizer: Tokenizer | None) -> TaskModel:
        if tokenizer is None:
            raise UserError("a caption package needs its tokenizer/ folder; re-export it")
        return build_model(recipe_from_dict({"model": config["model"]}).model, tokenizer)

    def evaluate(
        self,
        model: nn.Module,
        items: SceneManifest,
        max_items: int | None = None,
        seed: int = 0,
        batch_size: int = 64,
        **options: Any,
    ) -> dict[str, float]:
        """Attribute accuracy, fact recall (images), event recall, precision, count and order
        accuracy (sound scenes) or object, motion and event accuracy (clips), BLEU-4, CIDEr and
        ROUGE-L on a seeded sample of at most
        ``max_items`` of ``items`` (all by default); ``options`` go to
        :meth:`Captioner.caption` (``head=``, ``method=``, ``beam_size=``)."""
        return self.score(model, items, max_items, seed, batch_size, **options).metrics()

    def score(
        self,
        model: nn.Module,
        items: SceneManifest,
        max_items: int | None = None,
        seed: int = 0,
        batch_size: int = 64,
        **options: Any,
    ) -> Any:
        """:meth:`evaluate` with each scene's caption and missing facts
        (:class:`~suite.tasks.caption.evaluation.CaptionScores`, or
        :class:`~suite.tasks.caption.evaluation.SoundCaptionScores` for sound scenes,
        :class:`~suite.tasks.caption.evaluation.VideoCaptionScores` for clips)."""
        from suite.tasks.caption.evaluation import (
            score_captions,
            score_sound_captions,
            score_video_captions,
        )

        scenes = items.sample(max_items, seed) if max_items else items
        captioner = Captioner(model)
        hypotheses = []
        if isinstance(scenes, ClipManifest):
            if captioner.modality != "video":
                raise ModalityError(
                    f"clips need a video captioner; this one reads {captioner.modality}"
                )
            for start in range(0, len(scenes), batch_size):
                clips = [scenes.load(i) for i in range(start, min(start + batch_size, len(scenes)))]
                hypotheses += captioner.caption(clips, batch_size=batch_size, **options)
            return score_video_captions(scenes, hypotheses)
        if isinstance(scenes, SoundManifest):
            if captioner.modality != "audio":
                raise ModalityError(
                    f"sound scenes need an audio captioner; this one reads {captioner.modality}"
                )
            rate = model.frontend.sample_rate
            for start in range(0, len(scenes), batch_size):
                stop = min(start + batch_size, len(scenes))
                audio = [scenes.load(i, rate) for i in range(start, stop)]
                # A scene is one window, however long: it is scored as a whole.
                hypotheses += captioner.caption(
                    audio, sample_rate=rate, batch_size=batch_size, window=1e9, **options
                )
            return score_sound_captions(scenes, hypotheses)
        if captioner.modality != "image":
            raise ModalityError(
                f"image scenes need an image captioner; this one reads {captioner.modality}"
            )
        for start in range(0, len(scenes), batch_size):
            images = [scenes.load(i) for i in range(start, min(start + batch_size, len(scenes)))]
            hypotheses += captioner.caption(images, batch_size=batch_size, **options)
        return score_captions(scenes, hypotheses)

    def eval_options(self, recipe: Recipe) -> dict[str, Any]:
        return {"max_items": self.eval_items, "batch_size": recipe.data.batch_size}

    def describe(self, config: ModelConfig) -> str:
        return (
            f"frontend `{config.frontend}`; encoder `{config.encoder}`; heads `{config.heads}`; "
            f"tokenizer `{config.tokenizer}`"
        )

    def format_metrics(self, metrics: dict[str, float]) -> str:
        return "  ".join(
            f"{k} {v:.1%}" if k in PERCENT else f"{k} {v:.3f}" for k, v in metrics.items()
        )

    def pipeline(self, model: nn.Module, name: str = "") -> Captioner:
        return Captioner(model, name=name)

    def add_commands(self, commands: Any) -> None:
        from suite.tasks.caption.cli import add_commands

        add_commands(commands)

    def evaluate_command(self, args: Any) -> int:
        """``suite evaluate PKG MANIFEST`` for a caption package (see the asr task's verb)."""
        from suite.tasks.caption.cli import evaluate

        return evaluate(args)
