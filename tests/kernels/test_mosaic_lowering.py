"""The Mosaic GPU kernels lower for CUDA on the CPU: ``jax.export(..., platforms=["cuda"])`` runs
Mosaic GPU's whole Python-side compiler (warpgroup layout inference, shared-memory transform
inference, ``wgmma`` operand checks, lowering to the NVVM/LLVM dialects) without a GPU. What the
interpreter cannot see, this does: it found that Mosaic GPU does no arithmetic on 8-bit registers
(the int4 unpack shifted int8 values) and a layout-inference failure in the producer, both fixed.
It also checks shared-memory capacity (Mosaic GPU raises at lowering when a config exceeds it).
Not covered: ptxas, run-time behaviour (synchronisation, numerics on the device), speed."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from masq_jax.kernels import MosaicConfig, merge_qlinears, prepare, qmatmul
from masq_jax.kernels.producer import produce
from tests.kernels.test_merge import group, tokens
from tests.kernels.test_qmatmul import make_case


def lowers_for_cuda(fn, *args) -> str:
    """The exported StableHLO text of ``jit(fn)`` lowered for CUDA (raises if Mosaic GPU cannot)."""
    return jax.export.export(jax.jit(fn), platforms=["cuda"])(*args).mlir_module()


# (setting, M, K, N, rank, modality layout, input dtype, MosaicConfig or None)
GEMM_CASES = [
    ("w8a8", 300, 3584, 1000, 64, "mixed", jnp.bfloat16, None),  # Qwen K, low-rank epilogue
    ("w4a8", 2048, 2048, 2048, 0, "text", jnp.bfloat16, None),  # tile_m 128, in-kernel int4 unpack
    ("w4a6", 1, 3584, 1000, 0, "text", jnp.bfloat16, None),  # swap-AB decode, int4
    ("w4a16", 300, 3584, 1000, 64, "mixed", jnp.bfloat16, None),  # in-kernel dequantize + low-rank
    ("w4a16", 16, 1280, 192, 0, "text", jnp.float32, None),  # swap-AB W4A16, float32 output
    ("w8a8", 129, 768, 448, 32, "mixed", jnp.float32, MosaicConfig(tile_m=128, tile_n=64)),
    ("w8a8", 16, 256, 128, 0, "text", jnp.float32, MosaicConfig(decode_tokens=8)),
    ("w4a8", 300, 512, 256, 0, "text", jnp.bfloat16, MosaicConfig(overlap_unpack=False)),
]


@pytest.mark.parametrize("case", GEMM_CASES, ids=lambda c: f"{c[0]}-M{c[1]}K{c[2]}N{c[3]}r{c[4]}-{c[5]}")
def test_gemm_lowers_for_cuda(case):
    setting, m, k, n, rank, layout, dtype, cfg = case
    x, mid, ql = make_case(setting, m, k, n, rank, True, layout, dtype=dtype)
    p = prepare(ql)
    ids = None if layout == "text" else mid
    text = lowers_for_cuda(lambda x: qmatmul(x, ids, p, implementation="mosaic", interpret=False, config=cfg), x)
    assert "mosaic_gpu" in text


@pytest.mark.parametrize("setting,m,rank", [("w8a8", 7, 8), ("w4a8", 300, 0), ("w4a8", 1, 0), ("w4a16", 33, 8)])
def test_swiglu_lowers_for_cuda(setting, m, rank):
    gate, up = group(setting, 256, (136, 136), (rank, rank), True, seed=2)
    p = prepare(merge_qlinears([gate, up], align=64)[0])
    x, mid = tokens(m, 256)
    ids = mid if rank else None
    lowers_for_cuda(lambda x: qmatmul(x, ids, p, implementation="mosaic", interpret=False, epilogue="swiglu"),
                    x.astype(jnp.bfloat16))


@pytest.mark.parametrize("t,k,rank,dtype", [(70, 384, 32, jnp.float32), (129, 896, 0, jnp.bfloat16),
                                            (256, 3584, 64, jnp.bfloat16)])
def test_producer_lowers_for_cuda(t, k, rank, dtype):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(t, k)), dtype)
    mid = jnp.asarray(rng.integers(0, 3, t), jnp.int32) if rank else None
    lora_l = jnp.ones((k, 2 * rank), jnp.bfloat16) if rank else None
    lowers_for_cuda(lambda x: produce(x, jnp.ones((k,)), 1e-6, jnp.ones((3, k)), mid, lora_l=lora_l), x)


def test_an_illegal_wgmma_fails_to_lower():
    # The check can fail: an int8 B operand that is not K-major has no wgmma (only 16-bit
    # operands transpose), which Mosaic GPU reports at lowering time.
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import mosaic_gpu as plgpu

    def body(a_gmem, w_gmem, o_gmem):
        def acc_scope(acc_ref):
            plgpu.emit_pipeline(lambda _, a, w: plgpu.wgmma(acc_ref, a, w), grid=(2,),
                                in_specs=[plgpu.BlockSpec((64, 128), lambda k: (0, k)),
                                          plgpu.BlockSpec((128, 128), lambda k: (k, 0))])(a_gmem, w_gmem)
            return acc_ref[...]

        acc = pl.run_scoped(acc_scope, plgpu.ACC((64, 128), jnp.int32))

        def epi(_, o_smem):
            o_smem[...] = acc.astype(jnp.float32)

        plgpu.emit_pipeline(epi, grid=(1,), out_specs=[plgpu.BlockSpec((64, 128), lambda i: (0, 0))])(o_gmem)

    kernel = plgpu.kernel(body, out_type=jax.ShapeDtypeStruct((64, 128), jnp.float32), grid=(1,), grid_names=("x",),
                          compiler_params=plgpu.CompilerParams(lowering_semantics=plgpu.LoweringSemantics.Warpgroup))
    with pytest.raises(Exception, match="Only f16 WGMMA supports transposes"):
        lowers_for_cuda(kernel, jax.ShapeDtypeStruct((64, 256), jnp.int8), jax.ShapeDtypeStruct((256, 128), jnp.int8))
