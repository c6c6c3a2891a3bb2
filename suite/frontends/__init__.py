"""Frontends beside the log-mel one in :mod:`suite.features`; importing this package registers
them (``image``, ``codec_tokens``)."""

from suite.frontends import codec_tokens, image  # noqa: F401  (registers "codec_tokens", "image")
