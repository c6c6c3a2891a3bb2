"""Building blocks shared by encoders and heads (``suite.nn``).

Layers only point down: ``suite.encoders`` and ``suite.heads`` import from here, never from
each other, and this package imports neither. Attention functions that fused kernels replace
live one level lower, in ``suite.kernels``.

- :mod:`~suite.nn.frames`: per-stream frame masks, windows and cache buffers.
- :mod:`~suite.nn.context`: attention contexts: checking, sampling in training, streaming.
- :mod:`~suite.nn.rotary`: rotary position embedding.
- :mod:`~suite.nn.step`: what the blocks of one streaming step share (:class:`StreamStep`).
- :mod:`~suite.nn.lookahead`: block processing of look-ahead contexts.
- :mod:`~suite.nn.attention`: rotary multi-head self-attention, offline and streaming.
- :mod:`~suite.nn.convolution`: the Conformer convolution module, causal stride-2 steps.
- :mod:`~suite.nn.feedforward`: the pre-norm feed-forward.
- :mod:`~suite.nn.subsampling`: striding convolutional subsampling.
"""

from collections.abc import Callable

from torch import nn

# A normalization layer's constructor, given the width (``nn.LayerNorm``; timm's ``norm_layer``).
NormLayer = Callable[[int], nn.Module]
