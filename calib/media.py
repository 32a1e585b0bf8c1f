"""Reading calibration media: images (Pillow), audio (stdlib ``wave``, or soundfile when installed),
video as a folder of frames. Every failure is a ``ManifestError`` naming the manifest line and path.
"""

from __future__ import annotations

import wave
from math import gcd
from pathlib import Path

import numpy as np

from .errors import ManifestError

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _where(where: str, kind: str, path: Path) -> str:
    return f"{where}: cannot read {kind} {path}"


def load_image(path: Path, where: str):
    """An RGB ``PIL.Image`` (fully decoded now, so a truncated file fails here, not in the processor)."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is in the hf extra
        raise ManifestError(f"{where}: images need Pillow (pip install 'masq-jax[hf]')") from None
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except FileNotFoundError:
        raise ManifestError(f"{_where(where, 'image', path)} (file not found)") from None
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
        raise ManifestError(f"{_where(where, 'image', path)} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        ch, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
        if w.getcomptype() != "NONE":
            raise ValueError(f"compressed WAV ({w.getcomptype()}) is not supported")
        raw = w.readframes(n)
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        x = v.astype(np.float32) / float(1 << 23)
    elif width == 4:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
    else:
        raise ValueError(f"unsupported sample width {width} bytes")
    x = x.reshape(-1, ch).mean(axis=1) if ch > 1 else x
    return x, rate


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling (scipy) to ``target`` Hz; linear interpolation when scipy is absent."""
    if rate == target:
        return x.astype(np.float32, copy=False)
    try:
        from scipy.signal import resample_poly

        g = gcd(int(rate), int(target))
        return resample_poly(x.astype(np.float64), target // g, rate // g).astype(np.float32)
    except ImportError:  # pragma: no cover - scipy is in the dev extra
        n = int(round(len(x) * target / rate))
        return np.interp(np.arange(n) * rate / target, np.arange(len(x)), x).astype(np.float32)


def load_audio(path: Path, where: str, sampling_rate: int) -> np.ndarray:
    """Mono float32 waveform at ``sampling_rate``: WAV via ``wave``; other formats via soundfile."""
    if not path.is_file():
        raise ManifestError(f"{_where(where, 'audio', path)} (file not found)")
    try:
        if path.suffix.lower() in (".wav", ".wave"):
            x, rate = _read_wav(path)
        else:
            try:
                import soundfile
            except ImportError:
                raise ValueError("only WAV is readable without the soundfile package; convert it to WAV") from None
            data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
            x = data.mean(axis=1)
    except ManifestError:
        raise
    except Exception as e:  # wave.Error, EOFError, ValueError, soundfile errors
        raise ManifestError(f"{_where(where, 'audio', path)} ({type(e).__name__}: {e})") from None
    if x.size == 0:
        raise ManifestError(f"{_where(where, 'audio', path)} (no samples)")
    if not np.isfinite(x).all():
        raise ManifestError(f"{_where(where, 'audio', path)} (NaN or Inf samples)")
    return resample(x, rate, sampling_rate)


def load_video_frames(path: Path, where: str) -> np.ndarray:
    """A video given as a folder of frame images (sorted by name) -> uint8 array [T, H, W, 3]."""
    if not path.exists():
        raise ManifestError(f"{_where(where, 'video', path)} (not found)")
    if not path.is_dir():
        raise ManifestError(
            f"{_where(where, 'video', path)} (videos are read as a folder of frame images; "
            "decode it first, e.g. ffmpeg -i in.mp4 -vf fps=2 frames/%05d.png)"
        )
    frames = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    if not frames:
        raise ManifestError(f"{_where(where, 'video', path)} (folder has no frame images)")
    arrs = [np.asarray(load_image(f, where)) for f in frames]
    if len({a.shape for a in arrs}) != 1:
        raise ManifestError(f"{_where(where, 'video', path)} (frames differ in size)")
    return np.stack(arrs)
