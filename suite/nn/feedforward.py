"""The pre-norm feed-forward of Conformer blocks and of the language model's blocks."""

from __future__ import annotations

from torch import nn

from suite.nn import NormLayer


class FeedForward(nn.Sequential):
    """Pre-norm feed-forward: norm, Linear(D, mult*D), SiLU, dropout, Linear(mult*D, D).

    A sequence of plain modules, whose indices are the checkpoint keys (``0`` the norm, ``1``
    and ``4`` the linear layers).

    Args:
        d_model: D.
        mult: hidden width as a multiple of D.
        dropout: on the hidden activations.
        norm_layer: the input normalization (LayerNorm; Squeezeformer: a scale and bias).
    """

    def __init__(
        self, d_model: int, mult: int, dropout: float, norm_layer: NormLayer = nn.LayerNorm
    ):
        super().__init__(
            norm_layer(d_model),
            nn.Linear(d_model, mult * d_model),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(mult * d_model, d_model),
        )
