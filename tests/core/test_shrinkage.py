"""Covariance shrinkage (masq_jax.core.shrinkage) against float64 NumPy references of its formulas."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from masq_jax.core import cmc, shrinkage


def np_oas(x):
    """OAS (Chen et al. 2010, as scikit-learn's ``oas`` with ``assume_centered=True``), float64."""
    n, d = x.shape
    s = x.T @ x / n
    mu = np.trace(s) / d
    alpha = np.mean(s**2)
    num = alpha + mu**2
    den = (n + 1) * (alpha - mu**2 / d)
    return 1.0 if den == 0 else min(num / den, 1.0)


@pytest.mark.parametrize("n,d,spread", [(40, 64, 1.0), (400, 64, 1.0), (100, 32, 30.0), (3, 16, 5.0)])
def test_oas_matches_the_formula(n, d, spread):
    rng = np.random.default_rng(n + d)
    x = rng.standard_normal((n, d)) * np.exp(np.linspace(0, np.log(spread), d))
    got = float(shrinkage.oas_shrinkage(jnp.asarray(x.T @ x, jnp.float32), n))
    assert got == pytest.approx(np_oas(x), rel=1e-4, abs=1e-6)


def test_oas_shrinks_less_with_more_tokens_and_fully_for_a_scaled_identity():
    rng = np.random.default_rng(0)
    scales = np.exp(np.linspace(0, 2, 48))
    few, many = (rng.standard_normal((n, 48)) * scales for n in (30, 3000))
    assert np_oas(many) < np_oas(few) < 1.0
    assert float(shrinkage.oas_shrinkage(jnp.eye(8) * 3.0, 100)) == 1.0  # already the target


def test_shrink_and_damping_whiten_alike():
    """``shrink(C, ρ)`` undamped and ``C`` damped by ``δ = ρ/(1−ρ)`` give the same low-rank fit."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 24)) * np.linspace(0.1, 3, 24)
    c = jnp.asarray(x.T @ x, jnp.float32)
    dw = jnp.asarray(rng.standard_normal((20, 24)), jnp.float32)
    rho = 0.3
    d_c = shrinkage.shrink(c, rho)
    np.testing.assert_allclose(np.asarray(d_c), (1 - rho) * x.T @ x + rho * np.trace(x.T @ x) / 24 * np.eye(24),
                               rtol=1e-5, atol=1e-4)
    l1, r1 = cmc.low_rank_compensation(dw, d_c, 6, fit="whitened", svd="svd")
    l2, r2 = cmc.low_rank_compensation(dw, c, 6, damping=float(shrinkage.damping_of(rho)), fit="whitened", svd="svd")
    np.testing.assert_allclose(np.asarray(l1 @ r1), np.asarray(l2 @ r2), rtol=1e-4, atol=1e-5)
