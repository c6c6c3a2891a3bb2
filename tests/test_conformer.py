"""FastConformer specifics: exact lengths, causality, rotary, presets and teaching errors."""

from __future__ import annotations

import itertools

import pytest
import torch

import suite
from suite.encoders.conformer import Conformer
from suite.nn.convolution import ConvModule
from suite.nn.rotary import rotate
from suite.nn.step import StreamStep
from suite.registry import RegistryError


def tiny(**kw) -> Conformer:
    torch.manual_seed(0)
    return Conformer(d_model=32, num_layers=2, num_heads=2, subsampling_channels=8, **kw).eval()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("factor", [4, 8])
def test_lengths_are_exact(causal, factor):
    model = tiny(causal=causal, subsampling_factor=factor, input_dim=20)
    for n in [*range(1, 20), 31, 32, 33, 64, 65]:
        out = model(torch.randn(1, n, 20), torch.tensor([n]))
        assert out.features.shape[1] == out.lengths.item()
        assert out.lengths.item() == -(-n // factor)  # ceil(n / factor)
        assert model.output_lengths(torch.tensor([n])).item() == out.lengths.item()


def test_padded_frames_are_zero():
    model = tiny()
    out = model(torch.randn(2, 50, 80), torch.tensor([50, 20]))
    assert out.lengths.tolist() == [7, 3]
    assert out.features[1, 3:].abs().sum() == 0


def test_feed_forwards_skip_padding_frames_and_real_frames_are_unchanged():
    model = tiny()
    lengths = torch.tensor([50, 20, 33])
    calls = []
    model.layers[0].ff1.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    x = torch.randn(3, 50, 80)
    out = model(x, lengths)
    assert calls == [int(out.lengths.sum())]  # the real frames only, gathered (7 + 3 + 5)
    for b, n in enumerate(lengths.tolist()):  # each item alone: no padding, every frame
        alone = model(x[b : b + 1, :n], lengths[b : b + 1])
        m = int(alone.lengths)
        torch.testing.assert_close(out.features[b, :m], alone.features[0], atol=1e-5, rtol=0)
    assert calls[1:] == [1, 1, 1]  # alone, nothing is padding: the (1, T', D) batch as it is


def test_fully_causal_setting_never_looks_ahead():
    # causal convs + 1-frame chunks with unlimited left: encoder frame e depends on input
    # frames <= 8e only (each causal stride-2 stage: output t sees inputs <= 2t).
    model = tiny(causal=True, att_context=(-1, 0))
    x = torch.randn(1, 96, 80)
    base = model(x, torch.tensor([96])).features
    for e in (0, 3, 7):
        y = x.clone()
        y[:, 8 * e + 1 :] = torch.randn_like(y[:, 8 * e + 1 :])
        out = model(y, torch.tensor([96])).features
        torch.testing.assert_close(out[:, : e + 1], base[:, : e + 1], atol=1e-5, rtol=0)
        assert (out[:, e + 1] - base[:, e + 1]).abs().max() > 1e-3  # the test can fail


def test_full_context_does_look_ahead():
    model = tiny()
    x = torch.randn(1, 96, 80)
    y = x.clone()
    y[:, 90:] += 1.0
    a, b = model(x, torch.tensor([96])).features, model(y, torch.tensor([96])).features
    assert (a[:, 0] - b[:, 0]).abs().max() > 1e-4


def test_rotary_scores_depend_only_on_distance():
    torch.manual_seed(0)
    inv_freq = 10000.0 ** (-torch.arange(0, 8, 2).double() / 8)
    q, k = torch.randn(1, 1, 1, 8, dtype=torch.float64), torch.randn(1, 1, 1, 8).double()
    dots = [
        (rotate(q, torch.tensor([m + 3]), inv_freq) * rotate(k, torch.tensor([m]), inv_freq))
        .sum()
        .item()
        for m in (0, 5, 100)
    ]
    assert dots == pytest.approx([dots[0]] * 3, abs=1e-9)
    # Rotation preserves norms.
    torch.testing.assert_close(rotate(q, torch.tensor([7]), inv_freq).norm(), q.norm())


def test_att_context_from_yaml_list_and_reassignment():
    model = tiny(att_context=[16, 3])
    assert model.att_context == (16, 3)
    model.att_context = None
    assert model.att_context is None


def test_presets_and_sizes():
    counts = {}
    for preset in ("tiny", "small", "medium"):
        model = suite.create_encoder("conformer", preset=preset)
        counts[preset] = sum(p.numel() for p in model.parameters())
    assert counts["tiny"] < 0.5e6
    assert 5e6 < counts["small"] < 6.25e6  # 25 MB in fp32 leaves room for the CTC head
    assert counts["small"] < counts["medium"]
    assert suite.create_encoder("conformer", preset="tiny", input_dim=40).input_dim == 40


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"d_model": 30, "num_heads": 4}, "even"),
        ({"d_model": 36, "num_heads": 4}, "even"),
        ({"conv_kernel": 8}, "odd"),
        ({"subsampling_factor": 6}, "power of two"),
        ({"att_context": (-3, 0)}, "left >= -1"),
    ],
)
def test_bad_options_are_explained(kwargs, match):
    base = {"d_model": 32, "num_layers": 1, "num_heads": 2}
    with pytest.raises(ValueError, match=match):
        Conformer(**{**base, **kwargs})


def test_wrong_feature_size_is_explained():
    with pytest.raises(ValueError, match="input_dim"):
        tiny()(torch.randn(1, 20, 40), torch.tensor([20]))


def test_unknown_option_lists_valid_ones():
    with pytest.raises(RegistryError, match="att_context"):
        suite.create_encoder("conformer", preset="tiny", att_contxt=(4, 1))


@pytest.mark.parametrize(("streams", "chunk"), [(1, 4), (3, 16), (40, 32)])
def test_conv_module_streaming_equals_causal_forward(streams, chunk):
    # 4-48 rows take the product-and-sum depthwise path of a streaming step, 1280 rows oneDNN's.
    torch.manual_seed(0)
    conv = ConvModule(24, 9, causal=True).eval()
    x = torch.randn(streams, 5 * chunk, 24)
    expected = conv(x, torch.ones(streams, 5 * chunk, 1))
    cache, outs = torch.zeros(streams, 8, 24), []
    empty = torch.empty(0)
    for piece in x.split(chunk, dim=1):
        step = StreamStep(keep=None, advance=chunk, cos=empty, sin=empty, mask=None, cache_size=0)
        out, cache = conv.streaming_forward(piece, step, cache)
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs, dim=1), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("context", [(8, 3), (6, 1), (7, 3), None])
@pytest.mark.parametrize("stride", [1, 2])
def test_stream_step_mask_is_none_only_when_every_key_is_visible(context, stride):
    """A step skips building its mask only when every query sees every key: its verdict
    (read from the streams' first positions) agrees with the built mask for blocks of one or
    two chunks, aligned to a chunk or not, with and without empty cache slots, with a cache
    that fits the context's window or reaches past it."""
    from suite.kernels.attention import cached_attention_mask
    from suite.nn.context import cache_frames
    from suite.nn.step import stream_step

    inv_freq = torch.ones(2)
    window = cache_frames(context if context is not None else (8, 3), stride)
    skipped = 0
    for M, T in itertools.product((window, window + 4), (1, 2, 4, 8)):  # + 4: past the window
        for starts in ([0], [M - 1], [M], [M + 1], [M + 4], [M + 2, M + 6], [M + 4, M + 8]):
            positions = torch.tensor(starts)[:, None] + torch.arange(T)
            valid = torch.ones_like(positions, dtype=torch.bool)
            step = stream_step(valid, positions, context, M, inv_freq, stride)
            cache_pos = positions[:, :1] - M + torch.arange(M)
            k_pos = torch.cat([cache_pos, positions], dim=1)
            k_valid = torch.cat([cache_pos >= 0, valid], dim=1)
            want = cached_attention_mask(positions, k_pos, valid, k_valid, context, stride)
            if step.mask is None:
                skipped += 1
                assert bool(want.all()), (T, starts)
            else:
                assert torch.equal(step.mask, want) and not bool(want.all()), (T, starts)
    assert skipped > 0  # the usual step (one aligned chunk, full cache) skips it
