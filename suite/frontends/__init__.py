"""Frontends beside the log-mel one in :mod:`suite.features`; importing this package registers
them (``image``)."""

from suite.frontends import image  # noqa: F401  (registers "image")
