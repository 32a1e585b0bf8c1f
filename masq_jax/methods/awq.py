"""AWQ (docs/method.md §3 baselines): ``s = mean|x|^α`` with α grid-searched per linear on the
output error (weight-only for W4A16), every token weighted alike.

``AlphaSearch`` is the shared shape of the searched baselines (AWQ and MBQ-like): per smoothed
linear, one ``core.search.search_alpha`` over a candidate family, on a sample of the layer's tokens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from masq_jax.core import search, stats as core_stats
from masq_jax.methods.base import SMOOTHED, TIE_GROUPS, Method, ones_factors
from masq_jax.models import decoder
from masq_jax.modality import NUM_MODALITIES


class AlphaSearch(Method):
    """A vector family ``s(α)`` searched per linear; subclasses give the family and token weights."""

    def candidates(self, group_stats: dict, weight: jax.Array) -> search.Candidates:
        raise NotImplementedError

    def token_weights(self, modality_ids: jax.Array, modality_weights: jax.Array) -> jax.Array | None:
        """Weight of each sampled token's error (None: all alike)."""
        return None

    def init_factors(self, cfg, lp, stats, sample, st, modality_weights):
        factors, alphas = ones_factors(cfg), {}
        lam = self.token_weights(sample["modality_ids"], modality_weights)
        # Untied: one search per linear. --tie-smoothing: one per input group, on the group's weights
        # stacked along the output (AWQ's own grouping: the q/k/v outputs' error together).
        groups = TIE_GROUPS.values() if st.tie_smoothing else [(n,) for n in SMOOTHED]
        for names in groups:
            group = decoder.INPUT_OF[names[0]]
            w = jnp.concatenate([lp[n]["w"].astype(jnp.float32) for n in names])
            res = search.search_alpha(sample[group], w, self.candidates(stats[group], w), weights=st.weights,
                                      activations=st.activations, token_weights=lam)
            for name in names:
                factors[name] = jnp.broadcast_to(res.smooth, (NUM_MODALITIES, res.smooth.shape[-1]))
                alphas[name] = float(res.alpha)
        return factors, alphas


class AWQ(AlphaSearch):
    name = "awq"
    summary = "activation-aware scales mean|x|^alpha, alpha grid-searched per linear (weight-only error)"

    def candidates(self, group_stats, weight):
        return search.awq_candidates(core_stats.mean_abs_all(group_stats))
