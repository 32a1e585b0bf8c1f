"""One shared qmatmul suite run against every implementation (XLA, Pallas interpret, Pallas on GPU,
Mosaic GPU in its CPU interpret mode, Mosaic GPU compiled).

The reference is an independent NumPy implementation of docs/method.md §6: the activation quantizer in float32
(docs/method.md §1 arithmetic, so the integers are the same), everything after it in float64.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from masq_jax.errors import KernelConfigError
from masq_jax.kernels import Config, MosaicConfig, prepare, qmatmul
from masq_jax.kernels.prepare import pack_half_split, unpack_half_split
from masq_jax.kernels.qmatmul_pallas import gemm
from masq_jax.kernels.qmatmul_xla import dequantized_kn
from masq_jax.core.qlinear import make_qlinear
from masq_jax.core.quant import dequantize

SETTINGS = {
    "w8a8": dict(wbits=8, abits=8),
    "w4a8": dict(wbits=4, abits=8),
    "w4a6": dict(wbits=4, abits=6),
    "w4a16": dict(wbits=4, abits=16, w_symmetric=False, group_size=128),
}

# (setting, M, K, N, rank, bias, modality layout, config or None). Small, mostly non-power-of-two.
SMALL = Config(block_m=16, block_n=32, block_k=32)
CASES = [
    ("w8a8", 40, 96, 80, 8, True, "mixed", SMALL),
    ("w8a8", 17, 300, 50, 0, False, "text", None),
    ("w4a8", 33, 160, 96, 16, False, "mixed", None),
    ("w4a8", 64, 384, 136, 5, True, "sorted", SMALL),
    ("w4a6", 24, 128, 64, 4, True, "mixed", None),
    ("w4a6", 5, 64, 48, 0, True, "text", None),
    ("w4a16", 40, 256, 72, 8, True, "mixed", SMALL),
    ("w4a16", 9, 384, 40, 0, False, "text", None),
    ("w4a8", 3, 256, 64, 8, True, "mixed", Config(block_m=16, block_n=32, block_k=32, split_k=3)),
    ("w4a16", 3, 256, 64, 8, False, "mixed", Config(block_m=16, block_n=64, block_k=32, split_k=2)),
    ("w4a8", 40, 256, 72, 8, True, "mixed", Config(block_m=16, block_n=32, block_k=32, weight_prepass=True)),
    ("w8a8", 48, 128, 64, 8, False, "sorted", Config(block_m=16, block_n=32, block_k=32, lora_tile_skip=False)),
]


def _case_id(c):
    return f"{c[0]}-M{c[1]}K{c[2]}N{c[3]}r{c[4]}-{'bias' if c[5] else 'nobias'}-{c[6]}" + (
        f"-split{c[7].split_k}" if c[7] is not None and c[7].split_k > 1 else "") + (
        "-wprepass" if c[7] is not None and c[7].weight_prepass else "") + (
        "-noskip" if c[7] is not None and not c[7].lora_tile_skip else "")


def make_case(setting, m, k, n, rank, bias, layout, seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(n, k)).astype(np.float32)
    smooth = rng.uniform(0.5, 2.0, size=(3, k)).astype(np.float32)
    lora_l = (rng.normal(size=(3, k, rank)) * 0.2).astype(np.float32)
    lora_r = (rng.normal(size=(3, rank, n)) * 0.2).astype(np.float32)
    b = rng.normal(size=(n,)).astype(np.float32) if bias else None
    x = rng.normal(size=(m, k)).astype(np.float32)
    x[:, rng.integers(0, k, size=2)] *= 8.0  # a few outlier channels, as in real activations
    if layout == "text":
        mid = np.zeros(m, np.int32)
    elif layout == "mixed":
        mid = rng.integers(0, 3, size=m).astype(np.int32)
        mid[:3] = [0, 1, 2][:m]
    elif layout in ("noaudio", "novision"):  # one modality absent from the batch
        mid = rng.integers(0, 2, size=m).astype(np.int32)
        mid[:2] = [0, 1][:m]
        if layout == "novision":
            mid = mid * 2
    else:  # sorted runs: text, vision, text, audio
        cuts = sorted(rng.choice(np.arange(1, m), size=3, replace=False))
        mid = np.zeros(m, np.int32)
        mid[cuts[0]:cuts[1]] = 1
        mid[cuts[2]:] = 2
    ql = make_qlinear(
        jnp.asarray(w), None if b is None else jnp.asarray(b), smooth=jnp.asarray(smooth),
        lora_l=jnp.asarray(lora_l) if rank else None, lora_r=jnp.asarray(lora_r) if rank else None,
        **SETTINGS[setting],
    )
    return jnp.asarray(x, dtype), jnp.asarray(mid), ql


def _np_unpack(qvalue: np.ndarray, k: int, signed: bool) -> np.ndarray:
    p = qvalue.astype(np.int64) & 0xFF
    lo, hi = p & 0xF, p >> 4
    if signed:
        lo = np.where(lo >= 8, lo - 16, lo)
        hi = np.where(hi >= 8, hi - 16, hi)
    out = np.empty(p.shape[:-1] + (2 * p.shape[-1],), np.int64)
    out[..., 0::2], out[..., 1::2] = lo, hi
    return out[..., :k]


def np_weight(ql) -> np.ndarray:
    """Float64 dequantized weight [N, K] from the stored integers (independent of masq_jax.quant)."""
    qa = ql.weight
    n, k = qa.shape
    q = np.asarray(qa.qvalue)
    q = _np_unpack(q, k, qa.symmetric) if qa.bits <= 4 else q.astype(np.int64)
    g = k if qa.group_size is None else qa.group_size
    qg = q.reshape(n, k // g, g).astype(np.float64)
    if qa.zero_point is not None:
        qg = qg - np.asarray(qa.zero_point, np.float64)
    return (qg * np.asarray(qa.scale, np.float64)).reshape(n, k)


def np_act_quant(xs: np.ndarray, bits: int):
    """Spec §1 symmetric per-token quantizer, in float32 like the spec: (int values, scale)."""
    qmax = 2 ** (bits - 1) - 1
    absmax = np.max(np.abs(xs), axis=-1, keepdims=True)
    scale = np.clip(absmax / np.float32(qmax), np.float32(1e-5), np.float32(1e4)).astype(np.float32)
    q = np.clip(np.round(xs / scale), -qmax, qmax)
    return q.astype(np.int64), scale


def np_reference(x, mid, ql) -> np.ndarray:
    x32 = np.asarray(x.astype(jnp.float32))
    mid = np.asarray(mid)
    s = np.asarray(ql.smooth, np.float32)[mid]
    xs = x32 / s
    if ql.abits < 16:
        q, sa = np_act_quant(xs, ql.abits)
        xa = q * sa.astype(np.float64)
    else:
        xa = xs.astype(np.float64)
    y = xa @ np_weight(ql).T
    for m in (1, 2):
        if ql.rank:
            up = xs.astype(np.float64) @ np.asarray(ql.lora_l[m], np.float64) @ np.asarray(ql.lora_r[m], np.float64)
            y = y + np.where((mid == m)[:, None], up, 0.0)
    if ql.bias is not None:
        y = y + np.asarray(ql.bias, np.float64)
    return y


def _rel_err(y, ref) -> float:
    return float(np.max(np.abs(np.asarray(y, np.float64) - ref)) / np.max(np.abs(ref)))


class QMatmulSuite:
    """Shared cases; subclasses set the implementation and whether it reads QLinear or prepared."""

    implementation: str = "xla"
    interpret: bool | None = None
    layouts: tuple[str, ...] = ("prepared",)
    exact_tol = 1e-5  # integer settings without the bf16 low-rank branch
    lowp_tol = 1e-2  # bf16 pieces: the low-rank branch, W4A16 activations/weights

    def run(self, x, mid, ql, layout, config=None):
        q = prepare(ql) if layout == "prepared" else ql
        return qmatmul(x, mid, q, implementation=self.implementation, config=config,
                       interpret=self.interpret)

    def tol(self, setting, rank, layout):
        if self.implementation == "xla" and layout == "qlinear":
            return self.exact_tol  # float32 everywhere
        if setting == "w4a16" or rank:
            return self.lowp_tol
        return self.exact_tol

    @pytest.mark.parametrize("case", CASES, ids=_case_id)
    def test_matches_numpy_reference(self, case):
        setting, m, k, n, rank, bias, layout_mod, cfg = case
        x, mid, ql = make_case(setting, m, k, n, rank, bias, layout_mod)
        ref = np_reference(x, mid, ql)
        for layout in self.layouts:
            y = self.run(x, mid, ql, layout, cfg if self.implementation == "pallas" else None)
            assert y.shape == (m, n) and y.dtype == x.dtype
            err = _rel_err(y, ref)
            assert err <= self.tol(setting, rank, layout), (layout, err)

    @pytest.mark.parametrize("setting", ["w4a8", "w4a16"])
    def test_bf16_input_3d(self, setting):
        x, mid, ql = make_case(setting, 24, 256, 96, 8, True, "mixed", seed=3, dtype=jnp.bfloat16)
        ref = np_reference(x, mid, ql)
        y = self.run(x.reshape(2, 12, 256), mid.reshape(2, 12), ql, self.layouts[0])
        assert y.shape == (2, 12, 96) and y.dtype == jnp.bfloat16
        assert _rel_err(y.reshape(24, 96).astype(jnp.float32), ref) <= 2e-2

    def test_all_text_equals_no_modality_ids(self):
        x, mid, ql = make_case("w4a8", 20, 128, 48, 8, True, "text", seed=5)
        y_ids = self.run(x, mid, ql, self.layouts[0])
        y_none = self.run(x, None, ql, self.layouts[0])
        np.testing.assert_allclose(np.asarray(y_ids), np.asarray(y_none), rtol=1e-5, atol=1e-5)
        assert _rel_err(y_none, np_reference(x, mid, ql)) <= self.exact_tol


# Cases whose only difference is a Pallas config (split-K, weight pre-pass) add nothing for XLA.
XLA_CASES = [c for c in CASES if c[7] is None or (
    c[7].split_k == 1 and not c[7].weight_prepass and c[7].lora_tile_skip)]


class TestXLA(QMatmulSuite):
    implementation = "xla"
    layouts = ("qlinear", "prepared")

    @pytest.mark.parametrize("case", XLA_CASES, ids=_case_id)
    def test_matches_numpy_reference(self, case):
        super().test_matches_numpy_reference(case)

    def test_integer_dot_is_exact(self):
        # Each activation's scale is a power of two times one value, so the float32 output equals the
        # integer accumulation times scales exactly.
        x, mid, ql = make_case("w8a8", 16, 64, 32, 0, False, "text", seed=7)
        y = qmatmul(x, None, ql, implementation="xla")
        xs = np.asarray(x) / np.asarray(ql.smooth[0])
        q, sa = np_act_quant(xs, 8)
        acc = q @ np.asarray(ql.weight.qvalue, np.int64).T
        np.testing.assert_allclose(
            np.asarray(y) / (sa * np.asarray(ql.weight.scale[:, 0, 0])[None]), acc, rtol=2e-6, atol=1e-2)


class TestPallasInterpret(QMatmulSuite):
    implementation = "pallas"
    interpret = True

    @pytest.mark.parametrize("wbits", [8, 4])
    def test_integer_accumulation_bit_exact(self, wbits):
        rng = np.random.default_rng(wbits)
        k, n, mp = 320, 96, 32
        ql = make_qlinear(jnp.asarray(rng.normal(size=(n, k)), jnp.float32), wbits=wbits, abits=8)
        p = prepare(ql)
        a = rng.integers(-127, 128, size=(mp, p.k_pad)).astype(np.int8)
        a[:, k:] = 0
        cfg = Config(block_m=16, block_n=32, block_k=32, split_k=3)
        parts = gemm(jnp.asarray(a), jnp.ones((mp, 1), jnp.float32), p, cfg, interpret=self.interpret)
        assert parts.dtype == jnp.int32 and parts.shape[0] == 3
        qw = _np_unpack(np.asarray(ql.weight.qvalue), k, True) if wbits == 4 else np.asarray(
            ql.weight.qvalue, np.int64)
        want = a[:, :k].astype(np.int64) @ qw.T
        np.testing.assert_array_equal(np.asarray(parts).astype(np.int64).sum(0)[:, :n], want)

    def test_raw_qlinear_accepted(self):
        x, mid, ql = make_case("w8a8", 8, 64, 32, 4, False, "mixed", seed=9)
        y = self.run(x, mid, ql, "qlinear")
        assert _rel_err(y, np_reference(x, mid, ql)) <= self.lowp_tol


def _has_gpu() -> bool:
    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu(), reason="needs a CUDA GPU")
class TestPallasGPU(TestPallasInterpret):
    interpret = False
    exact_tol = 2e-3  # a rare rounding-boundary flip of one activation integer is allowed on GPU

    @pytest.mark.parametrize("setting", list(SETTINGS))
    @pytest.mark.parametrize("m", [1, 300])
    def test_qwen_shapes_match_xla(self, setting, m):
        x, mid, ql = make_case(setting, m, 3584, 1000, 64, True, "mixed" if m > 1 else "text", seed=11,
                               dtype=jnp.bfloat16)
        p = prepare(ql)
        y = qmatmul(x, mid, p, implementation="pallas")
        ref = np_reference(x, mid, ql)
        assert _rel_err(y.astype(jnp.float32), ref) <= 2e-2


# ---------------------------------------------------------------------------------------------
# Mosaic GPU (wgmma) kernel: Mosaic GPU interpret mode on the CPU (counted in the default run),
# the same cases compiled under ``-m gpu``.

# (setting, M, K, N, rank, bias, modality layout, MosaicConfig or None). M in {1, 7, 16, 129, 513};
# K/N odd multiples of 64/256 as in Qwen (3584 = 14·256, 18944 = 74·256, 11008 = 43·256) or smaller
# odd shapes padded by ``prepare`` (96, 160, 300; 40, 50, 72, 80, 136, 200 outputs).
MOSAIC_CASES = [
    ("w8a8", 1, 96, 80, 0, True, "text", None),  # swap-AB decode (no low-rank branch traced)
    ("w4a8", 1, 256, 64, 0, True, "text", MosaicConfig(swap_ab=False)),
    ("w4a8", 7, 160, 96, 32, False, "mixed", None),
    ("w4a16", 7, 256, 64, 64, True, "mixed", None),
    ("w4a6", 16, 128, 64, 64, True, "noaudio", None),
    ("w4a16", 16, 1280, 192, 0, False, "text", None),  # swap-AB W4A16, 10 weight groups
    ("w8a8", 16, 256, 128, 0, True, "text", MosaicConfig(decode_tokens=8)),  # two token tiles
    ("w8a8", 129, 300, 136, 32, True, "sorted", None),
    ("w4a8", 129, 768, 448, 32, True, "mixed", MosaicConfig(tile_m=128, tile_n=64)),
    ("w4a16", 129, 256, 72, 32, True, "novision", None),
    ("w4a8", 513, 256, 64, 0, False, "text", None),
    ("w4a6", 513, 160, 72, 64, False, "mixed", MosaicConfig(tile_m=128)),
    ("w4a16", 129, 512, 136, 0, True, "text", MosaicConfig(overlap_unpack=False)),  # single-buffer stage
]


def _mosaic_id(c):
    return f"{c[0]}-M{c[1]}K{c[2]}N{c[3]}r{c[4]}-{'bias' if c[5] else 'nobias'}-{c[6]}" + (
        "" if c[7] is None else "-" + "-".join(f"{k}{v}" for k, v in vars(c[7]).items()
                                               if v != getattr(MosaicConfig(), k)))


class TestMosaicInterpret(QMatmulSuite):
    """The Mosaic GPU kernel in Mosaic GPU interpret mode (``plgpu.force_gpu_interpret_mode``): the
    interpreter simulates TMA copies, barriers, shared memory and ``wgmma`` on the CPU, so this runs
    the kernel's own pipeline, in-kernel int4 unpack/dequantize and epilogue. It does not check
    shared-memory tilings, swizzles, register layouts or timing (the compiled class below does)."""

    implementation = "mosaic"
    interpret = True

    @pytest.fixture(autouse=True)
    def _fresh_interpreter(self):
        reset_mosaic_interpreter()  # a kernel that raised leaves the interpreter's state behind

    def run(self, x, mid, ql, layout, config=None):
        q = prepare(ql) if layout == "prepared" else ql
        return qmatmul(x, mid, q, implementation="mosaic", config=config, interpret=self.interpret)

    @pytest.mark.parametrize("case", MOSAIC_CASES, ids=_mosaic_id)
    def test_matches_numpy_reference(self, case):
        setting, m, k, n, rank, bias, layout_mod, cfg = case
        x, mid, ql = make_case(setting, m, k, n, rank, bias, layout_mod)
        ref = np_reference(x, mid, ql)
        y = self.run(x, mid, ql, "prepared", cfg)
        assert y.shape == (m, n) and y.dtype == x.dtype
        err = _rel_err(y, ref)
        assert err <= self.tol(setting, rank, "prepared"), err

    @pytest.mark.parametrize("wbits,swap", [(8, False), (4, False), (4, True)])
    def test_integer_accumulation_bit_exact(self, wbits, swap):
        # Unit scales: the float32 output is the int32 accumulator itself (|acc| < 2^24 here), so the
        # kernel's in-kernel int4 unpack and int8 wgmma must reproduce NumPy's int64 product exactly.
        import dataclasses

        from masq_jax.kernels.qmatmul_mosaic import gemm_mosaic

        rng = np.random.default_rng(wbits + swap)
        k, n, m = 320, 96, 16 if swap else 70
        ql = make_qlinear(jnp.asarray(rng.normal(size=(n, k)), jnp.float32), wbits=wbits, abits=8)
        p = prepare(ql)
        p = dataclasses.replace(p, wscale=jnp.ones_like(p.wscale), bias=None)
        mp = 16 if swap else 128
        a = rng.integers(-127, 128, size=(mp, p.k_pad)).astype(np.int8)
        a[:, k:] = 0
        cfg = MosaicConfig(swap_ab=swap)
        from jax.experimental.pallas import mosaic_gpu as plgpu

        def go():
            return gemm_mosaic(jnp.asarray(a), jnp.ones((mp,), jnp.float32), p, cfg, m=m)

        if self.interpret:
            with plgpu.force_gpu_interpret_mode(plgpu.InterpretGPUParams()):
                out = jax.jit(go)()
        else:
            out = jax.jit(go)()
        qw = _np_unpack(np.asarray(ql.weight.qvalue), k, True) if wbits == 4 else np.asarray(
            ql.weight.qvalue, np.int64)
        want = a[:, :k].astype(np.int64) @ qw.T
        np.testing.assert_array_equal(np.asarray(out).astype(np.int64)[:, :n], want)

    def test_no_branch_traced_without_modality_ids(self):
        # modality_ids=None: neither the down-projection (an XLA dot in the pre-pass) nor the
        # kernel's up-projection operands (flags, d, R) are traced.
        from masq_jax.kernels.qmatmul_mosaic import qmatmul_mosaic

        x, mid, ql = make_case("w4a8", 20, 128, 64, 8, True, "mixed", seed=2)
        p = prepare(ql)
        with_ids = str(jax.make_jaxpr(lambda x, mid: qmatmul_mosaic(x, mid, p))(x, mid))
        without = str(jax.make_jaxpr(lambda x: qmatmul_mosaic(x, None, p))(x))
        assert "dot_general" in with_ids and "dot_general" not in without

    def test_wrong_config_type_is_a_clear_error(self):
        x, mid, ql = make_case("w8a8", 4, 64, 32, 0, False, "text")
        with pytest.raises(KernelConfigError, match="MosaicConfig"):
            qmatmul(x, mid, ql, implementation="mosaic", config=Config())
        with pytest.raises(KernelConfigError, match="tile_m"):
            MosaicConfig(tile_m=48)


def reset_mosaic_interpreter() -> None:
    """Clear Mosaic GPU interpret mode's simulated memory (jax asks for it after a failed kernel)."""
    try:
        from jax._src.pallas.mosaic_gpu.interpret import gpu_callbacks
    except ImportError:  # pragma: no cover - jax without the interpreter
        return
    gpu_callbacks.reset_gpu_interpret_mode_state()


def _has_hopper() -> bool:
    try:
        return any("H100" in d.device_kind or "H200" in d.device_kind or "H800" in d.device_kind
                   or "GH200" in d.device_kind for d in jax.devices("gpu"))
    except RuntimeError:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _has_hopper(), reason="needs a Hopper GPU (H100/H200: wgmma)")
class TestMosaicGPU(TestMosaicInterpret):
    """The same cases compiled by Mosaic GPU on a Hopper GPU."""

    interpret = False
    exact_tol = 2e-3  # a rare rounding-boundary flip of one activation integer is allowed on GPU

    @pytest.mark.parametrize("setting", list(SETTINGS))
    @pytest.mark.parametrize("m", [1, 300])
    def test_qwen_shapes_match_reference(self, setting, m):
        x, mid, ql = make_case(setting, m, 3584, 1000, 64, True, "mixed" if m > 1 else "text", seed=11,
                               dtype=jnp.bfloat16)
        y = qmatmul(x, mid if m > 1 else None, prepare(ql), implementation="mosaic")
        ref = np_reference(x, mid, ql)  # M = 1: one text token (swap-AB decode, no branch traced)
        assert _rel_err(y.astype(jnp.float32), ref) <= 2e-2


# ---------------------------------------------------------------------------------------------
# Layout and API checks (implementation independent).


@pytest.mark.parametrize("signed", [True, False])
def test_half_split_pack_roundtrip(signed):
    rng = np.random.default_rng(1)
    q = rng.integers(-8, 8, size=(12, 64)) if signed else rng.integers(0, 16, size=(12, 64))
    p = pack_half_split(jnp.asarray(q), signed)
    assert p.shape == (12, 32) and p.dtype == (jnp.int8 if signed else jnp.uint8)
    np.testing.assert_array_equal(np.asarray(unpack_half_split(p, signed)), q)
    byte = np.asarray(p).astype(np.int64) & 0xFF
    np.testing.assert_array_equal(byte & 0xF, q[:, :32] & 0xF)
    np.testing.assert_array_equal(byte >> 4, q[:, 32:] & 0xF)


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_prepared_weight_equals_dequantize(setting):
    _, _, ql = make_case(setting, 4, 384, 72, 0, False, "text")
    p = prepare(ql)
    assert p.k_pad % 256 == 0 and p.n_pad % 64 == 0
    np.testing.assert_allclose(np.asarray(dequantized_kn(p)), np.asarray(dequantize(ql.weight)).T,
                               rtol=1e-6, atol=1e-6)


def test_bad_arguments_raise_clear_errors():
    x, mid, ql = make_case("w8a8", 4, 64, 32, 0, False, "text")
    with pytest.raises(KernelConfigError, match="implementation"):
        qmatmul(x, mid, ql, implementation="cuda")
    with pytest.raises(KernelConfigError, match="input features"):
        qmatmul(x[:, :10], mid, ql)
    with pytest.raises(KernelConfigError, match="modality_ids"):
        qmatmul(x, mid[:2], ql)
    grouped_a8 = make_qlinear(jnp.ones((32, 256)), wbits=4, abits=8, w_symmetric=False, group_size=128)
    with pytest.raises(KernelConfigError, match="xla"):
        qmatmul(jnp.ones((2, 256)), None, grouped_a8, implementation="pallas")
    with pytest.raises(KernelConfigError, match="power of two"):
        Config(block_m=48)


def test_prepare_vmaps_over_stacked_layers_and_scans():
    # The model stacks layers: vmap(prepare) over a stacked QLinear, then lax.scan over the result.
    qls = [make_case("w4a8", 10, 128, 40, 4, True, "mixed", seed=s)[2] for s in range(3)]
    x, mid, _ = make_case("w4a8", 10, 128, 40, 4, True, "mixed", seed=0)
    ps = jax.vmap(prepare)(jax.tree.map(lambda *a: jnp.stack(a), *qls))
    _, ys = jax.lax.scan(lambda c, p: (c, qmatmul(x, mid, p, implementation="xla")), 0, ps)
    for i, ql in enumerate(qls):
        np.testing.assert_array_equal(np.asarray(ys[i]), np.asarray(qmatmul(x, mid, prepare(ql), implementation="xla")))
