"""The rank-budget allocator (masq_jax.core.rank_budget) on constructed spectra, against brute force."""

from __future__ import annotations

import itertools

import numpy as np

from masq_jax.core.rank_budget import allocate, concave_hull


def brute_force(curves, costs, budget):
    best, arg = np.inf, None
    for ranks in itertools.product(*(range(len(c)) for c in curves)):
        if sum(r * k for r, k in zip(ranks, costs)) <= budget:
            err = sum(c[r] for c, r in zip(curves, ranks))
            if err < best:
                best, arg = err, ranks
    return best, arg


def test_concave_hull_skips_points_below_a_chord():
    assert concave_hull(np.array([0.0, 1.0, 1.1, 3.0, 3.2])) == [0, 3, 4]
    assert concave_hull(np.array([0.0, 2.0, 3.0, 3.5])) == [0, 1, 2, 3]


def test_flat_residuals_get_little_and_steep_ones_get_what_they_need():
    """A unit whose error falls fast (a few dominant singular values) takes the rank; a flat one
    (a noise-like residual) gets little, though both cost the same per rank."""
    steep = np.array([1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001, 0.0003, 0.0001])  # error after r components
    flat = 0.1 * (1.0 - np.arange(9) / 8.0)  # gains 0.0125 per rank
    assert allocate([steep, flat], [10.0, 10.0], budget=60.0) == [4, 2]  # steep gains >= 0.02 first
    # costs matter: the same curves with the steep unit 4x as expensive per rank
    assert allocate([steep, flat], [40.0, 10.0], budget=60.0) == [1, 2]


def test_convex_curves_reach_the_brute_force_optimum():
    rng = np.random.default_rng(0)
    for trial in range(20):
        curves = []
        for _ in range(3):
            sv2 = np.sort(rng.exponential(size=6))[::-1]  # squared singular values, descending
            curves.append(np.concatenate([[sv2.sum()], sv2.sum() - np.cumsum(sv2)]))
        costs = list(rng.integers(1, 4, size=3).astype(float))
        budget = float(rng.integers(3, 15))
        ranks = allocate(curves, costs, budget)
        assert sum(r * k for r, k in zip(ranks, costs)) <= budget
        got = sum(c[r] for c, r in zip(curves, ranks))
        best, _ = brute_force(curves, costs, budget)
        # greedy on a concave gain with integer costs: optimal up to one partly used segment
        assert got <= best + max(max(np.diff(-c)) for c in curves) + 1e-12, trial
        if len(set(costs)) == 1:
            assert got == np.float64(best) or abs(got - best) < 1e-9, trial


def test_rising_validation_error_is_never_bought():
    """Components that raise the validation error (overfitting) are not taken even with budget left."""
    curve = np.array([1.0, 0.5, 0.6, 0.7])
    assert allocate([curve], [1.0], budget=10.0) == [1]
