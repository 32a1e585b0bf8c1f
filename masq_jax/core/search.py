"""The α grid search behind AWQ and the MBQ-like baseline (docs/method.md §3), one implementation.

For a family of candidate vectors ``s(α)`` (AWQ: ``mean|x|^α`` normalised; the SmoothQuant family:
``max|x|^α / max|W|^(1-α)``), pick α ∈ {0, 1/n, …, (n−1)/n} minimising the token-weighted mean
squared output error of the quantized linear ``Q_a(x/s)·Q_w(W·diag(s))ᵀ`` against ``x·Wᵀ``.
Uniform token weights give AWQ's objective; modality-dependent weights give MBQ's. Activations are
quantized as the setting says (identity for weight-only settings, i.e. AWQ's weight-only error).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax.core.checks import check_tokens, weight_dims
from masq_jax.core.quant import QuantSpec, validate_bits
from masq_jax.core.smoothing import awq_scales, init_factors
from masq_jax.errors import CoreInputError

HIGHEST = jax.lax.Precision.HIGHEST
GRID_POINTS = 20  # the reference's AWQ grid (docs/method.md §3)

Candidates = Callable[[jax.Array], jax.Array]  # alpha -> smoothing vector [in]


class SearchResult(NamedTuple):
    alpha: jax.Array  # best α (scalar)
    smooth: jax.Array  # [in], the candidate at the best α
    errors: jax.Array  # [n_grid] the objective at every grid point


def awq_candidates(mean_abs: jax.Array) -> Candidates:
    """AWQ's family ``s(α) = mean|x|^α`` (floored, normalised; ``smoothing.awq_scales``)."""
    return lambda alpha: awq_scales(mean_abs, alpha)


def smoothquant_candidates(act_absmax: jax.Array, weight: jax.Array) -> Candidates:
    """The SmoothQuant family ``s(α) = max|x|^α / max|W|^(1-α)`` (``smoothing.init_factors``)."""
    return lambda alpha: init_factors(act_absmax, weight, alpha)


def search_alpha(
    x: jax.Array,
    weight: jax.Array,
    candidates: Candidates,
    *,
    weights: QuantSpec,
    activations: QuantSpec,
    token_weights: jax.Array | None = None,
    n_grid: int = GRID_POINTS,
) -> SearchResult:
    """Grid-search α for ``candidates`` on tokens ``x`` [T, in] of a linear ``weight`` [out, in],
    quantized with ``weights`` and ``activations`` (per-token; identity for a weight-only setting).

    Objective at α: ``Σ_t λ_t · mean_o (Q_a(x_t/s)·Q_w(W·diag(s))ᵀ − x_t·Wᵀ)² / Σ_t λ_t`` with
    ``λ = token_weights`` (ones when None). The grid runs sequentially (``lax.map``) so memory stays
    at one candidate's products. Float32, HIGHEST precision.
    """
    validate_bits(weights.bits, "wbits")
    validate_bits(activations.bits, "abits")
    if isinstance(n_grid, bool) or not isinstance(n_grid, (int, np.integer)) or n_grid < 1:
        raise CoreInputError(f"n_grid must be a positive integer, got {n_grid!r}")
    if x.ndim != 2:
        raise CoreInputError(f"x must be [tokens, in], got shape {tuple(x.shape)}")
    weight_dims(weight, x.shape[-1])
    if token_weights is not None:
        check_tokens(x, None, token_weights)
    w = weight.astype(jnp.float32)
    x = x.astype(jnp.float32)
    ref = jnp.dot(x, w.T, precision=HIGHEST)
    alphas = jnp.arange(n_grid, dtype=jnp.float32) / n_grid
    lam = jnp.ones(x.shape[:1], jnp.float32) if token_weights is None else token_weights.astype(jnp.float32)

    def objective(alpha):
        s = candidates(alpha)
        xq = activations.fake_quant(x / s)
        wq = weights.fake_quant(w * s[None])
        err = jnp.mean((jnp.dot(xq, wq.T, precision=HIGHEST) - ref) ** 2, axis=-1)
        return jnp.sum(lam * err) / jnp.maximum(jnp.sum(lam), 1e-12)

    errors = jax.lax.map(objective, alphas)
    best = jnp.argmin(errors)
    return SearchResult(alphas[best], candidates(alphas[best]), errors)
