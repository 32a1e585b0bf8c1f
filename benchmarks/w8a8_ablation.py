"""Where W8A8's perplexity loss comes from on SmolLM2-135M: weights vs activations, per linear, α.

    python benchmarks/w8a8_ablation.py --eval-samples 32

Fake-quantizes (spec §1: 8-bit symmetric per-output-channel weights, per-token activations) only the
named part of every decoder layer and prints held-out perplexity against full precision (baseline).
SmoothQuant rows use the all-token statistics of the calibration split (spec §3 formula) for q, o and
up (k, v share q's input; gate shares up's), down_proj unsmoothed as in the reference unless stated.
"""

from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax import api, smooth
from masq_jax.layer_stats import LINEAR_INPUT
from masq_jax.models import decoder
from masq_jax.quant import fake_quant

ALL = tuple(LINEAR_INPUT)
SMOOTHED = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj")


def stack(calibset):
    """(input_ids [N, S], valid [N, S]) of a text CalibSet, right-padded."""
    n, s = len(calibset), calibset.max_len
    ids, valid = np.zeros((n, s), np.int32), np.zeros((n, s), bool)
    for k, sample in enumerate(calibset):
        ids[k, :sample.length], valid[k, :sample.length] = sample.input_ids, True
    return jnp.asarray(ids), jnp.asarray(valid)


def all_token_absmax(cfg, params, ids, valid) -> list[dict]:
    """Per layer, per linear input group: max |x| over the valid calibration tokens (FP model)."""
    h = decoder.embed(params, ids)
    cs = decoder.rope(cfg, decoder.default_positions(cfg, *ids.shape))
    bias = decoder.attention_bias(valid, ids.shape[1], jnp.float32)
    out = []
    for i in range(cfg.num_layers):
        lp = jax.tree_util.tree_map(lambda a: a[i], params["layers"])
        h, inputs = decoder.layer_forward(cfg, lp, h, cs, bias, capture=True)
        out.append({g: jnp.max(jnp.where(valid[..., None], jnp.abs(x.astype(jnp.float32)), 0.0), axis=(0, 1))
                    for g, x in inputs.items()})
    return out


def perplexity(cfg, params, ids, valid, absmax, *, act=(), weight=(), smoothed=(), alpha=0.5) -> float:
    h = decoder.embed(params, ids)
    cs = decoder.rope(cfg, decoder.default_positions(cfg, *ids.shape))
    bias = decoder.attention_bias(valid, ids.shape[1], jnp.float32)
    for i in range(cfg.num_layers):
        lp = jax.tree_util.tree_map(lambda a: a[i], params["layers"])

        def linear(name, x, p, i=i):
            w = p["w"].astype(jnp.float32)
            s = (smooth.init_factors(absmax[i][LINEAR_INPUT[name]], w, alpha=alpha) if name in smoothed
                 else jnp.ones(w.shape[1], jnp.float32))
            xs, ws = x.astype(jnp.float32) / s, w * s[None]
            xs = fake_quant(xs, 8) if name in act else xs
            ws = fake_quant(ws, 8) if name in weight else ws
            y = jnp.dot(xs, ws.T, precision="highest")
            return (y if p.get("b") is None else y + p["b"]).astype(x.dtype)

        h = decoder.layer_forward(cfg, lp, h, cs, bias, linear=linear)
    logp = jax.nn.log_softmax(decoder.head(cfg, params, h)[:, :-1], axis=-1)
    nll = -jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]
    ok = valid[:, 1:] & valid[:, :-1]
    return math.exp(float(jnp.sum(jnp.where(ok, nll, 0.0)) / jnp.sum(ok)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=8, help="calibration samples (SmoothQuant statistics)")
    ap.add_argument("--eval-samples", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    a = ap.parse_args()
    path = api.resolve_model("smollm2")
    cfg, params = api.load_model(path)
    train, held = api.load_calibration("text", path, cfg, a.samples, a.eval_samples, 0, a.seq_len)
    ids, valid = stack(held)
    absmax = all_token_absmax(cfg, params, *stack(train))
    rows = [("full precision (baseline)", {}), ("W8 only", dict(weight=ALL)), ("A8 only", dict(act=ALL))]
    rows += [(f"A8 on {n} only", dict(act=(n,))) for n in ALL]
    rows += [("RTN W8A8", dict(act=ALL, weight=ALL)),
             ("SmoothQuant W8A8 (spec: α 0.5, down unsmoothed)", dict(act=ALL, weight=ALL, smoothed=SMOOTHED)),
             ("SmoothQuant W8A8, down smoothed too", dict(act=ALL, weight=ALL, smoothed=ALL))]
    rows += [(f"SmoothQuant W8A8, α {al}", dict(act=ALL, weight=ALL, smoothed=SMOOTHED, alpha=al))
             for al in (0.4, 0.6, 0.7)]
    print(f"SmolLM2-135M, held-out perplexity on {len(held)} samples x <= {a.seq_len} tokens; "
          f"SmoothQuant statistics from {len(train)} calibration samples")
    fp = None
    for name, kw in rows:
        ppl = perplexity(cfg, params, ids, valid, absmax, **kw)
        fp = fp or ppl
        print(f"{name:<50}{ppl:>9.3f}{100 * (ppl / fp - 1):>+8.2f}%", flush=True)


if __name__ == "__main__":
    main()
