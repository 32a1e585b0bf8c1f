"""A one-linear synthetic demo of MASQuant at W4A8 (``masq demo``), CPU, seconds.

One linear layer sees text and vision tokens. Vision tokens concentrate their energy on a subset of
channels at 10–100× text's range (what survives RMSNorm, see docs/core.md), both modalities share a
few outlier channels, and activations are correlated (a low-rank latent plus noise, different per
modality). We compare per-modality SQNR of the linear's output against full precision for
RTN, SmoothQuant, MAS (per-modality trained vectors, one weight per modality: the upper bound),
MAS with only the text weight (rank 0) and MAS+CMC (one stored weight + whitened low-rank branch
for vision) at a few rank ratios — on the calibration tokens and on held-out tokens.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax.core import cmc, compensation, metrics, smoothing, stats
from masq_jax.core.quant import QuantSpec
from masq_jax.core.qlinear import make_qlinear, qlinear_reference
from masq_jax.core.training import train_smoothing

WBITS, ABITS = 4, 8
DIM_IN, DIM_OUT = 256, 256
TOKENS = 1024  # per split (half text, half vision)
RANK_RATIOS = (0.05, 0.125, 0.25)
TRAIN_STEPS = 150


class _Source:
    """Fixed modality structure (drawn once from the seed); ``sample`` draws tokens from it."""

    def __init__(self, rng: np.random.Generator, din: int):
        self.din = din
        self.outliers = rng.choice(din, 4, replace=False)  # shared outlier channels
        rest = np.setdiff1d(np.arange(din), self.outliers)
        self.loud = rng.choice(rest, 16, replace=False)  # vision's concentrated channels
        self.gain = np.exp(rng.uniform(np.log(10.0), np.log(100.0), 16))
        self.mix = {m: rng.standard_normal((16, din)) / 4.0 for m in (0, 1)}  # latent -> channels
        self.chan = {m: np.exp(rng.uniform(-0.5, 0.5, din)) for m in (0, 1)}

    def sample(self, rng: np.random.Generator, tokens: int) -> tuple[np.ndarray, np.ndarray]:
        mid = np.repeat(np.array([0, 1], np.int32), tokens // 2)
        rng.shuffle(mid)
        x = np.empty((tokens, self.din))
        for m in (0, 1):
            n = int((mid == m).sum())
            z = rng.standard_normal((n, 16))
            x[mid == m] = (z @ self.mix[m] + 0.5 * rng.standard_normal((n, self.din))) * self.chan[m]
        x[:, self.outliers] *= 8.0
        xv = x[mid == 1]
        xv[:, self.loud] *= self.gain
        x[mid == 1] = xv
        return x.astype(np.float32), mid


def _table(y, ref, mid) -> dict[str, float | None]:
    t = metrics.sqnr_table(ref, y, mid)
    return {k: t[k] for k in ("text", "vision", "all")}


def run_synthetic_demo(seed: int = 0, *, steps: int = TRAIN_STEPS, verbose: bool = True) -> dict[str, Any]:
    """Run the demo and return ``{"settings": ..., "rows": [{"method", "rank", "calib", "heldout"}],
    "range_ratio": ..., "seconds": ...}`` (SQNR in dB per modality); prints a table if ``verbose``."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    src = _Source(rng, DIM_IN)
    x_cal, m_cal = src.sample(rng, TOKENS)
    x_ho, m_ho = src.sample(rng, TOKENS)
    w = (rng.standard_normal((DIM_OUT, DIM_IN)) / np.sqrt(DIM_IN)).astype(np.float32)
    w[:, rng.choice(DIM_IN, 4, replace=False)] *= 4.0  # a few heavy weight columns
    b = (0.1 * rng.standard_normal(DIM_OUT)).astype(np.float32)
    xc, mc, wj, bj = jnp.asarray(x_cal), jnp.asarray(m_cal), jnp.asarray(w), jnp.asarray(b)
    splits = {"calib": (x_cal, m_cal), "heldout": (x_ho, m_ho)}
    refs = {k: x.astype(np.float64) @ w.T.astype(np.float64) + b for k, (x, _) in splits.items()}

    absmax = stats.modality_absmax(xc, mc)
    ratio = np.asarray(absmax[1] / jnp.maximum(absmax[0], 1e-6))
    s_sq = smoothing.smoothquant_factors(stats.absmax(xc), wj)
    s_init = smoothing.init_factors(absmax, wj)
    s_init = s_init.at[2].set(s_init[0])  # no audio here: give its unused row text's vector
    train = jax.jit(lambda s: train_smoothing(xc, mc, wj, bj, s, wbits=WBITS, abits=ABITS, steps=steps))
    trained = train(s_init)

    mas = jax.jit(lambda x, m, s: smoothing.mas_linear(x, m, wj, bj, s, wbits=WBITS, abits=ABITS))
    rows: list[dict[str, Any]] = []

    def add(name, fn, rank=None):
        row = {"method": name, "rank": rank}
        for k, (x, m) in splits.items():
            row[k] = _table(np.asarray(fn(jnp.asarray(x), jnp.asarray(m)), np.float64), refs[k], m)
        rows.append(row)

    add("RTN", lambda x, m: mas(x, m, smoothing.rtn_factors(DIM_IN)))  # all four share one compiled mas
    add("SmoothQuant", lambda x, m: mas(x, m, s_sq))
    add("MAS init (no training)", lambda x, m: mas(x, m, s_init))
    add("MAS (one weight per modality)", lambda x, m: mas(x, m, trained.smooth))
    run_q = jax.jit(qlinear_reference)
    # The quantizer's fit (core.compensation), at a fixed shrinkage and one rank everywhere; the whitened
    # factors of rank r are the top r of one decomposition: compute the largest rank once, slice.
    ranks = [cmc.resolve_rank(q, DIM_IN, DIM_OUT, floor=0) for q in RANK_RATIOS]  # floor 0: small ratios as is
    factors = jax.jit(lambda s, mode, rho: compensation.factors(wj, s, xc, mc, max(ranks), QuantSpec(WBITS),
                                                                shrinkage=rho, svd="svd", mode=mode),
                      static_argnums=(1, 2))
    whitened = factors(trained.smooth, "whitened", 0.0)
    variants = [("whitened", q, r, whitened) for q, r in zip(RANK_RATIOS, ranks)]
    variants += [("plain SVD", RANK_RATIOS[-1], ranks[-1], factors(trained.smooth, "plain", 0.0)),
                 ("whitened, damping 0.01", RANK_RATIOS[-1], ranks[-1],
                  factors(trained.smooth, "whitened", compensation.FIXED_RHO))]
    variants.insert(0, ("text weight only", 0.0, 0, variants[0][3]))
    for label, q, r, (lf, rf) in variants:
        # zero the factors beyond r instead of slicing: same output, one compiled evaluation
        keep = (jnp.arange(lf.shape[-1]) < r).astype(jnp.float32)
        ql = make_qlinear(wj, bj, wbits=WBITS, abits=ABITS, smooth=trained.smooth, lora_l=lf * keep,
                          lora_r=rf * keep[:, None])
        name = "MAS, text weight only (rank 0)" if r == 0 else f"MAS+CMC {label} r={q:g}"
        add(name, lambda x, m, ql=ql: run_q(x, m, ql), r)
    seconds = time.perf_counter() - t0
    result = {
        "settings": {"wbits": WBITS, "abits": ABITS, "in": DIM_IN, "out": DIM_OUT, "tokens_per_split": TOKENS,
                     "train_steps": steps, "seed": seed},
        "range_ratio": {"vision_over_text_max": float(ratio.max()),
                        "vision_over_text_loud_channels_median": float(np.median(ratio[src.loud]))},
        "train_loss": {"first": float(trained.losses[0]), "last": float(trained.losses[-1])} if steps else None,
        "rows": rows,
        "seconds": seconds,
    }
    if verbose:
        print(format_table(result))
    return result


def format_table(result: dict[str, Any]) -> str:
    """The demo's result as a fixed-width text table (SQNR dB, higher is better)."""
    st = result["settings"]
    lines = [
        f"synthetic linear {st['in']}->{st['out']}, W{st['wbits']}A{st['abits']}, {st['tokens_per_split']} tokens "
        f"per split (text+vision), vision/text channel range up to {result['range_ratio']['vision_over_text_max']:.0f}x",
        f"{'method':<40}{'rank':>5} | {'calib text':>10}{'vision':>8}{'all':>8} | {'held-out text':>13}{'vision':>8}{'all':>8}",
        "-" * 108,
    ]
    f = lambda v: f"{v:8.2f}" if v is not None else f"{'-':>8}"  # noqa: E731
    for row in result["rows"]:
        c, h = row["calib"], row["heldout"]
        rank = "" if row["rank"] is None else str(row["rank"])
        lines.append(f"{row['method']:<40}{rank:>5} | {c['text']:10.2f}{f(c['vision'])}{f(c['all'])} | "
                     f"{h['text']:13.2f}{f(h['vision'])}{f(h['all'])}")
    lines.append(f"({result['seconds']:.1f} s)")
    return "\n".join(lines)


if __name__ == "__main__":
    run_synthetic_demo()
