"""What :func:`suite.load` gives for a ``codec`` package: audio to codes at a chosen bitrate
and back, whole files or chunk by chunk, and ``.sca`` files.

Dims legend: q - codebooks used, T - code frames, S - audio samples.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from suite.audio import AudioError, load_audio
from suite.codecs.bitstream import BitstreamError, EncodedAudio, read_sca, write_sca
from suite.codecs.model import NeuralCodec
from suite.errors import UserError


class AudioCodec:
    """A trained codec for people: ``encode(audio, sample_rate=, bitrate=)`` ->
    :class:`~suite.codecs.bitstream.EncodedAudio`, ``decode(encoded)`` -> samples,
    ``stream(bitrate=)`` -> a :class:`CodecSession`.

    Args:
        model: the loaded :class:`~suite.codecs.model.NeuralCodec`.
        name: where it was loaded from (shown in messages).
    """

    def __init__(self, model: NeuralCodec, name: str = "") -> None:
        self.model, self.name = model.eval(), name

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.model.frame_rate

    @property
    def bitrates(self) -> list[float]:
        """The bitrates (kbps) this codec encodes at, one per usable number of codebooks."""
        return self.model.bitrates()

    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def stages(self, bitrate: float | None) -> int:
        """Codebooks used at ``bitrate`` kbps (the most that fit; ``None``: all)."""
        if bitrate is None:
            return self.model.num_quantizers
        try:
            return self.model.stages_for(float(bitrate))
        except ValueError as e:
            raise UserError(str(e)) from None

    @torch.inference_mode()
    def encode(
        self, audio: Any, sample_rate: int | None = None, bitrate: float | None = None
    ) -> EncodedAudio:
        """Encode one utterance: a path, or a ``(S,)`` array/tensor with ``sample_rate``
        (resampled to the codec's rate; multi-channel audio is mixed down). ``bitrate`` in kbps
        (default: the highest)."""
        samples = load_audio(audio, sample_rate, self.sample_rate)
        q = self.stages(bitrate)
        x = torch.from_numpy(samples)[None].to(self._device)  # (1, S)
        codes, _ = self.model.encode(x, torch.tensor([x.shape[1]], device=self._device), q)
        return EncodedAudio(
            codes[0].cpu(),
            self.sample_rate,
            self.frame_rate,
            math.ceil(math.log2(self.model.codebook_size)),
            int(x.shape[1]),
        )

    def _codes(self, encoded: EncodedAudio | Tensor) -> tuple[Tensor, int]:
        """``(codes (1, q, T), samples)`` of an :class:`EncodedAudio` or a code tensor."""
        if isinstance(encoded, EncodedAudio):
            if encoded.sample_rate != self.sample_rate or not math.isclose(
                encoded.frame_rate, self.frame_rate, rel_tol=1e-6
            ):
                raise UserError(
                    f"these codes are of a codec at {encoded.sample_rate} Hz and "
                    f"{encoded.frame_rate:g} frames/s; {self.name or 'this codec'} runs at "
                    f"{self.sample_rate} Hz and {self.frame_rate:g} frames/s: decode them with "
                    "the codec that encoded them"
                )
            codes, samples = encoded.codes, encoded.num_samples
        else:
            codes = torch.as_tensor(encoded)
            samples = codes.shape[-1] * self.model.hop
        if codes.dim() == 2:
            codes = codes[None]
        if codes.dim() != 3 or codes.shape[0] != 1:
            raise UserError(f"expected codes (q, T) of one utterance, got {tuple(codes.shape)}")
        return codes.long(), samples

    @torch.inference_mode()
    def decode(self, encoded: EncodedAudio | Tensor) -> np.ndarray:
        """Samples ``(S,)`` float32 at :attr:`sample_rate` of an :class:`EncodedAudio` (trimmed
        to its length) or of codes ``(q, T)``."""
        codes, samples = self._codes(encoded)
        lengths = torch.tensor([codes.shape[-1]], device=self._device)
        try:
            audio, _ = self.model.decode(codes.to(self._device), lengths)
        except ValueError as e:
            raise UserError(f"cannot decode these codes: {e}") from None
        return audio[0, :samples].float().cpu().numpy()

    def stream(self, bitrate: float | None = None) -> CodecSession:
        """A chunk-by-chunk session at ``bitrate`` kbps (see :class:`CodecSession`)."""
        return CodecSession(self, self.stages(bitrate))

    # --- files -----------------------------------------------------------------------------
    def encode_file(self, source: str | Path, target: str | Path, bitrate: float | None) -> Path:
        """Encode an audio file into a ``.sca`` file; returns the target."""
        return write_sca(target, self.encode(source, bitrate=bitrate))

    def decode_file(self, source: str | Path, target: str | Path) -> Path:
        """Decode a ``.sca`` file into a WAV file (16-bit PCM at the codec's rate)."""
        import soundfile

        audio = self.decode(read_sca(source))
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).round().astype(np.int16)
        soundfile.write(str(target), pcm, self.sample_rate, subtype="PCM_16")
        return Path(target)


class CodecSession:
    """Encode and decode one stream chunk by chunk: the codes equal whole-file encoding's, and
    the samples whole-file decoding's. Use as a context manager or call :meth:`finish`.

    ``encode(chunk)`` takes samples at the codec's rate and returns the code frames ``(q, t)``
    they complete (a frame needs its whole hop); ``finish()`` pads the last partial hop and
    returns its frame; ``decode(codes)`` returns the ``t * hop`` samples of new frames.
    """

    def __init__(self, codec: AudioCodec, stages: int) -> None:
        self.codec, self.q = codec, stages
        device = codec._device
        self._enc = codec.model.init_state(1, device)
        self._dec = codec.model.init_state(1, device)
        self.finished = False

    def __enter__(self) -> CodecSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finished = True

    def _chunk(self, chunk: Any, sample_rate: int | None) -> Tensor:
        if sample_rate is not None and sample_rate != self.codec.sample_rate:
            raise AudioError(
                f"a stream runs at the codec's {self.codec.sample_rate} Hz, got {sample_rate} "
                "Hz; resample the audio first"
            )
        x = torch.as_tensor(np.asarray(chunk, dtype=np.float32)).reshape(1, -1)
        return x.to(self.codec._device)

    @torch.inference_mode()
    def encode(self, chunk: Any, sample_rate: int | None = None, final: bool = False) -> Tensor:
        """Code frames ``(q, t)`` that ``chunk``'s samples complete."""
        if self.finished:
            raise UserError("this stream is finished; open another with codec.stream()")
        x = self._chunk(chunk, sample_rate)
        length = torch.tensor([x.shape[1]], device=x.device)
        codes, _, self._enc = self.codec.model.encode_step(x, length, self._enc, final=final)
        self.finished = final
        return codes[0, : self.q].cpu()

    def finish(self) -> Tensor:
        """The last frame (the partial hop padded with zeros); the session then ends."""
        return self.encode(np.zeros(0, dtype=np.float32), final=True)

    @torch.inference_mode()
    def decode(self, codes: Tensor) -> np.ndarray:
        """The samples ``(t * hop,)`` of new code frames ``(q, t)``."""
        codes = torch.as_tensor(codes).long().reshape(1, -1, codes.shape[-1])
        device = self.codec._device
        length = torch.tensor([codes.shape[-1]], device=device)
        try:
            audio, _, self._dec = self.codec.model.decode_step(codes.to(device), length, self._dec)
        except ValueError as e:
            raise UserError(f"cannot decode these codes: {e}") from None
        return audio[0].float().cpu().numpy()


__all__ = ["AudioCodec", "BitstreamError", "CodecSession"]
