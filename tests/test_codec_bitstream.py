"""The ``.sca`` bitstream: codes of any width round-trip exactly through a documented header and
packed payload, and broken files get one clear error."""

from __future__ import annotations

import struct

import pytest
import torch

from suite.codecs.bitstream import BitstreamError, EncodedAudio, read_sca, write_sca
from suite.errors import UserError


def _encoded(bits: int = 10, q: int = 3, t: int = 17, seed: int = 0) -> EncodedAudio:
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 1 << bits, (q, t), generator=g)
    return EncodedAudio(codes, 16000, 50.0, bits, t * 320 - 100)


@pytest.mark.parametrize("bits", [1, 3, 8, 10, 13, 16])
def test_codes_round_trip_exactly_in_a_packed_payload(bits):
    encoded = _encoded(bits)
    data = encoded.to_bytes()
    assert len(data) == 32 + -(-3 * 17 * bits // 8)  # a 32-byte header, then packed bits
    back = EncodedAudio.from_bytes(data)
    assert torch.equal(back.codes, encoded.codes)
    assert (back.sample_rate, back.frame_rate, back.codebook_bits, back.num_samples) == (
        16000,
        50.0,
        bits,
        encoded.num_samples,
    )
    assert back.kbps == pytest.approx(3 * bits * 50 / 1000)


def test_the_header_is_as_documented(tmp_path):
    path = write_sca(tmp_path / "a.sca", _encoded())
    data = path.read_bytes()
    magic, version, bits, q, rate, frame_rate, frames, samples, _ = struct.unpack_from(
        "<4sBBHIfIQI", data
    )
    assert (magic, version, bits, q, rate, frame_rate, frames) == (
        b"SCA\x00",
        1,
        10,
        3,
        16000,
        50.0,
        17,
    )
    assert samples == 17 * 320 - 100
    assert torch.equal(read_sca(path).codes, _encoded().codes)


def test_broken_files_get_one_clear_error(tmp_path):
    data = _encoded().to_bytes()
    cases = {
        "truncated": data[:-5],
        "longer than its header": data + b"\x00",
        "corrupt: the payload's checksum": data[:40] + bytes([data[40] ^ 0x10]) + data[41:],
        "not a .sca": b"RIFF" + data[4:],
        "too short for a header": data[:20],
        "version 9": data[:4] + b"\x09" + data[5:],
        "corrupt header": data[:5] + b"\x00" + data[6:],
    }
    for expected, broken in cases.items():
        path = tmp_path / "broken.sca"
        path.write_bytes(broken)
        with pytest.raises(BitstreamError, match=expected) as info:
            read_sca(path)
        assert isinstance(info.value, UserError) and str(path) in str(info.value)
    with pytest.raises(BitstreamError, match="does not exist"):
        read_sca(tmp_path / "missing.sca")


def test_codes_wider_than_the_header_says_are_refused():
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        EncodedAudio(torch.tensor([[4]]), 16000, 50.0, 2, 320).to_bytes()
