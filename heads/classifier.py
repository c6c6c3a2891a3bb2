"""Classification head: pool the encoder's tokens, normalize, one linear layer to the classes
(as timm's ``forward_head`` for ViT and ConvNeXt, on any encoder's ``(B, T, D)`` tokens).

The class names are part of the head (``labels``), so a package names its predictions. The loss
is cross-entropy with optional label smoothing on ``batch.targets[:, 0]`` (class indices); a
linear probe is this head on a frozen encoder (``train.freeze=[encoder]``).

Dims legend: B - batch, T - encoder tokens, D - encoder width, K - classes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from suite.interfaces import Batch, EncoderOutput, Head, Hypothesis
from suite.registry import register_head

POOLS = ("mean", "first")


@register_head("classifier")
class ClassifierHead(Head):
    """Pooled tokens -> LayerNorm -> dropout -> linear to ``len(labels)`` classes.

    Args:
        input_dim: the encoder's width D.
        labels: the class names, in class-index order.
        pool: ``"mean"`` over the valid tokens, or ``"first"`` (a class token the encoder
            keeps first: ``vit`` with ``keep_class_token=true``).
        dropout: before the linear layer, in training.
        label_smoothing: of the cross-entropy.
    """

    def __init__(
        self,
        input_dim: int,
        labels: list[str],
        pool: str = "mean",
        dropout: float = 0.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise ValueError(f"labels must name at least 2 distinct classes, got {labels}")
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
        self.labels = list(labels)
        self.pool, self.label_smoothing = pool, label_smoothing
        self.norm = nn.LayerNorm(input_dim)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(input_dim, len(labels))

    def pooled(self, enc: EncoderOutput) -> Tensor:
        """``(B, D)``: the mean of each item's valid tokens, or its first token."""
        x = enc.features
        if self.pool == "first":
            return x[:, 0]
        T = x.shape[1]
        valid = torch.arange(T, device=x.device)[None, :] < enc.lengths.to(x.device)[:, None]
        weights = valid.to(x.dtype)[..., None]  # (B, T, 1)
        return (x * weights).sum(1) / weights.sum(1).clamp(min=1)

    def logits(self, enc: EncoderOutput) -> Tensor:
        """``(B, K)`` class scores."""
        return self.linear(self.dropout(self.norm(self.pooled(enc))))

    def loss(self, enc: EncoderOutput, batch: Batch) -> dict[str, Tensor]:
        if batch.targets is None:
            raise ValueError("a classification batch needs targets (class indices)")
        logits = self.logits(enc)
        target = batch.targets[:, 0].to(logits.device)
        loss = F.cross_entropy(logits.float(), target, label_smoothing=self.label_smoothing)
        accuracy = (logits.argmax(-1) == target).float().mean()
        return {"loss": loss, "accuracy": accuracy.detach()}

    @torch.no_grad()
    def decode(self, enc: EncoderOutput, **options: Any) -> list[Hypothesis]:
        """The best class of each item: ``tokens [k]``, ``text`` its name, ``score`` its
        log-probability."""
        log_probs = self.logits(enc).float().log_softmax(-1)
        score, best = log_probs.max(-1)
        return [
            Hypothesis([int(k)], self.labels[int(k)], float(s))
            for k, s in zip(best.tolist(), score.tolist(), strict=True)
        ]
