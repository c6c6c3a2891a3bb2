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


def load(name_or_path, device="cpu"):
    """Load a shipped model by name or a model package folder (see :mod:`suite.api`)."""
    from suite.api import load as _load

    return _load(name_or_path, device=device)


def list_models() -> dict[str, str]:
    """Shipped model packages by name, with their task."""
    from suite.api import list_models as _list_models

    return _list_models()


__all__ = [
    "load",
    "list_models",
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
