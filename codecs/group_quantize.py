"""Group-residual vector quantization (HiFi-Codec / AcademiCodec): the latent's channels split
into groups, each with its own :class:`~suite.codecs.quantize.ResidualVQ`.

Dims legend: B - batch, T - code frames, D - latent width, Q - stages of all groups together.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from suite.codecs.quantize import QuantizerOutput, ResidualVQ, draw_stages


class GroupResidualVQ(nn.Module):
    """Group-residual VQ (HiFi-Codec): the latent's channels split into ``groups``, each
    quantized by its own :class:`ResidualVQ` of ``num_quantizers // groups`` stages.

    Codes are stage-major, ``[g0 s0, g1 s0, ..., g0 s1, g1 s1, ...]``, so the first ``q`` codes
    (``q`` a multiple of ``groups``) are a lower bitrate of every group. Dropout draws a stage
    count per sample shared by the groups.

    Args:
        dim: latent width D (divisible by ``groups``).
        num_quantizers: Q, all groups together (divisible by ``groups``).
        codebook_size: K entries per codebook.
        groups: G.
        quantizer_dropout: as :class:`ResidualVQ`.
        bitrate_stages: total stage counts dropout draws from (multiples of ``groups``).
        init_after: warm-up steps before the codebooks start (as :class:`ResidualVQ`).
        **vq: options of every codebook.
    """

    def __init__(
        self,
        dim: int,
        num_quantizers: int = 8,
        codebook_size: int = 1024,
        groups: int = 2,
        quantizer_dropout: float = 0.5,
        bitrate_stages: list[int] | None = None,
        init_after: int = 0,
        **vq: object,
    ) -> None:
        super().__init__()
        if dim % groups or num_quantizers % groups:
            raise ValueError(
                f"group-residual VQ needs dim ({dim}) and num_quantizers ({num_quantizers}) "
                f"divisible by groups ({groups})"
            )
        per = num_quantizers // groups
        stages = bitrate_stages or [groups * n for n in range(1, per + 1)]
        if any(s % groups for s in stages):
            raise ValueError(f"bitrate_stages must be multiples of groups ({groups}): {stages}")
        self.num_quantizers, self.codebook_size, self.groups = num_quantizers, codebook_size, groups
        self.bitrate_stages, self.quantizer_dropout = sorted(set(stages)), quantizer_dropout
        self.rvqs = nn.ModuleList(
            ResidualVQ(dim // groups, per, codebook_size, quantizer_dropout, None, init_after, **vq)
            for _ in range(groups)
        )

    def _interleave(self, per_group: list[Tensor]) -> Tensor:
        return torch.stack(per_group, 2).flatten(1, 2)  # (B, Qg, G, T) -> (B, Qg*G, T)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, num_quantizers: Tensor | None = None
    ) -> QuantizerOutput:
        """As :meth:`ResidualVQ.forward`; ``num_quantizers (B,)`` counts all groups' stages."""
        if num_quantizers is None and self.training:
            num_quantizers = draw_stages(
                x.shape[0],
                self.num_quantizers,
                self.bitrate_stages,
                self.quantizer_dropout,
                x.device,
            )
        per_group = None if num_quantizers is None else num_quantizers // self.groups
        outs = [
            rvq(chunk, mask, per_group)
            for rvq, chunk in zip(self.rvqs, x.chunk(self.groups, -1), strict=True)
        ]
        stats = {f"g{g}_{k}": v for g, out in enumerate(outs) for k, v in out.stats.items()}
        return QuantizerOutput(
            torch.cat([o.quantized for o in outs], -1),
            self._interleave([o.codes for o in outs]),
            sum(o.commitment for o in outs) / self.groups,
            outs[0].num_quantizers * self.groups,
            stats,
        )

    def _check(self, q: int) -> None:
        if q % self.groups:
            raise ValueError(
                f"a group-residual quantizer of {self.groups} groups decodes a multiple of "
                f"{self.groups} codebooks, not {q}"
            )

    def encode(self, x: Tensor, num_quantizers: int | None = None) -> Tensor:
        q = num_quantizers or self.num_quantizers
        self._check(q)
        chunks = x.chunk(self.groups, -1)
        return self._interleave(
            [rvq.encode(c, q // self.groups) for rvq, c in zip(self.rvqs, chunks, strict=True)]
        )

    def decode(self, codes: Tensor) -> Tensor:
        self._check(codes.shape[1])
        b, q, t = codes.shape
        grouped = codes.view(b, q // self.groups, self.groups, t)  # (B, Qg, G, T)
        return torch.cat([rvq.decode(grouped[:, :, g]) for g, rvq in enumerate(self.rvqs)], -1)
