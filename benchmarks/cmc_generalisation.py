"""Does the compensation generalise? Calibration vs held-out SQNR per modality, MASQuant against MAS.

The regime where CMC overfits (docs/method.md §5): the 512-wide random decoder ``toy:wide`` on the
synthetic source with a concentrated-channel vision modality and a quiet audio one, 16 vision and 24
audio tokens a sample (32 samples: 512 / 768 tokens, 1-1.5x the width), W4A8. Held-out samples come
from the same generator (same channel profiles, other draws). MASQuant variants:

* ``fixed``     — the earlier default: damping 1e-2 and ``--rank`` everywhere (``--cov-shrinkage 0.0099 --rank-budget off``);
* ``shrink``    — validated shrinkage (OAS vs the fixed damping), ``--rank`` everywhere (``--rank-budget off``);
* ``budget``    — the default: validated shrinkage and the rank budget reallocated by validated curves.

    python benchmarks/cmc_generalisation.py                 # rank ratios 0.05/0.1/0.25 and samples 8..128
    python benchmarks/cmc_generalisation.py --samples 32 --sweep ''   # just the rank table

One process; prints two tables (SQNR in dB, mean over layers: all / text / vision / audio) and the
CMC stage's time against ``fixed``. Also prints the tiny omni model (its own calibration set) so a
real trained multimodal model is seen not to regress.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings

COLS = ("all", "text", "vision", "audio")
VARIANTS = {"fixed": dict(cov_shrinkage=0.0099, rank_budget="off"), "shrink": dict(rank_budget="off"), "budget": {}}
SYNTH = dict(hidden_size=512, text_len=32, image_h=4, image_w=4, audio_len=24, vision_scale=30.0)


def run(model, cal, held, method, rank, **kw):
    """``(calibration SQNR means, held-out SQNR means, CMC seconds)`` of one quantization."""
    from masq_jax import artifact
    from masq_jax.calibrate.batch import prepare
    from masq_jax.calibrate.runner import run_quantize
    from masq_jax.eval.sqnr import layer_sqnr
    from masq_jax.settings import make_settings

    cfg, params = model
    st = make_settings(method=method, preset_name="w4a8", samples=len(cal), rank=rank, **kw)
    with tempfile.TemporaryDirectory() as d:
        rep = run_quantize(model, cal, d + "/q", st, eval_set=held, progress=False)
        cal_table, _, _ = layer_sqnr(cfg, params, artifact.read_artifact(d + "/q"), prepare(cfg, params, cal))
    return cal_table["mean"], rep["sqnr"]["mean"], rep["stages"].get("cmc", {}).get("seconds", 0.0)


def fmt(m):
    return " ".join(f"{m[k]:6.2f}" if m[k] is not None else "     —" for k in COLS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=32, help="calibration samples of the rank table")
    ap.add_argument("--ranks", default="0.05,0.1,0.25")
    ap.add_argument("--sweep", default="8,16,32,64,128", help="calibration sample counts (rank 0.25); '' to skip")
    ap.add_argument("--held-out", type=int, default=32)
    ap.add_argument("--no-tiny-omni", action="store_true")
    ap.add_argument("--cost-only", action="store_true", help="only the CMC stage's time per layer")
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    from masq_jax.calib.synthetic import synthetic_calibset
    from masq_jax.families import toy

    cfg = toy.make_config("wide")
    model = (cfg, toy.random_params(cfg, 0))

    def data(n):
        return synthetic_calibset(samples=n + a.held_out, seed=0, **SYNTH).split(a.held_out, seed=0)

    cmc_cost(model, data(a.samples)[0])
    if a.cost_only:
        return

    head = f"{'method':<18}{'rank':>6}  {'calibration (all/text/vision/audio)':<30}   {'held-out':<28}  cmc s  × fixed"
    print(f"toy:wide (hidden 512), W4A8, {a.samples} calibration samples, {a.held_out} held out")
    print(head)
    cal, held = data(a.samples)
    for name in ("rtn", "smoothquant", "mas"):
        c, h, _ = run(model, cal, held, name, 0.25)
        print(f"{name:<18}{'':>6}  {fmt(c)}   {fmt(h)}", flush=True)
    for rank in (float(r) for r in a.ranks.split(",") if r):
        base = None
        for v, kw in VARIANTS.items():
            c, h, t = run(model, cal, held, "masquant", rank, **kw)
            base = base or t
            print(f"{'masquant ' + v:<18}{rank:>6}  {fmt(c)}   {fmt(h)}  {t:5.2f}  {t / base:5.2f}", flush=True)
    sweep = [int(n) for n in a.sweep.split(",") if n]
    if sweep:
        print("\ncalibration samples sweep (rank 0.25; held-out minus MAS held-out, dB, per modality)")
        print(f"{'samples':>8}  {'MAS held-out':<28}  " + "  ".join(f"{'masquant ' + v:<27}" for v in VARIANTS))
        for n in sweep:
            cal, held = data(n)
            _, mas, _ = run(model, cal, held, "mas", 0.25)
            row = []
            for kw in VARIANTS.values():
                _, h, _ = run(model, cal, held, "masquant", 0.25, **kw)
                row.append(" ".join(f"{h[k] - mas[k]:+6.2f}" for k in COLS))
            print(f"{n:>8}  {fmt(mas)}  " + "  ".join(f"{r:<27}" for r in row), flush=True)
    if not a.no_tiny_omni:
        tiny_omni(a)


def cmc_cost(model, cal, reps: int = 3) -> None:
    """Seconds of one layer's compensation (``method.compensate``, compiled, median of ``reps``) per
    variant, and the ratio to ``fixed`` (the earlier CMC stage)."""
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np

    from masq_jax.calibrate.batch import prepare
    from masq_jax.calibrate.layer import fp_layer_pass
    from masq_jax.methods import registry
    from masq_jax.settings import make_settings

    cfg, params = model
    prep = prepare(cfg, params, cal)
    method = registry.get("masquant")
    lp = jax.tree_util.tree_map(lambda x: x[0], params["layers"])
    print(f"CMC stage, one layer of toy:wide, {len(cal)} samples, rank 0.25 (compiled; median of {reps})")
    base = None
    for v, kw in VARIANTS.items():
        st = make_settings(method="masquant", preset_name="w4a8", samples=len(cal), rank=0.25, **kw)
        fp = fp_layer_pass(cfg, lp, prep.h0, prep, with_gram=method.gram_statistics(st))
        f, _ = method.init_factors(cfg, lp, fp.stats, fp.sample, st, jnp.asarray((1.0, 0.5, 1.0)))
        ranks = method.ranks(cfg, st)
        jax.block_until_ready(method.compensate(lp, f, fp.stats, st, ranks))  # compile
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            jax.block_until_ready(method.compensate(lp, f, fp.stats, st, ranks))
            ts.append(time.perf_counter() - t0)
        t = float(np.median(ts))
        base = base or t
        print(f"  masquant {v:<8} {t:6.3f} s   {t / base:5.2f}x fixed", flush=True)
    print()


def tiny_omni(a) -> None:
    """The trained tiny omni model on its own calibration set: variants side by side (nothing regresses)."""
    from masq_jax.loading import load_calibration, load_checkpoint

    path = "checkpoints/tiny-omni"
    cfg, params = load_checkpoint(path)
    cal, held = load_calibration(f"{path}/calib.npz", path, cfg, 120, 8, 0, None)
    print(f"\ntiny omni ({path}), W4A8, {len(cal)} calibration samples, {len(held)} held out")
    print(f"{'method':<18}{'rank':>6}  {'calibration':<30}   {'held-out':<28}")
    c, h, _ = run((cfg, params), cal, held, "mas", 0.25)
    print(f"{'mas':<18}{'':>6}  {fmt(c)}   {fmt(h)}", flush=True)
    for v, kw in VARIANTS.items():
        c, h, _ = run((cfg, params), cal, held, "masquant", 0.25, **kw)
        print(f"{'masquant ' + v:<18}{0.25:>6}  {fmt(c)}   {fmt(h)}", flush=True)


if __name__ == "__main__":
    main()
