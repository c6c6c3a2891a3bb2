"""The ``classify`` task: image classification, from scratch, fine-tuned from a masked
autoencoder, or as a linear probe.

Data are labelled image sources read in place, as the ``mae`` task reads them
(``data.corpus_dir`` + ``data.train``/``dev``/``test``: CIFAR-10's zip with its CSV,
Fashion-MNIST's idx files, or an image manifest with labels); when ``data.dev`` names the
training source itself, a seeded sample of :attr:`ClassifyTask.eval_items` training images is
held out as the dev split. ``data.label_fraction`` keeps that share of each class's training
images (seeded), the few-labels setting: 0.1 is 10% of the labels. Batches are
``data.batch_size`` random images with MAE's random resized crop and flip
(:func:`~suite.tasks.mae.dataset.mae_augment`).

The model is a :class:`~suite.model.TaskModel`: the image frontend, an image encoder (``vit``,
``convnext``) and the shared ``classifier`` head (:mod:`suite.heads.classifier`), whose class
names come from the training labels. ``train.init_from=MAE_PACKAGE train.init_include=[encoder]``
starts the encoder from a masked autoencoder; ``train.freeze=[encoder]`` makes it a linear probe.
Evaluation is top-1 accuracy (primary, higher is better) on at most
:attr:`ClassifyTask.eval_items` dev images during training, on a whole split with ``suite
evaluate PACKAGE SOURCE``. Packages load as an :class:`ImageClassifier`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from suite import registry
from suite.config import ModelConfig, Recipe, recipe_from_dict
from suite.data.images import ImageManifest, load_image_manifest
from suite.errors import UserError
from suite.interfaces import Batch, Tokenizer
from suite.model import TaskModel, build_model, model_spec
from suite.tasks.base import Task
from suite.tasks.mae.dataset import image_batch, image_split, mae_augment

__all__ = ["ClassifyDataset", "ClassifyTask", "ImageClassifier"]

HEAD = "classifier"


class ClassifyDataset:
    """``dataset[(indices, seed)]`` (or ``dataset[indices]``) is a batch of the manifest's
    images (augmented in training) with ``targets (B, 1)``: each label's index in ``labels``.

    Args:
        manifest: the split's labelled images.
        frontend: the model's image frontend.
        labels: the model's class names.
        training: augment with the batch's seed.
    """

    def __init__(
        self, manifest: ImageManifest, frontend: Any, labels: Sequence[str], training: bool
    ) -> None:
        self.manifest, self.frontend = manifest, frontend
        self.index = {name: k for k, name in enumerate(labels)}
        self.augment = mae_augment(frontend.input_size) if training else None

    def __getitem__(self, item: Any) -> Batch:
        indices, seed = item if isinstance(item, tuple) else (item, 0)
        batch = image_batch(self.manifest, indices, self.frontend, self.augment, seed)
        targets = []
        for i in indices:
            label = self.manifest[i].label
            if label not in self.index:
                raise UserError(
                    f"image {self.manifest[i].id} is labelled {label!r}, which the model does "
                    f"not know (its classes: {', '.join(self.index)})"
                )
            targets.append([self.index[label]])
        batch.targets = torch.tensor(targets, dtype=torch.long)
        batch.target_lengths = torch.ones(len(indices), dtype=torch.long)
        batch.texts = [str(self.manifest[i].label) for i in indices]
        return batch


def _head(model: TaskModel) -> nn.Module:
    return model.heads[HEAD]


@registry.register("task", "classify")
class ClassifyTask(Task):
    """Image classification; see the module docstring.

    Attributes:
        eval_items: dev images scored at each validation (a seeded sample).
    """

    name = "classify"
    metric = ("accuracy", "max")
    amount = "images"
    eval_items = 1000

    def load_split(self, recipe: Recipe, split: str) -> ImageManifest | None:
        items = image_split(recipe, split, self.eval_items, self.name)
        if items is None:
            return None
        if split == "train":
            if recipe.data.label_fraction < 1:
                items = items.per_class(recipe.data.label_fraction, seed=recipe.train.seed)
            self._labels = items.labels
            if len(self._labels) < 2:
                raise UserError(
                    f"{recipe.data.manifest('train')}: classification needs labelled images of "
                    f"at least 2 classes, found {len(self._labels)}"
                )
            self._train = items
        return items

    def dataset(self, recipe: Recipe, model: nn.Module, training: bool, seed: int) -> Any:
        train = getattr(self, "_train", None) or self.load_split(recipe, "train")
        return ClassifyDataset(train, model.frontend, _head(model).labels, training)

    def optimizer_groups(self, model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        from suite.tasks.mae import decay_groups

        return decay_groups(model)

    def build_model(self, config: ModelConfig, tokenizer: Tokenizer | None) -> TaskModel:
        if config.frontend.get("name") != "image":
            raise UserError(
                f"the classify task reads images (model.frontend.name=image), got "
                f"'{config.frontend.get('name')}'"
            )
        if list(config.heads) != [HEAD] or config.heads[HEAD].get("name") != HEAD:
            raise UserError(
                f"the classify task has one head, model.heads.{HEAD}: {{name: {HEAD}}}; got "
                f"{sorted(config.heads)}"
            )
        spec = config.heads[HEAD]
        if "labels" not in spec:  # a new model: the classes of its training labels
            labels = getattr(self, "_labels", None)
            if labels is None:
                raise UserError(f"model.heads.{HEAD}.labels: give the class names")
            config.heads[HEAD] = {**spec, "labels": list(labels)}
        return build_model(config, None)

    def package_config(self, model: nn.Module) -> dict[str, Any]:
        return {"model": model_spec(model)}

    def load_model(self, config: dict[str, Any], tokenizer: Tokenizer | None) -> TaskModel:
        return build_model(recipe_from_dict({"model": config["model"]}).model, None)

    @torch.no_grad()
    def predict(self, model: TaskModel, items: ImageManifest, batch_size: int = 128) -> list[str]:
        """The predicted class name of every item, in order."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        out: list[str] = []
        try:
            for start in range(0, len(items), batch_size):
                indices = range(start, min(start + batch_size, len(items)))
                batch = image_batch(items, indices, model.frontend)
                hyps = model.recognize(batch.inputs.to(device), batch.lengths.to(device), HEAD)
                out += [h.text for h in hyps]
        finally:
            model.train(was_training)
        return out

    def evaluate(
        self,
        model: nn.Module,
        items: ImageManifest,
        max_items: int | None = None,
        seed: int = 0,
        **options: Any,
    ) -> dict[str, float]:
        """Top-1 accuracy on a seeded sample of at most ``max_items`` (default
        :attr:`eval_items`; 0 for all) of ``items``."""
        limit = self.eval_items if max_items is None else max_items
        sample = items.sample(limit, seed) if limit else items
        predicted = self.predict(model, sample)
        right = sum(p == item.label for p, item in zip(predicted, sample, strict=True))
        return {"accuracy": right / max(len(sample), 1)}

    def format_metrics(self, metrics: dict[str, float]) -> str:
        return "  ".join(
            f"{k} {v:.2%}" if k == "accuracy" else f"{k} {v:.4g}" for k, v in metrics.items()
        )

    def describe(self, config: ModelConfig) -> str:
        return f"frontend `{config.frontend}`; encoder `{config.encoder}`; head `{config.heads}`"

    def pipeline(self, model: nn.Module, name: str = "") -> ImageClassifier:
        return ImageClassifier(model, name=name)

    def evaluate_command(self, args: Any) -> int:
        """``suite evaluate PKG SOURCE``: top-1 accuracy on every image of a labelled source
        (CIFAR-10's ``test.zip``, Fashion-MNIST's ``t10k-images-idx3-ubyte.gz``, a manifest),
        overall and per class; ``--json`` prints one object."""
        from suite.model import load_package, resolve

        model = load_package(resolve(args.model), task=self.name)
        items = load_image_manifest(args.manifest)
        if args.limit:
            items = items.sample(args.limit, args.seed)
        predicted = self.predict(model, items)
        per_class: dict[str, list[int]] = {}
        for p, item in zip(predicted, items, strict=True):
            per_class.setdefault(str(item.label), []).append(int(p == item.label))
        result = {
            "model": args.model,
            "manifest": str(args.manifest),
            "images": len(items),
            "accuracy": sum(map(sum, per_class.values())) / max(len(items), 1),
            "per_class": {k: sum(v) / len(v) for k, v in sorted(per_class.items())},
        }
        if args.json:
            print(json.dumps(result))
            return 0
        print(f"accuracy {result['accuracy']:.2%} ({len(items)} images)")
        for label, accuracy in result["per_class"].items():
            print(f"  {label:14s} {accuracy:7.2%}")
        return 0


class ImageClassifier:
    """What :func:`suite.load` gives for a ``classify`` package.

    Images are paths, PIL images, arrays or tensors, as the captioner reads them; each is
    resized to the frontend's ``input_size``.

    Args:
        model: the loaded task model.
        name: where it was loaded from (shown in messages).
    """

    def __init__(self, model: TaskModel, name: str = "") -> None:
        self.model, self.name = model, name

    @property
    def labels(self) -> list[str]:
        return list(_head(self.model).labels)

    @torch.no_grad()
    def classify(self, images: Any, top_k: int = 1) -> list[Any]:
        """The class name of each image; with ``top_k > 1``, each image's ``top_k``
        ``(name, probability)`` pairs, best first."""
        from suite.tasks.caption.pipeline import prepare_images

        self.model.eval()
        who = "this image classifier" + (f" ({self.name})" if self.name else "")
        inputs = prepare_images(self.model, images, who)  # (B, C, H, W)
        lengths = torch.full((len(inputs),), inputs.shape[-2], dtype=torch.long)
        enc = self.model.encode(inputs, lengths.to(inputs.device))
        probs = _head(self.model).logits(enc).float().softmax(-1)
        if top_k <= 1:
            return [self.labels[int(k)] for k in probs.argmax(-1).tolist()]
        values, indices = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        return [
            [(self.labels[int(k)], float(v)) for k, v in zip(ks, vs, strict=True)]
            for ks, vs in zip(indices.tolist(), values.tolist(), strict=True)
        ]

    def __repr__(self) -> str:
        return f"ImageClassifier({self.name or 'unnamed'}: {len(self.labels)} classes)"
