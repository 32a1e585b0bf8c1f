"""Per-modality Gram statistics (docs/method.md §5's ``XᵀX_m``): three masked products (baseline) vs gathered tokens.

    python benchmarks/gram_stats.py                  # widths 2048 and 11008 (Omni-3B q/k/v and down inputs)
    python benchmarks/gram_stats.py --widths 2048    # CPU-friendly

One chunk of the calibration pass (8 samples x 515 tokens, the benchmark's Omni layout: 55 % text,
30 % vision, 15 % audio) through ``core.stats.accumulate`` with and without ``gram_index``; median
of ``--reps`` after a compile run, and the largest relative difference of the Grams.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax.core import stats as layer_stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="2048,11008")
    ap.add_argument("--tokens", type=int, default=8 * 515)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    t = a.tokens
    mid = np.zeros((1, t), np.int32)
    mid[0, int(0.55 * t):int(0.85 * t)], mid[0, int(0.85 * t):] = 1, 2
    valid = np.ones((1, t), bool)
    index = tuple(jnp.asarray(i) for i in layer_stats.modality_token_index(mid, valid))
    print(f"device: {jax.devices()[0].device_kind}; {t} tokens (text/vision/audio "
          f"{[int((mid == m).sum()) for m in range(3)]}), float32 HIGHEST; median of {a.reps}")
    print(f"{'width':>7}{'masked s':>11}{'gathered s':>12}{'speed-up':>10}{'max rel diff':>14}")
    f = jax.jit(layer_stats.accumulate)
    for d in map(int, a.widths.split(",")):
        x = jnp.asarray(np.random.default_rng(0).standard_normal((1, t, d)).astype(np.float32))
        stats = layer_stats.empty_stats({"down": d}, with_gram=True)
        res, times = {}, {}
        for name, gi in (("masked", None), ("gathered", index)):
            res[name] = jax.block_until_ready(f(stats, {"down": x}, jnp.asarray(mid), jnp.asarray(valid), gi))
            runs = []
            for _ in range(a.reps):
                t0 = time.perf_counter()
                jax.block_until_ready(f(stats, {"down": x}, jnp.asarray(mid), jnp.asarray(valid), gi))
                runs.append(time.perf_counter() - t0)
            times[name] = statistics.median(runs)
        g0, g1 = res["masked"]["down"]["gram"], res["gathered"]["down"]["gram"]
        diff = float(jnp.max(jnp.abs(g0 - g1)) / jnp.max(jnp.abs(g0)))
        print(f"{d:>7}{times['masked']:>11.3f}{times['gathered']:>12.3f}{times['masked'] / times['gathered']:>9.2f}x"
              f"{diff:>14.1e}", flush=True)


if __name__ == "__main__":
    main()
