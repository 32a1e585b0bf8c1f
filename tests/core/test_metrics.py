"""masq_jax.metrics against float64 NumPy (docs/method.md §7)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.core.np_refs import np_sqnr_tokens
from masq_jax.core import metrics
from masq_jax.errors import CoreInputError


def _pair(seed=0, shape=(40, 16)):
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal(shape).astype(np.float32) * rng.uniform(0.1, 10, shape[:-1] + (1,)).astype(np.float32)
    approx = ref + 0.05 * rng.standard_normal(shape).astype(np.float32) * rng.uniform(0.1, 3, shape[:-1] + (1,)).astype(np.float32)
    return ref, approx


def test_sqnr_matches_numpy_with_mask():
    ref, approx = _pair()
    tok = np_sqnr_tokens(ref, approx)
    np.testing.assert_allclose(float(metrics.sqnr(jnp.asarray(ref), jnp.asarray(approx))), tok.mean(), rtol=1e-5)
    mask = np.arange(40) % 3 == 0
    np.testing.assert_allclose(float(metrics.sqnr(jnp.asarray(ref), jnp.asarray(approx), jnp.asarray(mask))),
                               tok[mask].mean(), rtol=1e-5)
    assert np.isnan(float(metrics.sqnr(jnp.asarray(ref), jnp.asarray(approx), jnp.zeros(40, bool))))
    np.testing.assert_allclose(np.asarray(metrics.token_sqnr(jnp.asarray(ref), jnp.asarray(approx))), tok, rtol=1e-5)


def test_sqnr_by_modality_nan_for_absent_and_table():
    ref, approx = _pair(1, (4, 10, 16))
    mid = np.random.default_rng(1).integers(0, 2, size=(4, 10)).astype(np.int32)  # no audio
    valid = np.ones((4, 10), bool)
    valid[3, 5:] = False
    approx[3, 5:] = 0.0  # padding would be very bad if counted
    got = np.asarray(metrics.sqnr_by_modality(jnp.asarray(ref), jnp.asarray(approx), jnp.asarray(mid), jnp.asarray(valid)))
    tok = np_sqnr_tokens(ref, approx)
    for m in (0, 1):
        np.testing.assert_allclose(got[m], tok[(mid == m) & valid].mean(), rtol=1e-5)
    assert np.isnan(got[2])
    table = metrics.sqnr_table(ref, approx, mid, valid)
    assert table["audio"] is None and set(table) == {"all", "text", "vision", "audio"}
    np.testing.assert_allclose(table["all"], tok[valid].mean(), rtol=1e-5)
    np.testing.assert_allclose(table["vision"], got[1], rtol=1e-6)


def test_sqnr_known_value_and_vmap():
    x = jnp.ones((3, 8))
    assert abs(float(metrics.sqnr(x, x * 1.1)) - 20.0) < 1e-4  # error 0.1 of signal 1 -> 20 dB
    ref, approx = _pair(2, (3, 20, 16))
    mid = jnp.asarray(np.random.default_rng(2).integers(0, 3, size=(3, 20)), jnp.int32)
    f = jax.jit(jax.vmap(lambda a, b, m: (metrics.sqnr(a, b), metrics.sqnr_by_modality(a, b, m))))
    v_all, v_mod = f(jnp.asarray(ref), jnp.asarray(approx), mid)
    for i in range(3):
        np.testing.assert_allclose(float(v_all[i]), float(metrics.sqnr(jnp.asarray(ref[i]), jnp.asarray(approx[i]))), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(v_mod[i]),
                                   np.asarray(metrics.sqnr_by_modality(jnp.asarray(ref[i]), jnp.asarray(approx[i]), mid[i])),
                                   rtol=1e-6)


def test_effective_rank():
    rng = np.random.default_rng(3)
    s = np.sort(rng.exponential(size=30))[::-1]
    p = s / s.sum()
    np.testing.assert_allclose(float(metrics.effective_rank(jnp.asarray(s))), np.exp(-(p * np.log(p)).sum()), rtol=1e-5)
    np.testing.assert_allclose(float(metrics.effective_rank(jnp.ones(7))), 7.0, rtol=1e-6)
    np.testing.assert_allclose(float(metrics.effective_rank(jnp.asarray([3.0, 0.0, 0.0]))), 1.0, rtol=1e-6)
    assert float(metrics.effective_rank(jnp.zeros(4))) == 0.0
    batch = jnp.asarray(rng.exponential(size=(4, 12)))
    np.testing.assert_allclose(np.asarray(jax.vmap(metrics.effective_rank)(batch)),
                               np.asarray(metrics.effective_rank(batch)), rtol=1e-6)


def test_bad_input():
    with pytest.raises(CoreInputError, match="same shape"):
        metrics.sqnr(jnp.ones((3, 4)), jnp.ones((3, 5)))
    with pytest.raises(CoreInputError, match="mask must have shape"):
        metrics.sqnr(jnp.ones((3, 4)), jnp.ones((3, 4)), jnp.ones(4, bool))
    with pytest.raises(CoreInputError, match="modality_ids must have shape"):
        metrics.sqnr_by_modality(jnp.ones((3, 4)), jnp.ones((3, 4)), jnp.zeros(4, jnp.int32))
