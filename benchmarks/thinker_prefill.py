"""Prefill of a decoder stack with Qwen2.5-Omni-3B Thinker dimensions: bf16 vs quantized linears.

    python benchmarks/thinker_prefill.py                      # 36 layers, batch 1, 2048 tokens
    python benchmarks/thinker_prefill.py --layers 4 --seq 256 # smoke test (CPU: interpret mode)

A minimal pre-norm layer loop (lax.scan over stacked layer params): RMSNorm, q/k/v, causal GQA
attention via ``jax.nn.dot_product_attention`` (no RoPE: it costs the same in both arms), o, RMSNorm,
SiLU-gated MLP. The seven linears are bf16 ``jnp.dot`` or ``qmatmul`` on prepared quantized weights;
random weights. A contiguous third of the tokens are vision (an image's placeholder run), so the
low-rank variants pay for their branch on those tiles only. Median over ``--reps`` after warm-up.

Attention is the same in every arm: ``--attention auto`` is cuDNN's flash attention on a GPU (XLA's
path elsewhere), so the ratios measure the linears, not an unfused softmax. A variant is
``SETTING[_lrRANK][_m]``; ``_m`` runs q|k|v as one GEMM and gate|up as one GEMM with the SwiGLU in
its epilogue (``kernels.merge_qlinears``, what a ``--tie-smoothing`` artefact loads as). Baseline:
``bf16``; merged variants also against ``bf16_m`` (bf16 with the same two concatenated GEMMs).
A suffix ``@IMPL`` picks the variant's ``qmatmul`` implementation (``w8a8@mosaic``, ``w4a8_m@pallas``);
without one, ``--impl``. A failing variant prints its error in its row and the others still run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax.kernels import merge_qlinears, prepare, qmatmul
from masq_jax.kernels.merge import SWIGLU_ALIGN
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


GROUPS = {"qkv": ("q", "k", "v"), "gate_up": ("gate", "up")}  # what ``_m`` merges


def make_layers(d, setting, rank, merged=False, seed=0):
    """Stacked per-layer params: bf16 ``[L, in, out]`` weights, or stacked PreparedQLinear pytrees;
    ``merged`` replaces q/k/v by ``qkv`` and gate/up by ``gate_up`` (one linear each)."""
    shapes = linear_shapes(d)
    key = jax.random.PRNGKey(seed)

    def mk(kk, n, k):
        if setting == "bf16":
            return (jax.random.normal(kk, (k, n)) * k ** -0.5).astype(jnp.bfloat16)
        k1, k2, k3 = jax.random.split(kk, 3)
        w = jax.random.normal(k1, (n, k)) * k ** -0.5
        lora = {}
        if rank:
            lora = dict(lora_l=jax.random.normal(k2, (3, k, rank)) * 0.02,
                        lora_r=jax.random.normal(k3, (3, rank, n)) * 0.02)
        return make_qlinear(w, None, smooth=jnp.ones((3, k), jnp.float32), **lora, **SETTINGS[setting])

    def layer(lk):
        ps = {name: mk(jax.random.fold_in(lk, j), n, k) for j, (name, (n, k)) in enumerate(shapes.items())}
        if merged:
            for group, members in GROUPS.items():
                qls = [ps.pop(m) for m in members]
                if setting == "bf16":
                    ps[group] = jnp.concatenate(qls, axis=1)
                else:
                    ps[group] = merge_qlinears(qls, align=SWIGLU_ALIGN if group == "gate_up" else 1)[0]
        return ps if setting == "bf16" else {name: prepare(q) for name, q in ps.items()}

    make = jax.jit(layer)
    layers = [make(jax.random.fold_in(key, i)) for i in range(d["layers"])]
    return jax.tree.map(lambda *a: jnp.stack(a), *layers)


def attention_impl(choice: str) -> str | None:
    """``jax.nn.dot_product_attention``'s implementation: cuDNN flash attention on a GPU for ``auto``."""
    if choice == "auto":
        return "cudnn" if jax.default_backend() == "gpu" else None
    return None if choice == "xla" else choice


def rms(x):
    xf = x.astype(jnp.float32)
    return (xf * jax.lax.rsqrt(jnp.mean(xf * xf, -1, keepdims=True) + 1e-6)).astype(x.dtype)


def forward(d, layers, h, mid, setting, impl, attention=None):
    b, s, hid = h.shape
    mid_flat = None if mid is None else mid.reshape(-1)
    nq, nkv, inter = d["heads"] * d["hd"], d["kv"] * d["hd"], d["inter"]

    def lin(p, x, epilogue=None):
        x2 = x.reshape(b * s, -1)
        if setting == "bf16":
            y = jnp.dot(x2, p, preferred_element_type=jnp.float32)
            y = (y if epilogue is None else jax.nn.silu(y[:, :inter]) * y[:, inter:]).astype(x.dtype)
        else:
            y = qmatmul(x2, mid_flat, p, implementation=impl, epilogue=epilogue)
        return y.reshape(b, s, -1)

    def body(h, lp):
        x = rms(h)
        if "qkv" in lp:
            y = lin(lp["qkv"], x)
            q, k, v = y[..., :nq], y[..., nq:nq + nkv], y[..., nq + nkv:]
        else:
            q, k, v = lin(lp["q"], x), lin(lp["k"], x), lin(lp["v"], x)
        q = q.reshape(b, s, d["heads"], d["hd"])
        k, v = k.reshape(b, s, d["kv"], d["hd"]), v.reshape(b, s, d["kv"], d["hd"])
        a = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=attention).reshape(b, s, -1)
        h = h + lin(lp["o"], a)
        x2 = rms(h)
        if "gate_up" in lp:
            m = lin(lp["gate_up"], x2, epilogue="swiglu")[..., :inter]
        else:
            m = jax.nn.silu(lin(lp["gate"], x2)) * lin(lp["up"], x2)
        h = h + lin(lp["down"], m)
        return h, None

    h, _ = jax.lax.scan(body, h, layers)
    return h


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=DIMS["layers"])
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--variants", default="bf16,bf16_m,w8a8,w8a8_m,w4a8,w4a8_m,w4a8_lr32,w4a8_lr32_m,w4a8_lr64_m,"
                                          "w4a16,w4a16_m")
    ap.add_argument("--impl", default=None, help="qmatmul implementation (default: best available)")
    ap.add_argument("--attention", default="auto", choices=("auto", "cudnn", "xla"),
                    help="attention in every arm (auto: cuDNN flash attention on a GPU, XLA elsewhere)")
    args = ap.parse_args(argv)
    d = dict(DIMS, layers=args.layers)
    b, s = args.batch, args.seq
    mid = np.zeros((b, s), np.int32)
    mid[:, s // 3: 2 * s // 3] = 1
    mid = jnp.asarray(mid)
    xs = [jax.random.normal(jax.random.PRNGKey(i), (b, s, d["hidden"]), jnp.bfloat16) for i in range(2)]
    attention = attention_impl(args.attention)
    print(f"# device: {jax.devices()[0].device_kind}  jax {jax.__version__}  layers={d['layers']} "
          f"batch={b} seq={s} (a third of tokens vision)  attention={attention or 'xla'}", flush=True)
    times = {}
    for variant in args.variants.split(","):
        base, _, vimpl = variant.partition("@")
        impl = vimpl or args.impl
        merged = base.endswith("_m")
        setting, _, lr = base.removesuffix("_m").partition("_lr")
        rank = int(lr) if lr else 0
        try:
            layers = make_layers(d, setting, rank, merged)
            run = jax.jit(lambda h, L, setting=setting, rank=rank, impl=impl: forward(
                d, L, h, mid if rank else None, setting, impl, attention))
            for x in xs:
                jax.block_until_ready(run(x, layers))
            ts = []
            for r in range(args.reps):
                t0 = time.perf_counter()
                jax.block_until_ready(run(xs[r % 2], layers))
                ts.append(time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - a failing arm is a result: print it and go on
            first = next((ln for ln in str(e).splitlines() if ln.strip()), "")[:240]
            print(f"{variant:12s} FAILED {type(e).__name__}: {first}", flush=True)
            continue
        t = times[variant] = statistics.median(ts)
        sp = f"{times['bf16'] / t:.2f}x vs bf16" if "bf16" in times else ""
        if merged and "bf16_m" in times and variant != "bf16_m":
            sp += f"  {times['bf16_m'] / t:.2f}x vs bf16_m"
        print(f"{variant:12s} {t * 1e3:9.2f} ms  {b * s / t:10.0f} tok/s  {sp}", flush=True)
        del layers
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
