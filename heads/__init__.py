"""Task heads shared by every encoder (``suite.heads``); importing registers every head."""

from suite.heads import (
    aed,  # noqa: F401  (registers "aed")
    classifier,  # noqa: F401  (registers "classifier")
    ctc,  # noqa: F401  (registers "ctc")
    llm_adapter,  # noqa: F401  (registers "llm_adapter")
    rnnt,  # noqa: F401  (registers "rnnt")
)
