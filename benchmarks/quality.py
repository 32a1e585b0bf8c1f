"""Quality benchmark (issue 5): methods × bit widths on real weights, and SQNR vs CMC rank.

    python benchmarks/quality.py text        # SmolLM2-135M on stdlib docstrings: held-out perplexity
    python benchmarks/quality.py multimodal  # toy:small Omni-shaped decoder, synthetic modalities:
                                             # per-modality SQNR per method and vs CMC rank ratio

Each part prints one table (baseline: full precision / SmoothQuant) from runs in one process.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import masq_jax

TEXT_GRID = [("w8a8", ("rtn", "smoothquant", "mas")), ("w4a8", ("rtn", "smoothquant", "mas")),
             ("w4a6", ("rtn", "smoothquant", "mas")), ("w4a16", ("rtn", "awq", "mas"))]
RANKS = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0)


def run(model, method, preset, calib, tmp, **kw):
    out = Path(tmp) / f"{method}-{preset}-{kw.get('rank', '')}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return masq_jax.quantize(model, str(out), method=method, preset=preset, calib=calib, progress=False,
                                 **kw)


def text_part(a) -> dict:
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for preset, methods in TEXT_GRID:
            if a.presets and preset not in a.presets.split(","):
                continue
            for method in methods:
                # SmolLM2's widths (576, 1536) are not multiples of the preset's 128: groups of 64.
                extra = {"group_size": 64} if preset == "w4a16" else {}
                rep = run(None, method, preset, "text", tmp, samples=a.samples, eval_samples=a.eval_samples,
                          seq_len=a.seq_len, epochs=a.epochs, **extra)
                rows[(preset, method)] = rep
                pp = rep["perplexity"]
                print(f"{preset} {method:<12} PPL {pp['quantized']:.3f} (FP {pp['fp']:.3f}) "
                      f"SQNR {rep['sqnr']['mean']['all']:.2f} dB  {rep['stages']['total_seconds']:.0f} s", flush=True)
    fp = next(iter(rows.values()))["perplexity"]["fp"]
    print(f"\nSmolLM2-135M, {a.samples} calibration x {a.seq_len} tokens, {a.epochs} epoch(s); held-out "
          f"perplexity ({a.eval_samples} samples), FP {fp:.3f}")
    print(f"{'preset':<8}{'method':<13}{'PPL':>9}{'vs FP':>9}{'SQNR dB':>9}")
    for (preset, method), rep in rows.items():
        q = rep["perplexity"]["quantized"]
        print(f"{preset:<8}{method:<13}{q:>9.3f}{q / fp:>8.3f}x{rep['sqnr']['mean']['all']:>9.2f}")
    return {f"{p}/{m}": {"ppl": r["perplexity"], "sqnr": r["sqnr"]["mean"]} for (p, m), r in rows.items()}


def multimodal_part(a) -> dict:
    res = {}
    kw = dict(samples=a.samples, eval_samples=a.eval_samples, epochs=a.epochs)
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("rtn", "smoothquant", "mbq", "smoothquant_pm", "mas"):
            res[method] = run("toy:small", method, "w4a8", "synthetic", tmp, **kw)["sqnr"]["mean"]
        for r in RANKS:
            res[f"masquant r={r}"] = run("toy:small", "masquant", "w4a8", "synthetic", tmp, rank=r, rank_floor=0,
                                         **kw)["sqnr"]["mean"]
    print(f"\ntoy:small (Omni-shaped, random weights), synthetic text/vision/audio, W4A8, {a.samples} samples, "
          f"{a.epochs} epoch(s); mean held-out decoder-layer SQNR (dB)")
    print(f"{'method':<22}" + "".join(f"{k:>9}" for k in ("all", "text", "vision", "audio")))
    for name, m in res.items():
        print(f"{name:<22}" + "".join(f"{m[k]:>9.2f}" for k in ("all", "text", "vision", "audio")))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=("text", "multimodal"))
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--eval-samples", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--presets", default=None, help="comma list of presets to run (text part)")
    a = ap.parse_args()
    res = text_part(a) if a.part == "text" else multimodal_part(a)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
