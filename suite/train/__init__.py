"""Training: the one loop for every task, checkpoints, learning-rate schedule, torchrun."""

from suite.train.trainer import Trainer, train

__all__ = ["Trainer", "train"]
