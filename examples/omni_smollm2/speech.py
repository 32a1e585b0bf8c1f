"""Spoken words from eSpeak NG (the library and voices of the ``espeakng-loader`` wheel) through its
C API in a server process (``_espeak_server.py``), resampled to 16 kHz, with a random voice, rate and pitch
and additive noise at a random SNR; a deterministic function of the words and a NumPy generator."""

from __future__ import annotations

import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from masq_jax.errors import MasqError

SAMPLE_RATE = 16000
VOICES = ("en", "en-us", "en-gb-x-rp", "en+m3", "en+f2", "en-us+f4", "en+m7", "en-gb-scotland")


class SpeechError(MasqError):
    """eSpeak NG is missing or failed."""


class _Engine:
    """The eSpeak NG server process (``_espeak_server.py``: a fresh library state per utterance),
    started on first use and shared by the process's callers under a lock."""

    def __init__(self):
        try:
            import espeakng_loader  # noqa: F401  (the server needs it)
        except ImportError:
            raise SpeechError("speech synthesis needs eSpeak NG: pip install espeakng-loader") from None
        server = Path(__file__).with_name("_espeak_server.py")
        self.proc = subprocess.Popen([sys.executable, str(server)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.lock = threading.Lock()
        self.rate = self._count()
        if self.rate <= 0:
            raise SpeechError(f"eSpeak NG did not start (espeak_Initialize returned {self.rate})")

    def _count(self) -> int:
        head = self.proc.stdout.read(8)
        if len(head) != 8:
            raise SpeechError("the eSpeak NG server stopped; see its error output above")
        return struct.unpack("<q", head)[0]

    def synth(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        """int16 samples at ``self.rate`` of ``text``."""
        if "\n" in text or "\t" in text or "\t" in voice:
            raise SpeechError("text and voice must be one line without tabs")
        with self.lock:
            self.proc.stdin.write(f"{voice}\t{int(rate)}\t{int(pitch)}\t{text}\n".encode())
            self.proc.stdin.flush()
            n = self._count()
            if n < 0:
                raise SpeechError(f"eSpeak NG failed on {text!r} with voice {voice!r} (error {-1 - n})")
            return np.frombuffer(self.proc.stdout.read(2 * n), np.int16).copy()


_engine: _Engine | None = None


def engine() -> _Engine:
    global _engine
    if _engine is None or _engine.proc.poll() is not None:
        _engine = _Engine()
    return _engine


def speak(text: str, rng: np.random.Generator) -> np.ndarray:
    """``text`` spoken, float32 mono at ``SAMPLE_RATE`` in about [-1, 1]: a random voice of ``VOICES``,
    rate 130–200 words/min, pitch 25–75, with 0.1 s of noise-only lead-in and white noise at an SNR
    of 12–30 dB."""
    eng = engine()
    voice = VOICES[int(rng.integers(len(VOICES)))]
    wav = eng.synth(text, voice, int(rng.integers(130, 201)), int(rng.integers(25, 76))).astype(np.float64) / 32768
    t_out = np.arange(int(len(wav) * SAMPLE_RATE / eng.rate)) / SAMPLE_RATE
    wav = np.interp(t_out, np.arange(len(wav)) / eng.rate, wav)
    wav = np.concatenate([np.zeros(SAMPLE_RATE // 10), wav])
    power = float(np.mean(wav ** 2)) + 1e-12
    snr_db = float(rng.uniform(12, 30))
    wav = wav + rng.normal(0, np.sqrt(power / 10 ** (snr_db / 10)), wav.shape)
    return wav.astype(np.float32)
