"""Log-mel filterbank frontend, causal and chunk-exact so that streaming needs no look-back.

Dims legend: B - batch, S - audio samples, T - frames, W - window length in samples,
K - FFT bins (``n_fft // 2 + 1``), F - mel bins.

Follows Kaldi's ``compute-fbank-feats`` with ``snip_edges=true``: frame ``t`` covers samples
``[t * hop, t * hop + W)``, each frame has its DC offset removed, is pre-emphasised and windowed
(povey window) on its own, then zero-padded to ``n_fft``. What differs from Kaldi: no dither (the
features are deterministic), mel triangles from ``torchaudio.functional.melscale_fbanks`` (linear
in Hz rather than in mel), and no utterance-level mean/variance normalisation. Every step depends
only on the samples of its frame, so running chunk by chunk (``streaming_forward``) gives the same
frames as running on the whole signal, and padding never leaks into valid frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, overload

import torch
import torchaudio.functional as AF
from torch import Tensor

from suite.errors import UserError
from suite.interfaces import Frontend
from suite.registry import register_frontend


class FrontendError(UserError, ValueError):
    """Frontend input of the wrong shape or options that cannot work together."""


@dataclass
class FbankState:
    """What :meth:`Fbank.streaming_forward` carries from one chunk to the next.

    Attributes:
        samples: ``(B, W - 1)`` float32, each stream's samples that do not yet complete a frame,
            left-aligned, zero beyond ``lengths``. A stream never holds a full window (``W``) of
            leftover samples, because a full window would already have formed a frame.
        lengths: ``(B,)`` int64, how many of ``samples`` are valid per stream (``0 <= n < W``).
    """

    samples: Tensor
    lengths: Tensor


def _window(kind: str, length: int) -> Tensor:
    if kind == "povey":  # Kaldi's default: a Hann window raised to 0.85, never quite zero inside
        return torch.hann_window(length, periodic=False).pow(0.85)
    if kind == "hann":
        return torch.hann_window(length, periodic=False)
    if kind == "hamming":
        return torch.hamming_window(length, periodic=False)
    raise FrontendError(f"unknown window '{kind}'; choose one of: povey, hann, hamming")


@register_frontend("fbank")
class Fbank(Frontend):
    """Log-mel filterbank features, ``audio (B, S) -> features (B, T, F)``.

    Args:
        sample_rate: rate of the input audio in Hz.
        n_mels: number of mel bins ``F`` (the output width).
        win_ms: frame length in milliseconds (25 ms -> 400 samples at 16 kHz).
        hop_ms: frame shift in milliseconds (10 ms -> 160 samples at 16 kHz).
        n_fft: FFT size; each windowed frame is zero-padded to it. Must be >= the frame length.
        f_min: lowest mel edge in Hz (Kaldi's ``low_freq``).
        f_max: highest mel edge in Hz; ``None`` means the Nyquist frequency.
        preemphasis: per-frame pre-emphasis coefficient (0 disables it).
        remove_dc_offset: subtract each frame's mean before windowing.
        window: ``"povey"`` (Kaldi), ``"hann"`` or ``"hamming"``.
        log_floor: mel energies are clamped to this before the log; Kaldi's value (float32 eps)
            keeps digital silence finite and matches ``torchaudio.compliance.kaldi.fbank``.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 80,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        n_fft: int = 512,
        f_min: float = 20.0,
        f_max: float | None = None,
        preemphasis: float = 0.97,
        remove_dc_offset: bool = True,
        window: Literal["povey", "hann", "hamming"] = "povey",
        log_floor: float = torch.finfo(torch.float32).eps,
    ) -> None:
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.input_dim = int(n_mels)
        self.win_ms, self.hop_ms = float(win_ms), float(hop_ms)
        self.win_length = int(round(sample_rate * win_ms / 1000))
        self.hop_length = int(round(sample_rate * hop_ms / 1000))
        self.n_fft = int(n_fft)
        if self.win_length < 2 or self.hop_length < 1:
            raise FrontendError(
                f"win_ms={win_ms} and hop_ms={hop_ms} give {self.win_length}-sample frames "
                f"every {self.hop_length} samples at {sample_rate} Hz; use e.g. 25 and 10 ms"
            )
        if self.n_fft < self.win_length:
            raise FrontendError(
                f"n_fft={n_fft} is shorter than the {self.win_length}-sample frame "
                f"(win_ms={win_ms} at {sample_rate} Hz); pass n_fft >= {self.win_length}, "
                "e.g. the next power of two"
            )
        f_max = sample_rate / 2 if f_max is None else float(f_max)
        if not 0 <= f_min < f_max <= sample_rate / 2:
            raise FrontendError(
                f"expected 0 <= f_min < f_max <= {sample_rate / 2:g} Hz (Nyquist), "
                f"got f_min={f_min}, f_max={f_max}"
            )
        self.preemphasis = float(preemphasis)
        self.remove_dc_offset = bool(remove_dc_offset)
        self.log_floor = float(log_floor)
        # Derived from the options above, so not saved with the model (persistent=False).
        self.register_buffer("window", _window(window, self.win_length), persistent=False)
        mel = AF.melscale_fbanks(
            n_freqs=self.n_fft // 2 + 1,
            f_min=float(f_min),
            f_max=f_max,
            n_mels=self.input_dim,
            sample_rate=self.sample_rate,
            norm=None,
            mel_scale="htk",
        )  # (K, F)
        self.register_buffer("mel_fb", mel, persistent=False)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_mels={self.input_dim}, win={self.win_length}, "
            f"hop={self.hop_length}, n_fft={self.n_fft}"
        )

    @overload
    def num_frames(self, num_samples: int) -> int: ...

    @overload
    def num_frames(self, num_samples: Tensor) -> Tensor: ...

    def num_frames(self, num_samples: int | Tensor) -> int | Tensor:
        """Frames computed from ``num_samples`` samples: ``1 + (S - W) // hop``, or 0 if ``S < W``.

        Args:
            num_samples: a sample count, or a tensor of them (e.g. ``lengths (B,)``).

        Returns:
            The frame count(s), as an int or an int64 tensor of the same shape.
        """
        if isinstance(num_samples, Tensor):
            n = num_samples.long()
            frames = torch.div(n - self.win_length, self.hop_length, rounding_mode="floor") + 1
            return torch.where(n >= self.win_length, frames, torch.zeros_like(frames))
        if num_samples < self.win_length:
            return 0
        return 1 + (int(num_samples) - self.win_length) // self.hop_length

    def _check(self, audio: Tensor, lengths: Tensor, what: str) -> None:
        if audio.dim() != 2:
            raise FrontendError(
                f"expected {what} shaped (B, S), got {tuple(audio.shape)}; "
                "add a batch dimension with x[None] (and lengths=torch.tensor([S]))"
            )
        if lengths.shape != (audio.shape[0],):
            raise FrontendError(
                f"expected lengths shaped ({audio.shape[0]},) for {what} {tuple(audio.shape)}, "
                f"got {tuple(lengths.shape)}"
            )
        if lengths.numel() and (int(lengths.max()) > audio.shape[1] or int(lengths.min()) < 0):
            raise FrontendError(
                f"lengths must lie in [0, {audio.shape[1]}] for {what} {tuple(audio.shape)}, "
                f"got {lengths.tolist()}; lengths count valid samples per row"
            )

    def _log_mel(self, frames: Tensor) -> Tensor:
        """``frames (B, T, W)`` raw samples -> ``(B, T, F)`` log-mel energies."""
        if self.remove_dc_offset:
            frames = frames - frames.mean(dim=-1, keepdim=True)
        if self.preemphasis:
            # As in Kaldi, the first sample is pre-emphasised against itself: frames stay apart.
            previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
            frames = frames - self.preemphasis * previous
        spectrum = torch.fft.rfft(frames * self.window, n=self.n_fft)  # (B, T, K)
        power = spectrum.real.square() + spectrum.imag.square()
        mel = torch.matmul(power, self.mel_fb)  # (B, T, F)
        return mel.clamp_min(self.log_floor).log()

    def forward(self, audio: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Compute features of a padded batch.

        Args:
            audio: ``(B, S)`` waveforms at ``sample_rate``, padded on the right.
            lengths: ``(B,)`` valid samples per item.

        Returns:
            ``features (B, T, F)`` float32 with ``T = max(frame lengths)``, zero beyond each
            item's length, and ``lengths (B,)`` int64 valid frames per item.
        """
        self._check(audio, lengths, "audio")
        audio = audio.to(self.window.device, torch.float32)
        frame_lengths = self.num_frames(lengths.to(audio.device))
        batch = audio.shape[0]
        num = int(frame_lengths.max()) if batch else 0
        if num == 0:
            return audio.new_zeros(batch, 0, self.input_dim), frame_lengths
        # Only the samples the valid frames cover, so extra padding never adds frames.
        audio = audio[:, : (num - 1) * self.hop_length + self.win_length]
        frames = audio.unfold(1, self.win_length, self.hop_length)  # (B, T, W)
        features = self._log_mel(frames)
        valid = torch.arange(num, device=audio.device) < frame_lengths[:, None]  # (B, T)
        return features.masked_fill(~valid[..., None], 0.0), frame_lengths

    def init_state(self, batch_size: int, device: Any = None) -> FbankState:
        """The state of ``batch_size`` fresh streams (no leftover samples)."""
        device = self.window.device if device is None else device
        return FbankState(
            samples=torch.zeros(batch_size, self.win_length - 1, device=device),
            lengths=torch.zeros(batch_size, dtype=torch.long, device=device),
        )

    def streaming_forward(
        self, chunk: Tensor, chunk_lengths: Tensor, state: FbankState
    ) -> tuple[tuple[Tensor, Tensor], FbankState]:
        """Compute the frames completed by one more chunk of each stream.

        Streams may be at different ages and receive chunks of different lengths (including
        shorter than a frame, or empty); concatenating each stream's valid output frames over
        all chunks equals :meth:`forward` on the whole stream.

        Args:
            chunk: ``(B, S)`` new samples per stream, padded on the right.
            chunk_lengths: ``(B,)`` valid new samples per stream.
            state: from :meth:`init_state` or the previous call.

        Returns:
            ``((features (B, T, F), lengths (B,)), new_state)``, as in :meth:`forward`.
        """
        self._check(chunk, chunk_lengths, "chunk")
        device = state.samples.device
        chunk = chunk.to(device, torch.float32)
        chunk_lengths = chunk_lengths.to(device).long()
        kept, kept_width = state.lengths, state.samples.shape[1]
        total = kept + chunk_lengths  # (B,)
        width = kept_width + chunk.shape[1]
        # Join each stream's leftover and its chunk into one left-aligned row; offsets differ per
        # stream, so the chunk is gathered at positions shifted by that stream's leftover length.
        pos = torch.arange(width, device=device)[None]  # (1, S')
        chunk = torch.nn.functional.pad(chunk, (0, 1))  # a zero column keeps gather in range
        from_chunk = chunk.gather(1, (pos - kept[:, None]).clamp(0, chunk.shape[1] - 1))
        from_state = torch.nn.functional.pad(state.samples, (0, width - kept_width))
        joined = torch.where(pos < kept[:, None], from_state, from_chunk)
        joined = joined.masked_fill(pos >= total[:, None], 0.0)  # (B, S')
        features, frame_lengths = self.forward(joined, total)
        # Frame t starts at t * hop, so everything before frames * hop is never needed again.
        consumed = frame_lengths * self.hop_length
        left = torch.arange(kept_width, device=device)[None]  # (1, W - 1)
        rest = joined.gather(1, (consumed[:, None] + left).clamp(max=width - 1))
        rest_lengths = total - consumed
        rest = rest.masked_fill(left >= rest_lengths[:, None], 0.0)  # (B, W - 1)
        return (features, frame_lengths), FbankState(rest, rest_lengths)
