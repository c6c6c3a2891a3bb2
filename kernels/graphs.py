"""CUDA-graph replay of a streaming step, one graph per bucket of stream counts.

Dims legend: B - streams in a step, Bk - the bucket B is padded to.

A step of a few streams is a few hundred small kernel launches; on a GPU their launch cost, not
their arithmetic, sets the step time. NeMo's cache-aware streaming captures its step in a CUDA
graph for that reason; so does :class:`GraphedStep`: ``fn`` is captured once per bucket (1, 2,
4, ... streams) with static input buffers, and a step copies its inputs into the bucket's
buffers and replays the graph. Shapes are static per bucket, so ``fn`` must not synchronize with
the host or branch on tensor values: :func:`suite.kernels.stream.stream_attention_step` with
ring caches is written that way (per-stream positions and lengths are tensors). Padded rows get
zero inputs; a step function is expected to treat a stream with no new frames as idle (the
attention step neither reads nor writes for it).

State (caches) stays where ``fn`` keeps it: buffers sized for the largest bucket, of which a
bucket's graph uses the first ``Bk`` rows, so streams must sit in rows ``0 .. B - 1``.

Off CUDA (or with ``enabled=False``) a step calls ``fn`` directly, so the same code runs on the
CPU without graphs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class GraphedStep:
    """Run ``fn(*inputs) -> tuple of tensors`` as a CUDA-graph replay per bucket of ``B``.

    Args:
        fn: the step; its inputs and outputs are batch-first tensors with ``Bk`` rows.
        buckets: stream counts a graph is captured for; ``B`` is padded to the next one.
        enabled: ``None``: graphs when CUDA is available and the inputs are on it.
        warmup: eager calls on a side stream before a capture (lazy initializations, Triton's
            compilation and autotuning must not happen inside the capture).
    """

    def __init__(
        self,
        fn: Callable[..., Sequence[Tensor]],
        buckets: Sequence[int] = BUCKETS,
        enabled: bool | None = None,
        warmup: int = 2,
    ) -> None:
        self.fn = fn
        self.buckets = tuple(sorted(buckets))
        self.enabled = enabled
        self.warmup = warmup
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, list[Tensor], list[Tensor]]] = {}

    def bucket(self, B: int) -> int:
        """The bucket ``B`` streams run in."""
        for size in self.buckets:
            if size >= B:
                return size
        raise ValueError(
            f"{B} streams exceed the largest CUDA-graph bucket ({self.buckets[-1]}); pass "
            f"buckets=(..., {B}) or step the streams in several batches"
        )

    def graphed(self, inputs: Sequence[Tensor]) -> bool:
        """Whether a step with ``inputs`` replays a graph (else it runs ``fn`` eagerly)."""
        if self.enabled is False or not torch.cuda.is_available():
            return False
        return all(x.is_cuda for x in inputs)

    @torch.inference_mode()
    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        """One step: ``fn(*inputs)``'s outputs, cut to ``inputs[0].shape[0]`` rows. The outputs
        of a replay are the graph's buffers: read them before the next step."""
        if not self.graphed(inputs):
            return tuple(self.fn(*inputs))
        B = inputs[0].shape[0]
        size = self.bucket(B)
        if size not in self._graphs:
            self._graphs[size] = self._capture(size, inputs)
        graph, static_in, static_out = self._graphs[size]
        for buffer, x in zip(static_in, inputs, strict=True):
            buffer[:B].copy_(x)
            if B < size:
                buffer[B:].zero_()
        graph.replay()
        return tuple(out[:B] for out in static_out)

    def _capture(
        self, size: int, inputs: Sequence[Tensor]
    ) -> tuple[torch.cuda.CUDAGraph, list[Tensor], list[Tensor]]:
        static_in = [x.new_zeros(size, *x.shape[1:]) for x in inputs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.fn(*static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = list(self.fn(*static_in))
        return graph, static_in, static_out
