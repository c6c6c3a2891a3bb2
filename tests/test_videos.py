"""Video reading and writing: frames round-trip through mp4, avi and mkv; frame selection
(step, max_frames, num_frames) keeps the right frames and rate; every bad input (missing,
folder, empty, random bytes, text, a still image, audio only, truncated) raises VideoDataError
naming the file and a fix; real footage from Debian's opencv-doc decodes when installed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from suite.data.videos import (
    ClipManifest,
    VideoDataError,
    load_clip,
    read_video,
    read_video_uint8,
    video_info,
    write_video,
)
from suite.errors import UserError

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


def moving_square(frames: int = 10, height: int = 32, width: int = 48) -> np.ndarray:
    """``uint8 (T, H, W, 3)``: a smooth gradient with a red square moving right 2 px a frame."""
    out = np.zeros((frames, height, width, 3), np.uint8)
    out[..., 1] = np.linspace(20, 120, width, dtype=np.uint8)[None, None, :]
    out[..., 2] = np.linspace(30, 90, height, dtype=np.uint8)[None, :, None]
    for t in range(frames):
        out[t, 8:18, 4 + 2 * t : 14 + 2 * t] = (220, 40, 40)
    return out


@pytest.mark.parametrize(("suffix", "tolerance"), [(".mkv", 0.0), (".mp4", 0.02), (".avi", 0.02)])
def test_round_trip(tmp_path: Path, suffix: str, tolerance: float) -> None:
    frames = moving_square()
    path = write_video(tmp_path / f"clip{suffix}", frames, fps=8)
    video, fps = read_video(path)
    assert video.shape == (10, 3, 32, 48) and video.dtype == torch.float32
    assert 0 <= video.min() and video.max() <= 1
    assert fps == pytest.approx(8)
    expected = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    assert (video - expected).abs().mean() <= tolerance + 1e-6
    # The square's red centroid moves right by 2 px a frame whatever the codec.
    red = (video[:, 0] > 0.6) & (video[:, 1] < 0.35)  # (T, H, W)
    xs = torch.arange(48).float()
    centroid = (red.float() * xs).sum((1, 2)) / red.sum((1, 2))
    assert torch.allclose(centroid.diff(), torch.full((9,), 2.0), atol=0.3)
    info = video_info(path)
    assert (info["width"], info["height"], info["fps"]) == (48, 32, 8)
    assert info["duration"] == pytest.approx(10 / 8, abs=0.01)


def test_frame_selection(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mkv", moving_square(frames=20), fps=10)
    all_frames, _ = read_video_uint8(path)
    assert all_frames.dtype == torch.uint8 and len(all_frames) == 20
    every_third, fps = read_video_uint8(path, step=3)
    assert torch.equal(every_third, all_frames[::3]) and fps == pytest.approx(10 / 3)
    first, _ = read_video_uint8(path, max_frames=4, step=2)
    assert torch.equal(first, all_frames[0:8:2])
    spread, fps = read_video_uint8(path, num_frames=5)  # one in the middle of each 0.4 s
    assert torch.equal(spread, all_frames[[2, 6, 10, 14, 18]]) and fps == pytest.approx(2.5)
    with pytest.raises(VideoDataError, match="num_frames alone"):
        read_video(path, num_frames=4, step=2)
    with pytest.raises(VideoDataError, match="step must be at least 1"):
        read_video(path, step=0)
    with pytest.raises(VideoDataError, match="pass num_frames=, max_frames= or step="):
        read_video(path, max_values=3 * 32 * 48 * 5)
    assert len(read_video(path, max_values=3 * 32 * 48 * 5, step=4)[0]) == 5


def test_duration_not_stated_or_longer_audio(tmp_path: Path) -> None:
    """An audio track longer than the video is not a truncation, and ``num_frames`` spreads
    over the video alone; a raw h264 stream states no duration nor times at all."""
    import av

    frames = moving_square()
    path = tmp_path / "with_audio.mkv"
    with av.open(str(path), "w") as container:
        video = container.add_stream("ffv1", rate=8)
        video.width, video.height, video.pix_fmt = 48, 32, "bgr0"
        audio = container.add_stream("pcm_s16le", rate=8000)
        audio.layout = "mono"
        for image in frames:  # 1.25 s of video
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode())
        for k in range(24):  # 3 s of audio
            chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1000), np.int16), "s16", "mono")
            chunk.sample_rate, chunk.pts = 8000, k * 1000
            container.mux(audio.encode(chunk))
        container.mux(audio.encode())
    whole, fps = read_video_uint8(path)
    assert torch.equal(whole, torch.from_numpy(frames).permute(0, 3, 1, 2)) and fps == 8
    spread, fps = read_video_uint8(path, num_frames=5)
    assert torch.equal(spread, whole[[1, 3, 5, 7, 9]]) and fps == pytest.approx(4)
    raw = tmp_path / "raw.h264"
    with av.open(str(raw), "w", format="h264") as container:
        video = container.add_stream("libx264", rate=8)
        video.width, video.height, video.pix_fmt = 48, 32, "yuv420p"
        for image in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode())
    assert video_info(raw)["duration"] == 0
    assert len(read_video(raw)[0]) == 10 and len(read_video(raw, num_frames=5)[0]) == 5


def test_size_change_mid_stream_keeps_the_first_size(tmp_path: Path) -> None:
    import av

    parts = []
    for width, height in ((48, 32), (64, 48)):
        path = tmp_path / f"{width}.h264"
        with av.open(str(path), "w", format="h264") as container:
            video = container.add_stream("libx264", rate=8)
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            for k in range(4):
                image = np.full((height, width, 3), 60 * k, np.uint8)
                container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(video.encode())
        parts.append(path.read_bytes())
    joined = tmp_path / "joined.h264"
    joined.write_bytes(b"".join(parts))  # a raw stream may change size mid-way
    frames, _ = read_video(joined)
    assert frames.shape == (8, 3, 32, 48)
    assert frames[4:].mean() < frames[3].mean()  # the second part starts dark again


def _bad_inputs(folder: Path) -> dict[str, Path]:
    good = write_video(folder / "good.mp4", moving_square(), fps=8)
    lossless = write_video(folder / "good.mkv", moving_square(), fps=8)
    files = {
        "missing": folder / "missing.mp4",
        "folder": folder / "a_folder.mp4",
        "empty": folder / "empty.mp4",
        "random": folder / "random.mp4",
        "text": folder / "notes.txt",
        "image": folder / "still.png",
        "audio": folder / "sound.wav",
        "truncated_mp4": folder / "cut.mp4",
        "truncated_mkv": folder / "cut.mkv",
    }
    files["folder"].mkdir()
    files["empty"].write_bytes(b"")
    files["random"].write_bytes(np.random.default_rng(0).bytes(5000))
    files["text"].write_text("hello world, this is not a video\n" * 50)
    Image.fromarray(moving_square()[0]).save(files["image"])
    sf.write(files["audio"], np.zeros(8000, np.float32), 16000)
    data = good.read_bytes()
    files["truncated_mp4"].write_bytes(data[: len(data) // 2])
    data = lossless.read_bytes()
    files["truncated_mkv"].write_bytes(data[: len(data) // 2])
    return files


HINTS = {
    "missing": "check the path",
    "folder": "not a video file",
    "empty": "empty (0 bytes)",
    "random": "not a container FFmpeg reads",
    "text": "not a video",
    "image": "still image",
    "audio": "no video stream",
    "truncated_mp4": "cut off",
    "truncated_mkv": "truncated",
}


@pytest.mark.parametrize("kind", list(HINTS))
def test_bad_inputs_name_the_file_and_the_fix(tmp_path: Path, kind: str) -> None:
    path = _bad_inputs(tmp_path)[kind]
    with pytest.raises(VideoDataError) as caught:
        read_video(path)
    message = str(caught.value)
    assert isinstance(caught.value, UserError)
    assert str(path) in message and HINTS[kind] in message, message


def test_not_a_path_and_write_errors(tmp_path: Path) -> None:
    with pytest.raises(VideoDataError, match="expected a video file path, got a ndarray"):
        read_video(np.zeros(3))  # type: ignore[arg-type]
    with pytest.raises(VideoDataError, match="choose a suffix"):
        write_video(tmp_path / "x.gif", moving_square(), fps=8)
    with pytest.raises(VideoDataError, match="even frame sides"):
        write_video(tmp_path / "x.mp4", moving_square(width=47), fps=8)
    with pytest.raises(VideoDataError, match=r"expected frames \(T, 3, H, W\)"):
        write_video(tmp_path / "x.mkv", torch.zeros(4, 1, 8, 8), fps=8)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_float_tensor_frames_and_fractional_rate(tmp_path: Path) -> None:
    frames = torch.from_numpy(moving_square()).permute(0, 3, 1, 2).float() / 255
    path = write_video(tmp_path / "clip.mkv", frames, fps=29.97)
    video, fps = read_video(path)
    assert fps == pytest.approx(29.97, abs=0.01)
    assert (video - frames).abs().max() <= 1 / 255 + 1e-6


@pytest.mark.skipif(not VTEST.is_file(), reason="apt-get install opencv-doc for vtest.avi")
def test_real_footage_decodes() -> None:
    info = video_info(VTEST)
    assert (info["width"], info["height"], info["frames"]) == (768, 576, 795)
    video, fps = read_video(VTEST, num_frames=6)  # spread over the 79.5 s
    assert video.shape == (6, 3, 576, 768)
    assert fps == pytest.approx(6 / 79.5, rel=0.01)
    assert 0.1 < video.mean() < 0.9 and (video[1:] - video[:-1]).abs().mean() > 0.01
    head, fps = read_video(VTEST, max_frames=3)
    assert head.shape == (3, 3, 576, 768) and fps == pytest.approx(10)
    with pytest.raises(VideoDataError, match="too long to hold"):  # the whole file: 1 GiB
        read_video(VTEST, max_values=4 * 3 * 576 * 768)


def test_clip_manifest_and_npz_members(tmp_path: Path) -> None:
    frames = moving_square()
    np.savez_compressed(tmp_path / "00000.npz", **{"train-000000": frames})
    line = {"id": "train-000000", "source": str(tmp_path / "00000.npz")}
    line |= {"member": "train-000000", "fps": 8.0, "caption": "a red square moves right"}
    manifest_path = tmp_path / "train.jsonl"
    manifest_path.write_text(json.dumps(line) + "\n")
    manifest = ClipManifest.from_jsonl(manifest_path)
    assert len(manifest) == 1 and manifest[0].captions == ("a red square moves right",)
    assert torch.equal(manifest.load(0), torch.from_numpy(frames).permute(0, 3, 1, 2))
    with pytest.raises(VideoDataError, match="holds no clip train-000001"):
        load_clip(tmp_path / "00000.npz", "train-000001")
    with pytest.raises(VideoDataError, match="no clip shard"):
        load_clip(tmp_path / "missing.npz", "train-000000")
    with pytest.raises(VideoDataError, match="synth-videos --out"):
        ClipManifest.from_jsonl(tmp_path / "dev.jsonl")
    manifest_path.write_text('{"id": "x", "source": "y", "colour": "red"}\n')
    with pytest.raises(VideoDataError, match=r"train.jsonl:1 is not a clip"):
        ClipManifest.from_jsonl(manifest_path)
    os.remove(manifest_path)
