"""The ``.sca`` bitstream: a codec's codes in a small self-describing file (no pickle).

Layout (little-endian), version 1::

    offset size  field
    0      4     magic b"SCA\\x00"
    4      1     version (1)
    5      1     bits per code (log2 of the codebook size, 1-16)
    6      2     codebooks used, q (1-65535)
    8      4     sample rate in Hz
    12     4     frame rate in Hz (IEEE float32)
    16     4     code frames, T
    20     8     audio length in samples (the decoder trims to it)
    28     4     CRC-32 of the payload
    32     ...   payload: the T * q codes, frame by frame (frame 0's q codes, then frame 1's ...),
                 each ``bits`` wide, most significant bit first, zero-padded to a whole byte

Frame-major order lets a reader decode a prefix of frames. A file whose length, magic, version,
fields or checksum disagree is refused with one :class:`BitstreamError` naming what is wrong.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from suite.errors import UserError

MAGIC = b"SCA\x00"
VERSION = 1
_HEADER = struct.Struct("<4sBBHIfIQI")


class BitstreamError(UserError, ValueError):
    """A ``.sca`` file that is not one, is truncated or corrupt, or is from a newer version."""


@dataclass(frozen=True)
class EncodedAudio:
    """Codes of one utterance and what decoding them needs.

    Attributes:
        codes: ``(q, T)`` int64 codes of the first ``q`` codebooks.
        sample_rate: the codec's audio rate.
        frame_rate: code frames per second.
        codebook_bits: bits per code (log2 of the codebook size).
        num_samples: the audio's length in samples (decoding trims to it).
    """

    codes: Tensor
    sample_rate: int
    frame_rate: float
    codebook_bits: int
    num_samples: int

    @property
    def kbps(self) -> float:
        """The codes' bitrate in kbit/s (header excluded)."""
        return self.codes.shape[0] * self.codebook_bits * self.frame_rate / 1000

    def to_bytes(self) -> bytes:
        """The ``.sca`` bytes (see the module docstring)."""
        q, t = self.codes.shape
        bits = self.codebook_bits
        codes = self.codes.t().reshape(-1).cpu().numpy().astype(np.uint32)  # frame-major
        if codes.size and int(codes.max()) >= 1 << bits:
            raise ValueError(f"codes must lie in [0, {1 << bits}) for {bits}-bit codes")
        shifts = np.arange(bits - 1, -1, -1, dtype=np.uint32)
        payload = np.packbits(((codes[:, None] >> shifts) & 1).astype(np.uint8)).tobytes()
        header = _HEADER.pack(
            MAGIC,
            VERSION,
            bits,
            q,
            self.sample_rate,
            self.frame_rate,
            t,
            self.num_samples,
            zlib.crc32(payload),
        )
        return header + payload

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "the bitstream") -> EncodedAudio:
        """Parse ``.sca`` bytes; ``where`` names the source in errors."""
        if len(data) < _HEADER.size or data[:4] != MAGIC:
            found = "too short for a header" if len(data) < _HEADER.size else "no SCA magic"
            raise BitstreamError(
                f"{where} is not a .sca codec bitstream ({found}); make one with "
                "`suite codec encode IN.wav OUT.sca`"
            )
        magic, version, bits, q, rate, frame_rate, t, samples, crc = _HEADER.unpack_from(data)
        if version != VERSION:
            raise BitstreamError(
                f"{where} is .sca version {version}; this suite reads version {VERSION}: "
                "upgrade suite, or re-encode the audio"
            )
        if not 1 <= bits <= 16 or q < 1 or rate < 1 or not frame_rate > 0:
            raise BitstreamError(
                f"{where} has a corrupt header ({bits} bits per code, {q} codebooks, "
                f"{rate} Hz, {frame_rate:g} frames/s); re-encode the audio"
            )
        expected = math.ceil(t * q * bits / 8)
        payload = data[_HEADER.size :]
        if len(payload) != expected:
            state = "truncated" if len(payload) < expected else "longer than its header says"
            raise BitstreamError(
                f"{where} is {state}: its header promises {t} frames of {q} codes "
                f"({expected} payload bytes), the file holds {len(payload)}; re-encode the audio"
            )
        if zlib.crc32(payload) != crc:
            raise BitstreamError(
                f"{where} is corrupt: the payload's checksum does not match its header's; "
                "re-encode the audio or copy the file again"
            )
        flat = np.unpackbits(np.frombuffer(payload, dtype=np.uint8))[: t * q * bits]
        weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.int64)
        codes = flat.reshape(-1, bits).astype(np.int64) @ weights  # (T * q,)
        codes = torch.from_numpy(codes.reshape(t, q).T.copy())  # (q, T)
        return cls(codes, rate, float(frame_rate), bits, samples)


def write_sca(path: str | Path, encoded: EncodedAudio) -> Path:
    """Write ``encoded`` as a ``.sca`` file (atomically)."""
    from suite.io import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(encoded.to_bytes())
    return Path(path)


def read_sca(path: str | Path) -> EncodedAudio:
    """Read a ``.sca`` file; a missing, truncated or corrupt one is a :class:`BitstreamError`."""
    path = Path(path)
    if not path.is_file():
        raise BitstreamError(f"{path} does not exist; encode audio with `suite codec encode`")
    return EncodedAudio.from_bytes(path.read_bytes(), where=str(path))
