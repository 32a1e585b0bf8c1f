"""CMC solver speed: dense SVDs (``svd``, baseline) vs min(in, out)-sized eighs (``gram``) vs one eigh per
whitened fit (``output``, opt-in), per linear.

    python benchmarks/cmc_solver.py                          # Omni-3B q, k, gate, down (GPU; down is slow on CPU)
    python benchmarks/cmc_solver.py --shapes q,k,gate --tokens 2048   # CPU-friendly subset

One layer's worth of one linear: the quantizer's refit, ``core.compensation.fit`` on
``linear_inputs`` (vision + audio, fit "auto", the fixed shrinkage ρ = 1e-2/1.01), on random weights
and Gram matrices from ``--tokens`` correlated activations. Prints
wall time (median of ``--reps`` after one compile run), the ratio to ``svd`` and the relative
difference of the whitened residual ``‖X̃(ΔWᵀ − LR)‖`` of each against ``svd``'s (same optimum).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax.core import cmc, compensation
from masq_jax.core.quant import QuantSpec
from masq_jax.families.toy import CONFIGS


def shapes(config: str) -> dict[str, tuple[int, int]]:
    c = CONFIGS[config]
    h, i, kv = c["hidden_size"], c["intermediate_size"], c["num_kv_heads"] * c["head_dim"]
    return {"q": (h, c["num_heads"] * c["head_dim"]), "k": (h, kv), "gate": (h, i), "down": (i, h)}


def problem(din: int, dout: int, tokens: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((din, 64)).astype(np.float32) / 8
    x = (rng.standard_normal((tokens, din)) + rng.standard_normal((tokens, 64)) @ mix.T).astype(np.float32)
    x *= np.exp(rng.uniform(-1.5, 1.5, din)).astype(np.float32)
    xj = jnp.asarray(x)
    g = jnp.dot(xj.T, xj, precision="highest")
    grams = jnp.stack([g, g * 0.5, g * 2.0])
    w = jnp.asarray(rng.standard_normal((dout, din)).astype(np.float32) * 0.02)
    s = jnp.asarray(np.exp(rng.normal(size=(3, din)) * 0.3).astype(np.float32))
    return w, s, grams, jnp.full((3,), tokens, jnp.int32)


def stored(w, s, grams, counts, rank: int, solver: str):
    """The branches the quantizer stores for this linear at ``rank`` (no fold: ``--cov-shrinkage`` fixed)."""
    x = compensation.linear_inputs(w, s, QuantSpec(4), grams, counts)
    zeros = jnp.zeros((2,), jnp.int32)
    l, r, _ = compensation.fit(x, storage_rank=rank, choice=zeros, alloc=zeros + rank,
                               shrinkage=compensation.FIXED_RHO, svd=solver)
    return l, r


def residual(w, s, grams, l, r) -> float:
    dw = cmc.cmc_residual(w, s[1], s[0], wbits=4)
    e = dw.T - l[1] @ r[1]
    cov = cmc.smoothed_covariance(grams[1], s[1])
    return float(jnp.sqrt(jnp.sum(e * jnp.dot(cov, e, precision="highest"))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=("omni3b", "omni7b", "small"), default="omni3b")
    ap.add_argument("--shapes", default="q,k,gate,down")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--rank", type=float, default=0.02)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    print(f"device: {jax.devices()[0].device_kind}; {a.config}; compensation.fit (vision+audio, auto, damping 1e-2), "
          f"rank ratio {a.rank} (floor 32), covariance of {a.tokens} tokens; median of {a.reps}")
    print(f"{'linear':<7}{'in x out':>14}{'rank':>6}{'svd s':>10}{'gram s':>10}{'output s':>10}{'gram vs svd':>13}"
          f"{'output vs svd':>15}{'gram resid':>12}{'output resid':>14}")
    for name in a.shapes.split(","):
        din, dout = shapes(a.config)[name]
        rank = cmc.resolve_rank(a.rank, din, dout)
        w, s, grams, counts = problem(din, dout, a.tokens)
        times, out = {}, {}
        for solver in ("svd", "gram", "output"):
            f = jax.jit(lambda w, s, g, n, solver=solver: stored(w, s, g, n, rank, solver))
            out[solver] = jax.block_until_ready(f(w, s, grams, counts))
            runs = []
            for _ in range(a.reps):
                t0 = time.perf_counter()
                jax.block_until_ready(f(w, s, grams, counts))
                runs.append(time.perf_counter() - t0)
            times[solver] = statistics.median(runs)
        res = {k: residual(w, s, grams, *v) for k, v in out.items()}
        diff = {k: (res[k] - res["svd"]) / res["svd"] for k in ("gram", "output")}
        print(f"{name:<7}{f'{din}x{dout}':>14}{rank:>6}{times['svd']:>10.3f}{times['gram']:>10.3f}"
              f"{times['output']:>10.3f}{times['svd'] / times['gram']:>12.1f}x{times['svd'] / times['output']:>14.1f}x"
              f"{diff['gram']:>+12.1e}{diff['output']:>+14.1e}", flush=True)


if __name__ == "__main__":
    main()
