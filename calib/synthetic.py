"""Synthetic multimodal calibration streams with controllable per-channel magnitude profiles.

For unit tests, the demo and notebooks. Every sample is laid out like a Qwen2.5-Omni Thinker prompt:
``text, <vision_bos>, image block (h x w merged patches), <vision_eos>, text, <audio_bos>, audio,
<audio_eos>, text`` with the Thinker's 3-D positions (text counts on in all three rows; the image
block gets (t, t + row, t + col); audio counts on like text). Delimiters are text (docs/method.md §0).

Magnitudes (docs/calib.md, what survives RMSNorm: a global scale is erased by RMSNorm, energy concentrated in
a few channels is not): text ~ N(0, text_scale) with a few outlier channels; vision puts its energy
in ``hot`` channels carrying ``vision_scale`` x text's typical magnitude (constant sign per channel,
small elsewhere); audio sits ``audio_scale`` x below text with a few mild outlier channels.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from masq_jax.modality import AUDIO, TEXT, VISION

from .calibset import CalibSet
from .sample import CalibSample
from .errors import CalibSourceError


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """Shape and magnitude knobs of the synthetic source (all lengths in tokens)."""

    hidden_size: int = 256
    samples: int = 8
    text_len: int = 32  # each of the three text segments has between text_len//2 and text_len tokens
    image_h: int = 8  # merged-patch grid of the image block
    image_w: int = 8
    audio_len: int = 32
    text_scale: float = 1.0
    text_outliers: int = 4  # text channels with text_outlier_factor x the typical magnitude
    text_outlier_factor: float = 4.0
    vision_scale: float = 30.0  # hot-channel magnitude / text's typical magnitude (the paper: 10-100x)
    vision_hot: int = 4  # channels carrying the vision energy
    vision_base: float = 0.05  # vision magnitude elsewhere, relative to text_scale
    audio_scale: float = 0.3  # audio magnitude relative to text (below text)
    audio_outliers: int = 4
    audio_outlier_factor: float = 3.0
    vary: bool = True  # vary text segment lengths between samples (exercises bucketing)
    rope_ndim: int = 3  # 3: Omni-Thinker 3-D positions [3, S]; 1: plain positions arange(S) [S]
    seed: int = 0

    def validate(self) -> "SyntheticSpec":
        ints = ("hidden_size", "samples", "text_len", "image_h", "image_w", "audio_len",
                "text_outliers", "vision_hot", "audio_outliers")
        for f in ints:
            v = getattr(self, f)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
                raise CalibSourceError(f"synthetic: {f} must be a non-negative integer, got {v!r}")
        if self.rope_ndim not in (1, 3):
            raise CalibSourceError(f"synthetic: rope_ndim must be 1 or 3, got {self.rope_ndim!r}")
        if self.hidden_size < 8 or self.samples < 1 or self.text_len < 2:
            raise CalibSourceError("synthetic: needs hidden_size >= 8, samples >= 1 and text_len >= 2")
        if self.text_outliers + self.vision_hot + self.audio_outliers > self.hidden_size:
            raise CalibSourceError("synthetic: text_outliers + vision_hot + audio_outliers exceed hidden_size")
        for f in ("text_scale", "text_outlier_factor", "vision_scale", "vision_base", "audio_scale", "audio_outlier_factor"):
            v = getattr(self, f)
            if not np.isfinite(v) or v <= 0:
                raise CalibSourceError(f"synthetic: {f} must be a positive number, got {v!r}")
        return self


_ALIASES = {"hidden": "hidden_size", "text": "text_len", "audio": "audio_len", "n": "samples",
            "hot": "vision_hot", "outliers": "text_outliers"}


def parse_synthetic_options(options: str, **defaults: Any) -> SyntheticSpec:
    """``"hidden=256,image=8x8,audio=32,vision_scale=30"`` -> SyntheticSpec (defaults applied first)."""
    fields = {f.name: f for f in dataclasses.fields(SyntheticSpec)}
    kw: dict[str, Any] = {k: v for k, v in defaults.items() if v is not None}
    for item in filter(None, (s.strip() for s in options.split(","))):
        if "=" not in item:
            raise CalibSourceError(f"synthetic option {item!r} is not key=value (e.g. synthetic:hidden=256,image=8x8)")
        key, val = (s.strip() for s in item.split("=", 1))
        if key == "image":
            try:
                h, w = (int(x) for x in val.lower().split("x"))
            except ValueError:
                raise CalibSourceError(f"synthetic option image={val!r}: expected HxW, e.g. image=8x8") from None
            kw["image_h"], kw["image_w"] = h, w
            continue
        key = _ALIASES.get(key, key)
        if key not in fields:
            raise CalibSourceError(
                f"unknown synthetic option {key!r}; known: image, {', '.join(sorted(set(fields) | set(_ALIASES)))}"
            )
        typ = fields[key].type
        try:
            if typ in ("int", int):
                kw[key] = int(val)
            elif typ in ("float", float):
                kw[key] = float(val)
            elif typ in ("bool", bool):
                if val.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(val)
                kw[key] = val.lower() in ("1", "true", "yes")
        except ValueError:
            raise CalibSourceError(f"synthetic option {key}={val!r}: expected {typ}") from None
    return SyntheticSpec(**kw).validate()


def _profiles(spec: SyntheticSpec, rng: np.random.Generator) -> dict[str, Any]:
    perm = rng.permutation(spec.hidden_size)
    t_out = np.sort(perm[: spec.text_outliers])
    v_hot = np.sort(perm[spec.text_outliers : spec.text_outliers + spec.vision_hot])
    a_out = np.sort(perm[spec.text_outliers + spec.vision_hot :
                         spec.text_outliers + spec.vision_hot + spec.audio_outliers])
    text = np.full(spec.hidden_size, spec.text_scale)
    text[t_out] *= spec.text_outlier_factor
    vision = np.full(spec.hidden_size, spec.vision_base * spec.text_scale)
    audio = np.full(spec.hidden_size, spec.audio_scale * spec.text_scale)
    audio[a_out] *= spec.audio_outlier_factor
    v_sign = rng.choice(np.array([-1.0, 1.0]), size=len(v_hot))
    return {"text": text, "vision": vision, "audio": audio, "text_outliers": t_out, "vision_hot": v_hot,
            "vision_sign": v_sign, "audio_outliers": a_out}


def _layout(n_text: list[int], spec: SyntheticSpec) -> tuple[np.ndarray, np.ndarray]:
    """Modality ids [S] and Omni-Thinker 3-D positions [3, S] for the fixed segment order."""
    mods: list[np.ndarray] = []
    pos: list[np.ndarray] = []
    nxt = 0

    def text(n: int) -> None:
        nonlocal nxt
        p = np.arange(nxt, nxt + n)
        pos.append(np.stack([p, p, p]))
        mods.append(np.full(n, TEXT))
        nxt += n

    text(n_text[0])
    text(1)  # <vision_bos>
    if spec.image_h * spec.image_w:
        hh, ww = np.meshgrid(np.arange(spec.image_h), np.arange(spec.image_w), indexing="ij")
        blk = np.stack([np.zeros(hh.size, dtype=np.int64), hh.ravel(), ww.ravel()]) + nxt
        pos.append(blk)
        mods.append(np.full(hh.size, VISION))
        nxt = int(blk.max()) + 1
    text(1)  # <vision_eos>
    text(n_text[1])
    text(1)  # <audio_bos>
    if spec.audio_len:
        p = np.arange(nxt, nxt + spec.audio_len)
        pos.append(np.stack([p, p, p]))
        mods.append(np.full(spec.audio_len, AUDIO))
        nxt += spec.audio_len
    text(1)  # <audio_eos>
    text(n_text[2])
    return np.concatenate(mods).astype(np.int32), np.concatenate(pos, axis=1).astype(np.int32)


def synthetic_calibset(spec: SyntheticSpec | None = None, **overrides: Any) -> CalibSet:
    """A deterministic (by ``spec.seed``) synthetic CalibSet of ``inputs_embeds`` with 3-D positions.

    ``meta`` records the channel profile (text outlier, vision hot and audio outlier channel indices)
    so tests can check that a method finds them.
    """
    spec = dataclasses.replace(spec or SyntheticSpec(), **overrides).validate()
    rng = np.random.default_rng(spec.seed)
    prof = _profiles(spec, rng)
    out = []
    for _ in range(spec.samples):
        if spec.vary:
            n_text = [int(rng.integers(spec.text_len // 2, spec.text_len + 1)) for _ in range(3)]
        else:
            n_text = [spec.text_len] * 3
        mod, pos = _layout(n_text, spec)
        if spec.rope_ndim == 1:
            pos = np.arange(len(mod), dtype=np.int32)
        s = len(mod)
        noise = rng.standard_normal((s, spec.hidden_size))
        emb = np.empty((s, spec.hidden_size))
        for m, name in ((TEXT, "text"), (VISION, "vision"), (AUDIO, "audio")):
            sel = mod == m
            emb[sel] = noise[sel] * prof[name]
        vis = np.flatnonzero(mod == VISION)
        if len(vis) and len(prof["vision_hot"]):
            hot = prof["vision_hot"]
            mag = spec.vision_scale * spec.text_scale * (1.0 + 0.25 * rng.standard_normal((len(vis), len(hot))))
            emb[np.ix_(vis, hot)] = prof["vision_sign"] * np.abs(mag)
        out.append(CalibSample(modality_ids=mod, position_ids=pos, inputs_embeds=emb.astype(np.float32)))
    meta = {
        "source": "synthetic",
        "spec": dataclasses.asdict(spec),
        "text_outlier_channels": prof["text_outliers"].tolist(),
        "vision_hot_channels": prof["vision_hot"].tolist(),
        "audio_outlier_channels": prof["audio_outliers"].tolist(),
    }
    return CalibSet(out, meta)
