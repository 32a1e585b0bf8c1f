"""Where W8A8's perplexity loss comes from on SmolLM2-135M: weights vs activations, per linear, α.

    python benchmarks/w8a8_ablation.py --eval-samples 32

Fake-quantizes (docs/method.md §1: 8-bit symmetric per-output-channel weights, per-token activations) only the
named part of every decoder layer and prints held-out perplexity against full precision (baseline).
SmoothQuant rows use the all-token statistics of the calibration split (docs/method.md §3 formula) for q, o and
up (k, v share q's input; gate shares up's), down_proj unsmoothed as in the reference unless stated.
"""

from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp

from masq_jax import loading
from masq_jax.calibrate.batch import prepare
from masq_jax.calibrate.layer import fp_layer_pass
from masq_jax.core import smoothing
from masq_jax.core.quant import fake_quant
from masq_jax.eval.perplexity import next_token_nll
from masq_jax.methods.base import SMOOTHED
from masq_jax.models import INPUT_OF, LINEAR_NAMES, decoder

ALL = LINEAR_NAMES


def all_token_absmax(cfg, params, calibset) -> list[dict]:
    """Per layer, per linear input group: max |x| over the calibration tokens of the FP model
    (the pipeline's own statistics pass)."""
    prep = prepare(cfg, params, calibset)
    h, out = prep.h0, []
    for i in range(cfg.num_layers):
        lp = jax.tree_util.tree_map(lambda a: a[i], params["layers"])
        fp = fp_layer_pass(cfg, lp, h, prep, with_gram=False)
        h = fp.outputs
        out.append({g: v["absmax_all"] for g, v in fp.stats.items()})
    return out


def perplexity(cfg, params, prep, absmax, *, act=(), weight=(), smoothed=(), alpha=0.5) -> float:
    h = prep.h0
    batch = prep.batch
    bias = decoder.attention_bias(batch.valid, h.shape[1], jnp.float32)
    for i in range(cfg.num_layers):
        lp = jax.tree_util.tree_map(lambda a: a[i], params["layers"])

        def linear(name, x, p, i=i):
            w = p["w"].astype(jnp.float32)
            s = (smoothing.init_factors(absmax[i][INPUT_OF[name]], w, alpha=alpha) if name in smoothed
                 else jnp.ones(w.shape[1], jnp.float32))
            xs, ws = x.astype(jnp.float32) / s, w * s[None]
            xs = fake_quant(xs, 8) if name in act else xs
            ws = fake_quant(ws, 8) if name in weight else ws
            y = jnp.dot(xs, ws.T, precision="highest")
            return (y if p.get("b") is None else y + p["b"]).astype(x.dtype)

        h = decoder.layer_forward(cfg, lp, h, (batch.cos, batch.sin), bias, linear=linear)
    nll, count = next_token_nll(decoder.head(cfg, params, h), prep.input_ids, batch.valid, batch.modality_ids)
    return math.exp(float(nll) / int(count))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=8, help="calibration samples (SmoothQuant statistics)")
    ap.add_argument("--eval-samples", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    a = ap.parse_args()
    path = loading.resolve_model("smollm2")
    cfg, params = loading.load_checkpoint(path)
    train, held = loading.load_calibration("text", path, cfg, a.samples, a.eval_samples, 0, a.seq_len)
    prep = prepare(cfg, params, held)
    absmax = all_token_absmax(cfg, params, train)
    rows = [("full precision (baseline)", {}), ("W8 only", dict(weight=ALL)), ("A8 only", dict(act=ALL))]
    rows += [(f"A8 on {n} only", dict(act=(n,))) for n in ALL]
    rows += [("RTN W8A8", dict(act=ALL, weight=ALL)),
             ("SmoothQuant W8A8 (reference: α 0.5, down unsmoothed)", dict(act=ALL, weight=ALL, smoothed=SMOOTHED)),
             ("SmoothQuant W8A8, down smoothed too", dict(act=ALL, weight=ALL, smoothed=ALL))]
    rows += [(f"SmoothQuant W8A8, α {al}", dict(act=ALL, weight=ALL, smoothed=SMOOTHED, alpha=al))
             for al in (0.4, 0.6, 0.7)]
    print(f"SmolLM2-135M, held-out perplexity on {len(held)} samples x <= {a.seq_len} tokens; "
          f"SmoothQuant statistics from {len(train)} calibration samples")
    fp = None
    for name, kw in rows:
        ppl = perplexity(cfg, params, prep, absmax, **kw)
        fp = fp or ppl
        print(f"{name:<50}{ppl:>9.3f}{100 * (ppl / fp - 1):>+8.2f}%", flush=True)


if __name__ == "__main__":
    main()
