"""Frontends beside the log-mel one in :mod:`suite.features`; importing this package registers
them (``image``, ``video``, ``codec_tokens``)."""

from suite.frontends import codec_tokens, image, video  # noqa: F401  (registers each by name)
