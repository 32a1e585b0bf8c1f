"""Prefill of a decoder stack with Qwen2.5-Omni-3B Thinker dimensions: bf16 vs quantized linears.

    python benchmarks/thinker_prefill.py                      # 36 layers, batch 1, 2048 tokens
    python benchmarks/thinker_prefill.py --layers 4 --seq 256 # smoke test (CPU: interpret mode)

A minimal pre-norm layer loop (lax.scan over stacked layer params): RMSNorm, q/k/v, causal GQA
attention via ``jax.nn.dot_product_attention`` (no RoPE: it costs the same in both arms), o, RMSNorm,
SiLU-gated MLP. The seven linears are bf16 ``jnp.dot`` or ``qmatmul`` on prepared quantized weights;
random weights. A contiguous third of the tokens are vision (an image's placeholder run), so the
low-rank variants pay for their branch on those tiles only. Median over ``--reps`` after warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax.kernels import prepare, qmatmul
from masq_jax.core.qlinear import make_qlinear

DIMS = dict(hidden=2048, inter=11008, heads=16, kv=2, hd=128, layers=36)
SETTINGS = {
    "w8a8": dict(wbits=8, abits=8),
    "w4a8": dict(wbits=4, abits=8),
    "w4a16": dict(wbits=4, abits=16, w_symmetric=False, group_size=128),
}


def linear_shapes(d):
    h, i, nh, kv, hd = d["hidden"], d["inter"], d["heads"], d["kv"], d["hd"]
    return {"q": (nh * hd, h), "k": (kv * hd, h), "v": (kv * hd, h), "o": (h, nh * hd),
            "gate": (i, h), "up": (i, h), "down": (h, i)}


def make_layers(d, setting, rank, seed=0):
    """Stacked per-layer params: bf16 ``[L, in, out]`` weights, or stacked PreparedQLinear pytrees."""
    shapes = linear_shapes(d)
    key = jax.random.PRNGKey(seed)
    makers = {}
    for name, (n, k) in shapes.items():
        if setting == "bf16":
            makers[name] = jax.jit(lambda kk, n=n, k=k: (jax.random.normal(kk, (k, n)) * k ** -0.5).astype(jnp.bfloat16))
        else:
            def mk(kk, n=n, k=k):
                k1, k2, k3 = jax.random.split(kk, 3)
                w = jax.random.normal(k1, (n, k)) * k ** -0.5
                lora = {}
                if rank:
                    lora = dict(lora_l=jax.random.normal(k2, (3, k, rank)) * 0.02,
                                lora_r=jax.random.normal(k3, (3, rank, n)) * 0.02)
                smooth = jnp.ones((3, k), jnp.float32)
                return prepare(make_qlinear(w, None, smooth=smooth, **lora, **SETTINGS[setting]))
            makers[name] = jax.jit(mk)
    layers = []
    for layer in range(d["layers"]):
        lk = jax.random.fold_in(key, layer)
        layers.append({name: makers[name](jax.random.fold_in(lk, j)) for j, name in enumerate(shapes)})
    return jax.tree.map(lambda *a: jnp.stack(a), *layers)


def rms(x):
    xf = x.astype(jnp.float32)
    return (xf * jax.lax.rsqrt(jnp.mean(xf * xf, -1, keepdims=True) + 1e-6)).astype(x.dtype)


def forward(d, layers, h, mid, setting, impl):
    b, s, hid = h.shape
    mid_flat = None if mid is None else mid.reshape(-1)

    def lin(p, x):
        x2 = x.reshape(b * s, -1)
        if setting == "bf16":
            y = jnp.dot(x2, p, preferred_element_type=jnp.float32).astype(x.dtype)
        else:
            y = qmatmul(x2, mid_flat, p, implementation=impl)
        return y.reshape(b, s, -1)

    def body(h, lp):
        x = rms(h)
        q = lin(lp["q"], x).reshape(b, s, d["heads"], d["hd"])
        k = lin(lp["k"], x).reshape(b, s, d["kv"], d["hd"])
        v = lin(lp["v"], x).reshape(b, s, d["kv"], d["hd"])
        a = jax.nn.dot_product_attention(q, k, v, is_causal=True).reshape(b, s, -1)
        h = h + lin(lp["o"], a)
        x2 = rms(h)
        h = h + lin(lp["down"], jax.nn.silu(lin(lp["gate"], x2)) * lin(lp["up"], x2))
        return h, None

    h, _ = jax.lax.scan(body, h, layers)
    return h


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=DIMS["layers"])
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--variants", default="bf16,w8a8,w4a8,w4a8_lr32,w4a8_lr64,w4a16")
    ap.add_argument("--impl", default=None, help="qmatmul implementation (default: best available)")
    args = ap.parse_args(argv)
    d = dict(DIMS, layers=args.layers)
    b, s = args.batch, args.seq
    mid = np.zeros((b, s), np.int32)
    mid[:, s // 3: 2 * s // 3] = 1
    mid = jnp.asarray(mid)
    xs = [jax.random.normal(jax.random.PRNGKey(i), (b, s, d["hidden"]), jnp.bfloat16) for i in range(2)]
    print(f"# device: {jax.devices()[0].device_kind}  jax {jax.__version__}  layers={d['layers']} "
          f"batch={b} seq={s} (a third of tokens vision)", flush=True)
    base = None
    for variant in args.variants.split(","):
        setting, _, lr = variant.partition("_lr")
        rank = int(lr) if lr else 0
        layers = make_layers(d, setting, rank)
        run = jax.jit(lambda h, L, setting=setting, rank=rank: forward(
            d, L, h, mid if rank else None, setting, args.impl))
        try:
            for x in xs:
                jax.block_until_ready(run(x, layers))
            ts = []
            for r in range(args.reps):
                t0 = time.perf_counter()
                jax.block_until_ready(run(xs[r % 2], layers))
                ts.append(time.perf_counter() - t0)
        except Exception as e:
            print(f"{variant:10s} FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)
            continue
        t = statistics.median(ts)
        base = t if variant == "bf16" else base
        sp = f"{base / t:.2f}x vs bf16" if base else ""
        print(f"{variant:10s} {t * 1e3:9.2f} ms  {b * s / t:10.0f} tok/s  {sp}", flush=True)
        del layers
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
