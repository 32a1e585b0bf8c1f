"""Accuracy cost of ``--tie-smoothing`` (one vector per input group, what merged QKV / gate|up GEMMs
need) against untied vectors, in one process (baseline: the untied run of the same method).

    python benchmarks/tie_smoothing.py text        # SmolLM2-135M W4A8: held-out perplexity
    python benchmarks/tie_smoothing.py multimodal  # tiny omni W4A8: SQNR per modality + task accuracy
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import masq_jax

TINY = "checkpoints/tiny-omni"


def run(model, method, tie, tmp, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return masq_jax.quantize(model, str(Path(tmp) / f"{method}-{tie}"), method=method, tie_smoothing=tie,
                                 progress=False, **kw)


def text_part(a) -> dict:
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in a.methods.split(","):
            for tie in (False, True):
                rows[(method, tie)] = run(None, method, tie, tmp, preset=a.preset, calib="text", samples=a.samples,
                                          eval_samples=a.eval_samples, seq_len=a.seq_len, epochs=a.epochs)
    fp = next(iter(rows.values()))["perplexity"]["fp"]
    print(f"\nSmolLM2-135M {a.preset.upper()}, {a.samples} calibration x {a.seq_len} tokens, {a.epochs} epoch(s); "
          f"held-out perplexity ({a.eval_samples} samples), FP {fp:.3f}; baseline: untied")
    print(f"{'method':<12}{'untied PPL':>11}{'tied PPL':>10}{'tied/untied':>12}{'SQNR untied':>12}{'tied':>7}")
    for method in a.methods.split(","):
        u, t = rows[(method, False)], rows[(method, True)]
        pu, pt = u["perplexity"]["quantized"], t["perplexity"]["quantized"]
        print(f"{method:<12}{pu:>11.3f}{pt:>10.3f}{pt / pu:>11.4f}x{u['sqnr']['mean']['all']:>12.2f}"
              f"{t['sqnr']['mean']['all']:>7.2f}")
    return {f"{m}/{'tied' if t else 'untied'}": {"ppl": r["perplexity"], "sqnr": r["sqnr"]["mean"]}
            for (m, t), r in rows.items()}


def multimodal_part(a) -> dict:
    from examples.tiny_omni.tasks import accuracy

    rows, models = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in a.methods.split(","):
            for tie in (False, True):
                rows[(method, tie)] = run(TINY, method, tie, tmp, preset=a.preset, calib=f"{TINY}/calib.npz",
                                          samples=a.samples, eval_samples=a.eval_samples)
                models[f"{method}/{'tied' if tie else 'untied'}"] = masq_jax.load(Path(tmp) / f"{method}-{tie}")
        acc = accuracy(models, TINY, n_per_task=a.n)
    print(f"\ntiny omni {a.preset.upper()}, {a.samples} calibration samples; held-out mean decoder-layer SQNR (dB) "
          f"and task accuracy ({a.n} test examples per task); baseline: untied")
    cols = ("text", "vision", "audio")
    print(f"{'method':<20}" + "".join(f"{c:>9}" for c in cols) + "".join(f"{t:>9}" for t in ("acc text", "vision",
                                                                                           "audio", "match")))
    for (method, tie), rep in rows.items():
        name = f"{method}/{'tied' if tie else 'untied'}"
        s = rep["sqnr"]["mean"]
        print(f"{name:<20}" + "".join(f"{s[c]:>9.2f}" for c in cols)
              + "".join(f"{100 * acc[name][t]:>8.1f}%" for t in ("text", "vision", "audio", "match")))
    for method in a.methods.split(","):
        u, t = rows[(method, False)]["sqnr"]["mean"], rows[(method, True)]["sqnr"]["mean"]
        print(f"{method}: tied − untied SQNR " + ", ".join(f"{c} {t[c] - u[c]:+.2f} dB" for c in cols))
    return {name: {"sqnr": rows[(name.split('/')[0], name.endswith('/tied'))]["sqnr"]["mean"], "accuracy": acc[name]}
            for name in models}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=("text", "multimodal"))
    ap.add_argument("--methods", default=None, help="comma list (default: mas,awq for text; mas,masquant multimodal)")
    ap.add_argument("--preset", default="w4a8")
    ap.add_argument("--samples", type=int, default=None, help="default 8 (text) / 120 (multimodal)")
    ap.add_argument("--eval-samples", type=int, default=None, help="default 4 (text) / 8 (multimodal)")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--n", type=int, default=100, help="task examples per task (multimodal)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    text = a.part == "text"
    a.methods = a.methods or ("mas,awq" if text else "mas,masquant")
    a.samples = a.samples or (8 if text else 120)
    a.eval_samples = a.eval_samples or (4 if text else 8)
    res = text_part(a) if text else multimodal_part(a)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
