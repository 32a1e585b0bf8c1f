"""The tiny omni model's vocabulary and input features (what its checkpoint and front end need):
the word vocabulary, image patches and log-mel audio tokens. The task data that trained it is
``examples/tiny_omni/data.py``."""

from __future__ import annotations

import numpy as np

# ---- vocabulary ---------------------------------------------------------------------------------
SPECIAL = ["<pad>", "<bos>", "<eos>", "<vision_bos>", "<vision_eos>", "<audio_bos>", "<audio_eos>",
           "<image>", "<audio>", "<video>"]
WORDS = [str(d) for d in range(10)] + ["what", "shown", "heard", "same", "plus", "minus", "=", "?", "yes", "no"]
VOCAB: list[str] = SPECIAL + WORDS
TOK: dict[str, int] = {t: i for i, t in enumerate(VOCAB)}
VOCAB_SIZE = 64  # padded (rows past len(VOCAB) are never targets)

TASKS = ("vision", "audio", "match", "text")  # recorded in the checkpoint's config.json

IMG = 32  # image side in pixels
PATCH = 8  # patch side -> a 4 x 4 grid of vision tokens
GRID = IMG // PATCH
N_VISION = GRID * GRID
SR = 8000  # audio sample rate (Hz), 1 s clips
N_FFT, HOP, N_MELS = 256, 125, 32
N_FRAMES = 64  # mel frames kept
FRAMES_PER_TOKEN = 4
N_AUDIO = N_FRAMES // FRAMES_PER_TOKEN
AUDIO_FEAT = N_MELS * FRAMES_PER_TOKEN
PATCH_FEAT = PATCH * PATCH


# ---- features ----------------------------------------------------------------------------------
def image_patches(img: np.ndarray) -> np.ndarray:
    """[32, 32] -> [16, 64] row-major 8x8 patches (the vision encoder's input)."""
    return img.reshape(GRID, PATCH, GRID, PATCH).transpose(0, 2, 1, 3).reshape(N_VISION, PATCH_FEAT)


def _mel_filterbank() -> np.ndarray:
    def hz2mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel2hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    pts = mel2hz(np.linspace(hz2mel(60.0), hz2mel(SR / 2), N_MELS + 2))
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / SR)
    fb = np.zeros((N_MELS, freqs.size))
    for i in range(N_MELS):
        lo, mid, hi = pts[i], pts[i + 1], pts[i + 2]
        fb[i] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
    return fb


_MEL = _mel_filterbank()


def log_mel(wave: np.ndarray) -> np.ndarray:
    """[8000] waveform -> [64, 32] log-mel frames (Hann window, |STFT|^2, mel filterbank, log10)."""
    pad = np.pad(wave.astype(np.float64), (N_FFT // 2, N_FFT // 2))
    idx = np.arange(N_FRAMES)[:, None] * HOP + np.arange(N_FFT)[None, :]
    frames = pad[idx] * np.hanning(N_FFT)[None, :]
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
    mel = power @ _MEL.T
    return (np.log10(mel + 1e-6) / 4.0 + 1.0).astype(np.float32)  # roughly [-0.5, 1.5]


def audio_tokens_features(mel: np.ndarray) -> np.ndarray:
    """[64, 32] log-mel -> [16, 128]: 4 consecutive frames per audio token (the audio encoder's input)."""
    return mel.reshape(N_AUDIO, AUDIO_FEAT)
