"""Video captioning in the caption task: clips composed here batch into frames for the
encoder-free ``patch_video`` adapter; a tiny captioner trains through the shared trainer and its
loss falls; its package captions video files and frame arrays alike, refuses images and audio
(and image and audio captioners refuse videos) with one message naming the input; missing,
empty, random and truncated files each give one clear error while the CLI still captions the
good files; scoring reads objects, motion directions and events from the clip metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import suite
from suite.cli import main as cli
from suite.config import load_recipe
from suite.data.video_scenes import VideoConfig, write_videos
from suite.data.videos import ClipManifest, VideoDataError, write_video
from suite.errors import UserError
from suite.frontends.video import VideoFrontend, frame_indices
from suite.model import build_model
from suite.tasks.caption import Captioner, CaptionTask, ModalityError
from suite.tasks.caption.evaluation import score_video_captions
from suite.tasks.caption.video_data import video_caption_batch
from suite.tokenizers import CharTokenizer
from suite.train import train

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes/caption/videos_caption_patch_aed_cpu.yaml"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Clips of coloured shapes (no image sources needed): 12 frames of 32 px."""
    out = tmp_path_factory.mktemp("clips")
    config = VideoConfig(
        size=32,
        sources=["shape"],
        counts={"train": 48, "dev": 4, "test": 8},
        shard_size=50,
    )
    write_videos(out, config, log=lambda _: None)
    return out


def tiny_recipe(clips: Path, run: Path, steps: int, *more: str):
    return load_recipe(
        RECIPE,
        [
            f"data.corpus_dir={clips}",
            "data.batch_size=8",
            "data.num_workers=0",
            "model.frontend.input_size=32",
            "model.encoder.embed_dim=32",
            "model.heads.aed.d_model=32",
            "model.heads.aed.num_layers=1",
            "model.heads.aed.ff_dim=64",
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
def package(clips, tmp_path_factory) -> Path:
    """A tiny patch_video + AED captioner trained for a few dozen steps (its run folder)."""
    run = tmp_path_factory.mktemp("run")
    assert train(tiny_recipe(clips, run, 40, "train.lr=5e-3"), progress=False)
    return run


@pytest.fixture(scope="module")
def captioner(package) -> Captioner:
    return suite.load(package / "model")


def test_a_batch_of_clips_is_frames_and_caption_tokens(clips, captioner):
    items = ClipManifest.from_jsonl(clips / "train.jsonl")
    model = captioner.model
    batch = video_caption_batch(items, [0, 1, 2], model.frontend, model.tokenizer, seed=0)
    assert batch.inputs.shape == (3, 12, 3, 32, 32)
    assert batch.lengths.tolist() == [12, 12, 12]
    assert batch.prompts == ["caption"] * 3 and batch.ids == [items[i].id for i in range(3)]
    # The inputs are the clip's frames, normalized.
    frames = items.load(1).float() / 255  # (T, C, H, W)
    restored = model.frontend.image.unnormalize(batch.inputs[1])
    assert torch.allclose(restored, frames, atol=1e-5)
    assert [
        model.tokenizer.decode(t[:n].tolist())
        for t, n in zip(batch.targets, batch.target_lengths, strict=True)
    ] == batch.texts
    assert all(text in items[i].captions for i, text in enumerate(batch.texts))
    # Another seed draws other phrasings; no seed takes the first.
    first = video_caption_batch(items, range(8), model.frontend, model.tokenizer)
    assert first.texts == [items[i].caption for i in range(8)]


def test_the_frontend_keeps_frames_spread_over_the_clip_and_pads_short_ones():
    assert frame_indices(12, 4) == [1, 4, 7, 10]
    assert frame_indices(3, 8) == [0, 1, 2]
    frontend = VideoFrontend(num_frames=4, input_size=16)
    clip = torch.arange(12, dtype=torch.uint8)[:, None, None, None].expand(12, 3, 16, 16)
    kept = frontend.prepare(clip)
    assert kept.shape == (4, 3, 16, 16)
    assert (kept[:, 0, 0, 0] * 255).round().tolist() == [1, 4, 7, 10]
    x, lengths = frontend.batch([kept, frontend.prepare(clip[:2])])
    assert x.shape == (2, 4, 3, 16, 16) and lengths.tolist() == [4, 2]
    assert x[1, 2:].abs().sum() == 0  # padding frames are zeros
    assert torch.equal(x[0], frontend(kept[None])[0][0])
    # The encoder is told the frames, size and channels.
    config = load_recipe(RECIPE).model
    config.frontend = {"name": "video", "num_frames": 6, "input_size": 24}
    config.encoder = {"name": "patch_video", "tubelet": 3, "patch_size": 8, "embed_dim": 16}
    config.heads = {"aed": {**config.heads["aed"], "d_model": 16, "num_layers": 1}}
    model = build_model(config, CharTokenizer())
    assert model.encoder.input_size == (6, 3, 24, 24)


def test_a_tiny_video_captioner_trains_and_captions_files_and_arrays(
    package, captioner, clips, tmp_path
):
    rows = [json.loads(line) for line in (package / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in rows if "loss" in row]
    assert len(losses) >= 10 and losses[-1] < 0.75 * losses[0]
    assert "clips_per_sec" in rows[0]
    last = rows[-1]
    for metric in ("object_accuracy", "motion_accuracy", "event_accuracy", "cider"):
        assert f"dev_{metric}" in last
    assert isinstance(captioner, Captioner) and captioner.modality == "video"
    assert "12 frames" in repr(captioner)
    items = ClipManifest.from_jsonl(clips / "test.jsonl")
    frames = items.load(0)  # uint8 (T, C, H, W)
    array = frames.permute(0, 2, 3, 1).numpy()  # (T, H, W, C), as write_video takes
    mkv, mp4, avi = tmp_path / "clip.mkv", tmp_path / "clip.mp4", tmp_path / "clip.avi"
    for path in (mkv, mp4, avi):
        write_video(path, array, fps=8)
    captions = captioner.caption([str(mkv), array, frames, frames.float() / 255])
    assert len(captions) == 4 and isinstance(captions[0], str) and captions[0]
    assert len(set(captions)) == 1  # one clip in four forms (mkv is lossless)
    assert captioner.caption(str(mkv)) == captions[:1]  # one path, not in a list
    assert captioner.caption(frames) == captions[:1]  # one clip's frames
    batch = torch.stack([items.load(i) for i in range(3)])  # (B, T, C, H, W)
    assert captioner.caption(batch) == captioner.caption([items.load(i) for i in range(3)])
    lossy = captioner.caption([mp4, avi])
    assert all(isinstance(c, str) and c for c in lossy)
    # A longer clip keeps num_frames spread over it: the same clip at half speed.
    slow = np.repeat(array, 2, axis=0)
    assert captioner.caption([slow])[0] == captioner.caption([slow[frame_indices(24, 12)]])[0]
    with pytest.raises(UserError, match="timestamps"):
        captioner.caption([array], timestamps=True)
    with pytest.raises(VideoDataError, match=r"video 0 .*float frames must lie in \[0, 1\]"):
        captioner.caption([frames.float()])


def test_images_and_audio_given_to_a_video_captioner_are_refused(captioner, tmp_path):
    png = tmp_path / "cat.png"
    Image.new("RGB", (16, 16), "red").save(png)
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16000, np.float32), 16000)
    for item, what in [
        (str(png), f"{png} is an image file"),
        (str(wav), f"{wav} is an audio file"),
        (Image.open(png), "a PIL image"),
        (np.zeros((16, 16, 3), np.uint8), "image's layout"),
        (np.zeros(16000, np.float32), "audio samples"),
    ]:
        with pytest.raises(ModalityError, match=what) as error:
            captioner.caption([item])
        assert "captions videos" in str(error.value)
        assert "video files (mp4" in str(error.value)  # and the fix


def test_videos_given_to_image_and_audio_captioners_are_refused(captioner, clips, tmp_path):
    tokenizer = captioner.model.tokenizer
    mp4 = tmp_path / "clip.mp4"
    frames = ClipManifest.from_jsonl(clips / "test.jsonl").load(0)
    write_video(mp4, frames, fps=8)
    config = load_recipe(REPO / "recipes/vision/scenes_caption_aed_cpu.yaml").model
    config.encoder, config.frontend = {"name": "vit", "preset": "tiny"}, {"name": "image"}
    images = Captioner(build_model(config, tokenizer), name="img")
    with pytest.raises(ModalityError, match=f"{mp4} is a video file, but .* captions images"):
        images.caption([str(mp4)])
    with pytest.raises(ModalityError, match="a video's frames, but .* load a video captioner"):
        images.caption([frames])
    with pytest.raises(ModalityError, match="the input array is an array of shape"):
        images.caption(frames[None])  # (B, T, C, H, W)
    assert len(images.caption(frames[:2])) == 2  # (B, C, H, W) stays a batch of images
    config = load_recipe(REPO / "recipes/caption/sounds_caption_patch_aed_cpu.yaml").model
    config.frontend = {"name": "fbank", "n_mels": 16}
    config.encoder = {"name": "patch_audio", "preset": "tiny"}
    config.heads = {"aed": {**config.heads["aed"], "d_model": 32, "num_layers": 1}}
    audio = Captioner(build_model(config, tokenizer), name="snd")
    with pytest.raises(ModalityError, match=f"{mp4} is a video file, but .* captions audio"):
        audio.caption([str(mp4)])
    with pytest.raises(ModalityError, match="a video's frames, but .* captions audio"):
        audio.caption(frames.numpy())
    # Evaluating clips with an image captioner says which captioner clips need.
    with pytest.raises(ModalityError, match="clips need a video captioner; this one reads image"):
        CaptionTask().score(images.model, ClipManifest.from_jsonl(clips / "test.jsonl"))


def bad_files(tmp_path: Path, clips: Path) -> dict[str, tuple[Path, str]]:
    """Each kind of unreadable file and what its error says."""
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    noise = tmp_path / "noise.mkv"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    whole = tmp_path / "whole.mp4"
    write_video(whole, ClipManifest.from_jsonl(clips / "test.jsonl").load(0), fps=8)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return {
        "missing": (tmp_path / "missing.mp4", "no video file at"),
        "empty": (empty, r"is empty \(0 bytes\)"),
        "random": (noise, "cannot open .* as a video"),
        "truncated": (cut, "truncated|damaged|cannot open"),
    }


def test_bad_video_files_each_give_one_clear_error(captioner, clips, tmp_path):
    for path, message in bad_files(tmp_path, clips).values():
        with pytest.raises(VideoDataError, match=message) as error:
            captioner.caption([str(path)])
        assert str(path) in str(error.value)


def test_cli_captions_good_videos_beside_bad_ones_and_evaluates_clips(
    package, clips, tmp_path, capsys
):
    model = str(package / "model")
    good = tmp_path / "good.mkv"
    write_video(good, ClipManifest.from_jsonl(clips / "test.jsonl").load(1), fps=8)
    assert cli(["caption", str(good), "--model", model]) == 0
    out = capsys.readouterr().out.strip()
    assert out and "\t" not in out
    bad = bad_files(tmp_path, clips)
    png = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(png)
    paths = [str(p) for p, _ in bad.values()] + [str(png), str(good)]
    assert cli(["caption", *paths, "--model", model]) == 1
    out, err = capsys.readouterr()
    assert out.startswith(f"{good}\t") and len(out.strip().splitlines()) == 1
    lines = err.strip().splitlines()
    assert len(lines) == len(bad) + 1 and all(line.startswith("suite: error: ") for line in lines)
    assert "Traceback" not in err and "is an image file" in lines[-1]
    for line, (path, _) in zip(lines, bad.values(), strict=False):
        assert str(path) in line
    assert cli(["evaluate", model, str(clips / "test.jsonl")]) == 0
    out = capsys.readouterr().out
    for name in ("BLEU-4", "object accuracy", "motion accuracy", "event accuracy"):
        assert name in out
    rows = (clips / "test.results.jsonl").read_text().splitlines()
    assert len(rows) == 8 and "motion" in json.loads(rows[0])
    assert cli(["evaluate", model, str(good)]) == 2
    assert "is a video, not a manifest" in capsys.readouterr().err


def test_video_scores_read_objects_motion_and_events_from_the_metadata(clips):
    items = ClipManifest.from_jsonl(clips / "train.jsonl")
    perfect = score_video_captions(items, [item.captions[-1] for item in items])
    assert perfect.attribute_accuracy == perfect.fact_recall == 1.0
    assert perfect.object_accuracy == perfect.motion_accuracy == perfect.event_accuracy == 1.0
    assert perfect.bleu4 > 0.5
    # Every direction turned around: the things are right, the motions are not (clips with
    # one motion: "moves right then left" turned around has the same two motions).
    turn = {"left": "right", "right": "left", "up": "down", "down": "up"}
    turn |= {"rises": "drops", "drops": "rises"}
    moving = ClipManifest(
        i for i in items if sum(e["action"].startswith("moves_") for e in i.events) == 1
    )
    assert len(moving) > 0
    flipped = []
    for item in moving:
        words = item.caption.split()
        flipped.append(" ".join(turn.get(w, w) for w in words))
    scores = score_video_captions(moving, flipped)
    assert scores.motion_accuracy == 0.0 and scores.event_accuracy == 0.0
    assert scores.object_accuracy == 1.0
    empty = score_video_captions(items, [""] * len(items))
    assert empty.object_accuracy == empty.attribute_accuracy == empty.event_accuracy == 0.0
    with pytest.raises(ValueError, match="captions for"):
        score_video_captions(items, ["x"])


def test_a_recipe_whose_frontend_does_not_match_its_clips_is_refused(clips):
    recipe = load_recipe(
        REPO / "recipes/vision/scenes_caption_aed_cpu.yaml", [f"data.corpus_dir={clips}"]
    )
    with pytest.raises(UserError, match="holds clips, but the recipe's frontend reads images"):
        CaptionTask().load_split(recipe, "train")


@pytest.mark.parametrize(
    "name", ["videos_caption_patch_aed_cpu.yaml", "videos_caption_patch_llm_cpu.yaml"]
)
def test_the_recipes_build_learn_a_batch_and_caption(name, clips, captioner):
    """Each recipe's own sizes (48 px, 216 tubelets; the AED or LLM-adapter head): a few steps
    on one batch lower its loss, and the model captions a clip."""
    recipe = load_recipe(RECIPE.with_name(name), [f"data.corpus_dir={clips}"])
    task = CaptionTask()
    items = task.load_split(recipe, "train")
    tokenizer = captioner.model.tokenizer
    torch.manual_seed(0)
    model = task.build_model(recipe.model, tokenizer)
    batch = video_caption_batch(items, range(4), model.frontend, tokenizer, seed=0)
    assert batch.inputs.shape == (4, 12, 3, 48, 48)  # 32 px clips resized to the recipe's 48
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = model.loss(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    [caption] = Captioner(model).caption([items.load(0)])
    assert isinstance(caption, str)
