"""Kernels (``suite.kernels``): fused GPU paths, each beside its plain PyTorch reference."""
