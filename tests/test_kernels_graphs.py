"""CUDA-graph replay of a streaming step: eager off CUDA, graph replays equal to eager steps on
CUDA (ring caches and per-stream positions carried across steps)."""

from __future__ import annotations

import pytest
import torch

from suite.kernels.graphs import GraphedStep

CUDA = torch.cuda.is_available()


def test_off_cuda_the_step_runs_eagerly():
    calls = []

    def step(x: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor]:
        calls.append(x.shape[0])
        return (x * n[:, None],)

    graphed = GraphedStep(step)
    x, n = torch.randn(3, 4), torch.tensor([1.0, 0.0, 2.0])
    assert not graphed.graphed((x, n))
    (out,) = graphed(x, n)
    assert torch.equal(out, x * n[:, None]) and calls == [3]  # no padding to a bucket


def test_buckets():
    graphed = GraphedStep(lambda x: (x,), buckets=(1, 4, 16))
    assert [graphed.bucket(b) for b in (1, 2, 4, 5, 16)] == [1, 4, 4, 16, 16]
    with pytest.raises(ValueError, match="buckets"):
        graphed.bucket(17)


@pytest.mark.skipif(not CUDA, reason="CUDA graphs need a GPU")
def test_graphed_ring_steps_equal_eager_steps():
    """A stack of attention layers stepped with ring caches: replays equal eager steps, and
    streams of different ages (and an idle padded row) share a bucket."""
    from suite.kernels.stream import ring_capacity
    from suite.nn.attention import SelfAttention
    from suite.nn.context import cache_frames

    torch.manual_seed(0)
    context, size, D, H, L = (12, 3), 4, 64, 4, 2
    M = cache_frames(context)
    layers = [SelfAttention(D, H).cuda().eval() for _ in range(L)]
    C = ring_capacity(M, size)

    def make_step(caches):
        def step(x, positions, new):
            for layer, (k, v) in zip(layers, caches, strict=True):
                x = x + layer.ring_step(x, positions, new, k, v, M, context)
            return (x,)

        return step

    B = 3  # padded to a bucket of 4
    eager_caches = [[torch.zeros(B, H, C, D // H, device="cuda") for _ in range(2)] for _ in layers]
    graph_caches = [[torch.zeros(4, H, C, D // H, device="cuda") for _ in range(2)] for _ in layers]
    eager, graphed = make_step(eager_caches), GraphedStep(make_step(graph_caches))
    positions = torch.tensor([0, 8, 20], device="cuda")
    for _ in range(5):
        x = torch.randn(B, size, D, device="cuda")
        new = torch.tensor([size, size, 2], device="cuda")
        with torch.inference_mode():
            (want,) = eager(x, positions, new)
        (got,) = graphed(x, positions, new)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
        positions = positions + new
    assert list(graphed._graphs) == [4]
