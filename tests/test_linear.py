"""``suite.kernels.linear``: the same result and gradients as ``F.linear`` on either path."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from suite.kernels.linear import FEW_ROWS, Linear, linear


@pytest.mark.parametrize("shape", [(1, 24), (2, 24), (2, 8, 24), (17, 24), (2, 100, 24)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_equals_f_linear_with_gradients(shape, with_bias):
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


def test_few_rows_path_takes_strided_inputs_and_weights():
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
