"""load_audio: every bad input is one AudioError naming the file and the fix; repairs warn once."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from suite.audio import (
    AudioError,
    AudioWarning,
    check_audio_file,
    load_audio,
    prepare_samples,
    read_audio_file,
)
from suite.errors import UserError

SR = 16000


def tone(seconds: float = 0.5, sr: int = SR, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write(path: Path, samples: np.ndarray, sr: int = SR, **kwargs) -> Path:
    sf.write(str(path), samples, sr, **kwargs)
    return path


def load_error(source, **kwargs) -> str:
    with pytest.raises(AudioError) as info:
        load_audio(source, **kwargs)
    message = str(info.value)
    assert "\n" not in message, "errors are one line"
    return message


def test_good_file_loads_as_mono_float32(tmp_path):
    path = write(tmp_path / "ok.wav", tone())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean 16 kHz mono file must not warn
        out = load_audio(path)
    assert out.dtype == np.float32 and out.shape == (SR // 2,)
    np.testing.assert_allclose(out, tone(), atol=1e-4)  # PCM_16 round trip
    assert np.array_equal(load_audio(str(path)), out)  # str paths too


def test_audio_error_is_a_user_error():
    assert issubclass(AudioError, UserError)


def test_missing_file(tmp_path):
    path = tmp_path / "data" / "nope.wav"
    message = load_error(path)
    assert str(path) in message and "does not exist" in message and "check the path" in message


def test_directory_is_not_a_file(tmp_path):
    message = load_error(tmp_path)
    assert str(tmp_path) in message and "not a file" in message


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.touch()
    message = load_error(path)
    assert str(path) in message and "empty (0 bytes)" in message and "re-export" in message


def test_corrupt_file(tmp_path):
    path = tmp_path / "noise.wav"
    path.write_bytes(b"this is not audio at all" * 40)
    message = load_error(path)
    assert str(path) in message and "cannot decode" in message and "ffmpeg" in message


def test_truncated_wav_is_detected_from_its_header(tmp_path):
    full = write(tmp_path / "full.wav", tone(1.0))
    data = full.read_bytes()
    path = tmp_path / "cut_short.wav"
    path.write_bytes(data[: len(data) // 2])
    # libsndfile alone would quietly return the first half; the RIFF header knows better.
    assert sf.info(str(path)).frames < SR
    message = load_error(path)
    assert str(path) in message and "truncated" in message
    assert f"promises {SR} frames" in message and "re-export" in message


def test_truncated_flac_fails_while_decoding(tmp_path):
    full = write(tmp_path / "full.flac", np.random.default_rng(0).normal(0, 0.1, SR))
    data = full.read_bytes()
    path = tmp_path / "cut_short.flac"
    path.write_bytes(data[: len(data) // 2])
    message = load_error(path)
    assert str(path) in message and "truncated" in message and "re-export" in message


def test_streamed_wav_with_unknown_length_is_accepted(tmp_path):
    path = write(tmp_path / "streamed.wav", tone())
    data = bytearray(path.read_bytes())
    data_at = data.index(b"data")
    data[data_at + 4 : data_at + 8] = b"\xff\xff\xff\xff"  # how streaming writers mark it
    path.write_bytes(bytes(data))
    assert load_audio(path).shape == (SR // 2,)


def test_zero_length_file(tmp_path):
    path = write(tmp_path / "silent.wav", np.zeros(0, dtype=np.float32))
    message = load_error(path)
    assert str(path) in message and "zero-length" in message and "drop it" in message


def test_nan_and_inf_samples_in_a_file(tmp_path):
    samples = tone()
    samples[100] = np.nan
    samples[200] = np.inf
    path = write(tmp_path / "nan.wav", samples, subtype="FLOAT")
    message = load_error(path)
    assert str(path) in message and "2 NaN/Inf" in message and "sample 100" in message
    assert "re-export" in message


def test_resampling_warns_once_with_the_right_length(tmp_path):
    path = write(tmp_path / "cd.wav", tone(1.0, sr=44100), sr=44100)
    with pytest.warns(AudioWarning) as record:
        out = load_audio(path)
    assert len(record) == 1
    message = str(record[0].message)
    assert str(path) in message and "44.1 kHz to 16 kHz" in message and "\n" not in message
    assert out.shape == (SR,) and out.dtype == np.float32
    # The tone survives resampling: its spectrum peaks at 440 Hz.
    assert abs(np.argmax(np.abs(np.fft.rfft(out))) * SR / out.shape[0] - 440) < 2


def test_stereo_is_downmixed_with_one_warning(tmp_path):
    left, right = tone(), tone(freq=880.0)
    path = write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), subtype="FLOAT")
    with pytest.warns(AudioWarning) as record:
        out = load_audio(path)
    assert len(record) == 1
    assert str(path) in str(record[0].message) and "2 channels to mono" in str(record[0].message)
    np.testing.assert_allclose(out, (left + right) / 2, atol=1e-6)


def test_stereo_at_another_rate_warns_for_each_repair(tmp_path):
    path = write(tmp_path / "both.wav", np.zeros((8000, 2), np.float32) + 0.1, sr=8000)
    with pytest.warns(AudioWarning) as record:
        out = load_audio(path)
    assert len(record) == 2 and out.shape == (SR,)


def test_target_sample_rate(tmp_path):
    path = write(tmp_path / "ok.wav", tone(1.0))
    with pytest.warns(AudioWarning, match="16 kHz to 8 kHz"):
        assert load_audio(path, target_sample_rate=8000).shape == (8000,)


def test_array_needs_a_sample_rate():
    message = load_error(tone())
    assert "input array" in message and "pass sample_rate=" in message


@pytest.mark.parametrize(
    "make",
    [
        lambda x: x,
        lambda x: x[None],  # (1, S)
        lambda x: x[:, None],  # (S, 1)
        lambda x: torch.from_numpy(x),
        lambda x: torch.from_numpy(x).to(torch.bfloat16).requires_grad_(),
        lambda x: (x * 32767).astype(np.int16),
    ],
    ids=["1d", "1xS", "Sx1", "tensor", "bf16-grad", "int16"],
)
def test_arrays_and_tensors(make):
    out = load_audio(make(tone()), sample_rate=SR)
    assert out.dtype == np.float32 and out.shape == (SR // 2,)
    np.testing.assert_allclose(out, tone(), atol=1e-2)


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_multichannel_array_layouts(layout):
    stereo = np.stack([tone(), -tone()])  # (2, S), averages to silence
    stereo[0] += 0.5
    source = stereo if layout == "channels_first" else stereo.T
    with pytest.warns(AudioWarning, match="input array: down-mixed 2 channels"):
        out = load_audio(source, sample_rate=SR)
    np.testing.assert_allclose(out, np.full(SR // 2, 0.25, np.float32), atol=1e-6)


def test_array_resampling_length():
    with pytest.warns(AudioWarning, match="8 kHz to 16 kHz"):
        out = load_audio(tone(0.25, sr=8000), sample_rate=8000)
    assert out.shape == (4000,)


@pytest.mark.parametrize("shape", [(100, 16000), (3, 4), (2, 3, 1000)])
def test_ambiguous_or_batched_arrays_are_refused(shape):
    message = load_error(np.zeros(shape, np.float32), sample_rate=SR)
    assert str(shape) in message and "input array" in message and "one utterance" in message


def test_array_errors():
    assert "zero-length" in load_error(np.zeros(0, np.float32), sample_rate=SR)
    assert "NaN/Inf" in load_error(np.array([0.0, np.nan] * 400), sample_rate=SR)
    assert "dtype complex64" in load_error(np.zeros(400, np.complex64), sample_rate=SR)
    assert "positive whole number" in load_error(tone(), sample_rate=-5)
    assert "got list" in load_error([0.0, 0.1])


def test_prepare_samples_and_read_audio_file(tmp_path):
    path = write(tmp_path / "stereo.wav", np.zeros((400, 2), np.float32) + 0.5, subtype="FLOAT")
    samples, rate = read_audio_file(path)
    assert samples.shape == (2, 400) and rate == SR  # as stored
    with pytest.warns(AudioWarning, match="cut a"):
        mono = prepare_samples(samples, rate, SR, name="cut a")
    assert mono.shape == (400,)
    with pytest.raises(AudioError, match="cut b"):
        prepare_samples(np.zeros((1, 0)), SR, name="cut b")


def test_check_audio_file_needs_no_decoding(tmp_path):
    path = write(tmp_path / "ok.wav", tone())
    assert check_audio_file(str(path)) == path
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(AudioError, match="truncated"):
        check_audio_file(path)


def test_int64_arrays_of_int16_values_read_as_int16():
    pcm = (tone() * 32767).astype(np.int16)
    as_list = np.array(pcm.tolist())  # what a list of ints becomes: int64
    assert as_list.dtype == np.int64
    with pytest.warns(AudioWarning, match="int64 samples read as int16 PCM"):
        out = load_audio(as_list, sample_rate=SR)
    np.testing.assert_array_equal(out, load_audio(pcm, sample_rate=SR))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # zeros read the same at any width: nothing to say
        assert not load_audio(np.zeros(SR, np.int64), sample_rate=SR).any()
    message = load_error(np.array([0, 2**20] * 400), sample_rate=SR)
    assert "beyond int16's range" in message and "float32" in message


def test_int32_arrays_of_int16_values_warn():
    pcm = (tone() * 32767).astype(np.int32)
    with pytest.warns(AudioWarning, match=r"near silence.*astype\(np.int16\)"):
        load_audio(pcm, sample_rate=SR)


@pytest.mark.parametrize("rate", [1, 999, 384_001, 10**7])
def test_absurd_sample_rates_are_refused(rate):
    message = load_error(tone(), sample_rate=rate)
    assert f"{rate} Hz" in message and "between 1 kHz and 384 kHz" in message
    assert "sample_rate=16000" in message


def test_sample_rate_as_a_string_is_refused():
    message = load_error(tone(), sample_rate="16000")
    assert "the string '16000'" in message and "sample_rate=16000" in message


def test_extreme_but_real_rates_load():
    with pytest.warns(AudioWarning):
        assert load_audio(tone(0.1, sr=384_000), sample_rate=384_000).shape == (1600,)
    with pytest.warns(AudioWarning):
        assert load_audio(np.zeros(100, np.float32) + 0.1, sample_rate=1000).shape == (1600,)


def test_file_with_an_absurd_rate_in_its_header(tmp_path):
    path = write(tmp_path / "slow.wav", tone(), sr=100)
    message = load_error(path)
    assert str(path) in message and "100 Hz" in message and "re-export" in message


def ffmpeg_pipe_wav(pcm: np.ndarray, data_size: int) -> bytes:
    """A WAV as ffmpeg writes it into a pipe: unknown sizes, a LIST chunk before the data."""
    fmt = struct.pack("<HHIIHH", 1, 1, SR, SR * 2, 2, 16)
    info = b"INFO" + b"ISFT" + struct.pack("<I", 14) + b"Lavf59.27.100\0"
    return (
        b"RIFF\xff\xff\xff\xffWAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"LIST"
        + struct.pack("<I", len(info))
        + info
        + b"data"
        + struct.pack("<I", data_size)
        + pcm.astype("<i2").tobytes()
    )


@pytest.mark.parametrize("data_size", [0xFFFFFFFF, 0], ids=["0xFFFFFFFF", "0"])
def test_piped_wav_is_read_to_the_end(tmp_path, data_size):
    pcm = (tone(3.0) * 32767).astype(np.int16)
    path = tmp_path / "piped.wav"
    path.write_bytes(ffmpeg_pipe_wav(pcm, data_size))
    out = load_audio(path)
    np.testing.assert_array_equal(out, pcm / np.float32(32768))


def test_truncated_ogg_is_detected_from_its_last_page(tmp_path):
    full = write(tmp_path / "full.ogg", np.random.default_rng(0).normal(0, 0.1, 3 * SR))
    data = full.read_bytes()
    assert load_audio(full).shape == (3 * SR,)
    pages = [i for i in range(len(data)) if data.startswith(b"OggS", i)]
    assert len(pages) > 3
    # libsndfile reads both as shorter, valid files: only the last page tells.
    for cut, why in [(pages[-1], "does not end the stream"), (len(data) - 100, "inside an Ogg")]:
        path = tmp_path / f"cut_{cut}.ogg"
        path.write_bytes(data[:cut])
        assert 0 < sf.info(str(path)).frames < 3 * SR
        message = load_error(path)
        assert str(path) in message and "truncated" in message and why in message
        assert "re-export" in message
