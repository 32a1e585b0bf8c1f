"""The Mosaic GPU producer kernel against the XLA activation pre-pass it replaces (run on a GPU).

    python benchmarks/producer.py            # Omni-3B / 7B layer inputs, M in {2048, 8192}, rank 0 and 64

Both arms take the layer input ``x`` (bf16) and return what the int8 GEMM reads: int8 activations,
per-token scales and (rank > 0) the modality-masked down-projection ``(x/s_m)·L_m``. XLA arm:
``rms_norm`` then ``qmatmul_xla.prepass``-style ops (divide, absmax, round, ``lowrank_down``) under
one ``jax.jit``; Mosaic arm: ``kernels.producer.produce``. Time: GPU busy time from a profiler trace
(``benchmarks/qmatmul.py``'s ``time_op``), 4 rotating inputs; a third of the tokens vision. A failing
arm prints its error in its row.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax.core.qlinear import make_qlinear
from masq_jax.kernels import prepare
from masq_jax.kernels.producer import produce
from masq_jax.kernels.qmatmul_xla import lowrank_down, quantize_activations, smoothed
from masq_jax.models.decoder import rms_norm
from qmatmul import time_op, vision_third

EPS = 1e-6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", default="2048,3584", help="layer widths (Omni-3B 2048, 7B 3584)")
    ap.add_argument("--m", default="2048,8192")
    ap.add_argument("--ranks", default="0,64")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"# device: {jax.devices()[0].device_kind}  jax {jax.__version__}", flush=True)
    print(f"{'K':>6}{'M':>7}{'rank':>6}  {'xla prepass us':>15}{'mosaic us':>12}{'vs xla':>9}", flush=True)
    for k in map(int, args.k.split(",")):
        rng = np.random.default_rng(k)
        gamma = jnp.asarray(rng.uniform(0.5, 1.5, size=k), jnp.float32)
        smooth = jnp.asarray(rng.uniform(0.5, 2, size=(3, k)), jnp.float32)
        for r in map(int, args.ranks.split(",")):
            lora = {}
            if r:
                lora = dict(lora_l=jnp.asarray(rng.normal(size=(3, k, r)) * 0.02, jnp.float32),
                            lora_r=jnp.zeros((3, r, 64), jnp.float32))
            p = prepare(make_qlinear(jnp.zeros((64, k)), smooth=smooth, wbits=8, abits=8, **lora))
            for m in map(int, args.m.split(",")):
                xs = [jax.random.normal(jax.random.PRNGKey(i), (m, k), jnp.bfloat16) for i in range(4)]
                mid = vision_third(m) if r else None

                def xla(x, p_):
                    xn = rms_norm(x, gamma, EPS)
                    q, sa = quantize_activations(smoothed(xn, p_.smooth, mid), 8, "qmax")
                    return q, sa, (lowrank_down(xn, mid, p_) if r else None)

                def mosaic(x, p_):
                    if jax.default_backend() == "gpu":
                        return produce(x, gamma, EPS, p_.smooth, mid, lora_l=p_.lora_l if r else None)
                    from jax.experimental.pallas import mosaic_gpu as plgpu  # CPU: interpret mode (smoke only)

                    with plgpu.force_gpu_interpret_mode(plgpu.InterpretGPUParams()):
                        return produce(x, gamma, EPS, p_.smooth, mid, lora_l=p_.lora_l if r else None)

                ts = []
                for fn in (xla, mosaic):
                    try:
                        ts.append(time_op(fn, xs, [p], args.reps))
                    except Exception as e:  # noqa: BLE001 - a failing arm prints its error and the rest go on
                        first = next((ln for ln in str(e).splitlines() if ln.strip()), "")[:200]
                        ts.append(f"FAILED {type(e).__name__}: {first}")
                cells = [f"{t * 1e6:>15.1f}" if isinstance(t, float) else "" for t in ts[:1]]
                cells.append(f"{ts[1] * 1e6:>12.1f}" if isinstance(ts[1], float) else "")
                ratio = f"{ts[0] / ts[1]:>8.2f}x" if all(isinstance(t, float) for t in ts) else ""
                fails = "  ".join(t for t in ts if isinstance(t, str))
                print(f"{k:>6}{m:>7}{r:>6}  {cells[0] or 'FAILED':>15}{cells[1] or 'FAILED':>12}{ratio:>9}  {fails}",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
