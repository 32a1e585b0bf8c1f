"""RTN (docs/method.md §3 baselines): round to nearest, no smoothing."""

from __future__ import annotations

from masq_jax.methods.base import Method


class RTN(Method):
    name = "rtn"
    summary = "round to nearest, no smoothing"
