"""The run's own held-out check of a compensating method (docs/method.md §5, "Fold check").

After calibration, the shipped layers and the MAS model this run learned (one weight per modality,
the vectors before compensation) run side by side on CMC's validation fold, errors accumulating
layer by layer as at inference, and their hidden-state SQNR per modality is compared (the same
measure as the held-out evaluation, ``eval.sqnr``). The per-linear guard scores each linear on
full-precision inputs; what builds up across layers, or reaches text through attention to
mis-computed media tokens, shows only here. The fold's samples were never fitted on.
"""

from __future__ import annotations

import numpy as np

from masq_jax.artifact.format import export_layer
from masq_jax.artifact.qmodel import QuantizedLinears
from masq_jax.calibrate.layer import validation_rows
from masq_jax.core.deploy import GUARD_DB
from masq_jax.eval.sqnr import streams_sqnr
from masq_jax.methods import registry
from masq_jax.modality import NAMES
from masq_jax.models import layer_params

GROWTH_LAYERS = 3  # the guard names the layers where the gap to MAS grows most


def fold_set(calibset):
    """The calibration samples of CMC's validation fold (``layer.validation_rows``), or None."""
    n = len(calibset)
    idx = np.nonzero(validation_rows(np.arange(n), n))[0]
    return None if not len(idx) else type(calibset)([calibset[int(i)] for i in idx], calibset.meta)


def fold_check(cfg, params: dict, method, st, results: list, data) -> dict:
    """``{"samples", "shipped", "mas", "per_layer"}``: hidden-state SQNR (dB; mean over layers per
    modality, and per layer) on the prepared fold ``data`` of the shipped model and of MAS's model
    with this run's learned vectors (``LayerResult.trained``)."""
    mas = registry.get("mas")

    def shipped(i):
        return export_layer(method, layer_params(params, i), results[i].factors, results[i].lora, st)

    def mas_layer(i):
        return export_layer(mas, layer_params(params, i), results[i].trained, None, st)

    tables, _, _ = streams_sqnr(cfg, params, {
        "shipped": (shipped, QuantizedLinears(method.per_modality_weights)),
        "mas": (mas_layer, QuantizedLinears(True))}, data)
    return {"samples": data.samples, "shipped": tables["shipped"]["mean"], "mas": tables["mas"]["mean"],
            "per_layer": [{"shipped": s, "mas": m} for s, m in zip(tables["shipped"]["per_layer"],
                                                                    tables["mas"]["per_layer"])]}


def fold_warnings(method_name: str, check: dict) -> list[str]:
    """One line per modality whose shipped model is more than ``GUARD_DB`` below MAS's on the fold,
    naming the layers where the gap grows most."""
    out = []
    for name in NAMES:
        ship, mas = check["shipped"][name], check["mas"][name]
        if ship is None or mas is None or mas - ship <= GUARD_DB:
            continue
        gaps = [0.0] + [r["mas"][name] - r["shipped"][name] for r in check["per_layer"]]
        growth = np.diff(np.asarray(gaps))
        worst = sorted(int(i) for i in np.argsort(-growth)[:GROWTH_LAYERS] if growth[i] > 0)
        out.append(f"{method_name}: model {name}: the shipped model is {mas - ship:.2f} dB below MAS on the validation "
                   f"fold (hidden-state SQNR, mean over layers: {ship:.2f} vs {mas:.2f} dB, {check['samples']} "
                   f"samples) although every linear's deployment was chosen on that fold; the gap grows most at "
                   f"layers {', '.join(map(str, worst))} (error adds up across layers and reaches other tokens "
                   f"through attention); --method mas keeps one weight per modality")
    return out
