"""Does MASQuant hold up on data it did not see? Held-out SQNR per modality of MASQuant against MAS
and SmoothQuant, at each preset, rank ratio and calibration-set size (docs/method.md §5).

The regime where compensation overfits or mis-deploys: the 512-wide random decoder ``toy:wide`` on
the synthetic source with a concentrated-channel vision modality and a quiet audio one (16 vision and
24 audio tokens a sample: 32 samples are 512 / 768 tokens, 1-1.5x the width). Held-out samples come
from the same generator (same channel profiles, other draws). MASQuant variants:

* ``paper`` — ``--cmc-deploy paper``: the text weight plus a validated branch for every non-text
  modality (the earlier default; bit for bit its artefact);
* ``auto``  — the default: per linear and modality, the deployment the validation fold prefers
  (branch, text's vector, or one shared vector; ``core.deploy``).
* ``oas``   — ``--cov-shrinkage oas``: the default with one shrinkage candidate (OAS) instead of two.

    python benchmarks/cmc_generalisation.py                        # the full grid (long)
    python benchmarks/cmc_generalisation.py --presets w4a8 --ranks 0.1 --sweep ''   # one cell

Per cell: calibration and held-out SQNR (dB, mean over layers: all / text / vision / audio), held-out
MASQuant − MAS and − SmoothQuant per modality, ``ok`` when every modality is within 0.3 dB of MAS
and not below SmoothQuant, and the run's seconds (calibration stages, evaluation excluded) as a
ratio to MAS's. ``--models`` adds the tiny omni model and omni-SmolLM2 (their own calibration sets).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

COLS = ("all", "text", "vision", "audio")
MODS = ("text", "vision", "audio")
VARIANTS = {"paper": dict(cmc_deploy="paper"), "auto": {}, "oas": dict(cov_shrinkage="oas")}
SYNTH = dict(hidden_size=512, text_len=32, image_h=4, image_w=4, audio_len=24, vision_scale=30.0)
MAS_TOL = 0.3  # dB: the goal's allowance below MAS
# report labels -> short: b(ranch), t(ext vector), s(hared), c(hannels), sc (shared + channels)
ABBR = {"branch": "b", "text-vector": "t", "shared": "s", "channels": "c", "shared+channels": "sc"}


def run(model, cal, held, method, preset, rank=0.25, **kw):
    """``(calibration SQNR means, held-out SQNR means, calibration seconds, CMC seconds, report)``."""
    from masq_jax import artifact
    from masq_jax.calibrate.batch import prepare
    from masq_jax.calibrate.runner import run_quantize
    from masq_jax.eval.sqnr import layer_sqnr
    from masq_jax.settings import make_settings

    cfg, params = model
    st = make_settings(method=method, preset_name=preset, samples=len(cal), rank=rank, **kw)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        rep = run_quantize(model, cal, d + "/q", st, eval_set=held, progress=False)
        total = time.perf_counter() - t0 - rep["stages"].get("evaluate", {}).get("seconds", 0.0)
        cal_table, _, _ = layer_sqnr(cfg, params, artifact.read_artifact(d + "/q"), prepare(cfg, params, cal))
    return cal_table["mean"], rep["sqnr"]["mean"], total, rep["stages"].get("cmc", {}).get("seconds", 0.0), rep


def fmt(m):
    return " ".join(f"{m[k]:6.2f}" if m[k] is not None else "     —" for k in COLS)


def deltas(h, ref):
    return {k: (None if h[k] is None or ref[k] is None else h[k] - ref[k]) for k in COLS}


def fmt_d(d):
    return " ".join(f"{d[k]:+6.2f}" if d[k] is not None else "     —" for k in MODS)


def goal(h, mas, sq) -> str:
    """``ok`` when every modality is >= MAS − 0.3 dB and >= SmoothQuant on held-out data, else what fails."""
    bad = [f"{k}<mas" for k in MODS if h[k] is not None and mas[k] is not None and h[k] < mas[k] - MAS_TOL]
    bad += [f"{k}<sq" for k in MODS if h[k] is not None and sq[k] is not None and h[k] < sq[k]]
    return "ok" if not bad else ",".join(bad)


def deployment_counts(rep) -> str:
    """How many (layer, linear) units shipped each deployment, per non-text modality (``auto``)."""
    from collections import Counter

    c = {m: Counter() for m in MODS}
    for layer in rep["layers"]:
        for v in layer.get("cmc", {}).values():
            for m, lab in v.get("deployment", {}).items():
                c[m][lab] += 1
    return " ".join(f"{m[0]}:" + "/".join(f"{n}{ABBR[k]}" for k, n in sorted(c[m].items())) for m in MODS if c[m])


def guard_counts(rep) -> str:
    """The run's own verdict: per modality, how many linears its per-linear guard names as below MAS
    on the validation fold (``masquant: <linear> <modality>: ...`` lines of ``report["warnings"]``),
    and its fold check: the shipped model's hidden-state SQNR minus MAS's on the fold (``fold``, dB,
    t/v/a; ``!`` where the run warned)."""
    lines = [w.split() for w in rep.get("warnings", []) if w.startswith("masquant: ")]
    named = [w[2].rstrip(":") for w in lines if w[1] != "model"]
    warned = {w[2].rstrip(":") for w in lines if w[1] == "model"}
    out = "guard " + " ".join(f"{m[0]}:{named.count(m)}" for m in MODS)
    fold = rep.get("validation_fold")
    if fold:
        out += "  fold " + "/".join("—" if fold["shipped"][m] is None or fold["mas"][m] is None else
                                    f"{fold['shipped'][m] - fold['mas'][m]:+.2f}" + ("!" if m in warned else "")
                                    for m in MODS)
    return out


def cell(model, cal, held, preset, ranks, base=None):
    """SmoothQuant, MAS and MASQuant (each variant at each rank) on one data split; prints the rows."""
    base = base or {}
    sq = base.get("sq") or run(model, cal, held, "smoothquant", preset)
    mas = base.get("mas") or run(model, cal, held, "mas", preset)
    for name, r in (("smoothquant", sq), ("mas", mas)):
        print(f"  {name:<16}{'':>6}  {fmt(r[0])}   {fmt(r[1])}   {'':41}  {r[2]:6.1f}", flush=True)
    verdicts = []
    for rank in ranks:
        for v, kw in VARIANTS.items():
            c, h, t, t_cmc, rep = run(model, cal, held, "masquant", preset, rank, **kw)
            ok = goal(h, mas[1], sq[1])
            verdicts.append((rank, v, ok))
            print(f"  {'masquant ' + v:<16}{rank:>6}  {fmt(c)}   {fmt(h)}   {fmt_d(deltas(h, mas[1]))}  "
                  f"{fmt_d(deltas(h, sq[1]))}  {t:6.1f} {t / mas[2]:5.2f}x  {ok:<10} {deployment_counts(rep)}  "
                  f"{guard_counts(rep)}",
                  flush=True)
    return {"sq": sq, "mas": mas, "verdicts": verdicts}


HEAD = (f"  {'method':<16}{'rank':>6}  {'calibration (all/text/vision/audio)':<27}   {'held-out':<27}   "
        f"{'- MAS (t/v/a)':<20} {'- SmoothQuant (t/v/a)':<20}  {'s':>6} {'×mas':>6}  goal       "
        "deployments, guard (linears named below MAS), fold check (shipped − MAS, t/v/a)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="w8a8,w4a8,w4a6")
    ap.add_argument("--samples", type=int, default=32, help="calibration samples of the rank table")
    ap.add_argument("--ranks", default="0.05,0.1,0.25")
    ap.add_argument("--sweep", default="8,16,32,64,128", help="calibration sample counts (rank --sweep-rank); '' to skip")
    ap.add_argument("--sweep-rank", type=float, default=0.25)
    ap.add_argument("--sweep-presets", default=None, help="presets of the sweep (default: --presets)")
    ap.add_argument("--held-out", type=int, default=32)
    ap.add_argument("--variants", default="paper,auto", help="MASQuant variants (of: paper, auto, oas)")
    ap.add_argument("--cost", default="", help="only the run-cost table on these configs (of: wide, smollm2)")
    ap.add_argument("--cost-layers", type=int, default=30, help="decoder layers of the smollm2-dims config")
    ap.add_argument("--cost-rank", type=float, default=0.25, help="rank ratio of the run-cost table")
    ap.add_argument("--cost-repeats", type=int, default=2, help="warm passes of the run-cost table (after a cold one)")
    ap.add_argument("--no-wide", action="store_true", help="skip toy:wide (only --models)")
    ap.add_argument("--synth", default="", help="toy:wide's synthetic source overrides, e.g. "
                    "vision_scale=42,vision_hot=6,audio_outliers=6,audio_outlier_factor=8 (calib.synthetic fields)")
    ap.add_argument("--models", default="", help="also: tiny-omni, omni-smollm2 (comma-separated; at --presets)")
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    for v in set(VARIANTS) - set(a.variants.split(",")):
        del VARIANTS[v]
    for item in filter(None, a.synth.split(",")):
        key, _, value = item.partition("=")
        SYNTH[key.strip()] = int(value) if value.lstrip("-").isdigit() else float(value)
    from masq_jax.calib.synthetic import synthetic_calibset
    from masq_jax.families import toy

    if a.cost:
        for name in a.cost.split(","):
            cost(name, a.cost_layers, a.presets.split(",")[0], a.cost_repeats, a.cost_rank)
        return
    cfg = toy.make_config("wide")
    model = (cfg, toy.random_params(cfg, 0))
    presets = [p for p in a.presets.split(",") if p]
    ranks = [float(r) for r in a.ranks.split(",") if r]

    def data(n):
        return synthetic_calibset(samples=n + a.held_out, seed=0, **SYNTH).split(a.held_out, seed=0)

    summary = []
    sweep_presets = presets if a.sweep_presets is None else [p for p in a.sweep_presets.split(",") if p]
    for preset in [] if a.no_wide else presets:
        if ranks:
            print(f"\ntoy:wide (hidden 512), {preset.upper()}, {a.samples} calibration samples, {a.held_out} held out")
            print(HEAD)
            res = cell(model, *data(a.samples), preset, ranks)
            summary += [(f"toy:wide {preset} n={a.samples}", *v) for v in res["verdicts"]]
    for preset in [] if a.no_wide else sweep_presets:
        for n in [int(n) for n in a.sweep.split(",") if n]:
            if ranks and n == a.samples and a.sweep_rank in ranks:
                continue  # that cell is in the rank table
            print(f"\ntoy:wide, {preset.upper()}, {n} calibration samples, rank {a.sweep_rank}")
            print(HEAD)
            res = cell(model, *data(n), preset, [a.sweep_rank])
            summary += [(f"toy:wide {preset} n={n}", *v) for v in res["verdicts"]]
    for name in [m for m in a.models.split(",") if m]:
        summary += real_model(name, ranks or [a.sweep_rank], presets)
    print("\ngoal per cell (held-out: every modality >= MAS − 0.3 dB and >= SmoothQuant)")
    for where, rank, v, ok in summary:
        print(f"  {where:<28} rank {rank:<5} {v:<6} {ok}")


def timed_run(model, cal, method: str, preset: str, rank: float, **kw) -> tuple[float, float, dict]:
    """``(wall seconds, CPU seconds, report)`` of one whole run (``masq quantize``'s: its closing evaluation
    is on the calibration set, no held-out set being given). CPU seconds (every thread of this process)
    are the fairer figure on a shared machine: other jobs stretch wall time, not the work done."""
    from masq_jax.calibrate.runner import run_quantize
    from masq_jax.settings import make_settings

    st = make_settings(method=method, preset_name=preset, samples=len(cal), rank=rank, **kw)
    with tempfile.TemporaryDirectory() as d:
        w0, c0 = time.perf_counter(), time.process_time()
        rep = run_quantize(model, cal, d + "/q", st, progress=False)
        return time.perf_counter() - w0, time.process_time() - c0, rep


def cost(name: str, layers: int, preset: str, repeats: int = 2, rank: float = 0.25) -> None:
    """Whole-run seconds (every stage, the closing evaluation on the calibration set included) of ``mas``
    and ``masquant`` (at ``rank``, each variant) side by side in one process: a cold pass (compiles
    included), then ``repeats`` warm passes with the arms interleaved; the ratio is of the warm medians,
    wall and CPU.
    ``wide``: toy:wide, 32 samples as above; ``smollm2``: SmolLM2-135M's dimensions as an Omni Thinker
    (576 wide, 1536 MLP, 9 heads / 3 KV heads of 64; random weights), 16 samples of 256 tokens."""
    import dataclasses
    import statistics

    from masq_jax.calib.synthetic import synthetic_calibset
    from masq_jax.families import toy

    cfg = toy.make_config("wide")
    synth = dict(SYNTH)
    samples = 32
    if name == "smollm2":
        cfg = dataclasses.replace(cfg, hidden_size=576, intermediate_size=1536, num_layers=layers, num_heads=9,
                                  num_kv_heads=3, head_dim=64)
        synth.update(hidden_size=576, text_len=176, image_h=8, image_w=8, audio_len=16)
        samples = 16
    model = (cfg, toy.random_params(cfg, 0))
    cal = synthetic_calibset(samples=samples, seed=0, **synth)
    print(f"\nrun cost, {name} ({cfg.num_layers} layers, hidden {cfg.hidden_size}), {preset.upper()}, "
          f"{samples} samples, rank {rank} (whole run, evaluation on the calibration set included; "
          f"stage seconds: train / cmc / fp_pass / fold_check)")
    arms = [("mas", {})] + [(f"masquant {v}", kw) for v, kw in VARIANTS.items()]
    warm = {arm: [] for arm, _ in arms}
    for rep_i in range(repeats + 1):
        label = "cold" if rep_i == 0 else f"warm{rep_i}"
        for arm, kw in arms:
            wall, cpu, rep = timed_run(model, cal, arm.split()[0], preset, rank, **kw)
            st = {k: rep["stages"].get(k, {}).get("seconds", 0.0) for k in ("train", "cmc", "fp_pass", "fold_check")}
            if rep_i:
                warm[arm].append((wall, cpu))
            print(f"  {label:<6} {arm:<16} wall {wall:7.1f} s  cpu {cpu:7.1f} s   "
                  f"({st['train']:.1f} / {st['cmc']:.1f} / {st['fp_pass']:.1f} / {st['fold_check']:.1f})", flush=True)
    med = {arm: [statistics.median(v[k] for v in runs) for k in (0, 1)] for arm, runs in warm.items()}
    for arm, (wall, cpu) in med.items():
        print(f"  median {arm:<16} wall {wall:7.1f} s ({wall / med['mas'][0]:4.2f}x mas)  "
              f"cpu {cpu:7.1f} s ({cpu / med['mas'][1]:4.2f}x mas)", flush=True)


def real_model(name: str, ranks, presets) -> list:
    """The tiny omni model or omni-SmolLM2 on its own calibration set, at ``presets``."""
    from masq_jax.loading import load_calibration, load_checkpoint

    path = f"checkpoints/{name}"
    cfg, params = load_checkpoint(path)
    if name == "tiny-omni":
        cal, held = load_calibration(f"{path}/calib.npz", path, cfg, 120, 8, 0, None)
    else:
        import sys
        from pathlib import Path

        from masq_jax.calib import load_npz

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/ is not installed
        from examples.omni_smollm2.table import write_calib

        d = Path(tempfile.mkdtemp())
        cal, held = load_npz(write_calib(path, d, "calib", 16, 0)), load_npz(write_calib(path, d, "test", 4, 1))
    out = []
    for preset in presets:
        print(f"\n{name}, {preset.upper()}, {len(cal)} calibration samples, {len(held)} held out")
        print(HEAD)
        res = cell((cfg, params), cal, held, preset, ranks)
        out += [(f"{name} {preset}", *v) for v in res["verdicts"]]
    return out


if __name__ == "__main__":
    main()
