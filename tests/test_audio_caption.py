"""Audio captioning in the caption task: a tiny ConvNeXt captioner trains through the shared
trainer on real (procedural) sound scenes made here and its loss falls; its package captions
files and arrays alike, refuses images with one message naming the input and the modality it
reads, and captions long audio window by window with timestamps; scoring reads event recall,
precision, counts and order from the scene metadata; ``suite caption`` and ``suite evaluate``
run on it; the other recipes (encoder-free, Conformer, LLM adapter) build, learn one batch
and caption."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import suite
from suite.audio import AudioWarning
from suite.cli import main as cli
from suite.config import load_recipe
from suite.data.sounds import SoundConfig, write_sounds
from suite.errors import UserError
from suite.model import build_model
from suite.tasks.caption import Captioner, CaptionSegment, CaptionTask, ModalityError
from suite.tasks.caption.audio_data import SoundManifest, audio_caption_batch, restore_commas
from suite.tasks.caption.audio_pipeline import windows
from suite.tasks.caption.evaluation import score_sound_captions
from suite.train import train

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes/caption"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():  # module-wide: the trained package below runs first and is the costly part
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sounds(tmp_path_factory) -> Path:
    """Procedural sound scenes of 2-3 s (no ESC-10, no speech: runs everywhere)."""
    out = tmp_path_factory.mktemp("sounds")
    counts = {"train": 24, "dev": 2, "test": 6}
    config = SoundConfig(
        esc10=False, speech=False, min_seconds=2.0, max_seconds=3.0, counts=counts, shard_size=50
    )
    write_sounds(out, config, log=lambda _: None)
    return out


def tiny_recipe(name: str, sounds: Path, run: Path, steps: int, *more: str):
    return load_recipe(
        RECIPES / name,
        [
            f"data.corpus_dir={sounds}",
            "data.batch_size=6",
            "data.num_workers=0",
            "model.frontend.n_mels=16",
            "model.tokenizer.vocab_size=64",
            f"train.out_dir={run}",
            f"train.max_steps={steps}",
            f"train.val_every={steps}",
            "train.warmup_steps=2",
            "train.log_every=2",
            "train.lr=3e-3",
            *more,
        ],
    )


@pytest.fixture(scope="module")
def package(sounds, tmp_path_factory) -> Path:
    """A tiny ConvNeXt + AED audio captioner trained for a few steps (its run folder)."""
    run = tmp_path_factory.mktemp("run")
    recipe = tiny_recipe(
        "sounds_caption_convnext_aed_cpu.yaml",
        sounds,
        run,
        12,
        "model.encoder.preset=tiny",
        "model.heads.aed.d_model=64",
        "model.heads.aed.ff_dim=128",
    )
    assert train(recipe, progress=False)
    return run


def test_a_batch_of_sound_scenes_is_features_and_caption_tokens(sounds, package):
    scenes = SoundManifest.from_jsonl(sounds / "train.jsonl")
    model = suite.load(package / "model").model
    batch = audio_caption_batch(scenes, [0, 1, 2], model.frontend, model.tokenizer, seed=0)
    B, T, F = batch.inputs.shape
    assert (B, F) == (3, 16) and batch.lengths.max() == T
    # 20 ms hop: one frame per 20 ms of each scene.
    for i, n in enumerate(batch.lengths.tolist()):
        assert abs(n - scenes[i].duration / 0.02) <= 2
    assert [
        model.tokenizer.decode(t[:n].tolist())
        for t, n in zip(batch.targets, batch.target_lengths, strict=True)
    ] == batch.texts
    assert all(restore_commas(text) in scenes[i].captions for i, text in enumerate(batch.texts))


def test_a_tiny_audio_captioner_trains_and_captions_files_and_arrays(package, sounds):
    rows = [json.loads(line) for line in (package / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in rows if "loss" in row]
    assert losses[-1] < 0.8 * losses[0]
    assert "audio_sec_per_sec" in rows[0]
    last = rows[-1]
    for metric in ("event_recall", "event_precision", "order_accuracy", "cider", "bleu4"):
        assert f"dev_{metric}" in last
    captioner = suite.load(package / "model")
    assert isinstance(captioner, Captioner) and captioner.modality == "audio"
    path = SoundManifest.from_jsonl(sounds / "test.jsonl")[0].source
    audio, rate = sf.read(path, dtype="float32")
    captions = captioner.caption([path, audio, torch.from_numpy(audio)], sample_rate=rate)
    assert len(captions) == 3 and isinstance(captions[0], str) and captions[0]
    assert len(set(captions)) == 1  # one recording in three forms
    assert captioner.caption(path) == captions[:1]  # one path, not in a list
    # Another rate is resampled to the model's.
    slow = audio[::2].copy()
    with pytest.warns(AudioWarning, match="resampled 8 kHz to 16 kHz"):
        assert isinstance(captioner.caption(slow, sample_rate=8000)[0], str)
    with pytest.raises(UserError, match="sample_rate"):
        captioner.caption([audio])


def test_images_given_to_an_audio_captioner_and_audio_to_an_image_one_are_refused(
    package, sounds, tmp_path
):
    captioner = suite.load(package / "model")
    png = tmp_path / "cat.png"
    Image.new("RGB", (16, 16), "red").save(png)
    for image, what in [
        ([str(png)], "an image file"),
        ([Image.open(png)], "a PIL image"),
        ([np.zeros((16, 16, 3), np.uint8)], "image's layout"),
    ]:
        with pytest.raises(ModalityError, match=what) as error:
            captioner.caption(image)
        assert "captions audio" in str(error.value)
    with pytest.raises(ModalityError, match=f"{png} is an image file"):
        captioner.caption([str(png)])
    # An image captioner (same tokenizer, untrained) refuses audio the same way.
    audio_model = captioner.model
    config = load_recipe(REPO / "recipes/vision/scenes_caption_aed_cpu.yaml").model
    config.encoder, config.frontend = (
        {"name": "vit", "preset": "tiny"},
        {
            "name": "image",
            "input_size": 32,
        },
    )
    images = Captioner(build_model(config, audio_model.tokenizer), name="img")
    wav = SoundManifest.from_jsonl(sounds / "test.jsonl")[0].source
    with pytest.raises(ModalityError, match=f"{wav} is an audio file, but .* captions images"):
        images.caption([wav])
    with pytest.raises(ModalityError, match="1-D array .* captions images"):
        images.caption(np.zeros(16000, np.float32))


def test_long_audio_is_captioned_window_by_window_with_timestamps(package, sounds):
    captioner = suite.load(package / "model")
    scenes = SoundManifest.from_jsonl(sounds / "test.jsonl")
    audio = np.concatenate([scenes.load(i) for i in range(4)])  # about 10 s
    seconds = len(audio) / 16000
    [segments] = captioner.caption([audio], sample_rate=16000, timestamps=True, window=3.0)
    assert len(segments) == round(seconds / 3.0) or len(segments) == int(seconds // 3.0)
    assert all(isinstance(s, CaptionSegment) and isinstance(s.text, str) for s in segments)
    assert segments[0].start == 0.0 and segments[-1].end == pytest.approx(seconds, abs=1e-3)
    for a, b in zip(segments, segments[1:], strict=False):
        assert a.end == b.start and a.end - a.start == pytest.approx(3.0, abs=1e-3)
    # Each window's caption is that window captioned alone.
    first = captioner.caption([audio[:48000]], sample_rate=16000)[0]
    assert segments[0].text == first
    joined = captioner.caption([audio], sample_rate=16000, window=3.0)[0]
    assert joined == "; ".join(s.text for s in segments)
    # Window cuts: consecutive, a short tail joins the window before it.
    assert windows(100, 10, 3.0) == [(0, 30), (30, 60), (60, 100)]
    assert windows(110, 10, 3.0) == [(0, 30), (30, 60), (60, 90), (90, 110)]
    assert windows(20, 10, 3.0) == [(0, 20)]
    with pytest.raises(UserError, match="at least"):
        captioner.caption([np.zeros(100, np.float32)], sample_rate=16000)


def test_sound_scores_read_events_counts_and_order_from_the_metadata(sounds):
    scenes = SoundManifest.from_jsonl(sounds / "test.jsonl")
    perfect = score_sound_captions(scenes, [item.captions[-1] for item in scenes])
    assert perfect.event_recall == perfect.event_precision == 1.0
    assert perfect.order_accuracy == perfect.count_accuracy == perfect.attribute_accuracy == 1.0
    assert perfect.bleu4 > 0.5 and perfect.cider > 1.0
    # An absent event named: precision falls, recall does not.
    # (ESC-10's clock is in no procedural scene.)
    train = SoundManifest.from_jsonl(sounds / "train.jsonl")
    plain = SoundManifest(item for item in train if item.background is None)
    assert len(plain) > 0
    worse = score_sound_captions(plain, [f"while a clock ticks, {i.caption}" for i in plain])
    assert worse.event_recall == 1.0 and worse.event_precision < 1.0
    # Nothing named at all: both are zero.
    empty = score_sound_captions(scenes, [""] * len(scenes))
    assert empty.event_recall == empty.event_precision == empty.attribute_accuracy == 0.0
    # Two groups told in the wrong order: order accuracy counts them.
    two = [item for item in scenes if len(item.groups) == 2]
    if two:
        swapped = []
        for item in two:
            (a, b) = item.groups
            swapped.append(f"{_clause(b)}, then {_clause(a)}")
        scores = score_sound_captions(SoundManifest(two), swapped)
        assert scores.order_accuracy == 0.0


def _clause(group: dict) -> str:
    from suite.data.sounds import CLASSES, COUNT_WORDS

    phrase = CLASSES[group["class"]].phrase
    return phrase if group["count"] == 1 else f"{phrase} {COUNT_WORDS[group['count']]}"


def test_cli_captions_audio_and_evaluates_sound_manifests(package, sounds, capsys, tmp_path):
    model = str(package / "model")
    scenes = SoundManifest.from_jsonl(sounds / "test.jsonl")
    wav = tmp_path / "scene.wav"
    sf.write(wav, scenes.load(0), 16000)
    assert cli(["caption", str(wav), "--model", model]) == 0
    out = capsys.readouterr().out.strip()
    assert out and "\t" not in out
    long = tmp_path / "long.flac"
    sf.write(long, np.concatenate([scenes.load(i) for i in range(3)]), 16000)
    assert cli(["caption", str(long), "--model", model, "--window", "2.5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) >= 2 and lines[0].startswith("0.00\t2.50\t")
    png = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(png)
    assert cli(["caption", str(png), str(wav), "--model", model]) == 1
    out, err = capsys.readouterr()
    assert "is an image file" in err and "captions audio" in err and out.startswith(f"{wav}\t")
    assert cli(["evaluate", model, str(sounds / "test.jsonl")]) == 0
    out = capsys.readouterr().out
    for name in ("BLEU-4", "CIDEr", "ROUGE-L", "event recall", "event precision", "order"):
        assert name in out
    rows = (sounds / "test.results.jsonl").read_text().splitlines()
    assert len(rows) == len(scenes) and "precision" in json.loads(rows[0])


def test_a_recipe_whose_frontend_does_not_match_its_manifest_is_refused(sounds, tmp_path):
    recipe = load_recipe(
        REPO / "recipes/vision/scenes_caption_aed_cpu.yaml", [f"data.corpus_dir={sounds}"]
    )
    with pytest.raises(UserError, match="holds sound scenes, but the recipe's frontend reads"):
        CaptionTask().load_split(recipe, "train")


@pytest.mark.parametrize(
    "name",
    [
        "sounds_caption_patch_aed_cpu.yaml",
        "sounds_caption_conformer_aed_cpu.yaml",
        "sounds_caption_convnext_llm_cpu.yaml",
    ],
)
def test_the_other_recipes_build_learn_and_caption(name, sounds, package):
    """One batch, a few optimizer steps on it: the loss falls (the package's tokenizer), and
    the model captions a recording."""
    recipe = tiny_recipe(name, sounds, package / "unused", 1)
    task = CaptionTask()
    scenes = task.load_split(recipe, "train")
    tokenizer = suite.load(package / "model").model.tokenizer
    torch.manual_seed(0)
    model = task.build_model(recipe.model, tokenizer)
    batch = audio_caption_batch(scenes, range(6), model.frontend, tokenizer, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss = model.loss(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    [caption] = Captioner(model).caption([scenes[0].source])
    assert isinstance(caption, str)
