"""Real acoustics for training: recorded noise, room reverberation, band-limited channels.

Dims legend: S - audio samples, H - impulse response taps.

Each transform takes one waveform ``(S,)`` and returns one of the same length, draws only from
its own ``numpy`` generator (``reseed`` restarts it: same seed, same audio, in any worker) and
applies with its own probability, as :class:`suite.augment.NoiseMixer` does. The noise and
impulse responses come from a *noise pack*: a folder with ``manifest.jsonl`` whose lines give
each file's ``path`` (relative to the folder) and ``kind`` (``background``, ``sound``,
``short``, ``ir``), such as the shared data pack's ``noise/`` (Speech Commands background
noise, ESC-10 sound events, audiomentations' room impulse responses). A folder without a
manifest is read as ``ir/**`` (impulse responses) plus every other audio file (background).

- :class:`RealNoise` adds a recording at a random SNR (Ko et al., 2017, "A study on data
  augmentation of reverberant speech for robust speech recognition": real point-source and
  background noise); the SNR is over the whole utterance.
- :class:`Reverb` convolves with a room impulse response and cuts the output at the IR's
  direct-path peak, so the speech does not move in time (the alignment Kaldi's and
  torchaudio's recipes keep), then restores the dry signal's power.
- :class:`SimulatedRoom` does the same with the impulse response of a random shoebox room
  (pyroomacoustics' image-source method, Allen and Berkley, 1979; an optional dependency),
  absorption set by Sabine's formula from a random RT60. The reflection order is capped
  (:data:`MAX_ORDER`) to bound the cost per utterance, which shortens the late tail of long
  RT60s.
- :class:`BandLimit` low-passes at a random cutoff or band-passes to the telephone band
  (300-3400 Hz) with an FFT mask: every bin outside the band is zeroed, within a short cosine
  ramp inside the band.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from suite.config import ConfigError

KINDS = ("background", "sound", "short", "ir")
# Simulated rooms: (length, width, height) bounds in metres, and the image-source order cap.
ROOM_MIN, ROOM_MAX = (3.0, 3.0, 2.5), (8.0, 7.0, 4.0)
MAX_ORDER = 20
TELEPHONE_BAND = (300.0, 3400.0)
_AUDIO = (".wav", ".flac", ".opus", ".ogg", ".mp3")


@dataclass(frozen=True)
class NoiseFile:
    """One file of a noise pack."""

    path: Path
    kind: str


def _fix(directory: Path) -> str:
    return (
        f"restore the noise pack at {directory} (the shared data README lists its sources), "
        "or set data.augment.noise_dir to a folder with a manifest.jsonl of {path, kind} lines"
    )


def read_noise_pack(directory: str | Path) -> list[NoiseFile]:
    """Every file of the noise pack in ``directory``, checked to exist.

    Raises:
        ConfigError: the folder, its manifest or a file it lists is missing; the message
            names the path and how to fix it.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"noise folder {directory} does not exist; {_fix(directory)}")
    manifest = directory / "manifest.jsonl"
    if manifest.is_file():
        files = []
        for number, line in enumerate(manifest.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                files.append(NoiseFile(directory / row["path"], str(row["kind"])))
            except (ValueError, KeyError, TypeError):
                raise ConfigError(
                    f"{manifest}:{number} is not a JSON object with 'path' and 'kind'; "
                    f"{_fix(directory)}"
                ) from None
    else:
        files = [
            NoiseFile(p, "ir" if "ir" in p.relative_to(directory).parts[:-1] else "background")
            for p in sorted(directory.rglob("*"))
            if p.suffix.lower() in _AUDIO
        ]
    missing = [f.path for f in files if not f.path.is_file()]
    if missing:
        raise ConfigError(
            f"noise file {missing[0]} is missing ({len(missing)} of {len(files)} files of "
            f"{directory} are); {_fix(directory)}"
        )
    return files


class NoiseBank:
    """The files of some kinds in a noise pack, decoded on first use (a bounded cache).

    Args:
        directory: the noise pack.
        kinds: which kinds to use (see :data:`KINDS`).
        sample_rate: files at another rate are resampled to it.
        cache_size: decoded files kept in memory.
    """

    def __init__(
        self,
        directory: str | Path,
        kinds: list[str] | tuple[str, ...],
        sample_rate: int,
        cache_size: int = 256,
    ) -> None:
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown:
            raise ConfigError(f"unknown noise kind(s) {unknown}; choose from {', '.join(KINDS)}")
        files = [f for f in read_noise_pack(directory) if f.kind in kinds]
        self.directory = Path(directory)
        self.by_kind = {k: [f.path for f in files if f.kind == k] for k in kinds}
        self.by_kind = {k: v for k, v in self.by_kind.items() if v}
        if not self.by_kind:
            raise ConfigError(
                f"the noise pack {directory} has no file of kind {', '.join(kinds)}; "
                f"{_fix(self.directory)}"
            )
        self.sample_rate = sample_rate
        self.cache_size = cache_size
        self._cache: OrderedDict[Path, np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": OrderedDict()}  # workers decode their own

    def draw(self, rng: np.random.Generator) -> tuple[str, np.ndarray]:
        """A kind uniformly, then one of its files uniformly: ``(kind, samples (S,))``."""
        kinds = sorted(self.by_kind)
        kind = kinds[int(rng.integers(len(kinds)))]
        paths = self.by_kind[kind]
        return kind, self.load(paths[int(rng.integers(len(paths)))])

    def load(self, path: Path) -> np.ndarray:
        """``(S,)`` float32 mono samples of ``path`` at :attr:`sample_rate`."""
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        from suite.audio import prepare_samples

        try:
            samples, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (S, C)
            samples = prepare_samples(
                samples, rate, self.sample_rate, name=str(path), channels_first=False
            )
        except Exception as e:  # soundfile's LibsndfileError, or an empty/NaN file
            raise ConfigError(
                f"cannot read noise file {path} ({str(e).strip() or type(e).__name__}); "
                f"{_fix(self.directory)}"
            ) from None
        self._cache[path] = samples
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return samples


def _check_prob(prob: float, name: str) -> float:
    if not 0.0 <= prob <= 1.0:
        raise ConfigError(f"'{name}' must lie in [0, 1], got {prob}")
    return float(prob)


def _check_range(values: list[float] | tuple[float, ...], name: str) -> tuple[float, float]:
    if len(values) != 2 or values[0] > values[1]:
        raise ConfigError(f"'{name}' must be [low, high] with low <= high, got {list(values)}")
    return float(values[0]), float(values[1])


def power(samples: np.ndarray) -> float:
    """Mean square of ``samples``, in float64."""
    return float(np.mean(np.square(samples, dtype=np.float64))) if samples.size else 0.0


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech (S,)`` plus ``noise (S,)`` scaled so that the power ratio is ``snr_db`` dB.

    Silent speech or silent noise has no defined SNR: ``speech`` comes back unchanged.
    """
    p_speech, p_noise = power(speech), power(noise)
    if p_speech == 0.0 or p_noise == 0.0:
        return speech
    scale = math.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10)))
    return (speech + scale * noise).astype(np.float32)


def fit_length(
    noise: np.ndarray, length: int, rng: np.random.Generator, loop: bool = True
) -> np.ndarray:
    """``(length,)`` of ``noise``: a random crop of a longer one; a shorter one looped from a
    random phase (``loop``) or placed once at a random offset in silence."""
    if noise.shape[0] >= length:
        start = int(rng.integers(noise.shape[0] - length + 1))
        return noise[start : start + length]
    if loop:
        reps = -(-length // noise.shape[0]) + 1
        start = int(rng.integers(noise.shape[0]))
        return np.tile(noise, reps)[start : start + length]
    out = np.zeros(length, dtype=np.float32)
    start = int(rng.integers(length - noise.shape[0] + 1))
    out[start : start + noise.shape[0]] = noise
    return out


class RealNoise:
    """Adds a recorded noise at a random SNR, with probability ``prob``.

    Args:
        bank: where the noise comes from.
        prob: probability of adding noise to a given waveform.
        snr_db: ``(low, high)``; the SNR is drawn uniformly from it.
        seed: seed of its own generator; ``None`` draws fresh entropy.
    """

    def __init__(
        self, bank: NoiseBank, prob: float, snr_db: tuple[float, float], seed: int | None = None
    ) -> None:
        self.bank = bank
        self.prob = _check_prob(prob, "real_noise_prob")
        self.snr_db = _check_range(snr_db, "real_noise_snr_db")
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Maybe add noise to ``samples (S,)``; returns ``(S,)`` float32."""
        if self.prob == 0.0 or self.rng.random() >= self.prob:
            return samples
        snr = float(self.rng.uniform(*self.snr_db))
        kind, noise = self.bank.draw(self.rng)
        noise = fit_length(noise, samples.shape[0], self.rng, loop=kind != "short")
        return mix_at_snr(samples, noise, snr)


def reverberate(samples: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """``samples (S,)`` convolved with ``ir (H,)``, aligned on the IR's direct-path peak and
    scaled back to the dry signal's power; ``(S,)`` float32."""
    if samples.size == 0 or not np.any(ir):
        return samples
    peak = int(np.argmax(np.abs(ir)))  # the direct path: the loudest tap
    n = samples.shape[0] + ir.shape[0] - 1
    size = 1 << (n - 1).bit_length()
    wet = np.fft.irfft(np.fft.rfft(samples, size) * np.fft.rfft(ir, size), size)
    wet = wet[peak : peak + samples.shape[0]]  # (S,): the speech stays where it was
    p_dry, p_wet = power(samples), power(wet)
    if p_wet > 0:
        wet *= math.sqrt(p_dry / p_wet)
    return wet.astype(np.float32)


class Reverb:
    """Convolves with a room impulse response of the bank, with probability ``prob``."""

    def __init__(self, bank: NoiseBank, prob: float, seed: int | None = None) -> None:
        self.bank = bank
        self.prob = _check_prob(prob, "reverb_prob")
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        if self.prob == 0.0 or self.rng.random() >= self.prob:
            return samples
        _, ir = self.bank.draw(self.rng)
        return reverberate(samples, ir)


class SimulatedRoom:
    """Convolves with the impulse response of a random shoebox room, with probability ``prob``.

    Each room draws its size within :data:`ROOM_MIN`..:data:`ROOM_MAX`, an RT60 from
    ``rt60``, and a source and a microphone at least 0.5 m from every wall.

    Args:
        sample_rate: rate of the waveforms.
        prob: probability of reverberating a given waveform.
        rt60: ``(low, high)`` reverberation time in seconds.
        seed: seed of its own generator.
    """

    def __init__(
        self,
        sample_rate: int,
        prob: float,
        rt60: tuple[float, float] = (0.2, 0.8),
        seed: int | None = None,
    ) -> None:
        try:
            import pyroomacoustics
        except ImportError:
            raise ConfigError(
                "data.augment.room_prob simulates rooms with pyroomacoustics, which is not "
                "installed; `pip install -e '.[augment]'` (or pyroomacoustics), or set "
                "room_prob to 0 and use reverb_prob (recorded impulse responses)"
            ) from None
        self.pra = pyroomacoustics
        self.sample_rate = sample_rate
        self.prob = _check_prob(prob, "room_prob")
        self.rt60 = _check_range(rt60, "room_rt60")
        try:  # the largest room must be able to decay this fast
            pyroomacoustics.inverse_sabine(self.rt60[0], list(ROOM_MAX))
        except ValueError:
            raise ConfigError(
                f"'room_rt60' starts at {self.rt60[0]} s, shorter than a {ROOM_MAX} m room "
                "can decay in; start the range at 0.2 s or more"
            ) from None
        self.rng = np.random.default_rng(seed)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "pra"}  # a module: re-imported

    def __setstate__(self, state: dict) -> None:
        import pyroomacoustics

        self.__dict__.update(state, pra=pyroomacoustics)

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def room_ir(self) -> np.ndarray:
        """``(H,)`` impulse response of a newly drawn room, source and microphone."""
        dims = self.rng.uniform(ROOM_MIN, ROOM_MAX)  # (3,) metres
        rt60 = float(self.rng.uniform(*self.rt60))
        source, mic = self.rng.uniform(0.5, dims - 0.5, size=(2, 3))
        absorption, order = self.pra.inverse_sabine(rt60, dims)
        room = self.pra.ShoeBox(
            dims,
            fs=self.sample_rate,
            materials=self.pra.Material(absorption),
            max_order=min(order, MAX_ORDER),
        )
        room.add_source(source)
        room.add_microphone(mic)
        room.compute_rir()
        return np.asarray(room.rir[0][0], dtype=np.float32)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        if self.prob == 0.0 or self.rng.random() >= self.prob:
            return samples
        return reverberate(samples, self.room_ir())


def band_limit(
    samples: np.ndarray, sample_rate: int, low_hz: float, high_hz: float, ramp_hz: float = 100.0
) -> np.ndarray:
    """Keep ``[low_hz, high_hz]`` of ``samples (S,)``: bins outside are zeroed, with a
    raised-cosine ramp of ``ramp_hz`` inside each edge (``low_hz`` 0 keeps DC)."""
    if samples.size == 0:
        return samples
    spectrum = np.fft.rfft(samples.astype(np.float64))
    freqs = np.fft.rfftfreq(samples.shape[0], d=1.0 / sample_rate)
    gain = ((freqs >= low_hz) & (freqs <= high_hz)).astype(np.float64)
    upper = (freqs > high_hz - ramp_hz) & (freqs <= high_hz)
    gain[upper] *= 0.5 * (1 + np.cos(np.pi * (freqs[upper] - (high_hz - ramp_hz)) / ramp_hz))
    if low_hz > 0:
        lower = (freqs >= low_hz) & (freqs < low_hz + ramp_hz)
        gain[lower] *= 0.5 * (1 - np.cos(np.pi * (freqs[lower] - low_hz) / ramp_hz))
    return np.fft.irfft(spectrum * gain, n=samples.shape[0]).astype(np.float32)


class BandLimit:
    """Telephone band (with ``telephone_prob``), else a low-pass at a cutoff drawn from
    ``lowpass_hz`` (with ``lowpass_prob``), else nothing.

    Args:
        sample_rate: rate of the waveforms.
        lowpass_prob: probability of a low-pass.
        lowpass_hz: ``(low, high)`` range of the cutoff in Hz (below Nyquist).
        telephone_prob: probability of the 300-3400 Hz band-pass.
        seed: seed of its own generator.
    """

    def __init__(
        self,
        sample_rate: int,
        lowpass_prob: float = 0.0,
        lowpass_hz: tuple[float, float] = (3000.0, 7000.0),
        telephone_prob: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self.lowpass_prob = _check_prob(lowpass_prob, "lowpass_prob")
        self.telephone_prob = _check_prob(telephone_prob, "telephone_prob")
        self.lowpass_hz = _check_range(lowpass_hz, "lowpass_hz")
        if not (0 < self.lowpass_hz[0] and self.lowpass_hz[1] <= sample_rate / 2):
            raise ConfigError(
                f"'lowpass_hz' must lie in (0, {sample_rate / 2:g}] Hz (Nyquist at "
                f"{sample_rate} Hz), got {list(lowpass_hz)}"
            )
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        # Both draws happen for every item, so one choice never shifts the other's stream.
        phone, low, cutoff = (
            self.rng.random(),
            self.rng.random(),
            self.rng.uniform(*self.lowpass_hz),
        )
        if phone < self.telephone_prob:
            return band_limit(samples, self.sample_rate, *TELEPHONE_BAND)
        if low < self.lowpass_prob:
            return band_limit(samples, self.sample_rate, 0.0, float(cutoff))
        return samples
