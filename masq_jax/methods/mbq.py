"""MBQ-like (docs/method.md §3 baselines): the SmoothQuant family ``max|x|^α / max|W|^(1-α)`` with α
grid-searched per linear on an output error that weights each modality's tokens (the loss weights,
gradient-derived with ``--loss-weights mbq``)."""

from __future__ import annotations

import jax.numpy as jnp

from masq_jax.core import search
from masq_jax.methods.awq import AlphaSearch


class MBQ(AlphaSearch):
    name = "mbq"
    summary = "SmoothQuant-family alpha searched per linear on a modality-weighted output error"

    def candidates(self, group_stats, weight):
        return search.smoothquant_candidates(group_stats["absmax_all"], weight)

    def token_weights(self, modality_ids, modality_weights):
        return jnp.asarray(modality_weights, jnp.float32)[modality_ids]
