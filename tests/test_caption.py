"""The caption task: a tiny captioner trains through the shared trainer on composed scenes
(its loss falls), its package loads with ``suite.load`` and captions paths, PIL images, arrays
and tensors with teaching errors for what is not an image; beam search with the KV cache
equals beam search without it; scoring gives full marks to the references and misses what a
caption gets wrong; ``suite caption`` and ``suite evaluate`` run on the package."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import suite
from suite.cli import main as cli
from suite.config import load_recipe
from suite.data.images import ImageDataError
from suite.data.scene_captions import caption_facts
from suite.data.scenes import SceneConfig, SceneManifest, write_scenes
from suite.tasks.caption import Captioner
from suite.tasks.caption.evaluation import score_captions
from suite.train import train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scenes")
    counts = {"train": 48, "dev": 4, "test": 6}
    config = SceneConfig(size=32, sources=["shape"], counts=counts, shard_size=100)
    write_scenes(out, config, log=lambda _: None)
    return out


def tiny_recipe(name: str, scenes: Path, run: Path, steps: int):
    return load_recipe(
        REPO / "recipes/vision" / name,
        [
            f"data.corpus_dir={scenes}",
            "data.batch_size=8",
            "data.num_workers=0",
            "model.frontend.input_size=32",
            "model.encoder.preset=tiny",
            "model.tokenizer.vocab_size=64",
            f"train.out_dir={run}",
            f"train.max_steps={steps}",
            f"train.val_every={steps}",
            "train.warmup_steps=2",
            "train.log_every=2",
            "train.lr=3e-3",
        ],
    )


@pytest.fixture(scope="module")
def package(scenes, tmp_path_factory) -> Path:
    """A tiny ViT + AED captioner trained for a few steps through the shared trainer."""
    run = tmp_path_factory.mktemp("run")
    assert train(tiny_recipe("scenes_caption_aed_cpu.yaml", scenes, run, 12), progress=False)
    return run


def test_a_tiny_captioner_trains_and_its_package_captions_any_image(package, scenes):
    rows = [json.loads(line) for line in (package / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in rows if "loss" in row]
    assert losses[-1] < 0.8 * losses[0]
    assert "dev_attribute_accuracy" in rows[-1] and "dev_cider" in rows[-1]
    captioner = suite.load(package / "model")
    assert isinstance(captioner, Captioner)
    manifest = SceneManifest.from_jsonl(scenes / "test.jsonl")
    image = manifest.load(0)  # uint8 (3, 32, 32)
    png = package / "scene.png"
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(png)
    inputs = [
        str(png),
        Image.open(png),
        image.permute(1, 2, 0).numpy(),  # (H, W, C) array
        image.float() / 255,  # (C, H, W) float tensor
        np.asarray(Image.open(png).convert("L")),  # grayscale into an RGB model
        Image.new("RGB", (50, 70), "red"),  # any size: resized
    ]
    captions = captioner.caption(inputs)
    assert len(captions) == 6 and all(isinstance(c, str) and c for c in captions)
    assert len(set(captions[:4])) == 1  # the same image in four forms
    assert captioner.caption(torch.stack([image, image])) == captions[:1] * 2  # a batch
    beam = captioner.hypotheses([image], method="beam", beam_size=3)
    again = captioner.hypotheses([image], method="beam", beam_size=3, use_kv_cache=False)
    assert beam[0].tokens == again[0].tokens
    assert beam[0].score == pytest.approx(again[0].score, abs=1e-4)


def test_images_that_cannot_be_captioned_are_teaching_errors(package, tmp_path):
    captioner = suite.load(package / "model")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    cases = [
        ([tmp_path / "missing.png"], "no image file"),
        ([empty], "empty"),
        ([broken], "cannot decode"),
        ([torch.zeros(2, 8, 8)], "1 or 3 channels"),
        ([np.zeros((8, 8, 4), np.uint8)], "alpha"),
        ([torch.full((3, 8, 8), 255.0)], r"must lie in \[0, 1\]"),
        ([torch.zeros(1, 1, 1, dtype=torch.uint8).expand(3, 9000, 9000)], "too large"),
        ([torch.zeros(3, 0, 8)], "expected an image"),
        ([], "no images"),
        (42, "give a list of images"),
    ]
    for images, message in cases:
        with pytest.raises((ImageDataError, suite.errors.UserError), match=message):
            captioner.caption(images)


def test_scores_reward_the_references_and_miss_wrong_facts(scenes):
    manifest = SceneManifest.from_jsonl(scenes / "test.jsonl")
    perfect = score_captions(manifest, [item.captions[-1] for item in manifest])
    assert perfect.attribute_accuracy == perfect.fact_recall == 1.0
    assert perfect.bleu4 > 0.5 and perfect.cider > 1.0
    wrong = [item.caption.replace("small", "large") for item in manifest]
    wrong = [c.replace("red", "blue").replace("circle", "square") for c in wrong]
    worse = score_captions(manifest, wrong)
    assert worse.attribute_accuracy < 1.0 and worse.fact_recall < 1.0
    assert all(row["missing"] for row in worse.rows if row["hypothesis"] != row["reference"])


def test_cli_captions_images_and_evaluates_scene_manifests(package, scenes, capsys):
    manifest = SceneManifest.from_jsonl(scenes / "test.jsonl")
    png = package / "cli.png"
    Image.fromarray(manifest.load(1).permute(1, 2, 0).numpy()).save(png)
    model = str(package / "model")
    assert cli(["caption", str(png), str(png.with_name("nope.png")), "--model", model]) == 1
    out, err = capsys.readouterr()
    assert out.startswith(f"{png}\t") and "no image file" in err
    assert cli(["evaluate", model, str(scenes / "test.jsonl"), "--decoding", "beam"]) == 0
    out = capsys.readouterr().out
    assert "BLEU-4" in out and "CIDEr" in out and "ROUGE-L" in out and "attribute accuracy" in out
    rows = (scenes / "test.results.jsonl").read_text().splitlines()
    assert len(rows) == len(manifest) and "missing" in json.loads(rows[0])
    assert cli(["evaluate", model, str(png)]) == 2
    assert "is an image, not a manifest" in capsys.readouterr().err


def test_evaluate_json_feeds_the_model_card(package, scenes, capsys, tmp_path):
    from suite.tasks.caption.card import main as card

    model = str(package / "model")
    results = tmp_path / "results"
    results.mkdir()
    for name, decoding in (("test_beam", "beam"), ("test_greedy", "greedy")):
        args = ["evaluate", model, str(scenes / "test.jsonl"), "--decoding", decoding, "--json"]
        assert cli(args) == 0
        line = capsys.readouterr().out.strip()
        result = json.loads(line)
        assert result["scenes"] == 6 and result["decoding"] == decoding
        assert 0.0 <= result["attribute_accuracy"] <= result["fact_recall"] <= 1.0
        (results / f"{name}.json").write_text(line)
    assert card([model, str(results), "--name", "tiny-captioner", "--write"]) == 0
    text = (package / "model" / "README.md").read_text()
    row = next(r for r in text.splitlines() if r.startswith("| test, greedy"))
    assert f"{result['attribute_accuracy']:.1%}" in row and f"{result['cider']:.3f}" in row
    dev = next(r for r in text.splitlines() if r.startswith("| dev"))
    assert "| - |" in dev  # not measured shows as a dash, never a number
    assert "tiny-captioner" in text and "Fashion-MNIST" in text


def test_a_package_copies_in_half_precision_and_captions_alike(package, scenes, capsys):
    from safetensors import safe_open

    manifest = SceneManifest.from_jsonl(scenes / "test.jsonl")
    half = package / "half"
    assert cli(["models", "copy", str(package / "model"), "--out", str(half)]) == 0
    assert "float16" in capsys.readouterr().out
    with safe_open(str(half / "model.safetensors"), framework="pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118
    assert torch.float16 in dtypes
    full_size = (package / "model" / "model.safetensors").stat().st_size
    assert (half / "model.safetensors").stat().st_size < 0.6 * full_size
    images = [manifest.load(i) for i in range(len(manifest))]
    ours = suite.load(half)
    assert next(ours.model.parameters()).dtype == torch.float32  # cast back on loading
    before = suite.load(package / "model").caption(images)
    same = sum(a == b for a, b in zip(ours.caption(images), before, strict=True))
    assert same >= len(images) - 1


def test_the_demo_captions_the_test_split_s_held_out_scenes(package, scenes, capsys):
    from suite.demo import demo_scenes, run_captioning

    config = SceneConfig(size=32, sources=["shape"], counts={"test": 6})
    manifest = SceneManifest.from_jsonl(scenes / "test.jsonl")
    composed = demo_scenes(3, config)
    for index, (image, item) in enumerate(composed):
        assert np.array_equal(image, manifest.load(index).permute(1, 2, 0).numpy())
        assert item.caption == manifest[index].caption and item.facts() == manifest[index].facts()
        assert item.novel  # every test scene shows a held-out composition
    accuracy = run_captioning(str(package / "model"), 3, config)
    out = capsys.readouterr().out
    assert out.count("REF: ") == out.count("HYP: ") == 3
    hypotheses = [line.split("HYP: ", 1)[1] for line in out.splitlines() if "HYP: " in line]
    expected = score_captions(manifest[:3], hypotheses).attribute_accuracy
    assert accuracy == expected and f"attribute accuracy {expected:.0%}" in out


def test_the_shipped_captioner_writes_grammar_captions_of_shape_scenes():
    """default-captioner loads by name, within the package size limit, with its card, and
    captions scenes of shapes (no dataset needed) in the scene grammar."""
    from suite.demo import demo_scenes
    from suite.model import resolve

    package = resolve("default-captioner")
    assert (package / "model.safetensors").stat().st_size < 30e6
    assert "## Results" in (package / "README.md").read_text()
    captioner = suite.load("default-captioner")
    scenes = demo_scenes(6, SceneConfig(sources=["shape"]))
    captions = captioner.caption([image for image, _ in scenes])
    assert all(caption_facts(c) for c in captions)  # every caption parses as the grammar
    found = [caption_facts(c) & item.facts() for c, (_, item) in zip(captions, scenes, strict=True)]
    assert sum(map(len, found)) > 0  # and states some of the scenes' facts


@pytest.mark.slow  # a second captioner: the AED one above checks the shared plumbing
def test_the_llm_adapter_recipe_trains_and_captions(scenes, tmp_path):
    run = tmp_path / "run"
    assert train(tiny_recipe("scenes_caption_llm_cpu.yaml", scenes, run, 2), progress=False)
    captioner = suite.load(run / "model")
    assert list(captioner.model.heads) == ["llm"]
    image = SceneManifest.from_jsonl(scenes / "test.jsonl").load(0)
    captions = captioner.caption([image, image], method="beam", beam_size=2, max_new_tokens=6)
    assert len(captions) == 2 and captions[0] == captions[1]


@pytest.mark.slow  # trains two more models
def test_a_captioner_starts_from_a_masked_autoencoder_of_the_scene_images(scenes, tmp_path):
    mae = load_recipe(
        REPO / "recipes/vision/scenes_mae_vit_cpu.yaml",
        [
            f"data.corpus_dir={scenes}",
            "data.batch_size=4",
            "data.num_workers=0",
            "model.frontend.input_size=32",
            "model.encoder.preset=tiny",
            f"train.out_dir={tmp_path / 'mae'}",
            "train.max_steps=1",
            "train.val_every=1",
            "train.warmup_steps=1",
        ],
    )
    assert train(mae, progress=False)  # reads SPLIT.images.jsonl, the scenes' images alone
    recipe = tiny_recipe("scenes_caption_aed_cpu.yaml", scenes, tmp_path / "cap", 1)
    recipe.train.init_from = str(tmp_path / "mae" / "model")
    recipe.train.init_include = ["encoder"]
    assert train(recipe, progress=False)  # the mae package has no tokenizer: one is trained
    pretrained = suite.load(tmp_path / "mae" / "model").model.encoder.state_dict()
    key = next(k for k in pretrained if k.endswith("pos_embed"))
    tuned = suite.load(tmp_path / "cap" / "model").model.encoder.state_dict()[key]
    fresh = suite.create_encoder("vit", preset="tiny", img_size=32, patch_size=8)
    fresh = fresh.state_dict()[key]
    assert (tuned - pretrained[key]).abs().max() < 5e-3 < (fresh - pretrained[key]).abs().max()
    assert (tmp_path / "cap" / "tokenizer" / "tokenizer.json").is_file()
