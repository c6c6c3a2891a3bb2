"""Kernels (``suite.kernels``): the primitives the encoders call (attention, linear), each with
faster paths beside its plain PyTorch reference and tested against it; fused GPU kernels plug in
here."""

from suite.kernels.attention import attention, attention_mask
from suite.kernels.linear import Linear, linear

__all__ = ["Linear", "attention", "attention_mask", "linear"]
