"""Image classification (task ``classify``, the shared ``classifier`` head): a ViT learns
colour classes from a share of the labels through ``suite train`` (loss falls, accuracy beats
chance), its package loads with ``suite.load`` and classifies paths, PIL images and arrays,
the labelled share is per class and seeded, a linear probe keeps its MAE encoder fixed, and
``suite evaluate`` scores a labelled source."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

import suite
from suite.cli import main as cli
from suite.data.images import ImageDataError, ImageItem, ImageManifest, load_image_manifest
from suite.heads.classifier import ClassifierHead
from suite.interfaces import Batch, EncoderOutput

REPO = Path(__file__).resolve().parents[1]
COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def colour_image(name: str, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    base = np.array(COLOURS[name], dtype=np.float32)
    return np.clip(base + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)


def colours_like_cifar(folder: Path, per_class: int = 10) -> Path:
    """CIFAR-10's layout (zips with CSVs of path,label) of noisy single-colour images."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        rows = ["path,label"]
        with zipfile.ZipFile(folder / f"{split}.zip", "w") as z:
            for name in COLOURS:
                for i in range(per_class):
                    member = f"{split}/{name}/{i:04d}.png"
                    buffer = io.BytesIO()
                    Image.fromarray(colour_image(name, rng)).save(buffer, "PNG")
                    z.writestr(member, buffer.getvalue())
                    rows.append(f"{member},{name}")
        (folder / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return folder


def overrides(data: Path, run: Path, steps: int, *more: str) -> list[str]:
    return [
        f"data.corpus_dir={data}",
        "data.batch_size=8",
        "data.num_workers=0",
        "model.frontend.input_size=16",
        "model.encoder.preset=tiny",
        f"train.out_dir={run}",
        f"train.max_steps={steps}",
        f"train.val_every={steps}",
        "train.warmup_steps=2",
        "train.log_every=2",
        "train.lr=3e-3",
        *more,
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return colours_like_cifar(tmp_path_factory.mktemp("colours"), per_class=24)


@pytest.fixture(scope="module")
def package(data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    recipe = str(REPO / "recipes/vision/cifar_classify_vit_cpu.yaml")
    args = overrides(data, run, 24, "data.label_fraction=0.5")
    assert cli(["train", recipe, *args, "--quiet"]) == 0
    return run


def test_a_classifier_learns_from_half_the_labels_and_its_package_classifies(package, data):
    rows = [json.loads(line) for line in (package / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0]
    assert any("dev_accuracy" in r for r in rows)
    config = yaml.safe_load((package / "model/config.yaml").read_text())
    assert config["task"] == "classify"
    assert config["model"]["heads"]["classifier"]["labels"] == ["blue", "green", "red"]
    classifier = suite.load(package / "model")
    rng = np.random.default_rng(1)
    images = [colour_image(name, rng) for name in COLOURS for _ in range(3)]
    predicted = classifier.classify(images)
    truth = [name for name in COLOURS for _ in range(3)]
    right = sum(p == t for p, t in zip(predicted, truth, strict=True))
    assert right > len(truth) / 3  # better than chance after 24 steps of 8 images
    png = package / "red.png"
    Image.fromarray(colour_image("red", rng, size=40)).save(png)  # any size is resized
    top = classifier.classify([str(png), Image.open(png)], top_k=2)
    assert len(top) == 2 and len(top[0]) == 2 and top[0][0][1] >= top[0][1][1]
    assert abs(sum(p for _, p in classifier.classify([str(png)], top_k=3)[0]) - 1) < 1e-5
    with pytest.raises(ImageDataError, match="nope.png"):
        classifier.classify([str(package / "nope.png")])


def test_evaluate_scores_a_labelled_source(package, data, capsys):
    model = str(package / "model")
    assert cli(["evaluate", model, str(data / "test.zip"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 72 and set(result["per_class"]) == set(COLOURS)
    assert result["accuracy"] == pytest.approx(sum(result["per_class"].values()) / 3)
    assert cli(["evaluate", model, str(data / "test.zip")]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert cli(["evaluate", model, str(data / "missing.zip")]) != 0
    assert "missing.zip" in capsys.readouterr().err


def test_the_labelled_share_is_per_class_and_seeded():
    items = [ImageItem(f"a{i}", "x.zip", label="a") for i in range(50)]
    items += [ImageItem(f"b{i}", "x.zip", label="b") for i in range(10)]
    manifest = ImageManifest(items)
    tenth = manifest.per_class(0.1, seed=3)
    assert sorted(i.label for i in tenth) == ["a"] * 5 + ["b"]
    assert [i.id for i in tenth] == [i.id for i in manifest.per_class(0.1, seed=3)]
    assert [i.id for i in tenth] != [i.id for i in manifest.per_class(0.1, seed=4)]
    with pytest.raises(ImageDataError, match="fraction"):
        manifest.per_class(0.0)
    with pytest.raises(ImageDataError, match="no label"):
        ImageManifest([ImageItem("u", "x.zip")]).per_class(0.5)


def test_a_linear_probe_keeps_the_pretrained_encoder(data, tmp_path):
    mae_run, probe_run = tmp_path / "mae", tmp_path / "probe"
    mae_args = [a for a in overrides(data, mae_run, 2) if not a.startswith("train.lr")]
    assert cli(["train", str(REPO / "recipes/vision/cifar_mae_vit_cpu.yaml"), *mae_args]) == 0
    recipe = str(REPO / "recipes/vision/cifar_classify_vit_cpu.yaml")
    more = (
        f"train.init_from={mae_run / 'model'}",
        "train.init_include=[encoder]",
        "train.freeze=[encoder]",
        "data.label_fraction=1.0",
    )
    assert cli(["train", recipe, *overrides(data, probe_run, 4, *more), "--quiet"]) == 0
    pretrained = load_file(str(mae_run / "model/model.safetensors"))
    probe = load_file(str(probe_run / "model/model.safetensors"))
    encoder = [k for k in probe if k.startswith("encoder.")]
    assert encoder and all(torch.equal(probe[k], pretrained[k]) for k in encoder)
    assert any(k.startswith("heads.classifier.") for k in probe)


def test_the_head_pools_only_valid_tokens_and_checks_its_labels():
    torch.manual_seed(0)
    head = ClassifierHead(input_dim=4, labels=["x", "y"])
    features = torch.randn(2, 5, 4)
    short = EncoderOutput(features, torch.tensor([5, 3]))
    cut = EncoderOutput(features[:, :3], torch.tensor([3, 3]))
    assert torch.allclose(head.pooled(short)[1], head.pooled(cut)[1])
    batch = Batch(inputs=features, lengths=torch.tensor([5, 3]), targets=torch.tensor([[0], [1]]))
    assert head.loss(short, batch)["loss"].requires_grad
    assert [h.text for h in head.decode(short)] == [
        ["x", "y"][int(k)] for k in head.logits(short).argmax(-1)
    ]
    with pytest.raises(ValueError, match="distinct"):
        ClassifierHead(input_dim=4, labels=["x", "x"])
    with pytest.raises(ValueError, match="pool"):
        ClassifierHead(input_dim=4, labels=["x", "y"], pool="max")


def test_a_source_without_labels_cannot_train_a_classifier(tmp_path):
    from suite.config import load_recipe
    from suite.errors import UserError
    from suite.tasks.classify import ClassifyTask

    folder = tmp_path / "unlabelled"
    colours_like_cifar(folder, per_class=2)
    for split in ("train", "test"):
        rows = (folder / f"{split}.csv").read_text().splitlines()
        (folder / f"{split}.csv").write_text(
            "\n".join([rows[0]] + [r.split(",")[0] + ",red" for r in rows[1:]]) + "\n"
        )
    recipe = load_recipe(
        REPO / "recipes/vision/cifar_classify_vit_cpu.yaml",
        [f"data.corpus_dir={folder}", "data.label_fraction=1.0"],
    )
    with pytest.raises(UserError, match="at least 2 classes"):
        ClassifyTask().load_split(recipe, "train")
    assert len(load_image_manifest(folder / "test.zip").labels) == 1
