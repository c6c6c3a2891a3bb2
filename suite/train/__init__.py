"""Training: the loop, checkpoints and learning-rate schedule."""

from suite.train.trainer import Trainer, train

__all__ = ["Trainer", "train"]
