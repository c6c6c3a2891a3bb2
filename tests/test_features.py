"""Fbank: causal frames, chunk-by-chunk == whole signal, padding invariance, Kaldi agreement."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchaudio

from suite.data.collate import pad_sequences
from suite.features import Fbank, FbankState, FrontendError
from suite.registry import create_frontend, list_frontends

SR = 16000


@pytest.fixture(scope="module")
def fbank() -> Fbank:
    return Fbank()


def speechlike(num: int, seed: int = 0) -> torch.Tensor:
    """Noise through a resonance plus a chirp: a spectrum that is not flat."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(num) / SR
    noise = torch.randn(num, generator=g) * 0.05
    return noise + 0.3 * torch.sin(2 * torch.pi * (200 + 800 * t) * t)


def test_registered_as_fbank():
    assert "fbank" in list_frontends()
    frontend = create_frontend("fbank", n_mels=40)
    assert isinstance(frontend, Fbank) and frontend.input_dim == 40 and frontend.sample_rate == SR


def test_shapes_and_frame_count(fbank):
    assert (fbank.win_length, fbank.hop_length) == (400, 160)
    assert (fbank.win_ms, fbank.hop_ms) == (25.0, 10.0)
    assert [fbank.num_frames(n) for n in (0, 399, 400, 559, 560, 16000)] == [0, 0, 1, 1, 2, 98]
    lengths = torch.tensor([16000, 560, 300])
    assert fbank.num_frames(lengths).tolist() == [98, 2, 0]
    feats, out_lengths = fbank(torch.randn(3, 16000), lengths)
    assert feats.shape == (3, 98, 80) and feats.dtype == torch.float32
    assert out_lengths.dtype == torch.int64 and out_lengths.tolist() == [98, 2, 0]
    assert torch.isfinite(feats).all()


def test_frame_t_covers_samples_t_hop_to_t_hop_plus_win(fbank):
    x = speechlike(4000)
    feats, _ = fbank(x[None], torch.tensor([4000]))
    for t in (0, 7, feats.shape[1] - 1):
        start = t * fbank.hop_length
        alone, _ = fbank(x[None, start : start + fbank.win_length], torch.tensor([400]))
        torch.testing.assert_close(feats[0, t], alone[0, 0], atol=1e-4, rtol=0)


def test_silence_stays_finite(fbank):
    feats, _ = fbank(torch.zeros(1, 1600), torch.tensor([1600]))
    assert torch.isfinite(feats).all()


def test_padding_invariance(fbank):
    items = [speechlike(n, seed=n) for n in (16000, 9001, 4321, 399)]
    batch, lengths = pad_sequences(items, padding_value=123.0)  # loud junk padding must not matter
    batch = F.pad(batch, (0, 1000), value=123.0)  # and even the longest item is padded
    feats, out_lengths = fbank(batch, lengths)
    assert feats.shape[1] == int(out_lengths.max())  # no frames made of padding alone
    for i, x in enumerate(items):
        alone, alone_len = fbank(x[None], lengths[i : i + 1])
        n = int(out_lengths[i])
        assert n == int(alone_len)
        torch.testing.assert_close(feats[i, :n], alone[0], atol=1e-4, rtol=0)
        assert (feats[i, n:] == 0).all()  # beyond the length: zeros, whatever the padding


def run_chunked(fbank: Fbank, streams: list[torch.Tensor], seed: int, max_chunk: int):
    """Feed each stream in random chunks (some empty, some shorter than a frame)."""
    g = torch.Generator().manual_seed(seed)
    state = fbank.init_state(len(streams))
    pos = [0] * len(streams)
    outputs = [[] for _ in streams]
    while any(p < x.shape[0] for p, x in zip(pos, streams, strict=True)):
        sizes = [
            min(int(torch.randint(0, max_chunk + 1, (), generator=g)), x.shape[0] - p)
            for p, x in zip(pos, streams, strict=True)
        ]
        pieces = [x[p : p + n] for x, p, n in zip(streams, pos, sizes, strict=True)]
        chunk, chunk_lengths = pad_sequences(pieces)
        chunk = F.pad(chunk, (0, 3))  # a little extra padding
        (feats, lengths), state = fbank.streaming_forward(chunk, chunk_lengths, state)
        assert isinstance(state, FbankState)
        assert state.samples.shape == (len(streams), fbank.win_length - 1)
        assert (state.lengths < fbank.win_length).all()
        for i, n in enumerate(lengths.tolist()):
            outputs[i].append(feats[i, :n])
            pos[i] += sizes[i]
    return [torch.cat(o) for o in outputs]


@pytest.mark.parametrize("seed,max_chunk", [(0, 50), (1, 400), (2, 3000)])
def test_chunked_equals_whole(fbank, seed, max_chunk):
    streams = [speechlike(n, seed=n) for n in (12000, 7777, 450, 100)]
    chunked = run_chunked(fbank, streams, seed, max_chunk)
    for x, got in zip(streams, chunked, strict=True):
        whole, length = fbank(x[None], torch.tensor([x.shape[0]]))
        assert got.shape[0] == int(length)
        torch.testing.assert_close(got, whole[0], atol=1e-4, rtol=0)  # max abs diff <= 1e-4


def test_streaming_state_holds_only_leftover_samples(fbank):
    state = fbank.init_state(1)
    x = speechlike(1000)
    (feats, lengths), state = fbank.streaming_forward(x[None, :300], torch.tensor([300]), state)
    assert lengths.tolist() == [0] and feats.shape == (1, 0, 80) and state.lengths.tolist() == [300]
    (feats, lengths), state = fbank.streaming_forward(x[None, 300:], torch.tensor([700]), state)
    # 1000 samples -> 4 frames (starts 0, 160, 320, 480); 640..999 (360 samples) are kept.
    assert lengths.tolist() == [4] and state.lengths.tolist() == [360]
    torch.testing.assert_close(state.samples[0, :360], x[640:])
    assert (state.samples[0, 360:] == 0).all()


def test_close_to_kaldi_fbank(fbank):
    x = speechlike(16000)
    ours, _ = fbank(x[None], torch.tensor([16000]))
    kaldi = torchaudio.compliance.kaldi.fbank(
        x[None], num_mel_bins=80, dither=0.0, energy_floor=0.0, sample_frequency=SR
    )
    assert kaldi.shape == ours[0].shape
    # Only the mel triangles differ (linear in Hz here, in mel in Kaldi).
    assert (kaldi - ours[0]).abs().mean() < 0.05


def test_bad_input_messages(fbank):
    with pytest.raises(FrontendError, match=r"add a batch dimension"):
        fbank(torch.zeros(1600), torch.tensor([1600]))
    with pytest.raises(FrontendError, match=r"lengths must lie in \[0, 1600\]"):
        fbank(torch.zeros(1, 1600), torch.tensor([2000]))
    with pytest.raises(FrontendError, match="n_fft >= 400"):
        Fbank(n_fft=256)


def test_deterministic_and_no_parameters(fbank):
    x = speechlike(3200)[None]
    a, _ = fbank(x, torch.tensor([3200]))
    b, _ = fbank(x, torch.tensor([3200]))
    assert torch.equal(a, b)
    assert list(fbank.parameters()) == [] and fbank.state_dict() == {}
