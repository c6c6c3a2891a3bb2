"""The ``Codec`` contract of ``suite.interfaces``: what a codec must implement, and the code
checks every codec's output passes (shown with an 8-bit mu-law codec, one stage of 256 codes
per sample)."""

from __future__ import annotations

import pytest
import torch

from suite.interfaces import Codec, check_codes


class MuLaw(Codec):
    sample_rate, frame_rate, num_quantizers, codebook_size = 8000, 8000.0, 1, 256

    def encode(self, audio, lengths, num_quantizers=None):
        mu = self.codebook_size - 1
        y = (
            torch.sign(audio)
            * torch.log1p(mu * audio.abs().clamp(max=1))
            / torch.log1p(torch.tensor(float(mu)))
        )
        return ((y + 1) / 2 * mu).round().long()[:, None], lengths

    def decode(self, codes, lengths):
        mu = self.codebook_size - 1
        y = codes[:, 0].float() / mu * 2 - 1
        return torch.sign(y) * ((1 + mu) ** y.abs() - 1) / mu, lengths


def test_a_codec_round_trips_through_checked_codes():
    codec = MuLaw()
    audio = torch.sin(torch.arange(800) / 5.0)[None] * 0.5
    codes, lengths = codec.encode(audio, torch.tensor([800]))
    check_codes(codes, lengths, codec)
    back, _ = codec.decode(codes, lengths)
    assert (back - audio).abs().max() < 0.02


def test_codes_that_break_the_contract_get_teaching_errors():
    codec = MuLaw()
    with pytest.raises(ValueError, match=r"\(B, Q, T\) int64"):
        check_codes(torch.zeros(1, 5), torch.tensor([5]), codec)
    with pytest.raises(ValueError, match="1 to 1"):
        check_codes(torch.zeros(1, 2, 5, dtype=torch.long), torch.tensor([5]), codec)
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        check_codes(torch.full((1, 1, 5), 256), torch.tensor([5]), codec)
    with pytest.raises(ValueError, match="code lengths"):
        check_codes(torch.zeros(1, 1, 5, dtype=torch.long), torch.tensor([6]), codec)
