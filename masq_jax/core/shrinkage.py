"""Covariance shrinkage for CMC's whitening (docs/method.md §5): ``(1 − ρ)·C + ρ·tr(C)/d·I``.

A modality's covariance is estimated from a few hundred tokens in a space as wide as the model, so
its small eigenvalues are mostly noise; shrinking towards the scaled identity trades that noise for
bias. ``oas_shrinkage`` is the Oracle-Approximating Shrinkage amount (Chen, Wiesel, Eldar & Hero,
IEEE TSP 2010; the formula scikit-learn's ``oas`` uses), computed in closed form from ``C`` and the
token count alone, so it costs no extra pass over the data. ``ρ`` maps onto ``core.cmc``'s relative
damping ``δ`` as ``δ = ρ / (1 − ρ)`` (the same whitening up to a scale, which the fit ignores).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MAX_SHRINKAGE = 0.999  # ρ = 1 is the unwhitened fit; capped so the damping δ = ρ/(1−ρ) stays finite


def oas_shrinkage(cov: jax.Array, n_tokens) -> jax.Array:
    """OAS amount ``ρ ∈ [0, 1]`` for the second-moment matrix ``cov = XᵀX`` [d, d] of ``n_tokens`` rows.

    ``μ = tr(S)/d``, ``α = ‖S‖²_F/d²`` (``S = cov/n``; ρ is scale-free, so ``cov`` itself serves);
    ``ρ = min((α + μ²) / ((n + 1)(α − μ²/d)), 1)``, and 1 when the denominator vanishes. A scalar
    (traceable; ``n_tokens`` may be a traced count).
    """
    c = cov.astype(jnp.float32) if cov.dtype != jnp.float64 else cov
    d = c.shape[-1]
    mu = jnp.trace(c) / d
    alpha = jnp.sum(c * c) / (d * d)
    num = alpha + mu * mu
    den = (jnp.asarray(n_tokens, c.dtype) + 1.0) * (alpha - mu * mu / d)
    rho = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 1.0)
    return jnp.clip(rho, 0.0, 1.0)


def shrink(cov: jax.Array, rho) -> jax.Array:
    """``(1 − ρ)·C + ρ·tr(C)/d·I``."""
    d = cov.shape[-1]
    return (1.0 - rho) * cov + (rho * jnp.trace(cov) / d) * jnp.eye(d, dtype=cov.dtype)


def damping_of(rho) -> jax.Array:
    """The relative damping ``δ = ρ/(1 − ρ)`` that whitens as ``shrink(C, ρ)`` does (ρ capped below 1)."""
    r = jnp.clip(jnp.asarray(rho, jnp.float32), 0.0, MAX_SHRINKAGE)
    return r / (1.0 - r)
