"""SmoothQuant (docs/method.md §3 baselines): one vector per linear from the all-token statistics,
``s = max|x|^α / max|W|^(1-α)``, no learning."""

from __future__ import annotations

import jax.numpy as jnp

from masq_jax.core import smoothing
from masq_jax.methods.base import Method, reference_init
from masq_jax.modality import NUM_MODALITIES


class SmoothQuant(Method):
    name = "smoothquant"
    summary = "one smoothing vector per linear from all tokens' statistics (alpha formula)"

    def init_factors(self, cfg, lp, stats, sample, st, modality_weights):
        def vector(group_stats, w):
            s = smoothing.init_factors(group_stats["absmax_all"], w, alpha=st.alpha)
            return jnp.broadcast_to(s, (NUM_MODALITIES, s.shape[-1]))

        return reference_init(cfg, lp, stats, vector), {}
