"""masq_jax.qlinear: the docs/method.md §6 inference linear against a float64 NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.core.np_refs import np_qlinear
from masq_jax.core.qlinear import QLinear, make_qlinear, qlinear_reference
from masq_jax.errors import QuantConfigError
from masq_jax.core.quant import dequantize, fake_quant


def _setup(seed=0, tokens=30, din=32, dout=24, rank=4):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((tokens, din)).astype(np.float32)
    mid = rng.integers(0, 3, size=tokens).astype(np.int32)
    w = (rng.standard_normal((dout, din)) / np.sqrt(din)).astype(np.float32)
    b = rng.standard_normal(dout).astype(np.float32)
    smooth = np.exp(rng.uniform(-1, 1, size=(3, din))).astype(np.float32)
    l = (0.1 * rng.standard_normal((3, din, rank))).astype(np.float32)
    r = (0.1 * rng.standard_normal((3, rank, dout))).astype(np.float32)
    l[0] = 0
    r[0] = 0
    return x, mid, w, b, smooth, l, r


def _rel(a, b):
    return np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b)


@pytest.mark.parametrize("wbits,abits,sym,gs", [(4, 8, True, None), (8, 8, True, None), (4, 16, False, 8), (4, 6, True, None)])
def test_qlinear_reference_matches_numpy(wbits, abits, sym, gs):
    x, mid, w, b, smooth, l, r = _setup()
    ql = make_qlinear(jnp.asarray(w), jnp.asarray(b), wbits=wbits, abits=abits, smooth=jnp.asarray(smooth),
                      lora_l=jnp.asarray(l), lora_r=jnp.asarray(r), w_symmetric=sym, group_size=gs)
    y = qlinear_reference(jnp.asarray(x), jnp.asarray(mid), ql)
    ref = np_qlinear(x, mid, w, b, smooth, l, r, wbits, abits, sym, gs)
    # float32 vs float64 can flip a rare round-half tie; the relative error stays tiny
    assert _rel(y, ref) < 2e-3
    close = np.isclose(np.asarray(y), ref, rtol=1e-4, atol=1e-4).all(-1)
    assert close.mean() > 0.9


def test_text_tokens_ignore_lowrank_and_rank0_default():
    x, mid, w, b, smooth, l, r = _setup(seed=1)
    ql = make_qlinear(jnp.asarray(w), jnp.asarray(b), wbits=4, abits=8, smooth=jnp.asarray(smooth),
                      lora_l=jnp.asarray(l), lora_r=jnp.asarray(r))
    ql0 = make_qlinear(jnp.asarray(w), jnp.asarray(b), wbits=4, abits=8, smooth=jnp.asarray(smooth))
    assert ql.rank == 4 and ql0.rank == 0 and ql.in_features == 32 and ql.out_features == 24
    y = np.asarray(qlinear_reference(jnp.asarray(x), jnp.asarray(mid), ql))
    y0 = np.asarray(qlinear_reference(jnp.asarray(x), jnp.asarray(mid), ql0))
    text = mid == 0
    np.testing.assert_array_equal(y[text], y0[text])
    assert not np.allclose(y[~text], y0[~text])


def test_stored_weight_is_text_smoothed_fake_quant():
    x, mid, w, b, smooth, l, r = _setup(seed=2)
    ql = make_qlinear(jnp.asarray(w), None, wbits=4, abits=8, smooth=jnp.asarray(smooth))
    np.testing.assert_array_equal(np.asarray(dequantize(ql.weight)),
                                  np.asarray(fake_quant(jnp.asarray(w) * jnp.asarray(smooth[0]), 4)))


def test_leading_axes_jit_vmap_and_pytree():
    x, mid, w, b, smooth, l, r = _setup(seed=3)
    ql = make_qlinear(jnp.asarray(w), jnp.asarray(b), wbits=4, abits=8, smooth=jnp.asarray(smooth),
                      lora_l=jnp.asarray(l), lora_r=jnp.asarray(r))
    y = qlinear_reference(jnp.asarray(x), jnp.asarray(mid), ql)
    yb = jax.jit(qlinear_reference)(jnp.asarray(x).reshape(5, 6, 32), jnp.asarray(mid).reshape(5, 6), ql)
    np.testing.assert_allclose(np.asarray(yb).reshape(30, 24), np.asarray(y), rtol=1e-6, atol=1e-6)
    # a stack of 2 layers as one pytree, vmapped == looped
    qls = [make_qlinear(jnp.asarray(w) * (i + 1), jnp.asarray(b), wbits=4, abits=8, smooth=jnp.asarray(smooth),
                        lora_l=jnp.asarray(l), lora_r=jnp.asarray(r)) for i in range(2)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *qls)
    assert isinstance(stacked, QLinear)
    yv = jax.jit(jax.vmap(qlinear_reference, in_axes=(None, None, 0)))(jnp.asarray(x), jnp.asarray(mid), stacked)
    for i in range(2):
        np.testing.assert_allclose(np.asarray(yv[i]),
                                   np.asarray(qlinear_reference(jnp.asarray(x), jnp.asarray(mid), qls[i])),
                                   rtol=1e-6, atol=1e-6)


def test_bf16_input_returns_bf16():
    x, mid, w, b, smooth, l, r = _setup(seed=4)
    ql = make_qlinear(jnp.asarray(w), jnp.asarray(b), wbits=4, abits=8, smooth=jnp.asarray(smooth),
                      lora_l=jnp.asarray(l), lora_r=jnp.asarray(r))
    y = qlinear_reference(jnp.asarray(x, jnp.bfloat16), jnp.asarray(mid), ql)
    assert y.dtype == jnp.bfloat16
    ref = np_qlinear(np.asarray(jnp.asarray(x, jnp.bfloat16), np.float32), mid, w, b, smooth, l, r, 4, 8)
    assert _rel(y, ref) < 2e-2


def test_bad_bits_in_make_qlinear():
    x, mid, w, b, smooth, l, r = _setup()
    with pytest.raises(QuantConfigError, match="bits"):
        make_qlinear(jnp.asarray(w), wbits=1, abits=8)
    with pytest.raises(QuantConfigError, match="abits"):
        make_qlinear(jnp.asarray(w), wbits=4, abits=20)
