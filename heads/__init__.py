"""Task heads shared by every encoder (``suite.heads``); importing registers every head."""

from suite.heads import (
    ctc,  # noqa: F401  (registers "ctc")
    rnnt,  # noqa: F401  (registers "rnnt")
)
