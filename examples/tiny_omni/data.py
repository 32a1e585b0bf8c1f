"""Offline, deterministic data for the trained tiny omni model (issue 7): rendered digits, synthesised
spoken-digit-like audio as log-mel features, and four tasks answered by one token + ``<eos>``.

Everything is NumPy (no Pillow, no downloads) and a pure function of a seed. Splits are seeds:
``SPLIT_SEEDS`` = train 0, calib 1, test 2, so the sampled images and audio never coincide (tested
by hashing). Text-only questions come from a finite set (110 sums/differences), so their *content*
repeats across splits; only the multimodal items are new in every split.

Tasks (the layout of each is fixed, so a task's prompts all have the same length):
- ``vision``: ``<bos> <vision_bos> <image>x16 <vision_eos> what shown ?``  -> digit
- ``audio``:  ``<bos> <audio_bos> <audio>x16 <audio_eos> what heard ?``    -> digit
- ``match``:  ``<bos> <vision_bos> <image>x16 <vision_eos> <audio_bos> <audio>x16 <audio_eos> same ?`` -> yes/no
- ``text``:   ``<bos> a plus|minus b =``                                    -> digit
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from masq_jax.errors import MasqError
from masq_jax.families.tiny_omni.features import (AUDIO_FEAT, FRAMES_PER_TOKEN, GRID, HOP, IMG, N_AUDIO,  # noqa: F401
                                                  N_FFT, N_FRAMES, N_MELS, N_VISION, PATCH, PATCH_FEAT,
                                                  SPECIAL, SR, TASKS, TOK, VOCAB, VOCAB_SIZE,
                                                  WORDS, audio_tokens_features, image_patches, log_mel)

SPLIT_SEEDS = {"train": 0, "calib": 1, "test": 2}


class TinyOmniDataError(MasqError):
    """Bad argument to the tiny-omni data generator."""


# ---- images: seven-segment digits, rasterised in NumPy --------------------------------------------
# Segment end points in glyph units (x in [0, 1], y in [0, 2], y down): a, b, c, d, e, f, g.
_SEG = {
    "a": ((0, 0), (1, 0)), "b": ((1, 0), (1, 1)), "c": ((1, 1), (1, 2)), "d": ((0, 2), (1, 2)),
    "e": ((0, 1), (0, 2)), "f": ((0, 0), (0, 1)), "g": ((0, 1), (1, 1)),
}
_DIGIT_SEGS = ["abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg", "abcdfg"]


def render_digit(digit: int, rng: np.random.Generator) -> np.ndarray:
    """A [32, 32] float32 image in [0, 1] of ``digit`` with random size, position, rotation, slant,
    stroke width and Gaussian pixel noise."""
    if not 0 <= digit <= 9:
        raise TinyOmniDataError(f"digit must be 0..9, got {digit}")
    height = rng.uniform(16.0, 24.0)  # glyph height in pixels
    unit = height / 2.0
    ang = np.deg2rad(rng.uniform(-20, 20))
    slant = rng.uniform(-0.2, 0.2)
    width = rng.uniform(1.0, 2.2)
    cx = IMG / 2 + rng.uniform(-3, 3)
    cy = IMG / 2 + rng.uniform(-3, 3)
    ys, xs = np.mgrid[0:IMG, 0:IMG].astype(np.float64) + 0.5
    # pixel -> glyph coordinates (inverse rotation about the centre, then unslant, then unscale)
    dx, dy = xs - cx, ys - cy
    c, s = np.cos(ang), np.sin(ang)
    gx, gy = c * dx + s * dy, -s * dx + c * dy
    gx = gx - slant * gy
    px, py = gx / unit + 0.5, gy / unit + 1.0  # glyph units
    img = np.zeros((IMG, IMG))
    for name in _DIGIT_SEGS[digit]:
        (x0, y0), (x1, y1) = _SEG[name]
        vx, vy = x1 - x0, y1 - y0
        t = np.clip(((px - x0) * vx + (py - y0) * vy) / (vx * vx + vy * vy), 0, 1)
        d = np.hypot(px - x0 - t * vx, py - y0 - t * vy) * unit  # distance in pixels
        img = np.maximum(img, np.clip(width - d + 0.5, 0, 1))
    img = img * rng.uniform(0.7, 1.0) + rng.normal(0, rng.uniform(0.02, 0.12), img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


# ---- audio: spoken-digit-like signals -> log-mel ---------------------------------------------------
# Per class: formant trajectories (F1, F2 start -> end, Hz) and a pitch contour (rise/fall in semitones).
_FORMANTS = np.array([
    [(300, 2300), (700, 1200)], [(700, 1100), (350, 800)], [(400, 2000), (400, 2000)], [(750, 1300), (300, 2300)],
    [(350, 700), (350, 700)], [(600, 1800), (850, 1400)], [(300, 900), (650, 1900)], [(500, 1500), (500, 1500)],
    [(800, 1200), (800, 1200)], [(280, 1900), (280, 800)],
], dtype=np.float64)
_PITCH_SLOPE = np.array([0, 3, -3, 0, 4, -4, 2, -2, 5, -5], dtype=np.float64)
_BURST = np.array([0, 0, 1, 0, 1, 0, 0, 1, 0, 1], dtype=bool)  # a noise burst at the onset


def synth_digit_audio(digit: int, rng: np.random.Generator) -> np.ndarray:
    """A 1 s float32 waveform: a harmonic source at a random speaker pitch shaped by the class's moving
    formants, with random onset, duration, formant shift (speaker size), loudness and noise."""
    if not 0 <= digit <= 9:
        raise TinyOmniDataError(f"digit must be 0..9, got {digit}")
    n = SR
    t = np.arange(n) / SR
    onset = rng.uniform(0.05, 0.3)
    dur = rng.uniform(0.4, 0.6)
    f0 = rng.uniform(90, 240)
    shift = rng.uniform(0.9, 1.12)  # vocal-tract length factor
    u = np.clip((t - onset) / dur, 0, 1)
    active = (t >= onset) & (t <= onset + dur)
    f0_t = f0 * 2 ** (_PITCH_SLOPE[digit] * u / 12.0) * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(f0_t) / SR
    (f1a, f2a), (f1b, f2b) = _FORMANTS[digit]
    f1 = shift * (f1a + (f1b - f1a) * u)
    f2 = shift * (f2a + (f2b - f2a) * u)
    k = np.arange(1, int(3800 / f0) + 1)[:, None]
    # Harmonic amplitudes change slowly: evaluate them every 40 samples and hold (5 ms steps).
    hf = k * f0_t[None, ::40]
    amp = (np.exp(-0.5 * ((hf - f1[None, ::40]) / 90.0) ** 2) + 0.6 * np.exp(-0.5 * ((hf - f2[None, ::40]) / 120.0) ** 2)
           + 0.02 / k)
    amp = np.repeat(amp * (hf < SR / 2 - 100), 40, axis=1)[:, :n]
    x = (amp * np.sin(k * phase[None, :])).sum(0)
    env = np.sin(np.pi * u) ** 0.5 * active
    x = x * env
    if _BURST[digit]:
        b = (t >= onset - 0.03) & (t < onset + 0.01)
        x = x + b * rng.normal(0, 0.8, n)
    x = x / (np.abs(x).max() + 1e-9) * rng.uniform(0.4, 1.0)
    x = x + rng.normal(0, rng.uniform(0.005, 0.03), n)
    return x.astype(np.float32)


# ---- tasks ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class TaskBatch:
    """All examples of one task in a split; every prompt of a task has the same length."""

    task: str
    input_ids: np.ndarray  # [N, S] prompt token ids (placeholders where encoders' outputs go)
    answer: np.ndarray  # [N, 2] answer token ids: (answer, <eos>)
    patches: np.ndarray  # [N, 16, 64] image patches (zeros when the task has no image)
    audio: np.ndarray  # [N, 16, 128] audio features (zeros when the task has no audio)
    images: np.ndarray  # [N, 32, 32] the rendered images the patches come from (zeros when none)
    waves: np.ndarray  # [N, 8000] the waveforms the audio features come from (zeros when none)


def _prompt(task: str, a: int = 0, b: int = 0, op: str = "plus") -> list[int]:
    img = ["<vision_bos>"] + ["<image>"] * N_VISION + ["<vision_eos>"]
    aud = ["<audio_bos>"] + ["<audio>"] * N_AUDIO + ["<audio_eos>"]
    words = {
        "vision": ["<bos>", *img, "what", "shown", "?"],
        "audio": ["<bos>", *aud, "what", "heard", "?"],
        "match": ["<bos>", *img, *aud, "same", "?"],
        "text": ["<bos>", str(a), op, str(b), "="],
    }[task]
    return [TOK[w] for w in words]


def make_task(task: str, n: int, seed: int) -> TaskBatch:
    """``n`` examples of ``task`` drawn deterministically from ``seed`` (classes balanced by cycling)."""
    if task not in TASKS:
        raise TinyOmniDataError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if n < 1:
        raise TinyOmniDataError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng([seed, TASKS.index(task), 7919])
    ids, ans = [], []
    patches = np.zeros((n, N_VISION, PATCH_FEAT), np.float32)
    audio = np.zeros((n, N_AUDIO, AUDIO_FEAT), np.float32)
    images = np.zeros((n, IMG, IMG), np.float32)
    waves = np.zeros((n, SR), np.float32)
    order = rng.permutation(np.arange(n) % 10)
    for i in range(n):
        d = int(order[i])
        if task == "text":
            op = "plus" if rng.random() < 0.5 else "minus"
            if op == "plus":
                a = int(rng.integers(0, d + 1))
                b = d - a
            else:
                b = int(rng.integers(0, 10 - d))
                a = d + b
            ids.append(_prompt("text", a, b, op))
            ans.append(TOK[str(d)])
            continue
        ids.append(_prompt(task))
        if task in ("vision", "match"):
            images[i] = render_digit(d, rng)
            patches[i] = image_patches(images[i])
        if task == "vision":
            ans.append(TOK[str(d)])
        if task == "audio":
            waves[i] = synth_digit_audio(d, rng)
            audio[i] = audio_tokens_features(log_mel(waves[i]))
            ans.append(TOK[str(d)])
        if task == "match":
            same = rng.random() < 0.5
            h = d if same else int((d + rng.integers(1, 10)) % 10)
            waves[i] = synth_digit_audio(h, rng)
            audio[i] = audio_tokens_features(log_mel(waves[i]))
            ans.append(TOK["yes" if same else "no"])
    answer = np.stack([np.asarray(ans), np.full(n, TOK["<eos>"])], axis=1).astype(np.int32)
    return TaskBatch(task, np.asarray(ids, np.int32), answer, patches, audio, images, waves)


def make_split(split: str, n_per_task: int) -> dict[str, TaskBatch]:
    """Every task of ``split`` ("train", "calib" or "test"), ``n_per_task`` examples each."""
    if split not in SPLIT_SEEDS:
        raise TinyOmniDataError(f"split must be one of {', '.join(SPLIT_SEEDS)}, got {split!r}")
    return {t: make_task(t, n_per_task, SPLIT_SEEDS[split]) for t in TASKS}


def media_hashes(batch: TaskBatch) -> set[str]:
    """SHA-1 of every example's image and audio features (to check that splits never overlap)."""
    out = set()
    for arr in (batch.patches, batch.audio):
        for x in arr:
            if np.any(x):
                out.add(hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest())
    return out
