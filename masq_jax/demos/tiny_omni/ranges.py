"""Per-modality activation ranges at the tiny omni decoder's linear inputs (the paper's Figure 1/4
quantity): how large vision and audio run against text, channel by channel.

    python -m masq_jax.demos.tiny_omni.ranges --fp checkpoints/tiny-omni --calib checkpoints/tiny-omni/calib.npz
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax.errors import MasqError
from masq_jax.modality import NAMES


def activation_ranges(fp_dir: str, calib_npz: str) -> dict:
    """Per layer and linear input ("qkv", "o", "gate_up", "down") of the FP decoder on a CalibSet:
    per modality ``absmax`` (over tokens and channels) and the per-channel range ratios
    ``max_c(max_t|x_m| / max_t|x_text|)`` for m = vision, audio (channels where text's max > 1e-6)."""
    from masq_jax.calib import CalibSet
    from masq_jax.models import decoder, load_params

    cfg, params = load_params(fp_dir)
    cs = CalibSet.load(calib_npz)
    per = {}  # (layer, input) -> [3, H] running per-channel max
    for smp in cs:
        e = jnp.asarray(smp.inputs_embeds)[None]
        cs_ = decoder.rope(cfg, jnp.asarray(smp.position_ids)[:, None])
        bias = decoder.attention_bias(None, e.shape[1])
        h = e
        for i in range(cfg.num_layers):
            lp = jax.tree.map(lambda a: a[i], params["layers"])
            h, caps = decoder.layer_forward(cfg, lp, h, cs_, bias, capture=True)
            for name, x in caps.items():
                x = np.abs(np.asarray(x[0], np.float64))
                cur = per.setdefault((i, name), np.zeros((3, x.shape[1])))
                for m in range(3):
                    sel = smp.modality_ids == m
                    if sel.any():
                        cur[m] = np.maximum(cur[m], x[sel].max(0))
    out = {}
    for (i, name), mx in per.items():
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
    lines = [f"{'input':<8}{'layer':>6}{'|x|max text':>12}{'vision':>9}{'audio':>9}"
             f"{'ch-ratio v max':>15}{'v med':>7}{'a max':>7}{'a med':>7}"]
    for name in ("qkv", "gate_up", "o", "down"):
        for i, row in enumerate(r.get(name, [])):
            lines.append(f"{name:<8}{i:>6}{row['absmax_text']:>12.2f}{row['absmax_vision']:>9.2f}"
                         f"{row['absmax_audio']:>9.2f}{row['channel_ratio_vision_max']:>15.1f}"
                         f"{row['channel_ratio_vision_median']:>7.2f}{row['channel_ratio_audio_max']:>7.1f}"
                         f"{row['channel_ratio_audio_median']:>7.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m masq_jax.demos.tiny_omni.ranges", description=__doc__.split("\n")[0])
    ap.add_argument("--fp", default="checkpoints/tiny-omni", help="the FP tiny-omni checkpoint")
    ap.add_argument("--calib", default="checkpoints/tiny-omni/calib.npz", help="a CalibSet of the model's inputs")
    ap.add_argument("--json", default=None, help="write the ranges as JSON here")
    a = ap.parse_args(argv)
    try:
        ranges = activation_ranges(a.fp, a.calib)
    except (MasqError, OSError) as e:  # bad input, or a file it cannot read
        print(f"ranges: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    print(format_ranges(ranges))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"calib": a.calib, "ranges": ranges}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
