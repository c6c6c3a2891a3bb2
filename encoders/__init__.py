"""Modality encoders (``suite.encoders``); importing this package registers every family."""

from suite.encoders import (
    audio_convnext,  # noqa: F401  (registers "audio_convnext")
    conformer,  # noqa: F401  (registers "conformer")
    patch_adapter,  # noqa: F401  (registers "patch_image", "patch_audio", "patch_video")
    squeezeformer,  # noqa: F401  (registers "squeezeformer")
    vision,  # noqa: F401  (registers "vit" and "convnext")
)
