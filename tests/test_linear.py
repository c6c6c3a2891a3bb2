"""``suite.kernels.linear``: the same result and gradients as ``F.linear`` on either path."""

import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import suite.kernels.linear  # noqa: F401  (the module, for its switch)
from suite.kernels.linear import FEW_ROWS, Linear, last_level_cache_bytes, linear

KERNELS_LINEAR = sys.modules["suite.kernels.linear"]  # the package re-exports the function


@pytest.fixture(params=[True, False], ids=["transposed", "f_linear"])
def orientation(request, monkeypatch):
    """Both orientations, whichever this machine's cache picks."""
    monkeypatch.setattr(KERNELS_LINEAR, "TRANSPOSED", request.param)
    return request.param


@pytest.mark.parametrize("shape", [(1, 24), (2, 24), (2, 8, 24), (17, 24), (2, 100, 24)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_equals_f_linear_with_gradients(shape, with_bias, orientation):
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    weight = torch.randn(40, 24, requires_grad=True)
    bias = torch.randn(40, requires_grad=True) if with_bias else None
    out = linear(x, weight, bias)
    want = F.linear(x, weight, bias)
    assert out.shape == want.shape and out.is_contiguous()
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(want)
    got = torch.autograd.grad(out, [x, weight], grad)
    expected = torch.autograd.grad(want, [x, weight], grad)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


def test_few_rows_path_takes_strided_inputs_and_weights(orientation):
    assert (
        2 in FEW_ROWS and 16 in FEW_ROWS and 1 not in FEW_ROWS and 17 not in FEW_ROWS
    )  # both sides tested above
    weight = torch.randn(24, 40).t()  # (40, 24), not contiguous
    x = torch.randn(2, 2, 48)[:, :, ::2].transpose(0, 1)  # 4 rows of 24, not contiguous
    torch.testing.assert_close(linear(x, weight), F.linear(x, weight), atol=1e-5, rtol=1e-5)


def test_linear_module_keeps_nn_linear_parameters_and_keys():
    torch.manual_seed(0)
    ours, theirs = Linear(24, 40), nn.Linear(24, 40)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 24)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


def test_orientation_follows_the_last_level_cache(monkeypatch, tmp_path):
    cache = last_level_cache_bytes()
    assert cache is None or cache > 0
    # sysfs sizes as Linux writes them ("32768K", "480M"); unreadable entries are skipped
    root = tmp_path / "cache"
    for index, text in enumerate(["48K", "2048K", "491520K", "junk", ""]):
        (root / f"index{index}").mkdir(parents=True)
        (root / f"index{index}" / "size").write_text(text + "\n")
    (root / "index5" / "size").mkdir(parents=True)  # a size that cannot be read
    monkeypatch.setattr(KERNELS_LINEAR, "CPU_CACHE", root)
    assert last_level_cache_bytes() == 491520 * 1024
    (root / "index2" / "size").write_text("32M\n")
    assert last_level_cache_bytes() == 32 * 2**20
    monkeypatch.setattr(KERNELS_LINEAR, "CPU_CACHE", tmp_path / "none")
    assert last_level_cache_bytes() is None


def test_column_major_weights_train_save_and_load(monkeypatch, tmp_path):
    """Under ``F.linear`` the weight lies column by column; it trains, and a checkpoint (model,
    optimizer state and EMA-style extra tensors, which safetensors wants contiguous) round-trips
    into a new layer that keeps that layout."""
    from suite.train.checkpoint import load_checkpoint, save_checkpoint

    monkeypatch.setattr(KERNELS_LINEAR, "TRANSPOSED", False)
    torch.manual_seed(0)
    layer = Linear(24, 40)
    assert layer.weight.shape == (40, 24) and layer.weight.stride() == (1, 40)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-2)
    x, target = torch.randn(16, 24), torch.randn(16, 40)
    losses = []
    for _ in range(20):
        loss = F.mse_loss(layer(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0] and layer.weight.stride() == (1, 40)
    extra = {"ema." + k: v.clone() for k, v in layer.state_dict().items()}
    save_checkpoint(tmp_path, 20, layer.state_dict(), optimizer.state_dict(), {}, extra)
    loaded = load_checkpoint(tmp_path / "step-00000020")
    fresh = Linear(24, 40)
    fresh.load_state_dict(loaded["model"])
    assert fresh.weight.stride() == (1, 40)
    torch.testing.assert_close(fresh(x), layer(x), rtol=0, atol=0)
    torch.testing.assert_close(loaded["extra"]["ema.weight"], layer.weight, rtol=0, atol=0)
    state = loaded["optimizer"]["state"][0]
    torch.testing.assert_close(state["exp_avg"], optimizer.state[layer.weight]["exp_avg"])
