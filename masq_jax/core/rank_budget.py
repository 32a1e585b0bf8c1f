"""Spend a CMC rank budget where it pays (docs/method.md §5): ranks per (linear, modality) from each
one's validated error curve, greedy on error reduction per parameter.

Every unit ``u`` (a linear and a non-text modality) has ``curve_u[r]``: its relative validation error
with the first ``r`` low-rank components (r = 0 .. cap_u), and a cost of ``in_u + out_u`` parameters
per rank. Components come in order (a rank-r branch holds the first r), so the allocator walks the
upper concave hull of each unit's gain ``curve_u[0] − curve_u[r]`` (its steepest prefixes first) and
takes hull segments from all units by decreasing gain per parameter until the budget is spent — the
exact optimum of the continuous relaxation, and the greedy on marginal gain where curves are convex.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def concave_hull(gain: np.ndarray) -> list[int]:
    """Indices of the upper concave hull of the points ``(r, gain[r])``, r = 0..len−1 (starts at 0)."""
    hull: list[int] = []
    for r in range(len(gain)):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b lies on or below the chord a -> r: drop it
            if (gain[b] - gain[a]) * (r - a) <= (gain[r] - gain[a]) * (b - a):
                hull.pop()
            else:
                break
        hull.append(r)
    return hull


def allocate(curves: Sequence[np.ndarray], costs: Sequence[float], budget: float) -> list[int]:
    """Ranks (one per unit) with ``Σ rank_u · cost_u <= budget`` that greedily minimise ``Σ curve_u[rank_u]``.

    ``curves[u]`` is the unit's error at ranks 0..cap_u (non-increasing in the useful part; rises
    are allowed and skipped); ``costs[u] > 0`` its parameters per rank.
    """
    if len(curves) != len(costs):
        raise ValueError(f"{len(curves)} curves but {len(costs)} costs")
    segments = []  # (gain per parameter, unit, from rank, to rank)
    for u, (curve, cost) in enumerate(zip(curves, costs)):
        curve = np.asarray(curve, np.float64)
        gain = curve[0] - curve
        hull = concave_hull(gain)
        for a, b in zip(hull, hull[1:]):
            slope = (gain[b] - gain[a]) / ((b - a) * cost)
            if slope > 0:
                segments.append((slope, u, a, b))
    segments.sort(key=lambda s: -s[0])
    ranks = [0] * len(curves)
    left = float(budget)
    for _, u, a, b in segments:
        if ranks[u] != a:  # an earlier segment of this unit was cut short: the rest must wait
            continue
        take = min(b - a, int(left // costs[u]))
        if take <= 0:
            continue
        ranks[u] = a + take
        left -= take * costs[u]
    return ranks
