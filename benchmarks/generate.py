"""Generation speed with the KV cache: prefill and decode tokens/s, full precision vs each preset's
artefact, and what the cache saves (one decode step vs a full forward at the final length).

    python benchmarks/generate.py                      # SmolLM2-135M, prompt 512, 128 new tokens, batch 1 and 8
    python benchmarks/generate.py --presets w4a8 --batches 1 --prompt 128 --new 32   # a quick look
    python benchmarks/generate.py --model toy:omni3b --dtype bfloat16 --merged --batches 1   # Omni-3B dims (GPU)

Artefacts are RTN (speed does not depend on how the vectors were chosen), calibrated on a few text
samples. ``--merged`` adds each preset run as merged GEMMs (``PRESET_m``: q|k|v one GEMM, gate|up one
GEMM with the SwiGLU in its epilogue; RTN's vectors are tied by construction). ``--dtype`` casts the
full-precision model (the baseline) and the artefacts' unquantized tensors. Timings are medians of ``--reps`` runs after a warm-up (compilation excluded); decode time
per token = (time of N new tokens − time of 1 new token) / (N − 1), EOS disabled so every step runs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import numpy as np


def median_time(fn, reps: int) -> float:
    fn()  # warm-up: compile
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint (default: the embedded SmolLM2-135M GGUF)")
    ap.add_argument("--presets", default="w8a8,w4a8,w4a16")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--implementation", default="xla", help="qmatmul implementation of the artefacts (xla|pallas)")
    ap.add_argument("--dtype", default=None, help="dtype of the FP model and the artefacts' FP tensors (e.g. bfloat16)")
    ap.add_argument("--merged", action="store_true", help="also time each preset with merged q|k|v and gate|up GEMMs")
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    import jax

    import masq_jax

    models = {"fp": masq_jax.load(a.model, dtype=a.dtype)}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in filter(None, a.presets.split(",")):
            extra = {"group_size": 64} if preset == "w4a16" else {}
            calib = "synthetic" if str(a.model).startswith("toy:") else "text"  # random toys have no tokenizer
            masq_jax.quantize(a.model, f"{tmp}/{preset}", method="rtn", preset=preset, calib=calib, samples=2,
                              eval_samples=0, seq_len=64, progress=False, **extra)
            for merge in (False, True) if a.merged else (False,):
                models[preset + ("_m" if merge else "")] = masq_jax.load(
                    f"{tmp}/{preset}", a.dtype, implementation=a.implementation, merge=merge)
        vocab = models["fp"].config.vocab_size
        rows = []
        for b in map(int, a.batches.split(",")):
            ids = np.random.default_rng(0).integers(3, vocab, (b, a.prompt))
            full = np.random.default_rng(1).integers(3, vocab, (b, a.prompt + a.new))
            for name, m in models.items():
                gen = lambda n, m=m: m.generate(ids, max_new_tokens=n, eos_token_id=None)  # noqa: E731
                t1 = median_time(lambda: gen(1), a.reps)
                tn = median_time(lambda: gen(a.new), a.reps)
                tf = median_time(lambda m=m: jax.block_until_ready(m(input_ids=full)), a.reps)
                step = (tn - t1) / (a.new - 1)
                rows.append((b, name, b * a.prompt / t1, b / step, tf / step, tn))
        print(f"\n{models['fp'].config.arch}, {models['fp'].config.num_layers} layers, prompt {a.prompt}, {a.new} new "
              f"tokens, device {jax.devices()[0].platform}, median of {a.reps}")
        print(f"{'batch':>5} {'model':<9}{'prefill tok/s':>14}{'vs fp':>7}{'decode tok/s':>14}{'vs fp':>7}"
              f"{'forward/step':>14}{'total s':>9}")
        fp = {b: r for r in rows for b in [r[0]] if r[1] == "fp"}
        for b, name, pre, dec, ratio, total in rows:
            print(f"{b:>5} {name:<9}{pre:>14.1f}{pre / fp[b][2]:>6.2f}x{dec:>14.2f}{dec / fp[b][3]:>6.2f}x"
                  f"{ratio:>13.1f}x{total:>9.2f}")


if __name__ == "__main__":
    main()
