"""The ``mae`` task: masked-autoencoder pretraining of an image encoder (no labels).

Data are image sources read in place (``data.corpus_dir`` + ``data.train``/``dev``/``test``):
a zip with its CSV beside it (CIFAR-10), idx files (Fashion-MNIST) or an image manifest
(:mod:`suite.data.images`); ``data.batch_size`` random images per rank, augmented with MAE's
random resized crop and flip. The model is the recipe's image frontend (``model.frontend``,
``image``) and encoder (``model.encoder``: ``vit`` or ``convnext``, built for the frontend's
size and channels) inside its masked autoencoder (:mod:`suite.encoders.mae`: MAE for ViT,
sparse-convolution masking for ConvNeXt), with that class's defaults or ``model.mae`` options
where the recipe schema has them. When ``data.dev`` is the training source itself, a
seeded sample of :attr:`MaeTask.eval_items` of its images is held out as the dev split (so
checkpoints are never chosen on test images). Evaluation is the reconstruction loss under fixed
masks on a seeded sample of at most :attr:`MaeTask.eval_items` dev images (primary, lower is
better), and writes ``reconstructions.png`` into the run folder. Packages load as an
:class:`ImageAutoencoder`; their encoder's weights start a task model's encoder with
``train.init_from=PACKAGE train.init_include=[encoder]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from suite import registry
from suite.config import ModelConfig, Recipe
from suite.data.images import ImageManifest, read_image
from suite.encoders.mae import MaskedAutoencoder, build_mae
from suite.errors import UserError
from suite.frontends.image import ImageFrontend
from suite.interfaces import EncoderOutput, Tokenizer
from suite.tasks.base import Task
from suite.tasks.mae.dataset import ImageDataset, image_split
from suite.tasks.mae.evaluation import reconstruction_grid, reconstruction_loss, write_png

__all__ = ["ImageAutoencoder", "MaeTask", "build_mae_model", "decay_groups"]

# Tokens that weight decay leaves alone besides biases and gains (as MAE and timm).
_NO_DECAY = ("pos_embed", "cls_token", "reg_token", "mask_token")


def decay_groups(model: nn.Module) -> list[dict[str, Any]]:
    """AdamW groups with weight decay on weight matrices and kernels only (not on norms,
    biases, positions or class and mask tokens), as MAE and timm; frozen parameters left out."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def decays(name: str, param: Tensor) -> bool:
        return param.dim() >= 2 and not name.endswith(_NO_DECAY)

    return [
        {"params": [p for n, p in named if decays(n, p)]},
        {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0},
    ]


def build_mae_model(spec: dict[str, Any]) -> MaskedAutoencoder:
    """The masked autoencoder of a model spec ``{frontend, encoder, mae}``: the encoder is
    built for the frontend's ``input_size`` and channels."""
    frontend = registry.create_from_spec("frontend", spec["frontend"])
    if not isinstance(frontend, ImageFrontend):
        raise UserError(
            f"the mae task needs an image frontend (model.frontend.name: image), got "
            f"'{spec['frontend'].get('name')}'"
        )
    fixed = {"img_size": list(frontend.input_size), "in_chans": frontend.channels}
    given = sorted(set(fixed) & set(spec["encoder"]))
    if given:
        raise UserError(
            f"model.encoder.{given[0]} comes from the image frontend; set "
            "model.frontend.input_size (and channels) instead"
        )
    encoder = registry.create_from_spec("encoder", spec["encoder"], **fixed)
    try:
        model = build_mae(encoder, frontend, **spec.get("mae", {}))
    except ValueError as e:
        raise UserError(f"model.mae: {e}") from None
    model.spec = spec  # a plain attribute: what the package's config.yaml holds
    return model


@registry.register("task", "mae")
class MaeTask(Task):
    """Masked-autoencoder pretraining; see the module docstring.

    Attributes:
        eval_items: dev images scored at each validation (a seeded sample of the dev split).
        grid_images: images in the reconstruction grid.
    """

    name = "mae"
    metric = ("recon_loss", "min")
    amount = "images"
    eval_items = 1000
    grid_images = 8

    def load_split(self, recipe: Recipe, split: str) -> ImageManifest | None:
        items = image_split(recipe, split, self.eval_items, self.name)
        if split == "train":
            self._train = items
        return items

    def dataset(self, recipe: Recipe, model: nn.Module, training: bool, seed: int) -> Any:
        train = getattr(self, "_train", None) or self.load_split(recipe, "train")
        return ImageDataset(train, model.frontend, training)

    def build_model(self, config: ModelConfig, tokenizer: Tokenizer | None) -> nn.Module:
        spec = {"frontend": config.frontend, "encoder": config.encoder}
        # Options of the masked autoencoder itself, where the recipe schema has a section.
        spec["mae"] = dict(config.mae)
        return build_mae_model(spec)

    def optimizer_groups(self, model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        return decay_groups(model)

    def describe(self, config: ModelConfig) -> str:
        mae = dict(config.mae)
        return (
            f"frontend `{config.frontend}`; encoder `{config.encoder}`; masked autoencoder `{mae}`"
        )

    def package_config(self, model: nn.Module) -> dict[str, Any]:
        return {"model": model.spec}

    def load_model(self, config: dict[str, Any], tokenizer: Tokenizer | None) -> nn.Module:
        return build_mae_model(config["model"])

    def eval_options(self, recipe: Recipe) -> dict[str, Any]:
        return {"grid_path": str(Path(recipe.train.out_dir) / "reconstructions.png")}

    def evaluate(
        self,
        model: nn.Module,
        items: ImageManifest,
        grid_path: str | Path | None = None,
        max_items: int | None = None,
        seed: int = 0,
        **options: Any,
    ) -> dict[str, float]:
        """The reconstruction loss on a seeded sample of ``items`` (at most ``max_items``,
        default :attr:`eval_items`) under masks drawn from ``seed``; with ``grid_path``, the
        reconstructions of :attr:`grid_images` of them written there as a PNG."""
        sample = items.sample(max_items or self.eval_items, seed)
        values = {"recon_loss": reconstruction_loss(model, sample, seed=seed)}
        if grid_path is not None:
            shown = sample.shuffle(seed)[: self.grid_images]  # not all of one class
            images = [shown.load(i) for i in range(len(shown))]
            ImageAutoencoder(model).write_grid(images, grid_path, seed=seed)
        return values

    def pipeline(self, model: nn.Module, name: str = "") -> ImageAutoencoder:
        return ImageAutoencoder(model, name=name)


class ImageAutoencoder:
    """What :func:`suite.load` gives for an ``mae`` package: the pretrained encoder's tokens
    and the autoencoder's reconstructions.

    Images are paths, PIL images, arrays or tensors (``(C, H, W)`` or ``(H, W)``, uint8 or
    float in [0, 1]); each is resized to the frontend's ``input_size``.

    Args:
        model: the loaded masked autoencoder.
        name: where it was loaded from (shown in messages).
    """

    def __init__(self, model: MaskedAutoencoder, name: str = "") -> None:
        self.model, self.name = model, name

    def _inputs(self, images: list[Any]) -> Tensor:
        if not isinstance(images, (list, tuple)) or not images:
            raise UserError("give a non-empty list of images (paths, PIL images, arrays, tensors)")
        frontend = self.model.frontend
        batch = torch.stack([frontend.prepare(read_image(image)) for image in images])
        device = next(self.model.parameters()).device
        return frontend.normalize(batch).to(device)  # (B, C, H, W)

    @torch.no_grad()
    def encode(self, images: list[Any]) -> EncoderOutput:
        """The encoder's tokens ``(B, T, D)`` of every patch (no masking)."""
        self.model.eval()
        return self.model.encoder(self._inputs(images), None)

    @torch.no_grad()
    def write_grid(self, images: list[Any], path: str | Path, seed: int = 0) -> Path:
        """Write the reconstruction grid of ``images`` (one row each: original, masked,
        reconstruction, reconstruction with the visible patches) as a PNG at ``path``."""
        was_training = self.model.training
        self.model.eval()
        try:
            grid = reconstruction_grid(self.model, self._inputs(images), seed=seed)
        finally:
            self.model.train(was_training)
        return write_png(grid, path)
