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
    ap.add_argument("--implementation", default="xla", help="qmatmul implementation(s) of the artefacts, comma "
                    "list among xla|pallas|mosaic|auto (several: each preset runs once per implementation, "
                    "named PRESET@IMPL)")
    ap.add_argument("--dtype", default=None, help="dtype of the FP model and the artefacts' FP tensors (e.g. bfloat16)")
    ap.add_argument("--merged", action="store_true", help="also time each preset with merged q|k|v and gate|up GEMMs")
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    import jax

    import masq_jax

    impls = [None if i == "auto" else i for i in a.implementation.split(",")]
    models, failed = {"fp": masq_jax.load(a.model, dtype=a.dtype)}, []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in filter(None, a.presets.split(",")):
            extra = {"group_size": 64} if preset == "w4a16" else {}
            calib = "synthetic" if str(a.model).startswith("toy:") else "text"  # random toys have no tokenizer
            try:
                masq_jax.quantize(a.model, f"{tmp}/{preset}", method="rtn", preset=preset, calib=calib, samples=2,
                                  eval_samples=0, seq_len=64, progress=False, **extra)
            except Exception as e:  # noqa: BLE001 - report it and time the others
                failed.append((preset, f"quantize: {type(e).__name__}: {str(e)[:200]}"))
                continue
            for impl in impls:
                for merge in (False, True) if a.merged else (False,):
                    name = preset + ("_m" if merge else "") + (f"@{impl or 'auto'}" if len(impls) > 1 else "")
                    models[name] = (f"{tmp}/{preset}", impl, merge)
        vocab = models["fp"].config.vocab_size
        print(f"\n{models['fp'].config.arch}, {models['fp'].config.num_layers} layers, prompt {a.prompt}, {a.new} new "
              f"tokens, device {jax.devices()[0].platform}, median of {a.reps}", flush=True)
        print(f"{'batch':>5} {'model':<14}{'prefill tok/s':>14}{'vs fp':>7}{'decode tok/s':>14}{'vs fp':>7}"
              f"{'forward/step':>14}{'total s':>9}", flush=True)
        for name, why in failed:
            print(f"{'-':>5} {name:<14} FAILED {why}", flush=True)
        for b in map(int, a.batches.split(",")):
            ids = np.random.default_rng(0).integers(3, vocab, (b, a.prompt))
            full = np.random.default_rng(1).integers(3, vocab, (b, a.prompt + a.new))
            fp = None
            for name, m in models.items():
                try:  # one failing model prints its error in its row; the others still run
                    if isinstance(m, tuple):
                        path, impl, merge = m
                        m = models[name] = masq_jax.load(path, a.dtype, implementation=impl, merge=merge)
                    gen = lambda n, m=m: m.generate(ids, max_new_tokens=n, eos_token_id=None)  # noqa: E731
                    t1 = median_time(lambda: gen(1), a.reps)
                    tn = median_time(lambda: gen(a.new), a.reps)
                    tf = median_time(lambda m=m: jax.block_until_ready(m(input_ids=full)), a.reps)
                except Exception as e:  # noqa: BLE001
                    print(f"{b:>5} {name:<14} FAILED {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}",
                          flush=True)
                    continue
                step = (tn - t1) / (a.new - 1)
                pre, dec = b * a.prompt / t1, b / step
                if name == "fp":
                    fp = (pre, dec)
                vs = (lambda v, i: f"{v / fp[i]:>6.2f}x") if fp else (lambda v, i: f"{'-':>7}")
                print(f"{b:>5} {name:<14}{pre:>14.1f}{vs(pre, 0)}{dec:>14.2f}{vs(dec, 1)}"
                      f"{tf / step:>13.1f}x{tn:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
