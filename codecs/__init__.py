"""Neural audio codecs (``suite.codecs``). Never import this folder as top-level ``codecs``.

Importing this package registers the built-in codecs (``seanet``: a causal SEANet with a
residual or group-residual quantizer).
"""

from suite.codecs.group_quantize import GroupResidualVQ
from suite.codecs.model import CodecState, LossWeights, NeuralCodec, seanet_codec
from suite.codecs.quantize import QuantizerOutput, ResidualVQ, VectorQuantizer

__all__ = [
    "CodecState",
    "GroupResidualVQ",
    "LossWeights",
    "NeuralCodec",
    "QuantizerOutput",
    "ResidualVQ",
    "VectorQuantizer",
    "seanet_codec",
]
