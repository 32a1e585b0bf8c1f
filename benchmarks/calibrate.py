"""Calibration speed: full MASQuant (MAS training + CMC + export + eval) on random weights of a real size.

    python benchmarks/calibrate.py                      # Omni-3B Thinker dims, 128 x 512 tokens, 2 epochs (GPU)
    python benchmarks/calibrate.py --config omni7b      # Omni-7B Thinker dims
    python benchmarks/calibrate.py --small              # scaled-down config for a CPU
    python benchmarks/calibrate.py --modes sequential,independent
    python benchmarks/calibrate.py --layers 6          # first 6 layers only, extrapolated to all 36
    python benchmarks/calibrate.py --layers 6 --variants float32:svd,bfloat16:gram   # precision/solver
    python benchmarks/calibrate.py --small --host-devices 8 --mesh "none;data=8;data=4,model=2;data=1,model=8"

Prints per-stage wall time, peak memory, per-layer time (first layer with compilation, then the
steady-state median and the full-depth extrapolation) and mean SQNR for each mode / variant, in one
process. A variant is ``TRAIN_MATMUL:CMC_SOLVER`` (default: what ``masq quantize`` picks here).
``--mesh`` (``;``-separated, ``none`` = one device) adds a scaling table: speed-up against the first
mesh and the bytes each device held (params, calibration activations, stored artefact);
``--host-devices N`` splits a CPU into N XLA devices (set before JAX starts).
The reference (PyTorch, bf16) needs 45–90 min for Qwen2.5-Omni-3B (docs/method.md §7); target here ≤ 10 min.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__" and "--host-devices" in sys.argv:  # must precede JAX's start
    _n = sys.argv[sys.argv.index("--host-devices") + 1]
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={_n}"

import jax  # noqa: E402

from masq_jax.calib.synthetic import SyntheticSpec, synthetic_calibset  # noqa: E402
from masq_jax.calibrate.runner import run_quantize  # noqa: E402
from masq_jax.families.toy import CONFIGS, make_config, random_params  # noqa: E402
from masq_jax.settings import QuantSettings  # noqa: E402


def calib_spec(hidden: int, samples: int, seq_len: int, seed: int) -> SyntheticSpec:
    """Synthetic Omni-layout samples of exactly ``seq_len`` tokens (3 text runs, image, audio)."""
    side = max(2, int((seq_len * 0.3) ** 0.5))
    audio = max(2, int(seq_len * 0.15))
    text = max(2, (seq_len - side * side - audio) // 3)
    return SyntheticSpec(hidden_size=hidden, samples=samples, text_len=text, image_h=side, image_w=side,
                         audio_len=audio, vary=False, seed=seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="omni3b")
    ap.add_argument("--small", action="store_true", help="alias of --config small with fewer samples")
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--seq-len", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--method", default="masquant")
    ap.add_argument("--modes", default="sequential")
    ap.add_argument("--json", default=None)
    ap.add_argument("--progress", action="store_true", help="per-layer progress bars")
    ap.add_argument("--layers", type=int, default=None,
                    help="calibrate only the first N layers (sequential mode) and extrapolate to the full depth")
    ap.add_argument("--variants", default="auto:gram",
                    help="comma list of TRAIN_MATMUL:CMC_SOLVER (auto|float32|bfloat16 : gram|svd)")
    ap.add_argument("--mesh", default="none", help="';'-separated meshes: none | data=D,model=M")
    ap.add_argument("--host-devices", type=int, default=None, help="XLA CPU devices (set before JAX starts)")
    a = ap.parse_args()
    name = "small" if a.small else a.config
    samples = a.samples or (16 if name == "small" else 128)
    seq_len = a.seq_len or (128 if name == "small" else 512)
    cfg = full_cfg = make_config(name)
    if a.layers:
        cfg = dataclasses.replace(full_cfg, num_layers=min(a.layers, full_cfg.num_layers))
    params = random_params(cfg)
    spec = calib_spec(cfg.hidden_size, samples + 8, seq_len, seed=0)
    cs = synthetic_calibset(spec)
    train, held = cs.split(8, seed=0)
    print(f"device: {jax.devices()[0].device_kind}; config {name}: {cfg.num_layers} of {full_cfg.num_layers} layers, hidden "
          f"{cfg.hidden_size}, intermediate {cfg.intermediate_size}; {len(train)} samples x {train.max_len} "
          f"tokens ({train.token_counts()}), {a.epochs} epochs, method {a.method}")
    rows = {}
    meshes = a.mesh.split(";")
    for mesh in meshes:
        for mode in a.modes.split(","):
            for variant in a.variants.split(","):
                matmul, _, solver = variant.partition(":")
                st = QuantSettings(method=a.method, wbits=4, abits=8, epochs=a.epochs, samples=samples,
                                   propagation=mode, train_matmul=matmul or "auto", cmc_solver=solver or "gram")
                with tempfile.TemporaryDirectory() as tmp:
                    t0 = time.perf_counter()
                    rep = run_quantize((cfg, params), train, str(Path(tmp) / "out"), st, eval_set=held,
                                       progress=a.progress, mesh=None if mesh == "none" else mesh)
                    rep["wall_seconds"] = time.perf_counter() - t0
                label = f"{mode[:3]} {st.train_matmul[:4]}:{st.cmc_solver}"
                if len(meshes) > 1:
                    label = mesh.replace("data=", "d").replace("model=", "m").replace(",", "") if len(
                        a.modes.split(",")) * len(a.variants.split(",")) == 1 else f"{mesh} {label}"
                rows[label] = rep
    print(f"\n{'stage (s)':<22}" + "".join(f"{m:>14}" for m in rows))
    stages = sorted({k for r in rows.values() for k in r["stages"] if k != "total_seconds"})
    for s in stages + ["total_seconds"]:
        vals = [r["stages"].get(s) for r in rows.values()]
        print(f"{s:<22}" + "".join(f"{(v['seconds'] if isinstance(v, dict) else v or 0):>14.1f}" for v in vals))
    for key in ("peak_host_bytes", "peak_device_bytes"):
        vals = [max((v.get(key, 0) for v in r["stages"].values() if isinstance(v, dict)), default=0)
                for r in rows.values()]
        print(f"{key.replace('_bytes', ' (GiB)'):<22}" + "".join(f"{v / 2**30:>14.2f}" for v in vals))
    per_layer = [[lay["seconds"] for lay in r["layers"] if "seconds" in lay] for r in rows.values()]
    if all(len(t) > 1 for t in per_layer):
        print(f"{'layer 0 (compile) s':<22}" + "".join(f"{t[0]:>14.1f}" for t in per_layer))
        print(f"{'later layers s (med)':<22}" + "".join(f"{statistics.median(t[1:]):>14.2f}" for t in per_layer))
        if cfg.num_layers < full_cfg.num_layers:
            # first layer + the steady layers + the stages outside the layer loop (export, evaluate), whose
            # share grows with depth: scaled by full/measured depth.
            ext = []
            for t, r in zip(per_layer, rows.values()):
                outside = r["stages"]["total_seconds"] - sum(t)
                ext.append(t[0] + statistics.median(t[1:]) * (full_cfg.num_layers - 1)
                           + outside * full_cfg.num_layers / cfg.num_layers)
            print(f"{f'est. {full_cfg.num_layers} layers (min)':<22}" + "".join(f"{v / 60:>14.1f}" for v in ext))
    for mod in ("all", "text", "vision", "audio"):
        vals = [r["sqnr"]["mean"][mod] for r in rows.values()]
        print(f"{'SQNR ' + mod + ' (dB)':<22}" + "".join(f"{'—' if v is None else f'{v:.2f}':>14}" for v in vals))
    if len(rows) > 1:
        base = next(iter(rows.values()))["stages"]["total_seconds"]
        print(f"{'speed vs first':<22}" + "".join(f"{base / r['stages']['total_seconds']:>13.2f}x" for r in rows.values()))
    if len(meshes) > 1:
        for key in ("params", "calibration", "quantized_params"):
            vals = [max(r["mesh"]["device_bytes"][key].values()) for r in rows.values()]
            print(f"{key[:14] + ' MiB/dev':<22}" + "".join(f"{v / 2**20:>14.2f}" for v in vals))
    if a.json:
        Path(a.json).write_text(json.dumps({m: {k: r[k] for k in ("stages", "sqnr", "settings", "mesh")}
                                            for m, r in rows.items()}, indent=1))


if __name__ == "__main__":
    main()
