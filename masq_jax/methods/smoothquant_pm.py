"""Per-modality SmoothQuant: each modality's own SmoothQuant vector (the MAS initialisation) with no
training, one weight per modality. Isolates what learning adds on top of per-modality statistics,
and shows that a method is one unit: this module and one line in ``registry.py``."""

from __future__ import annotations

from masq_jax.core import smoothing
from masq_jax.methods.base import Method, fill_absent, reference_init


class PerModalitySmoothQuant(Method):
    name = "smoothquant_pm"
    summary = "each modality's own SmoothQuant vector, no training; one weight per modality"
    per_modality_vectors = True
    per_modality_weights = True

    def init_factors(self, cfg, lp, stats, sample, st, modality_weights):
        def vector(group_stats, w):
            return fill_absent(smoothing.init_factors(group_stats["absmax"], w, alpha=st.alpha), group_stats["count"])

        return reference_init(cfg, lp, stats, vector), {}
