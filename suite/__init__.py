"""suite: speech, vision and audio foundation models with shared task heads."""

from suite.registry import (
    create_codec,
    create_encoder,
    create_frontend,
    create_head,
    create_tokenizer,
    list_codecs,
    list_encoders,
    list_frontends,
    list_heads,
    list_tokenizers,
)

__version__ = "0.1.0"

__all__ = [
    "create_codec",
    "create_encoder",
    "create_frontend",
    "create_head",
    "create_tokenizer",
    "list_codecs",
    "list_encoders",
    "list_frontends",
    "list_heads",
    "list_tokenizers",
]
