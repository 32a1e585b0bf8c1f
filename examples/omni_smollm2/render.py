"""OCR images: a string drawn with one of matplotlib's DejaVu fonts at a random size, position and
rotation, then blurred and noised; a deterministic function of the string and a NumPy generator."""

from __future__ import annotations

import numpy as np

from masq_jax.families.omni_smollm2.model import HEIGHT, WIDTH  # noqa: F401  (pixels of every image)

FONTS = ("DejaVu Sans", "DejaVu Sans Mono", "DejaVu Serif")
_DPI = 100


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with reflected borders (sigma in pixels; 0 = unchanged)."""
    if sigma <= 0:
        return img
    r = max(1, int(3 * sigma + 0.5))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(img, r, mode="reflect")
    rows = np.stack([np.convolve(row, k, mode="valid") for row in pad])
    return np.stack([np.convolve(col, k, mode="valid") for col in rows.T]).T


def render_text(text: str, rng: np.random.Generator) -> np.ndarray:
    """``[HEIGHT, WIDTH]`` float32 in [0, 1] (ink bright on dark): ``text`` in a random DejaVu font,
    size 12–19 pt-equivalent, rotation ±8°, position jitter, blur σ 0–0.9 px, Gaussian noise σ 0–0.08."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    font = FONTS[int(rng.integers(len(FONTS)))]
    size = float(rng.uniform(12, 19)) * 72 / _DPI * (8 / max(len(text), 4)) ** 0.5
    angle = float(rng.uniform(-8, 8))
    x, y = 0.5 + float(rng.uniform(-0.06, 0.06)), 0.5 + float(rng.uniform(-0.12, 0.12))
    fig = Figure(figsize=(WIDTH / _DPI, HEIGHT / _DPI), dpi=_DPI, facecolor="black")
    FigureCanvasAgg(fig)
    fig.text(x, y, text, color="white", fontsize=size, family=font, rotation=angle, ha="center", va="center")
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba(), dtype=np.float32)[..., 0] / 255.0
    img = _gaussian_blur(img, float(rng.uniform(0, 0.9)))
    img = img + rng.normal(0, float(rng.uniform(0, 0.08)), img.shape)
    return np.clip(img, 0, 1).astype(np.float32)
