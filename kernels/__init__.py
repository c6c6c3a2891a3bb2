"""Kernels (``suite.kernels``): the attention functions the encoders call, in plain PyTorch, each
the reference that a fused kernel replacing it is tested against.

- :mod:`~suite.kernels.attention`: masked attention of padded batches (SDPA), the reference;
- :mod:`~suite.kernels.backends`: which implementation a layer's attention runs (``backend``);
- :mod:`~suite.kernels.varlen`: packed variable-length attention in Triton, our masks and rotary
  positions inside, forward and backward (kernels in ``varlen_triton``);
- :mod:`~suite.kernels.stream`: one streaming step's attention over ring caches for many streams,
  the cache write fused (kernels in ``stream_triton``);
- :mod:`~suite.kernels.graphs`: CUDA-graph replay of a streaming step.

Only ``attention`` is imported here; the Triton modules import ``triton`` when a kernel runs.
"""

from suite.kernels.attention import attention, attention_mask

__all__ = ["attention", "attention_mask"]
