"""An in-process binding to libespeak-ng (``ctypes``), loaded once per process.

Spawning the ``espeak-ng`` command for every utterance pays for process start and voice-data
loading each time; the library, loaded once per process, pays for them once and gives the same
audio.
Only the handful of calls corpus synthesis needs are bound (see ``espeak-ng/speak_lib.h``).

libespeak-ng keeps global state, so one process holds one :class:`Espeak` (``Espeak.get()``);
use a process pool, not threads, for parallel synthesis.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import numpy as np

from suite.errors import UserError

# Values from speak_lib.h (API revision 12).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EE_OK = 0
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
RATE_MIN, RATE_MAX = 80, 450  # espeakRATE_MINIMUM / MAXIMUM, words per minute

# int SynthCallback(short *wav, int numsamples, espeak_EVENT *events); return 1 aborts.
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

INSTALL_HINT = "install espeak-ng: apt-get install espeak-ng (Debian/Ubuntu package libespeak-ng1)"


def find_library() -> str | None:
    """The libespeak-ng shared library's name, or ``None`` when it is not installed."""
    return ctypes.util.find_library("espeak-ng")


def version() -> str:
    """The library's version string, e.g. ``"1.51"`` (without initializing it)."""
    name = find_library()
    if name is None:
        raise UserError(f"libespeak-ng was not found; {INSTALL_HINT}")
    lib = ctypes.CDLL(name)
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p
    return lib.espeak_Info(None).decode()


class Espeak:
    """One process's libespeak-ng, in synchronous mode, collecting audio through a callback.

    Attributes:
        sample_rate: the library's output rate in Hz (22050 for the standard voices).
    """

    _instance: Espeak | None = None

    def __init__(self) -> None:
        name = find_library()
        if name is None:
            raise UserError(f"libespeak-ng was not found; {INSTALL_HINT}")
        self._lib = ctypes.CDLL(name)
        self._libc = ctypes.CDLL(ctypes.util.find_library("c"))
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        # The library looks for ``<path>/espeak-ng-data``; ESPEAK_DATA_PATH names that parent.
        data_path = os.environ.get("ESPEAK_DATA_PATH")
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode() if data_path else None, 0
        )
        if rate <= 0:
            raise UserError(
                "libespeak-ng could not load its voice data"
                + (f" from ESPEAK_DATA_PATH={data_path}" if data_path else "")
                + f"; {INSTALL_HINT}, or set ESPEAK_DATA_PATH to the folder holding espeak-ng-data"
            )
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        # Keep a reference: ctypes frees the trampoline when the Python object dies.
        self._callback = _CALLBACK(self._collect)
        lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> Espeak:
        """This process's instance, created (and the voice data loaded) on first use."""
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def _collect(self, wav: ctypes.POINTER(ctypes.c_short), num_samples: int, events: int) -> int:
        if num_samples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0

    def synthesize(
        self, text: str, voice: str, rate: int = 175, pitch: int = 50, pitch_range: int = 50
    ) -> np.ndarray:
        """Speak ``text`` and return float32 samples in [-1, 1] at :attr:`sample_rate`.

        Args:
            text: plain UTF-8 text (no SSML).
            voice: an espeak-ng voice name with an optional variant, e.g. ``"en-us+m3"``.
            rate: speed in words per minute, 80 to 450.
            pitch: base pitch, 0 to 100 (50 is the voice's normal).
            pitch_range: pitch range, 0 (monotone) to 100 (50 is normal).

        Raises:
            UserError: for an unknown voice.
        """
        lib = self._lib
        if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise UserError(f"espeak-ng has no voice '{voice}'; list them with espeak-ng --voices")
        for param, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range)):
            lib.espeak_SetParameter(param, int(value), 0)
        # Klatt voices and breathiness draw noise from libc's rand(); seeding it per utterance
        # makes the audio depend only on the arguments, not on what this process spoke before.
        self._libc.srand(0)
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        status = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed with status {status} for {text!r}")
        lib.espeak_Synchronize()
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        self._chunks = []
        return samples.astype(np.float32) / 32768.0
