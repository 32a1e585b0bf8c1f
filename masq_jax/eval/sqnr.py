"""SQNR per decoder layer × modality of a quantized model against its full-precision model
(docs/method.md §7), and the comparison a run reports (SQNR + perplexity).

SQNR is measured on decoder-layer outputs: the FP model runs on FP inputs, the quantized model on
its own (quantized) inputs, so errors accumulate as at inference. Layers are streamed one at a time,
so memory stays at two hidden-state tensors whatever the depth.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import numpy as np

from masq_jax.core import metrics
from masq_jax.eval.perplexity import perplexity
from masq_jax.modality import NAMES
from masq_jax.models import layer_params

COLUMNS = ("all",) + NAMES  # the columns of every SQNR table


@functools.partial(jax.jit, static_argnames=("cfg", "linears"))
def _layer(cfg, lp, h, batch, linears):
    """One decoder layer; ``linears`` (static) is a model's linear factory, None for dense FP."""
    return batch.layer(cfg, lp, h) if linears is None else batch.layer(cfg, lp, h, linear=linears(batch.modality_ids))


def sqnr_report(per_layer_sums: list[list[tuple[float, int]]]) -> dict:
    """``{"per_layer": [{"all", "text", "vision", "audio"}...], "mean": {...}}`` (None where a
    modality has no tokens) from per-layer ``metrics.sqnr_sums``."""
    rows = []
    for sums in per_layer_sums:
        row = {name: (None if c == 0 else s / c) for name, (s, c) in zip(NAMES + ("all",), sums)}
        rows.append({k: row[k] for k in COLUMNS})
    mean = {}
    for key in COLUMNS:
        vals = [r[key] for r in rows if r[key] is not None]
        mean[key] = None if not vals else float(np.mean(vals))
    return {"per_layer": rows, "mean": mean}


def layer_sqnr(cfg, params: dict, qmodel, data) -> tuple[dict, jax.Array, jax.Array]:
    """``(sqnr report, final FP hidden states, final quantized hidden states)`` of ``qmodel`` (a
    ``QuantizedModel``) against the FP ``params`` on prepared ``data``."""
    qlayers = qmodel.params["layers"]
    tables, h_fp, h_q = streams_sqnr(cfg, params, {"q": (lambda i: jax.tree_util.tree_map(lambda a: a[i], qlayers),
                                                         qmodel.linears)}, data)
    return tables["q"], h_fp, h_q["q"]


def streams_sqnr(cfg, params: dict, models: dict[str, tuple[Callable[[int], dict], Callable]],
                 data) -> tuple[dict[str, dict], jax.Array, dict[str, jax.Array]]:
    """``({name: sqnr report}, final FP hidden states, {name: final hidden states})`` of several
    quantized models run side by side on ``data``: ``models[name] = (layer i -> its quantized layer
    params, its linear factory)`` (``artifact.qmodel.QuantizedLinears``); one FP pass serves them all."""
    per_layer = {k: [] for k in models}
    h_fp, h_q = data.h0, {k: data.h0 for k in models}
    for i in range(cfg.num_layers):
        lp = layer_params(params, i)  # FP layers may stream from disk
        lq = {k: layer(i) for k, (layer, _) in models.items()}
        new_fp, new_q, sums = [], {k: [] for k in models}, {k: None for k in models}
        for c in data.chunks():
            part = data.take(data.batch, c)
            f = _layer(cfg, lp, data.take(h_fp, c), part, None)
            new_fp.append(f)
            for k, (_, linears) in models.items():
                q = _layer(cfg, lq[k], data.take(h_q[k], c), part, linears)
                chunk_sums = metrics.sqnr_sums(f, q, part.modality_ids, part.valid)
                sums[k] = chunk_sums if sums[k] is None else [(a + c, b + d) for (a, b), (c, d) in
                                                              zip(sums[k], chunk_sums)]
                new_q[k].append(q)
        h_fp, h_q = data.put(new_fp), {k: data.put(v) for k, v in new_q.items()}
        for k in models:
            per_layer[k].append(sums[k])
    return {k: sqnr_report(v) for k, v in per_layer.items()}, h_fp, h_q


def compare(cfg, params: dict, qmodel, data) -> dict:
    """``{"sqnr": ..., "perplexity": ...}`` of a quantized model against the FP one on prepared data."""
    table, h_fp, h_q = layer_sqnr(cfg, params, qmodel, data)
    ppl = perplexity(cfg, {"fp": params, "quantized": qmodel.params}, {"fp": h_fp, "quantized": h_q}, data)
    return {"sqnr": table, "perplexity": ppl}
