"""The codec-token frontend: audio -> a frozen neural codec's codes -> the sum of one learned
embedding per codebook, so any encoder and head train on discrete tokens (as speech LMs and
token-based ASR read EnCodec/DAC codes).

Dims legend: B - batch, S - audio samples, q - codebooks read, T - code frames, D - embed_dim.

The codec comes from a codec package folder (``suite train recipes/codec/...`` writes one; its
weights are loaded) or a registry spec ``{name, preset, **options}`` (random weights: for tests
and shapes). It stays frozen and in evaluation mode: only the embeddings train. Its weights are
part of this frontend's state, so a model package holds them too; rebuilding the frontend from
its config reads the codec package folder again for the codec's architecture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from suite import registry
from suite.errors import UserError
from suite.interfaces import Frontend
from suite.registry import register_frontend


def _load_codec(codec: str | dict[str, Any]) -> nn.Module:
    if isinstance(codec, dict):
        return registry.create_from_spec("codec", codec)
    folder = Path(codec)
    if not (folder / "config.yaml").is_file():
        raise UserError(
            f"codec_tokens: {folder} is not a codec package folder (no config.yaml); train one "
            "with `suite train recipes/codec/speech_seanet_rvq_cpu.yaml` or give a registry "
            "spec such as {name: seanet, preset: small}"
        )
    from suite.model import load_package

    config = yaml.safe_load((folder / "config.yaml").read_text())
    if not isinstance(config, dict) or config.get("task") != "codec":
        raise UserError(f"codec_tokens: {folder} holds a '{config.get('task')}' package")
    return load_package(folder, task="codec")


@register_frontend("codec_tokens")
class CodecTokenFrontend(Frontend):
    """Audio ``(B, S)`` -> codes of the first ``num_quantizers`` codebooks -> ``(B, T, D)``.

    Args:
        codec: a codec package folder or a registry spec (see the module docstring).
        num_quantizers: codebooks read (the bitrate: ``q * log2(K) * frame_rate``); default all.
        embed_dim: D, the width the encoder reads.
    """

    def __init__(
        self,
        codec: str | dict[str, Any],
        num_quantizers: int | None = None,
        embed_dim: int = 256,
    ) -> None:
        super().__init__()
        self.codec = _load_codec(codec).eval().requires_grad_(False)
        q = num_quantizers or self.codec.num_quantizers
        if not 1 <= q <= self.codec.num_quantizers:
            raise UserError(
                f"codec_tokens: num_quantizers must lie in [1, {self.codec.num_quantizers}] "
                f"for this codec, got {q}"
            )
        self.num_quantizers, self.input_dim = q, embed_dim
        self.sample_rate = self.codec.sample_rate
        self.embeddings = nn.ModuleList(
            nn.Embedding(self.codec.codebook_size, embed_dim) for _ in range(q)
        )
        for embedding in self.embeddings:  # a sum of q unit-variance rows: keep it near 1
            nn.init.normal_(embedding.weight, std=q**-0.5)

    def train(self, mode: bool = True) -> CodecTokenFrontend:
        super().train(mode)
        self.codec.eval()  # frozen: its quantizer's statistics and codebooks never move
        return self

    @torch.no_grad()
    def codes(self, audio: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``(codes (B, q, T), code_lengths (B,))`` of ``audio (B, S)``."""
        return self.codec.encode(audio, lengths, self.num_quantizers)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        codes, code_lengths = self.codes(x, lengths)
        features = sum(emb(codes[:, i]) for i, emb in enumerate(self.embeddings))  # (B, T, D)
        return features, code_lengths
