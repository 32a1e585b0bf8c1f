"""Media files for the demo models' front ends: a grayscale image or a waveform from ``.npy`` or a
standard format, with one clear error when it cannot be read or has the wrong shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from masq_jax.errors import MasqError


def read_image(path: Path, shape: tuple[int, int], model: str) -> np.ndarray:
    """``shape`` float32 in [0, 1] from ``.npy`` or a grayscale image file (PNG, ...)."""
    try:
        if path.suffix == ".npy":
            img = np.load(path).astype(np.float32)
        else:
            from PIL import Image

            img = np.asarray(Image.open(path).convert("L"), np.float32) / 255.0
    except (OSError, ValueError) as e:
        raise MasqError(f"{path}: cannot read the image ({e})") from None
    if img.shape != tuple(shape):
        raise MasqError(f"{path}: {model} takes {shape[0]}x{shape[1]} images, got {img.shape}")
    return img


def read_audio(path: Path, sampling_rate: int) -> np.ndarray:
    """A float32 waveform at ``sampling_rate`` from ``.npy`` (taken as is) or ``.wav`` (resampled)."""
    if path.suffix == ".npy":
        try:
            wave = np.load(path).astype(np.float32)
        except (OSError, ValueError) as e:
            raise MasqError(f"{path}: cannot read the audio ({e})") from None
        if wave.ndim != 1:
            raise MasqError(f"{path}: audio must be a 1-D waveform, got shape {wave.shape}")
        return wave
    from masq_jax.calib.media import load_audio

    return load_audio(path, str(path), sampling_rate)
