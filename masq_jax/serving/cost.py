"""What a text-only export costs: the held-out SQNR of an artefact and of its text path alone.

The text-only model is the artefact with every token taking the text path: text's smoothing vector
and weight for all modalities, no low-rank branch. It is what a serving engine runs from the
exported checkpoint (the fold is exact), measured here with masq-jax's own forward on the run's
held-out split (``calibrate.evaluate.reference_and_data``), beside the artefact itself.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from masq_jax.artifact import QuantizedModel
from masq_jax.core.qlinear import QLinear
from masq_jax.modality import NUM_MODALITIES, TEXT


def _text_only_linear(ql: QLinear, per_modality: bool) -> QLinear:
    if per_modality:  # [L, 3, ...]: text's weight, vectors and (empty) factors
        ql = jax.tree_util.tree_map(lambda a: a[:, TEXT], ql)
    s = ql.smooth[:, TEXT:TEXT + 1, :]
    smooth = jnp.broadcast_to(s, s.shape[:1] + (NUM_MODALITIES,) + s.shape[2:])
    n, _, k = smooth.shape
    return QLinear(ql.weight, smooth, jnp.zeros((n, NUM_MODALITIES, k, 0), jnp.float32),
                   jnp.zeros((n, NUM_MODALITIES, 0, ql.out_features), jnp.float32), ql.bias, abits=ql.abits,
                   act_bound=ql.act_bound)


def text_only_model(qmodel: QuantizedModel) -> QuantizedModel:
    """``qmodel`` (loaded with ``merge=False``) with every token on the text path."""
    layers = dict(qmodel.params["layers"])
    for name, value in layers.items():
        if isinstance(value, QLinear):
            layers[name] = _text_only_linear(value, qmodel.per_modality)
    qc = {**qmodel.quantization_config, "per_modality_weights": False}
    return QuantizedModel(qmodel.config, {**qmodel.params, "layers": layers}, qc, implementation=qmodel.implementation)


def text_only_cost(model: str, qmodel: QuantizedModel) -> dict:
    """``{"data", "artefact": {modality: dB}, "text_only": {modality: dB}}``: mean decoder-layer SQNR
    against the FP model on the artefact's held-out split (None for a modality without tokens)."""
    from masq_jax.calibrate.batch import prepare
    from masq_jax.calibrate.evaluate import reference_and_data
    from masq_jax.eval.sqnr import layer_sqnr

    _, cfg, params, data_set, _, source, seq_len = reference_and_data(model, qmodel)
    data = prepare(cfg, params, data_set, seq_len)
    full = layer_sqnr(cfg, params, qmodel, data)[0]["mean"]
    text = layer_sqnr(cfg, params, text_only_model(qmodel), data)[0]["mean"]
    return {"data": source, "artefact": full, "text_only": text}
