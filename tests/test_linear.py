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
    for index, text in enumerate(["48K", "2048K", "491520K", "junk"]):
        (root / f"index{index}").mkdir(parents=True)
        (root / f"index{index}" / "size").write_text(text + "\n")
    monkeypatch.setattr(KERNELS_LINEAR, "CPU_CACHE", root)
    assert last_level_cache_bytes() == 491520 * 1024
    (root / "index2" / "size").write_text("32M\n")
    assert last_level_cache_bytes() == 32 * 2**20
    monkeypatch.setattr(KERNELS_LINEAR, "CPU_CACHE", tmp_path / "none")
    assert last_level_cache_bytes() is None
