"""Kernels (``suite.kernels``): the attention functions the encoders call, in plain PyTorch, each
the reference that a fused kernel replacing it is tested against."""

from suite.kernels.attention import attention, attention_mask

__all__ = ["attention", "attention_mask"]
