"""Benchmark qmatmul against bf16 on the Qwen2.5-Omni Thinker linear shapes (run on a GPU).

    python benchmarks/qmatmul.py --quick            # 3B q/gate/down, M in {2048, 1}
    python benchmarks/qmatmul.py                    # 3B + 7B, all shapes, M in {512,2048,8192,1,8,16}
    python benchmarks/qmatmul.py --sweep            # also try several block configs per shape
    python benchmarks/qmatmul.py --impl pallas --mosaic   # Triton rows and mosaic_* rows (Mosaic GPU kernel)

Each figure is the median over ``--reps`` runs of one jitted call that applies the op to ``--rotate``
different (input, weight) pairs back to back (distinct buffers, so L2 never holds the next weight
and no dispatch gap is timed), divided by the number of pairs. Prefill rows report TFLOP/s
(2·M·K·N / t); decode rows (M <= 16) report GB/s of weight+activation traffic and the HBM limit.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import gzip
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax.kernels import Config, prepare, qmatmul
from masq_jax.kernels.qmatmul_pallas import gemm, prepass
from masq_jax.core.qlinear import make_qlinear
from masq_jax.core.quant import dequantize

MODELS = {
    "3b": dict(hidden=2048, inter=11008, heads=16, kv=2, hd=128),
    "7b": dict(hidden=3584, inter=18944, heads=28, kv=4, hd=128),
    "tiny": dict(hidden=256, inter=384, heads=2, kv=1, hd=128),  # CPU smoke test only
}
HBM_PEAK = {"H200": 4.8e12, "H100": 3.35e12}  # HBM peak bytes/s (H100 SXM HBM3, H200 HBM3e)


def hbm_bytes_per_s() -> float:
    kind = jax.devices()[0].device_kind
    return next((v for k, v in HBM_PEAK.items() if k in kind), HBM_PEAK["H100"])


def shapes(model: str, merged: bool = False) -> dict[str, tuple[int, int]]:
    """Unique (K, N) of the seven linears (k = v, gate = up); ``merged``: those of the merged GEMMs
    (``qkv``; ``gate_up``, timed with its SwiGLU epilogue in both arms)."""
    c = MODELS[model]
    h, i = c["hidden"], c["inter"]
    if merged:
        return {"qkv": (h, (c["heads"] + 2 * c["kv"]) * c["hd"]), "gate_up": (h, 2 * i)}
    return {"q": (h, c["heads"] * c["hd"]), "k/v": (h, c["kv"] * c["hd"]),
            "o": (c["heads"] * c["hd"], h), "gate/up": (h, i), "down": (i, h)}


def _copies(tree, n):
    return [jax.tree.map(lambda a: None if a is None else jnp.array(a, copy=True), tree) for _ in range(n)]


_DIAG = {"printed": False}


def device_busy_seconds(trace_root: str) -> float | None:
    """Union of GPU kernel intervals in a ``jax.profiler`` perfetto trace (None if it has none)."""
    files = sorted(glob.glob(os.path.join(trace_root, "**", "perfetto_trace.json.gz"), recursive=True))
    if not files:
        return None
    with gzip.open(files[-1]) as f:
        data = json.load(f)
    evs = data["traceEvents"] if isinstance(data, dict) else data
    procs = {e["pid"]: e.get("args", {}).get("name", "") for e in evs
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    threads = {(e["pid"], e.get("tid")): e.get("args", {}).get("name", "") for e in evs
               if e.get("ph") == "M" and e.get("name") == "thread_name"}
    gpu = {pid for pid, n in procs.items() if "GPU" in n}
    xs = [e for e in evs if e.get("ph") == "X" and e.get("pid") in gpu and "dur" in e]
    stream = [e for e in xs if "Stream" in threads.get((e["pid"], e.get("tid")), "")]
    if not _DIAG["printed"]:
        _DIAG["printed"] = True
        names = sorted({threads.get((e["pid"], e.get("tid")), "?") for e in xs})
        print(f"# profiler: gpu processes {sorted(procs[p] for p in gpu)}; threads {names[:8]}", flush=True)
    use = stream or [e for e in xs if not any(
        w in threads.get((e["pid"], e.get("tid")), "") for w in ("Module", "XLA Ops", "Step"))]
    if not use:
        return None
    ivs = sorted((float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in use)
    busy, cur_s, cur_e = 0.0, ivs[0][0], ivs[0][1]
    for a, b in ivs[1:]:
        if a > cur_e:
            busy += cur_e - cur_s
            cur_s, cur_e = a, b
        else:
            cur_e = max(cur_e, b)
    return (busy + cur_e - cur_s) * 1e-6


def time_op(fn, xs, ws, reps: int, calls: int = 4, timer: str = "profile") -> float:
    """Median seconds per application of ``fn(x, w)``.

    One jitted call applies ``fn`` to every distinct (x, w) pair (weights rotate fastest, so no
    weight is reused from L2 by the next op). ``timer="profile"``: GPU busy time of one call from a
    profiler trace (kernels only: no Python dispatch, which would dominate decode shapes), falling
    back to wall time; ``"wall"``: ``calls`` calls queued back to back, then one block.
    """
    pairs = [(x, w) for x in xs for w in ws]
    run = jax.jit(lambda ps: [fn(x, w) for x, w in ps])
    jax.block_until_ready(run(pairs))
    jax.block_until_ready(run(pairs))
    ts = []
    if timer == "profile" and jax.default_backend() == "gpu":
        for _ in range(2):
            d = tempfile.mkdtemp(prefix="qmm_trace_")
            try:
                with jax.profiler.trace(d, create_perfetto_trace=True):
                    jax.block_until_ready(run(pairs))
                busy = device_busy_seconds(d)
            except Exception as e:  # no profiler support: fall back to wall time
                print(f"# profiler failed ({type(e).__name__}: {str(e)[:120]}); wall time", flush=True)
                busy = None
            finally:
                shutil.rmtree(d, ignore_errors=True)
            if busy is None:
                break
            ts.append(busy / len(pairs))
        if ts:
            return statistics.median(ts)
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(calls):
            out = run(pairs)
        jax.block_until_ready(out)
        ts.append((time.perf_counter() - t0) / (calls * len(pairs)))
    return statistics.median(ts)


def make_inputs(m, k, rotate, key):
    keys = jax.random.split(key, rotate)
    return [jax.random.normal(kk, (m, k), jnp.bfloat16) for kk in keys]


def vision_third(m):
    """A contiguous third of the tokens are vision (as an image's placeholder run), the rest text."""
    mid = np.zeros(m, np.int32)
    mid[m // 3: 2 * m // 3] = 1
    return jnp.asarray(mid)


def build(k, n, setting, rank=0, key=0):
    rng = np.random.default_rng(key)
    w = jnp.asarray(rng.normal(size=(n, k)) * 0.02, jnp.float32)
    kw = dict(w8a8=dict(wbits=8, abits=8), w4a8=dict(wbits=4, abits=8),
              w4a16=dict(wbits=4, abits=16, w_symmetric=False, group_size=128))[setting]
    lora = {}
    if rank:
        lora = dict(lora_l=jnp.asarray(rng.normal(size=(3, k, rank)) * 0.02, jnp.float32),
                    lora_r=jnp.asarray(rng.normal(size=(3, rank, n)) * 0.02, jnp.float32))
    smooth = jnp.asarray(rng.uniform(0.5, 2, size=(3, k)), jnp.float32)
    return w, make_qlinear(w, None, smooth=smooth, **lora, **kw)


def bench_shape(model, name, k, n, ms, args, out_rows):
    rot = args.rotate
    w, ql8 = build(k, n, "w8a8")
    _, ql4 = build(k, n, "w4a8")
    _, ql16 = build(k, n, "w4a16")
    wt = [jnp.asarray(w.T, jnp.bfloat16)] * 1
    wts = _copies(wt[0], rot)
    variants = {}
    ep = "swiglu" if name == "gate_up" else None  # the merged gate|up GEMM returns silu(g)·u
    fin = (lambda y: y) if ep is None else (lambda y: jax.nn.silu(y[:, :n // 2]) * y[:, n // 2:])
    variants["bf16"] = (lambda x, wt_: fin(jnp.dot(x, wt_, preferred_element_type=jnp.float32)).astype(x.dtype),
                        wts, 2 * k * n)
    qa16 = _copies(ql16.weight, rot)
    variants["xla_deq_w4a16"] = (lambda x, qa: fin(jnp.dot(x, dequantize(qa, jnp.bfloat16).T)), qa16, k * n // 2)
    p8, p4, p16 = prepare(ql8), prepare(ql4), prepare(ql16)
    p8s, p4s, p16s = _copies(p8, rot), _copies(p4, rot), _copies(p16, rot)
    if args.xla_int:
        variants["xla_w8a8"] = (lambda x, p: qmatmul(x, None, p, implementation="xla", epilogue=ep), p8s, k * n)
    impl = args.impl
    variants["w8a8"] = (lambda x, p: qmatmul(x, None, p, implementation=impl, epilogue=ep), p8s, k * n)
    variants["w4a8"] = (lambda x, p: qmatmul(x, None, p, implementation=impl, epilogue=ep), p4s, k * n // 2)
    variants["w4a16"] = (lambda x, p: qmatmul(x, None, p, implementation=impl, epilogue=ep), p16s, k * n // 2)
    lowrank = {}
    for r in args.ranks:
        _, qlr = build(k, n, "w4a8", rank=r)
        prs = lowrank[r] = _copies(prepare(qlr), rot)
        variants[f"w4a8_lr{r}"] = ("lowrank", prs, k * n // 2)
    if args.mosaic:  # the Mosaic GPU (wgmma) kernel, same prepared weights
        def mosaic(x, p):
            return qmatmul(x, None, p, implementation="mosaic", epilogue=ep)

        variants["mosaic_w8a8"] = (mosaic, p8s, k * n)
        variants["mosaic_w4a8"] = (mosaic, p4s, k * n // 2)
        variants["mosaic_w4a16"] = (mosaic, p16s, k * n // 2)
        for r in args.ranks:
            variants[f"mosaic_w4a8_lr{r}"] = ("lowrank_mosaic", lowrank[r], k * n // 2)
    for m in ms:
        decode = m <= 16
        xs = make_inputs(m, k, 8 if decode else 2, jax.random.PRNGKey(m))
        mid = vision_third(m)
        base = None
        for vname, (fn, ws, wbytes) in variants.items():
            if args.only and not any(o in vname for o in args.only) and vname != "bf16":
                continue
            if fn in ("lowrank", "lowrank_mosaic"):
                if decode:
                    continue  # decode tokens are text: the branch is not even traced
                lr_impl = "mosaic" if fn == "lowrank_mosaic" else impl
                fn = lambda x, p, lr_impl=lr_impl: qmatmul(x, mid, p, implementation=lr_impl, epilogue=ep)  # noqa: E731
            try:
                t = time_op(fn, xs, ws, args.reps, timer=args.timer)
            except Exception as e:  # report and go on: one failing variant must not hide the rest
                print(f"{model:3s} {name:8s} M={m:5d} K={k:5d} N={n:5d} {vname:18s} FAILED "
                      f"{type(e).__name__}: {_first_line(e)}", flush=True)
                out_rows.append(dict(model=model, linear=name, M=m, K=k, N=n, variant=vname,
                                     error=f"{type(e).__name__}: {_first_line(e)}"))
                continue
            if vname == "bf16":
                base = t
            row = dict(model=model, linear=name, M=m, K=k, N=n, variant=vname, us=t * 1e6,
                       speedup_vs_bf16=(base / t) if base else None)
            if decode:
                nbytes = wbytes + m * k * 2 + m * n * 2
                row["GB_s"] = nbytes / t / 1e9
                row["hbm_limit_us"] = nbytes / hbm_bytes_per_s() * 1e6
            else:
                row["TFLOP_s"] = 2 * m * k * n / t / 1e12
            out_rows.append(row)
            extra = (f"{row['GB_s']:8.1f} GB/s  limit {row['hbm_limit_us']:7.1f} us" if decode
                     else f"{row['TFLOP_s']:7.1f} TFLOP/s")
            sp = f"{row['speedup_vs_bf16']:.2f}x" if row["speedup_vs_bf16"] else "-"
            print(f"{model:3s} {name:8s} M={m:5d} K={k:5d} N={n:5d} {vname:18s} {t * 1e6:9.1f} us  "
                  f"{extra}  {sp} vs bf16", flush=True)
        if args.gemm_only and not decode and ep is None:
            arms = [("gemm_only_w8a8", p8, "pallas"), ("gemm_only_w4a8", p4, "pallas")]
            if args.mosaic:
                arms += [("gemm_only_mosaic_w8a8", p8, "mosaic"), ("gemm_only_mosaic_w4a8", p4, "mosaic")]
            for vname, p, kind in arms:
                try:
                    fn = _gemm_only(kind, xs[0], p, m)
                    t = time_op(fn[0], [fn[1]], _copies(p, rot), args.reps, timer=args.timer)
                except Exception as e:  # noqa: BLE001 - a failing arm prints its error and the rest go on
                    print(f"{model:3s} {name:8s} M={m:5d} K={k:5d} N={n:5d} {vname:18s} FAILED "
                          f"{type(e).__name__}: {_first_line(e)}", flush=True)
                    continue
                out_rows.append(dict(model=model, linear=name, M=m, K=k, N=n, variant=vname, us=t * 1e6,
                                     TFLOP_s=2 * m * k * n / t / 1e12, speedup_vs_bf16=base / t if base else None))
                sp = f"{base / t:.2f}x" if base else "-"
                print(f"{model:3s} {name:8s} M={m:5d} K={k:5d} N={n:5d} {vname:18s} {t * 1e6:9.1f} us  "
                      f"{2 * m * k * n / t / 1e12:7.1f} TFLOP/s  {sp} vs bf16 (kernel only)", flush=True)


def _first_line(e: Exception) -> str:
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return (lines[0] if lines else "")[:240]


def _gemm_only(kind, x, p, m):
    """``(fn(a, p), a)``: the GEMM kernel alone on pre-quantized activations (no pre-pass)."""
    on_gpu = jax.default_backend() == "gpu"
    if kind == "mosaic":
        from masq_jax.kernels.qmatmul_mosaic import MosaicConfig, _plan, gemm_mosaic

        cfg = MosaicConfig()
        _, mp, _, _, _ = _plan(m, p, cfg, False, 1)
        a, sa, _, _ = prepass(x, None, p, mp)

        def fn(a_, p_):
            return gemm_mosaic(a_, sa[:, 0], p_, cfg, m=m, out_dtype=jnp.bfloat16)

        if not on_gpu:
            from jax.experimental.pallas import mosaic_gpu as plgpu

            def fn_interp(a_, p_, fn=fn):
                with plgpu.force_gpu_interpret_mode(plgpu.InterpretGPUParams()):
                    return fn(a_, p_)

            return fn_interp, a
        return fn, a
    from masq_jax.kernels.qmatmul_pallas import default_config

    a, sa, _, _ = prepass(x, None, p, m)
    cfg = dataclasses.replace(default_config(m, p), weight_prepass=False)
    if p.packed:  # time the in-kernel unpack, not the int8 pre-pass route
        cfg = dataclasses.replace(cfg, block_k=64, num_stages=4)
    return (lambda a_, p_: gemm(a_, sa, p_, cfg, out_dtype=jnp.bfloat16, interpret=not on_gpu)), a


SWEEP = {
    "prefill": [Config(block_m=bm, block_n=bn, block_k=bk, num_warps=nw, num_stages=ns)
                for bm, bn, bk, nw, ns in [(128, 128, 64, 4, 4), (128, 128, 128, 4, 3), (128, 128, 128, 8, 3),
                                           (128, 256, 64, 8, 3), (64, 128, 128, 4, 4), (128, 64, 128, 4, 4),
                                           (256, 128, 64, 8, 3), (128, 256, 128, 8, 3), (128, 128, 64, 8, 5)]],
    "decode": [Config(block_m=16, block_n=bn, block_k=bk, split_k=s, num_warps=nw, num_stages=ns)
               for bn, bk, s, nw, ns in [(128, 128, 4, 4, 3), (64, 256, 4, 4, 3), (128, 256, 8, 4, 3),
                                         (64, 128, 8, 2, 3), (256, 128, 4, 4, 3), (128, 128, 1, 4, 3),
                                         (32, 256, 8, 2, 4), (64, 512, 4, 4, 2)]],
}


def _mosaic_sweep():
    from masq_jax.kernels import MosaicConfig

    return {
        "prefill": [MosaicConfig(tile_m=tm, tile_n=tn, tile_k=tk, max_concurrent_steps=st)
                    for tm, tn, tk, st in [(64, 128, None, 3), (128, 128, None, 3), (128, 128, None, 4),
                                           (128, 256, None, 3), (64, 256, None, 4), (128, 64, None, 4),
                                           (128, 128, 256, 2), (192, 128, None, 3)]]
        + [MosaicConfig(overlap_unpack=False)],  # the single-buffer register stage (H200 at 8f597ff)
        "decode": [MosaicConfig(decode_tokens=dt, tile_k=tk, max_concurrent_steps=st)
                   for dt, tk, st in [(16, None, 3), (8, None, 3), (16, None, 6), (16, 256, 3), (8, 256, 4)]]
        + [MosaicConfig(overlap_unpack=False)],
    }


def sweep(model, name, k, n, m, args, out_rows):
    rot = args.rotate
    xs = make_inputs(m, k, 8 if m <= 16 else 2, jax.random.PRNGKey(1))
    impl = "mosaic" if args.sweep_impl == "mosaic" else "pallas"
    table = _mosaic_sweep() if impl == "mosaic" else SWEEP
    w, _ = build(k, n, "w8a8")
    base = time_op(lambda x, wt: jnp.dot(x, wt, preferred_element_type=jnp.float32).astype(x.dtype), xs,
                   _copies(jnp.asarray(w.T, jnp.bfloat16), rot), args.reps, timer=args.timer)
    print(f"sweep {model} {name} M={m} bf16 {base * 1e6:9.1f} us", flush=True)
    for setting in args.sweep_settings:
        _, ql = build(k, n, setting)
        ps = _copies(prepare(ql), rot)
        for cfg in table["decode" if m <= 16 else "prefill"]:
            fn = lambda x, p, cfg=cfg: qmatmul(x, None, p, implementation=impl, config=cfg)  # noqa: E731
            try:
                t = time_op(fn, xs, ps, args.reps, timer=args.timer)
            except Exception as e:
                print(f"# sweep {setting} {cfg}: FAILED {type(e).__name__}: {str(e)[:200]}", flush=True)
                continue
            out_rows.append(dict(model=model, linear=name, M=m, K=k, N=n, variant=f"sweep_{setting}",
                                 config=str(cfg), us=t * 1e6))
            print(f"sweep {model} {name} M={m} {setting} {t * 1e6:9.1f} us  {base / t:5.2f}x vs bf16  {cfg}",
                  flush=True)


def lora_ab(args, rows):
    """Where the low-rank branch's cost goes (3B q and gate/up, M=2048, a third of tokens vision)."""
    from masq_jax.kernels.qmatmul_pallas import default_config
    for name in ("q", "gate/up"):
        if args.linears and name not in args.linears.split(","):
            continue
        k, n = shapes(args.models.split(",")[0])[name]
        m = int(args.m.split(",")[0])
        xs = make_inputs(m, k, 2, jax.random.PRNGKey(3))
        mid = vision_third(m)
        for r in (0, 64):
            _, ql = build(k, n, "w4a8", rank=r)
            p = prepare(ql)
            ps = _copies(p, args.rotate)
            cfg = default_config(m, p)
            runs = {"qmatmul": lambda x, p_: qmatmul(x, mid if r else None, p_),
                    "prepass_only": lambda x, p_: prepass(x, mid if r else None, p_, m)}
            if r:
                cfg2 = dataclasses.replace(cfg, lora_tile_skip=False)
                runs["qmatmul_no_tile_skip"] = lambda x, p_: qmatmul(x, mid, p_, config=cfg2)
            for label, fn in runs.items():
                t = time_op(fn, xs, ps, args.reps, timer=args.timer)
                rows.append(dict(model="3b", linear=name, M=m, rank=r, variant=label, us=t * 1e6))
                print(f"lora_ab {args.models.split(',')[0]} {name:8s} M={m} rank={r:3d} {label:22s} {t * 1e6:9.1f} us", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3B q/gate/down at M in {2048, 1}")
    ap.add_argument("--models", default="3b,7b")
    ap.add_argument("--linears", default=None, help="comma list among q,k/v,o,gate/up,down and the merged "
                    "qkv,gate_up (default: the five unmerged)")
    ap.add_argument("--m", default="512,2048,8192,1,8,16")
    ap.add_argument("--ranks", default="32,64")
    ap.add_argument("--only", default=None, help="comma list of variant substrings to run (bf16 always)")
    ap.add_argument("--rotate", type=int, default=4, help="distinct weight copies per op")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--impl", default=None, help="qmatmul implementation for the quantized rows "
                    "(default None = what a model gets: Pallas, or XLA for W4A16 above 64 tokens)")
    ap.add_argument("--xla-int", action="store_true", help="also time the XLA int8 dot_general path")
    ap.add_argument("--gemm-only", action="store_true", help="also time the kernel on pre-quantized input")
    ap.add_argument("--mosaic", action="store_true", help="also time the Mosaic GPU kernel (mosaic_* rows)")
    ap.add_argument("--lora-ab", action="store_true", help="only: where the low-rank branch cost goes")
    ap.add_argument("--sweep", action="store_true", help="time several block configs instead")
    ap.add_argument("--sweep-settings", default="w4a8,w8a8,w4a16")
    ap.add_argument("--sweep-impl", choices=("pallas", "mosaic"), default="pallas",
                    help="which kernel's block configs --sweep tries")
    ap.add_argument("--timer", choices=("profile", "wall"), default="profile",
                    help="profile: GPU kernel busy time from a jax.profiler trace; wall: queued wall time")
    ap.add_argument("--json", default=None, help="write all rows to this JSON file")
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.linears, args.m = "3b", "q,gate/up,down", "2048,1"
    args.ranks = [int(r) for r in args.ranks.split(",") if r]
    args.only = args.only.split(",") if args.only else None
    args.sweep_settings = args.sweep_settings.split(",")
    ms = [int(v) for v in args.m.split(",")]
    print(f"# device: {jax.devices()[0].device_kind}  jax {jax.__version__}  timer={args.timer}  "
          f"impl={args.impl}", flush=True)
    rows: list[dict] = []
    for model in args.models.split(","):
        for name, (k, n) in {**shapes(model), **shapes(model, merged=True)}.items():
            if name not in (args.linears.split(",") if args.linears else shapes(model)):
                continue
            if args.lora_ab:
                continue
            if args.sweep:
                for m in ms:
                    sweep(model, name, k, n, m, args, rows)
            else:
                bench_shape(model, name, k, n, ms, args, rows)
    if args.lora_ab:
        lora_ab(args, rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=jax.devices()[0].device_kind, argv=sys.argv, rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
