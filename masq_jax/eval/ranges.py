"""Per-modality activation ranges at a decoder's linear inputs (the paper's Figure 1/4 quantity):
how large vision and audio run against text after each RMSNorm (and at o / down), channel by channel."""

from __future__ import annotations

from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax.modality import NAMES


def activation_ranges(cfg, params: dict, samples: Iterable) -> dict:
    """``{input: [row per layer]}`` for the inputs "qkv", "o", "gate_up", "down" of the FP decoder
    over CalibSamples (``inputs_embeds``, ``position_ids``, ``modality_ids``): per modality ``absmax``
    (over tokens and channels) and the per-channel range ratios ``max_t|x_m| / max_t|x_text|``
    (max and median over channels where text's max > 1e-6) for m = vision, audio."""
    from masq_jax.models import decoder

    per = {}  # (layer, input) -> [3, H] running per-channel max
    for smp in samples:
        e = jnp.asarray(smp.inputs_embeds)[None].astype(params["embed"].dtype)
        cs = decoder.rope(cfg, jnp.asarray(smp.position_ids)[:, None] if cfg.uses_mrope
                          else jnp.asarray(smp.position_ids)[None])
        bias = decoder.attention_bias(None, e.shape[1])
        h = e
        for i in range(cfg.num_layers):
            lp = jax.tree.map(lambda a: a[i], params["layers"])
            h, caps = decoder.layer_forward(cfg, lp, h, cs, bias, capture=True)
            for name, x in caps.items():
                x = np.abs(np.asarray(x[0], np.float64))
                cur = per.setdefault((i, name), np.zeros((3, x.shape[1])))
                for m in range(3):
                    sel = np.asarray(smp.modality_ids) == m
                    if sel.any():
                        cur[m] = np.maximum(cur[m], x[sel].max(0))
    out = {}
    for (i, name), mx in sorted(per.items()):
        text = mx[0]
        ok = text > 1e-6
        row = {f"absmax_{n}": float(mx[m].max()) for m, n in enumerate(NAMES)}
        for m, n in ((1, "vision"), (2, "audio")):
            r = mx[m][ok] / text[ok]
            row[f"channel_ratio_{n}_max"] = float(r.max())
            row[f"channel_ratio_{n}_median"] = float(np.median(r))
        out.setdefault(name, []).append(row)
    return out


def format_ranges(r: dict) -> str:
    """The ranges as a table: one row per input and layer."""
    lines = [f"{'input':<8}{'layer':>6}{'|x|max text':>12}{'vision':>9}{'audio':>9}"
             f"{'ch-ratio v max':>15}{'v med':>7}{'a max':>7}{'a med':>7}"]
    for name in ("qkv", "gate_up", "o", "down"):
        for i, row in enumerate(r.get(name, [])):
            lines.append(f"{name:<8}{i:>6}{row['absmax_text']:>12.2f}{row['absmax_vision']:>9.2f}"
                         f"{row['absmax_audio']:>9.2f}{row['channel_ratio_vision_max']:>15.1f}"
                         f"{row['channel_ratio_vision_median']:>7.2f}{row['channel_ratio_audio_max']:>7.1f}"
                         f"{row['channel_ratio_audio_median']:>7.2f}")
    return "\n".join(lines)


def gap_summary(r: dict) -> dict:
    """Median over layers of the absmax ratios vision/text and audio/text, per input."""
    out = {}
    for name, rows in r.items():
        out[name] = {m: float(np.median([row[f"absmax_{m}"] / max(row["absmax_text"], 1e-12) for row in rows]))
                     for m in ("vision", "audio")}
    return out
