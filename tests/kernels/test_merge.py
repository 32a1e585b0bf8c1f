"""Merged GEMMs (tied smoothing): one QKV GEMM and one gate|up GEMM with the SwiGLU epilogue give
each member's output as its own linear does, against the float64 NumPy reference of every member,
for every implementation (XLA; Pallas and Mosaic GPU interpret here, compiled under ``-m gpu``)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from masq_jax.core.qlinear import make_qlinear
from masq_jax.errors import KernelConfigError
from masq_jax.kernels import Config, merge_qlinears, prepare, qmatmul, split_outputs, tied
from tests.kernels.test_qmatmul import SETTINGS, _has_gpu, _has_hopper, _rel_err, np_reference, reset_mosaic_interpreter

SMALL = Config(block_m=16, block_n=32, block_k=32)


def group(setting, k, outs, ranks, bias, seed=0, same_smooth=True):
    """QLinears reading one input (shared smoothing unless ``same_smooth=False``), one per width."""
    rng = np.random.default_rng(seed)
    smooth = rng.uniform(0.5, 2.0, size=(3, k)).astype(np.float32)
    qls = []
    for i, (n, r) in enumerate(zip(outs, ranks)):
        s = smooth if same_smooth or i == 0 else rng.uniform(0.5, 2.0, size=(3, k)).astype(np.float32)
        w = rng.normal(size=(n, k)).astype(np.float32)
        lora = {}
        if r:
            lora = dict(lora_l=jnp.asarray(rng.normal(size=(3, k, r)) * 0.2, jnp.float32),
                        lora_r=jnp.asarray(rng.normal(size=(3, r, n)) * 0.2, jnp.float32))
        b = jnp.asarray(rng.normal(size=(n,)), jnp.float32) if bias and i != 1 else None  # one member without
        qls.append(make_qlinear(jnp.asarray(w), b, smooth=jnp.asarray(s), **lora, **SETTINGS[setting]))
    return qls


def tokens(m, k, seed=1, layout="mixed"):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, k)).astype(np.float32)
    x[:, rng.integers(0, k, size=2)] *= 8.0
    mid = rng.integers(0, 3, size=m).astype(np.int32) if layout == "mixed" else np.zeros(m, np.int32)
    return jnp.asarray(x), jnp.asarray(mid)


def silu(v):
    return v / (1.0 + np.exp(-v))


# (setting, M, K, member widths, ranks, bias)
QKV_CASES = [
    ("w8a8", 7, 96, (80, 40, 40), (8, 4, 0), True),
    ("w4a8", 16, 160, (96, 32, 32), (5, 5, 5), False),
    ("w4a6", 1, 128, (64, 16, 16), (4, 0, 4), True),
    ("w4a16", 33, 256, (72, 24, 24), (8, 8, 8), True),
]
# (setting, M, K, width of gate = up, rank, config)
SWIGLU_CASES = [
    ("w8a8", 7, 96, 72, 8, SMALL),
    ("w4a8", 16, 160, 96, 0, None),
    ("w4a8", 513, 128, 136, 6, None),
    ("w4a6", 1, 128, 64, 4, Config(block_m=16, block_n=32, block_k=32, split_k=2)),
    ("w4a16", 33, 256, 40, 8, SMALL),
]


class MergeSuite:
    implementation = "xla"
    interpret: bool | None = None

    def tol(self, setting, rank):
        return 1e-2 if (setting == "w4a16" or rank or self.implementation != "xla") else 1e-5

    def call(self, x, mid, ql, config=None, **kw):
        return qmatmul(x, mid, prepare(ql), implementation=self.implementation, interpret=self.interpret,
                       config=config if self.implementation == "pallas" else None, **kw)

    @pytest.mark.parametrize("case", QKV_CASES, ids=lambda c: f"{c[0]}-M{c[1]}K{c[2]}")
    def test_merged_qkv_gives_each_members_output(self, case):
        setting, m, k, outs, ranks, bias = case
        qls = group(setting, k, outs, ranks, bias)
        assert tied(qls)
        merged, widths = merge_qlinears(qls)
        x, mid = tokens(m, k)
        ys = split_outputs(self.call(x, mid, merged), widths, outs)
        for y, ql, r in zip(ys, qls, ranks):
            assert y.shape == (m, ql.out_features)
            assert _rel_err(y, np_reference(x, mid, ql)) <= self.tol(setting, max(ranks)), ql.out_features

    @pytest.mark.parametrize("case", SWIGLU_CASES, ids=lambda c: f"{c[0]}-M{c[1]}K{c[2]}N{c[3]}")
    def test_gate_up_swiglu_epilogue(self, case):
        setting, m, k, n, rank, cfg = case
        gate, up = group(setting, k, (n, n), (rank, rank), False, seed=2)
        merged, widths = merge_qlinears([gate, up], align=64)
        x, mid = tokens(m, k, seed=3)
        y = self.call(x, mid, merged, config=cfg, epilogue="swiglu")
        assert y.shape == (m, widths[0]) and y.dtype == x.dtype
        want = silu(np_reference(x, mid, gate)) * np_reference(x, mid, up)
        assert _rel_err(y[:, :n], want) <= self.tol(setting, rank)
        np.testing.assert_array_equal(np.asarray(y[:, n:]), 0.0)  # the alignment columns are zero

    def test_all_text_needs_no_modality_ids(self):
        gate, up = group("w4a8", 128, (64, 64), (8, 8), True, seed=4)
        merged, _ = merge_qlinears([gate, up], align=64)
        x, mid = tokens(5, 128, layout="text")
        y_ids = self.call(x, mid, merged, epilogue="swiglu")
        y_none = self.call(x, None, merged, epilogue="swiglu")
        np.testing.assert_allclose(np.asarray(y_ids), np.asarray(y_none), rtol=1e-5, atol=1e-5)


class TestMergeXLA(MergeSuite):
    implementation = "xla"

    def test_merge_vmaps_over_stacked_layers(self):
        layers = [group("w4a8", 64, (32, 16, 16), (4, 4, 4), True, seed=s) for s in range(3)]
        stacked = [jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[layer[i] for layer in layers]) for i in range(3)]
        merged, widths = jax.vmap(lambda *q: merge_qlinears(q)[0])(*stacked), merge_qlinears(layers[0])[1]
        assert widths == (32, 16, 16) and merged.weight.qvalue.shape[:2] == (3, 64)
        x, mid = tokens(4, 64)
        for li in range(3):
            one = jax.tree_util.tree_map(lambda a: a[li], merged)
            ys = split_outputs(self.call(x, mid, one), widths, (32, 16, 16))
            for y, ql in zip(ys, layers[li]):
                assert _rel_err(y, np_reference(x, mid, ql)) <= 1e-2


class TestMergePallasInterpret(MergeSuite):
    implementation = "pallas"
    interpret = True


class TestMergeMosaicInterpret(MergeSuite):
    """Merged q|k|v and gate|up (SwiGLU epilogue: two accumulators per tile) through the Mosaic GPU
    kernel in Mosaic GPU interpret mode; M = 1 and 16 run swap-AB when no low-rank branch is traced."""

    implementation = "mosaic"
    interpret = True

    @pytest.fixture(autouse=True)
    def _fresh_interpreter(self):
        reset_mosaic_interpreter()

    def tol(self, setting, rank):
        return 1e-2 if (setting == "w4a16" or rank) else 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not _has_hopper(), reason="needs a Hopper GPU (H100/H200: wgmma)")
class TestMergeMosaicGPU(TestMergeMosaicInterpret):
    interpret = False

    def tol(self, setting, rank):
        return 2e-2

    @pytest.mark.parametrize("m", [1, 16, 300])  # M = 300, not 2048: the float64 NumPy reference of a
    def test_qwen_gate_up_swiglu(self, m):       # 2048-token Qwen gate|up alone took tens of seconds
        gate, up = group("w4a8", 3584, (18944, 18944), (64, 64), False, seed=5)
        merged, _ = merge_qlinears([gate, up], align=64)
        x, mid = tokens(m, 3584, seed=6)
        y = qmatmul(x.astype(jnp.bfloat16), mid, prepare(merged), implementation="mosaic", epilogue="swiglu")
        want = silu(np_reference(x, mid, gate)) * np_reference(x, mid, up)
        assert _rel_err(y.astype(jnp.float32), want) <= 3e-2


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu(), reason="needs a CUDA GPU")
class TestMergePallasGPU(MergeSuite):
    implementation = "pallas"
    interpret = False

    def tol(self, setting, rank):
        return 2e-2

    @pytest.mark.parametrize("m", [1, 16, 2048])
    def test_qwen_gate_up_swiglu(self, m):
        gate, up = group("w4a8", 3584, (18944, 18944), (64, 64), False, seed=5)
        merged, _ = merge_qlinears([gate, up], align=64)
        x, mid = tokens(m, 3584, seed=6)
        y = qmatmul(x.astype(jnp.bfloat16), mid, prepare(merged), implementation="pallas", epilogue="swiglu")
        want = silu(np_reference(x, mid, gate)) * np_reference(x, mid, up)
        assert _rel_err(y.astype(jnp.float32), want) <= 3e-2


def test_tied_needs_equal_vectors_and_one_quantizer():
    qls = group("w4a8", 64, (32, 16), (0, 0), False)
    assert tied(qls)
    assert not tied(group("w4a8", 64, (32, 16), (0, 0), False, same_smooth=False))
    other = make_qlinear(jnp.ones((16, 64)), smooth=qls[0].smooth, wbits=8, abits=8)
    assert not tied([qls[0], other])
    with pytest.raises(KernelConfigError, match="cannot share one GEMM: their weight quantizers differ"):
        merge_qlinears([qls[0], other])


def test_swiglu_needs_an_aligned_merged_linear():
    gate, up = group("w4a8", 64, (40, 40), (0, 0), False)
    merged, _ = merge_qlinears([gate, up])  # no alignment: width 80
    x, _ = tokens(3, 64)
    with pytest.raises(KernelConfigError, match="align=64"):
        qmatmul(x, None, merged, epilogue="swiglu")
    with pytest.raises(KernelConfigError, match="epilogue must be one of"):
        qmatmul(x, None, merged, epilogue="gelu")


@pytest.mark.parametrize("setting", ["w8a8", "w4a16"])
def test_swiglu_default_config_keeps_one_accumulators_registers(setting):
    # The SwiGLU epilogue holds a gate and an up accumulator per program: the Triton heuristic halves
    # block_n for it (no register spills), and W4A16 keeps two stages (shared memory at block_m 128).
    from masq_jax.kernels import default_config

    gate, up = group(setting, 256, (1024, 1024), (0, 0), False)
    p = prepare(merge_qlinears([gate, up], align=64)[0])
    plain, sw = default_config(2048, p), default_config(2048, p, swiglu=True)
    assert sw.block_n == plain.block_n // 2 and sw.block_m == plain.block_m
    assert sw.num_stages == (2 if setting == "w4a16" else plain.num_stages)
    dec = default_config(1, p, swiglu=True)  # decode: the split-K partials stay full width (no second acc)
    assert dec == (default_config(1, p) if dec.split_k > 1 else dataclasses.replace(
        default_config(1, p), block_n=max(32, default_config(1, p).block_n // 2),
        num_stages=2 if setting == "w4a16" else default_config(1, p).num_stages))
