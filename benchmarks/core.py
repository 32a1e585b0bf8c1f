"""Benchmark: smoothing init + CMC for a stack of decoder layers (Qwen2.5-Omni-7B linear shapes).

Per layer and linear: per-modality absmax -> SmoothQuant-formula init (docs/method.md §3) -> per-modality
whitening covariances of the smoothed inputs -> CMC factors for vision and audio (docs/method.md §5: text
weight quantized, ΔW_m, eigh of C_m, truncated SVD, auto fallback). Three implementations:

  vmap   one jitted call, vmapped over the layer axis (in chunks of --chunk layers via lax.map when
         the whole stack does not fit in memory)
  loop   the same jitted per-layer function called in a Python loop over layers
  numpy  a straightforward NumPy/SciPy float64 implementation (timed on --numpy-layers layers and
         scaled to the stack; 'est.' marks a scaled figure)

Median of --runs timed runs after one warm-up (compile) run, all in one process. Distinct shapes
only: q and o share 3584x3584, k and v 512x3584, gate and up 18944x3584. down (3584x18944) is
opt-in on the full config: its per-modality whitening is an eigh of an 18944x18944 covariance.

  python benchmarks/core.py --small                            # CPU, scaled-down shapes, 8 layers
  python benchmarks/core.py                                    # GPU: q/o, k/v, gate/up x 28 layers
  python benchmarks/core.py --linears down --layers 2 --runs 1 # GPU: the down_proj stack, 2 layers
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time

# XLA:CPU (jax 0.10.2, 2 cores) deadlocks on the vmapped whole-layer program (all threads asleep in
# the first call) unless its concurrency-optimised scheduler is off. The flag only touches the CPU.
if "xla_cpu_enable_concurrency_optimized_scheduler" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_concurrency_optimized_scheduler=false").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402

from masq_jax.core import cmc, compensation, smoothing  # noqa: E402
from masq_jax.core.quant import QuantSpec  # noqa: E402
from masq_jax.core import stats as core_stats  # noqa: E402

# (name, out, in) per linear of Qwen2.5-Omni-7B: hidden 3584, intermediate 18944, 4 kv heads x 128.
FULL = {"hidden": 3584, "intermediate": 18944, "kv": 512, "layers": 28, "tokens": 2048}
SMALL = {"hidden": 256, "intermediate": 768, "kv": 64, "layers": 8, "tokens": 512}


def shapes(cfg) -> dict[str, tuple[int, int]]:
    h, i, kv = cfg["hidden"], cfg["intermediate"], cfg["kv"]
    return {"q/o": (h, h), "k/v": (kv, h), "gate/up": (i, h), "down": (h, i)}


# ------------------------------------------------------------------------------------------------
# data (generated on the device, deterministic)


def make_stack(key, layers: int, out_dim: int, in_dim: int, tokens: int):
    """Weights [L, out, in], activations [L, T, in] (text/vision/audio thirds, vision and audio loud
    on a few channels) and modality ids [L, T]."""
    kw, kx, kc = jax.random.split(key, 3)
    w = jax.random.normal(kw, (layers, out_dim, in_dim), jnp.float32) / np.sqrt(in_dim)
    x = jax.random.normal(kx, (layers, tokens, in_dim), jnp.float32)
    mid = jnp.broadcast_to((jnp.arange(tokens) * 3 // tokens).astype(jnp.int32), (layers, tokens))
    loud = jax.random.choice(kc, in_dim, (max(in_dim // 64, 2),), replace=False)
    gain = jnp.ones((3, in_dim)).at[1, loud].set(30.0).at[2, loud[::2]].set(10.0)
    return w, x * gain[mid], mid


# ------------------------------------------------------------------------------------------------
# the JAX implementation: one layer


def layer_fn(w, x, mid, *, rank: int, svd: str):
    s = smoothing.init_factors(core_stats.modality_absmax(x, mid), w)
    lf, rf = compensation.factors(w, s, x, mid, rank, QuantSpec(4), shrinkage=0.0, svd=svd)  # the quantizer's fit
    return s, lf, rf


def run_vmap(f, w, x, mid, chunk: int):
    n = w.shape[0]
    if chunk >= n:
        return jax.vmap(f)(w, x, mid)
    return jax.lax.map(lambda a: f(*a), (w, x, mid), batch_size=chunk)


# ------------------------------------------------------------------------------------------------
# the NumPy/SciPy float64 implementation


def np_fake_quant_sym(w, bits=4):
    qmax = 2 ** (bits - 1) - 1
    scale = np.clip(np.abs(w).max(-1, keepdims=True) / qmax, 1e-5, 1e4)
    return np.clip(np.round(w / scale), -qmax, qmax) * scale


def np_layer(w, x, mid, rank):
    w = np.asarray(w, np.float64)
    x = np.asarray(x, np.float64)
    mid = np.asarray(mid)
    in_dim = w.shape[1]
    stats = np.stack([np.abs(x[mid == m]).max(0) if (mid == m).any() else np.zeros(in_dim) for m in range(3)])
    wmax = np.maximum(np.abs(w).max(0), 1e-5)
    s = np.maximum(np.sqrt(stats) / np.sqrt(wmax), 1e-5)
    wq = np_fake_quant_sym(w * s[0])
    ls, rs = [np.zeros((in_dim, rank))], [np.zeros((rank, w.shape[0]))]
    for m in (1, 2):
        xt = x[mid == m] / s[m]
        c = xt.T @ xt
        a = (w * s[m] - wq).T
        ev, u = scipy.linalg.eigh(c)
        ev = np.maximum(ev, in_dim * np.finfo(np.float64).eps * ev.max())
        t = np.sqrt(ev)[:, None] * u.T
        u2, s2, v2t = scipy.linalg.svd(t @ a, full_matrices=False)
        lw, rw = (u / np.sqrt(ev)) @ u2[:, :rank], s2[:rank, None] * v2t[:rank]
        up, sp, vpt = scipy.linalg.svd(a, full_matrices=False)
        lp, rp = up[:, :rank], sp[:rank, None] * vpt[:rank]
        res = [np.sum(e * (c @ e)) for e in (a - lw @ rw, a - lp @ rp)]
        l, r = (lw, rw) if res[0] <= res[1] else (lp, rp)
        ls.append(l)
        rs.append(r)
    return s, np.stack(ls), np.stack(rs)


# ------------------------------------------------------------------------------------------------


def timed(fn, runs: int):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return out, first, statistics.median(times)


def auto_chunk(layers: int, out_dim: int, in_dim: int, tokens: int) -> int:
    """Layers per vmapped chunk so the working set stays within ~35% of device memory."""
    per_layer = 4 * (3 * in_dim * in_dim + 4 * in_dim * in_dim + 8 * in_dim * out_dim + 3 * tokens * in_dim)
    try:
        stats = jax.devices()[0].memory_stats() or {}
        budget = 0.35 * stats.get("bytes_limit", 16 << 30)
    except Exception:  # CPU: no memory stats
        budget = 8 << 30
    return int(max(1, min(layers, budget // per_layer)))


def bench_shape(name, out_dim, in_dim, cfg, args, key):
    layers, tokens = cfg["layers"], cfg["tokens"]
    if name == "down" and args.down_layers:
        layers = min(layers, args.down_layers)
    rank = cmc.resolve_rank(args.rank, in_dim, out_dim)
    w, x, mid = make_stack(key, layers, out_dim, in_dim, tokens)
    jax.block_until_ready((w, x, mid))
    f = functools.partial(layer_fn, rank=rank, svd=args.svd)
    chunk = args.chunk or auto_chunk(layers, out_dim, in_dim, tokens)
    vm = jax.jit(lambda a, b, c: run_vmap(f, a, b, c, chunk))
    one = jax.jit(f)
    out_v, first_v, t_v = timed(lambda: vm(w, x, mid), args.runs)
    out_l, first_l, t_l = timed(lambda: [one(w[i], x[i], mid[i]) for i in range(layers)], args.runs)
    # agreement vmap vs loop (layer 0 and last): relative difference of L·R products
    agree = 0.0
    for i in (0, layers - 1):
        for m in (1, 2):
            pv = out_v[1][i, m] @ out_v[2][i, m]
            pl = out_l[i][1][m] @ out_l[i][2][m]
            agree = max(agree, float(jnp.linalg.norm(pv - pl) / jnp.maximum(jnp.linalg.norm(pl), 1e-30)))
    row = {"linear": name, "shape": f"{out_dim}x{in_dim}", "layers": layers, "rank": rank, "chunk": chunk,
           "vmap_s": t_v, "vmap_compile_s": max(first_v - t_v, 0.0), "loop_s": t_l,
           "loop_compile_s": max(first_l - t_l, 0.0), "vmap_vs_loop_max_rel_diff": agree}
    np_layers = min(layers, args.numpy_layers if args.numpy_layers else layers)
    if args.no_numpy or max(in_dim, out_dim) > args.numpy_max_dim:
        row.update(numpy_s=None, numpy_est=False, numpy_vs_jax_rel_diff=None)
        return row
    wn, xn, mn = (np.asarray(a[:np_layers]) for a in (w, x, mid))
    t_np = []
    for _ in range(max(1, min(args.runs, args.numpy_runs))):
        t0 = time.perf_counter()
        ref = [np_layer(wn[i], xn[i], mn[i], rank) for i in range(np_layers)]
        t_np.append(time.perf_counter() - t0)
    t_np = statistics.median(t_np) * layers / np_layers
    diff = 0.0
    for m in (1, 2):
        pn = ref[0][1][m] @ ref[0][2][m]
        pv = np.asarray(out_v[1][0, m], np.float64) @ np.asarray(out_v[2][0, m], np.float64)
        diff = max(diff, float(np.linalg.norm(pv - pn) / max(np.linalg.norm(pn), 1e-30)))
    row.update(numpy_s=t_np, numpy_est=np_layers < layers, numpy_vs_jax_rel_diff=diff)
    del out_v, out_l, w, x, mid
    return row


def format_rows(rows, header: str) -> str:
    lines = [header,
             f"{'linear':<8}{'out x in':>12}{'L':>4}{'rank':>6}{'chunk':>6} |{'vmap s':>9}{'loop s':>9}"
             f"{'numpy64 s':>12} |{'loop/vmap':>10}{'numpy/vmap':>11} |{'compile s':>10}{'v~l diff':>10}{'np~jax':>9}",
             "-" * 118]
    for r in rows:
        np_s = "skipped" if r["numpy_s"] is None else f"{r['numpy_s']:.3f}" + ("*" if r["numpy_est"] else "")
        ratio_np = "-" if r["numpy_s"] is None else f"{r['numpy_s'] / r['vmap_s']:.1f}x"
        np_diff = "-" if r["numpy_vs_jax_rel_diff"] is None else f"{r['numpy_vs_jax_rel_diff']:.1e}"
        lines.append(f"{r['linear']:<8}{r['shape']:>12}{r['layers']:>4}{r['rank']:>6}{r['chunk']:>6} |"
                     f"{r['vmap_s']:9.3f}{r['loop_s']:9.3f}{np_s:>12} |{r['loop_s'] / r['vmap_s']:9.2f}x"
                     f"{ratio_np:>11} |{r['vmap_compile_s']:10.1f}{r['vmap_vs_loop_max_rel_diff']:10.1e}{np_diff:>9}")
    lines.append("* numpy timed on fewer layers and scaled to the stack. diff columns: relative Frobenius "
                 "difference of L·R (vmap vs loop, all float32; numpy float64 vs vmap, layer 0).")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="scaled-down shapes for CPU")
    p.add_argument("--layers", type=int, help="layers in the stack (default 28, --small 8)")
    p.add_argument("--tokens", type=int, help="calibration tokens per layer (a third per modality)")
    p.add_argument("--linears", default=None,
                   help="comma list of q/o, k/v, gate/up, down (default: all with --small, else q/o,k/v,gate/up)")
    p.add_argument("--rank", type=float, default=0.05, help="rank ratio (<= 1) or absolute rank, floor 32")
    p.add_argument("--svd", default=None, choices=["svd", "gram"],
                   help="truncated SVD method (default: svd on CPU, gram on GPU)")
    p.add_argument("--runs", type=int, default=None, help="timed runs per implementation, median (3 small / 2)")
    p.add_argument("--chunk", type=int, default=0, help="layers per vmapped chunk (0: from device memory)")
    p.add_argument("--down-layers", type=int, default=None, help="cap the layers for down")
    p.add_argument("--numpy-layers", type=int, default=None, help="layers timed for numpy (default all / 1 on GPU)")
    p.add_argument("--numpy-runs", type=int, default=None, help="numpy timed runs (3 small / 1)")
    p.add_argument("--numpy-max-dim", type=int, default=4096, help="skip numpy above this dimension")
    p.add_argument("--no-numpy", action="store_true")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    cfg = dict(SMALL if args.small else FULL)
    on_gpu = jax.default_backend() != "cpu"
    if args.layers:
        cfg["layers"] = args.layers
    if args.tokens:
        cfg["tokens"] = args.tokens
    if args.svd is None:
        args.svd = "gram" if on_gpu else "svd"
    if args.numpy_layers is None and not args.small:
        args.numpy_layers = 1
    if args.runs is None:
        args.runs = 3 if args.small else 2
    if args.numpy_runs is None:
        args.numpy_runs = 3 if args.small else 1
    if args.linears is None:
        args.linears = "q/o,k/v,gate/up,down" if args.small else "q/o,k/v,gate/up"
    all_shapes = shapes(cfg)
    names = [n.strip() for n in args.linears.split(",") if n.strip()]
    bad = [n for n in names if n not in all_shapes]
    if bad:
        print(f"error: --linears accepts {', '.join(all_shapes)}; got {', '.join(bad)}", file=sys.stderr)
        return 2
    dev = jax.devices()[0]
    header = (f"CMC + init, {'small' if args.small else 'Qwen2.5-Omni-7B'} shapes, {cfg['layers']} layers, "
              f"{cfg['tokens']} tokens/layer, rank {args.rank:g} (floor 32), svd={args.svd}, float32, "
              f"median of {args.runs} runs, device {dev.device_kind} ({jax.default_backend()}), jax {jax.__version__}")
    rows = []
    key = jax.random.PRNGKey(0)
    for i, name in enumerate(names):
        out_dim, in_dim = all_shapes[name]
        rows.append(bench_shape(name, out_dim, in_dim, cfg, args, jax.random.fold_in(key, i)))
        r = rows[-1]
        print(f"  done {name} at {time.strftime('%H:%M:%S')}: vmap {r['vmap_s']:.3f}s (compile {r['vmap_compile_s']:.1f}s) "
              f"loop {r['loop_s']:.3f}s numpy {r['numpy_s']}", flush=True)
    print(format_rows(rows, header))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"header": header, "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
