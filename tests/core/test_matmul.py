"""masq_jax.matmul (bf16 tensor-core products at float32-level accuracy) and mas_linear's bf16 mode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.core.np_refs import np_mas_linear
from masq_jax.core import matmul
from masq_jax.core import smoothing as sm
from masq_jax.errors import CoreInputError
from masq_jax.core.quant import fake_quant, fake_quant_grid


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_grid_matmul_exact_forward_and_accurate_gradients():
    rng = np.random.default_rng(0)
    gx = rng.integers(-127, 128, (33, 200)).astype(np.float32)
    gw = rng.integers(-7, 8, (17, 200)).astype(np.float32)
    ct = rng.standard_normal((33, 17))
    y = matmul.grid_matmul(jnp.asarray(gx), jnp.asarray(gw))
    np.testing.assert_array_equal(np.asarray(y), gx.astype(np.float64) @ gw.T.astype(np.float64))
    _, vjp = jax.vjp(matmul.grid_matmul, jnp.asarray(gx), jnp.asarray(gw))
    dgx, dgw = vjp(jnp.asarray(ct, jnp.float32))
    assert _rel(dgx, ct @ gw) < 2e-5 and _rel(dgw, ct.T @ gx) < 2e-5


def test_split_matmul_is_float32_accurate_both_ways():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((40, 96)) * np.exp(rng.uniform(-3, 3, 96))
    b = rng.standard_normal((24, 96))
    ct = rng.standard_normal((40, 24))
    f = lambda a_, b_: matmul.split_matmul(a_, b_)  # noqa: E731
    y, vjp = jax.vjp(f, jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
    da, db = vjp(jnp.asarray(ct, jnp.float32))
    assert _rel(y, a @ b.T) < 2e-5
    assert _rel(da, ct @ b) < 2e-5 and _rel(db, ct.T @ a) < 2e-5
    # plain bf16 operands would be ~1e-3 off: the split is what buys the accuracy
    plain = jnp.dot(jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16).T, preferred_element_type=jnp.float32)
    assert _rel(plain, a @ b.T) > 1e-3


@pytest.mark.parametrize("bits,sym", [(8, True), (4, True), (6, True), (4, False)])
def test_fake_quant_grid_times_scale_is_fake_quant(bits, sym):
    x = jnp.asarray(np.random.default_rng(2).standard_normal((16, 50)) * 3, jnp.float32)
    g, s = fake_quant_grid(x, bits, symmetric=sym)
    np.testing.assert_array_equal(np.asarray(g * s), np.asarray(fake_quant(x, bits, symmetric=sym)))
    assert float(jnp.max(jnp.abs(g - jnp.round(g)))) == 0.0 and float(jnp.max(jnp.abs(g))) <= 2**bits - 1


def _mas_problem(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((64, 96)) * np.exp(rng.normal(size=96))
    mid = rng.integers(0, 3, 64)
    w = rng.standard_normal((40, 96))
    s = np.exp(rng.normal(size=(3, 96)) * 0.3)
    return x, mid, w, s


@pytest.mark.parametrize("wbits,abits,gs,sym", [(4, 8, None, True), (8, 8, None, True), (4, 6, None, True),
                                                (4, 16, 32, False)])
def test_mas_linear_bf16_forward_matches_float32_and_numpy(wbits, abits, gs, sym):
    x, mid, w, s = _mas_problem(0)
    args = (jnp.asarray(x, jnp.float32), jnp.asarray(mid, jnp.int32), jnp.asarray(w, jnp.float32), None,
            jnp.asarray(s, jnp.float32))
    kw = dict(wbits=wbits, abits=abits, group_size=gs, w_symmetric=sym)
    y32 = sm.mas_linear(*args, **kw)
    y16 = sm.mas_linear(*args, **kw, matmul_dtype="bfloat16")
    assert _rel(y16, y32) < (2e-6 if gs is None and abits < 16 else 1e-5)  # exact grid / split passes
    ref = np_mas_linear(x.astype(np.float32), mid, w.astype(np.float32), None, s.astype(np.float32), wbits, abits,
                        sym, gs)
    assert _rel(y16, ref) < 1e-3  # the NumPy reference may round a few grid points differently


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_mas_gradient_in_bf16_mode_no_worse_than_float32(seed):
    """The smoothing gradient is a small difference of large terms: even float32 HIGHEST is a few %
    off float64. The bf16 mode must not be worse than that."""
    x, mid, w, s = _mas_problem(seed)

    def ref(sv):  # the same MAS linear in float64
        xq = fake_quant(jnp.asarray(x) / sv[jnp.asarray(mid)], 8)
        y = 0.0
        for m in range(3):
            wq = fake_quant(jnp.asarray(w) * sv[m], 4)
            y = y + jnp.where((jnp.asarray(mid) == m)[:, None], xq @ wq.T, 0.0)
        return jnp.sum(jnp.abs(y))

    with jax.enable_x64(True):
        g64 = np.asarray(jax.grad(ref)(jnp.asarray(s, jnp.float64)))

    def loss(sv, dt):
        return jnp.sum(jnp.abs(sm.mas_linear(jnp.asarray(x, jnp.float32), jnp.asarray(mid, jnp.int32),
                                             jnp.asarray(w, jnp.float32), None, sv, wbits=4, abits=8,
                                             matmul_dtype=dt)))

    s32 = jnp.asarray(s, jnp.float32)
    e32 = _rel(jax.grad(loss)(s32, "float32"), g64)
    e16 = _rel(jax.grad(loss)(s32, "bfloat16"), g64)
    assert e16 <= 1.5 * e32 + 2e-3, (e16, e32)


def test_mas_linear_rejects_unknown_matmul_dtype():
    x, mid, w, s = _mas_problem(0)
    with pytest.raises(CoreInputError, match="matmul_dtype must be"):
        sm.mas_linear(jnp.asarray(x, jnp.float32), jnp.asarray(mid, jnp.int32), jnp.asarray(w, jnp.float32), None,
                      jnp.asarray(s, jnp.float32), wbits=4, abits=8, matmul_dtype="fp8")
