"""Squeezeformer specifics: the Temporal U-Net, its causal time reduction, presets and errors.

The shared contracts (no NaN, gradients, padding invariance, no look-ahead leak, streaming equals
offline) run over every registered encoder in ``test_contracts.py``.
"""

from __future__ import annotations

import pytest
import torch

import suite
from suite.encoders.squeezeformer import ScaleBias, Squeezeformer, TimeReduction


def tiny(**kw) -> Squeezeformer:
    torch.manual_seed(0)
    base = {"d_model": 32, "num_layers": 4, "num_heads": 2, "subsampling_channels": 8}
    return Squeezeformer(**{**base, "conv_kernel": 7, **kw}).eval()


@pytest.mark.parametrize("causal", [False, True])
def test_lengths_are_exact(causal):
    model = tiny(causal=causal, input_dim=20)
    for n in [*range(1, 18), 31, 32, 33, 65]:
        out = model(torch.randn(1, n, 20), torch.tensor([n]))
        assert out.features.shape[1] == out.lengths.item() == -(-n // 4)
        assert model.output_lengths(torch.tensor([n])).item() == out.lengths.item()


def test_middle_blocks_run_at_half_rate_and_the_skip_restores_full_rate():
    model = tiny()  # 4 blocks: 0 full rate, 1-2 half rate, 3 full rate
    assert (model.reduce_at, model.recover_at) == (1, 3)
    seen = []
    for layer in model.layers:
        layer.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[1]))
    model(torch.randn(1, 84, 80), torch.tensor([84]))  # 21 encoder frames
    assert seen == [21, 11, 11, 21]


def test_default_unet_layout_follows_the_paper():
    model = Squeezeformer(d_model=32, num_layers=16, num_heads=2)
    assert (model.reduce_at, model.recover_at) == (7, 15)


def test_causal_time_reduction_sees_only_past_frames():
    torch.manual_seed(0)
    reduce = TimeReduction(8, causal=True)
    x = torch.randn(1, 12, 8)
    base, lengths = reduce(x, torch.tensor([12]))
    assert lengths.item() == 6
    for j in range(5):
        y = x.clone()
        y[:, 2 * j + 1 :] += 1.0  # frames after 2j
        out, _ = reduce(y, torch.tensor([12]))
        torch.testing.assert_close(out[:, : j + 1], base[:, : j + 1])
        assert (out[:, j + 1] - base[:, j + 1]).abs().max() > 1e-4


def test_blocks_use_scaled_inputs_and_post_norm():
    block = tiny().layers[0]
    assert isinstance(block.attn.norm, ScaleBias) and isinstance(block.ff1[0], ScaleBias)
    assert isinstance(block.conv.norm_in, ScaleBias)
    assert isinstance(block.norm_ff2, torch.nn.LayerNorm)


def test_streaming_with_full_unet_and_odd_chunks_matches_offline():
    # 6 blocks (two at half rate), 3-frame chunks: reduced frames straddle chunk edges.
    model = tiny(num_layers=6, causal=True, att_context=(3, 2))
    x = torch.randn(1, 173, 80)
    with torch.no_grad():
        want = model(x, torch.tensor([173])).features
        state, outs = model.init_state(1), []
        for start in range(0, 173, 9):
            piece = x[:, start : start + 9]
            out, state = model.streaming_forward(
                piece, torch.tensor([piece.shape[1]]), state, final=start + 9 >= 173
            )
            outs.append(out.features[0, : out.lengths[0]])
    torch.testing.assert_close(torch.cat(outs)[None], want, atol=1e-4, rtol=0)


def test_presets_and_sizes():
    counts = {
        p: sum(x.numel() for x in suite.create_encoder("squeezeformer", preset=p).parameters())
        for p in ("tiny", "small")
    }
    assert counts["tiny"] < 0.5e6
    assert 5e6 < counts["small"] < 6.25e6  # the conformer "small" package budget


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_layers": 1}, "reduce_at < recover_at"),
        ({"reduce_at": 3, "recover_at": 2}, "reduce_at < recover_at"),
        ({"recover_at": 4}, "recover_at < num_layers"),
        ({"att_context": (-3, 0)}, "left >= -1"),
        ({"conv_kernel": 8}, "odd"),
    ],
)
def test_bad_options_are_explained(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kwargs)


def test_wrong_feature_size_is_explained():
    with pytest.raises(ValueError, match="input_dim"):
        tiny()(torch.randn(1, 20, 40), torch.tensor([20]))
