"""Does Mosaic GPU compile and run on this machine? jax's own Hopper matmul (fp16, TMA, wgmma, warp
specialisation) against ``jnp.dot`` under jit, correctness and speed, in one process.

    python benchmarks/mosaic_probe.py            # on the GPU machine; prints one table

A first check of the toolchain (jax, CUDA, ptxas) that the project's Mosaic GPU kernels rely on, before
they are timed: if this fails, every ``implementation="mosaic"`` figure fails with it.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def median_ms(fn, *args, reps: int = 20) -> float:
    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def main() -> None:
    from jax.experimental.pallas.ops.gpu import hopper_matmul_mgpu as hm

    print(f"jax {jax.__version__}, device {jax.devices()[0].device_kind}")
    print(f"{'M×N×K':>18} {'arm':<14}{'ms':>9}{'TFLOP/s':>9}{'vs jnp.dot':>11}{'rel err':>10}")
    for m, n, k in [(4096, 8192, 4096), (2048, 2048, 11008)]:
        ka, kb = jax.random.split(jax.random.key(0))
        a = jax.random.normal(ka, (m, k), jnp.float16)
        b = jax.random.normal(kb, (k, n), jnp.float16)
        ref = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
        t_ref = median_ms(ref, a, b)
        flop = 2 * m * n * k
        print(f"{m}×{n}×{k:>6} {'jnp.dot':<14}{t_ref:>9.3f}{flop / t_ref / 1e9:>9.0f}{1.0:>10.2f}x{'':>10}")
        exact = np.asarray(ref(a, b), np.float64)
        for tm, tn in [(128, 128), (128, 256)]:
            cfg = hm.TuningConfig(tile_m=tm, tile_n=tn, tile_k=64, max_concurrent_steps=4,
                                  grid_minor_dim=hm.MatmulDimension.N, grid_tile_width=8,
                                  wg_dimension=hm.MatmulDimension.N)
            arm = f"mgpu {tm}x{tn}"
            try:
                f = jax.jit(lambda a, b, cfg=cfg: hm.matmul(a, b, None, cfg))
                out = np.asarray(f(a, b), np.float64)
                err = np.linalg.norm(out - exact) / np.linalg.norm(exact)
                t = median_ms(f, a, b)
                print(f"{m}×{n}×{k:>6} {arm:<14}{t:>9.3f}{flop / t / 1e9:>9.0f}{t_ref / t:>10.2f}x{err:>10.1e}",
                      flush=True)
            except Exception as e:  # noqa: BLE001 - a failing arm is a result: print it and go on
                print(f"{m}×{n}×{k:>6} {arm:<14} FAILED {type(e).__name__}: {str(e).splitlines()[0][:160]}",
                      flush=True)


if __name__ == "__main__":
    main()
