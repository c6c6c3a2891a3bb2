"""Kernels (``suite.kernels``): fused GPU paths, each beside its plain PyTorch reference."""

from suite.kernels.attention import attention, attention_mask

__all__ = ["attention", "attention_mask"]
