"""Masked-autoencoder pretraining: the ViT encoder sees only the visible patches, the masked
ConvNeXt lets no masked pixel reach a visible position, the loss falls on a tiny set, the
reconstruction grid is a PNG of the right size, and the vision recipes run through
``suite train`` on tiny look-alike data and load back with ``suite.load``."""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import suite
from suite.cli import main as cli
from suite.data.images import ImageManifest, load_image_manifest
from suite.encoders.mae import (
    ConvNextMae,
    VitMae,
    build_mae,
    patchify,
    random_mask,
    unpatchify,
)
from suite.tasks.mae import ImageAutoencoder, MaeTask
from suite.tasks.mae.evaluation import grid_size, reconstruction_grid, write_png

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: these tiny models lose far more to thread hand-offs than they gain,
    most of all on a machine other jobs share."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_mae(name: str, **options) -> VitMae | ConvNextMae:
    torch.manual_seed(0)
    frontend = suite.create_frontend("image", input_size=32)
    return build_mae(suite.create_encoder(name, preset="tiny"), frontend, **options)


def blobs(count: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth images (a coloured disc on a gradient), normalized: learnable structure."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = []
    for _ in range(count):
        cy, cx, r = (torch.rand(3, generator=g) * torch.tensor([0.6, 0.6, 0.2]) + 0.2).tolist()
        colour, back = torch.rand(3, 1, 1, generator=g), torch.rand(3, 1, 1, generator=g)
        disc = (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r).float()
        out.append(back * (0.5 + 0.5 * yy) * (1 - disc) + colour * disc)
    return (torch.stack(out) - 0.5) / 0.25  # (B, 3, H, W)


def test_random_masks_differ_per_image_and_hide_the_ratio():
    mask = random_mask(4, 64, 0.75, torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool and mask.sum(1).tolist() == [48] * 4
    assert len({tuple(m.tolist()) for m in mask}) == 4
    assert random_mask(2, 4, 0.99).sum(1).tolist() == [3, 3]  # one patch always stays visible
    x = torch.randn(2, 3, 32, 48)
    assert patchify(x, 8).shape == (2, 24, 192)
    assert torch.equal(unpatchify(patchify(x, 8), 8, (4, 6), 3), x)


def test_vit_encoder_runs_on_the_visible_patches_only():
    model = tiny_mae("vit", mask_ratio=0.75)
    seen = []
    hook = model.encoder.model.blocks[0].register_forward_pre_hook(
        lambda module, args: seen.append(tuple(args[0].shape))
    )
    out = model(blobs(3), generator=torch.Generator().manual_seed(0))
    hook.remove()
    # 64 patches, 48 hidden: the class token and 16 visible patches, in every block's input.
    assert seen == [(3, 1 + 16, 64)]
    assert out.pred.shape == (3, 64, 4 * 4 * 3) and out.mask.sum().item() == 3 * 48
    out.loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name} got no gradient"


def test_masked_convnext_lets_no_masked_pixel_reach_a_visible_position():
    model = tiny_mae("convnext").eval()
    encoder = model.encoder
    x = blobs(2)
    mask = random_mask(2, 16, 0.6, torch.Generator().manual_seed(1))  # 4x4 units of 8x8 px
    keep = (~mask).view(2, 1, 4, 4).float()
    hidden = model.mask_image(x, mask).bool()  # (B, C, H, W) pixels of hidden units
    with torch.no_grad():
        base = encoder.features(x, keep)  # (B, D, 4, 4)
        noisy = torch.where(hidden, torch.randn_like(x) * 10, x)
        changed = encoder.features(noisy, keep)
        assert torch.equal(changed, base)  # visible positions unchanged, hidden ones zero
        assert (base * (1 - keep)).abs().max() == 0
        # The test has power: the unmasked network does mix neighbouring units ...
        assert (encoder.features(noisy) - encoder.features(x)).abs().max() > 1e-3
        # ... and a visible pixel does reach the output.
        b, unit = 0, int((~mask[0]).nonzero()[0])
        y = x.clone()
        y[b, :, (unit // 4) * 8, (unit % 4) * 8] += 5
        assert (encoder.features(y, keep) - base).abs().max() > 1e-4
    out = model(x, mask=mask)
    out.loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name} got no gradient"


@pytest.mark.parametrize("name", ["vit", "convnext"])
def test_loss_falls_on_a_tiny_set(name):
    model = tiny_mae(name, decoder_dim=64)
    images = blobs(8)
    probe = torch.Generator().manual_seed(5)
    masks = random_mask(8, model.grid(images)[0] * model.grid(images)[1], 0.6, probe)

    def held_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(model(images, mask=masks).loss)

    before = held_loss()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(40):
        loss = model(images).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_loss()
    assert after < 0.7 * before, f"{name}: {before:.3f} -> {after:.3f}"


def test_options_and_encoders_without_pretraining_are_teaching_errors():
    with pytest.raises(ValueError, match="takes no option 'decoder_heads'"):
        tiny_mae("convnext", decoder_heads=2)
    with pytest.raises(ValueError, match="mask_ratio must lie in"):
        tiny_mae("vit", mask_ratio=1.0)
    mask = random_mask(2, 64, 0.75)
    mask[0, int(mask[0].nonzero()[0])] = False  # one image with a visible patch more
    with pytest.raises(ValueError, match="as many visible patches"):
        tiny_mae("vit")(blobs(2), mask=mask)
    with pytest.raises(
        ValueError, match="no masked-autoencoder pretraining for Conformer; there is one for"
    ):
        build_mae(suite.create_encoder("conformer", preset="tiny"))


def test_reconstruction_grid_is_an_unnormalized_png_of_the_right_size(tmp_path):
    model = tiny_mae("vit").eval()
    images = blobs(3)
    grid = reconstruction_grid(model, images, scale=2)
    assert grid.shape == (3, *grid_size(3, 32, 32, 2)) == (3, 200, 266)
    assert grid.min() >= 0 and grid.max() <= 1
    # The first tile is the input itself, un-normalized (pixels 2.. after the padding).
    shown = model.frontend.unnormalize(images[:1])[0].repeat_interleave(2, -1)
    torch.testing.assert_close(grid[:, 2:66, 2:66:1][:, ::2], shown[:, :, :64], atol=1e-6, rtol=0)
    path = write_png(grid, tmp_path / "grid.png")
    with Image.open(path) as png:
        assert png.size == (266, 200) and png.mode == "RGB"
    # Through the pipeline, from uint8 images of any size; default scale: tiles of 64 px.
    pipeline = ImageAutoencoder(model)
    raw = [torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8) for _ in range(2)]
    with Image.open(pipeline.write_grid(raw, tmp_path / "p.png")) as png:
        assert png.size == grid_size(2, 32, 32, 2)[::-1]


# --- the task and its recipes through `suite train` -----------------------------------------


def png_bytes(image: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    array = ((image.clamp(-2, 2) + 2) / 4 * 255).byte().permute(1, 2, 0).numpy()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, "PNG")
    return buffer.getvalue()


def cifar_like(folder: Path, count: int = 12) -> None:
    """CIFAR-10's layout: train.zip/test.zip of images with train.csv/test.csv beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        rows = ["path,label"]
        with zipfile.ZipFile(folder / f"{split}.zip", "w") as z:
            for i, image in enumerate(blobs(count, seed=len(split))):
                member = f"{split}/blob/{i:04d}.png"
                z.writestr(member, png_bytes(image))
                rows.append(f"{member},blob")
        (folder / f"{split}.csv").write_text("\n".join(rows) + "\n")


def fashion_like(folder: Path, count: int = 12) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        pixels = (blobs(count, size=28)[:, 0] * 40 + 128).clamp(0, 255).byte().numpy()
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">4B3I", 0, 0, 8, 3, count, 28, 28) + pixels.tobytes())


RECIPES = {
    "cifar_mae_vit_cpu.yaml": cifar_like,
    "cifar_mae_convnext_cpu.yaml": cifar_like,
    "fmnist_mae_vit_cpu.yaml": fashion_like,
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_vision_recipe_trains_two_steps_and_loads(recipe, tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    RECIPES[recipe](data)
    overrides = [
        f"data.corpus_dir={data}",
        "data.batch_size=4",
        "data.num_workers=0",
        "model.encoder.preset=tiny",
        f"train.out_dir={run}",
        "train.max_steps=2",
        "train.val_every=2",
        "train.warmup_steps=1",
    ]
    assert cli(["train", str(REPO / "recipes/vision" / recipe), *overrides, "--quiet"]) == 0
    assert "dev_recon_loss" in (run / "metrics.jsonl").read_text()
    size = 28 if recipe.startswith("fmnist") else 32
    with Image.open(run / "reconstructions.png") as png:  # written at validation
        assert png.size[0] == grid_size(1, size, size, -(-64 // size))[1]
    config = yaml.safe_load((run / "model/config.yaml").read_text())
    assert config["task"] == "mae" and config["model"]["encoder"]["preset"] == "tiny"
    pipeline = suite.load(run / "model")
    assert isinstance(pipeline, ImageAutoencoder)
    out = pipeline.encode([Image.new("RGB", (50, 40), "red"), np.zeros((28, 28), np.uint8)])
    tokens = (size // 4) ** 2 if "vit" in recipe else (size // 8) ** 2
    assert out.features.shape[:2] == (2, tokens)
    # The pretrained encoder's weights are named as a task model's encoder.
    weights = pipeline.model.encoder.state_dict()
    fresh = suite.create_encoder(config["model"]["encoder"]["name"], preset="tiny")
    assert weights.keys() == fresh.state_dict().keys()


def test_dev_named_as_the_training_source_is_held_out_of_training(tmp_path):
    from suite.config import load_recipe

    cifar_like(tmp_path, count=20)
    recipe = load_recipe(
        REPO / "recipes/vision/cifar_mae_vit_cpu.yaml", [f"data.corpus_dir={tmp_path}"]
    )
    task = MaeTask()
    train, dev = task.load_split(recipe, "train"), task.load_split(recipe, "dev")
    assert len(train) == 10 and len(dev) == 10  # at most half is held out
    assert not {i.id for i in train} & {i.id for i in dev}
    assert [i.id for i in MaeTask().load_split(recipe, "dev")] == [i.id for i in dev]
    assert len(task.load_split(recipe, "test")) == 20
    manifest = load_image_manifest(tmp_path / "train.zip")
    assert isinstance(manifest, ImageManifest) and len(manifest) == 20
