"""The modality loss weights of MAS training and the MBQ search (docs/method.md §4): given, or
MBQ-style gradient-derived (``--loss-weights mbq``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax.eval.perplexity import next_token_nll
from masq_jax.modality import NAMES, NUM_MODALITIES, TEXT
from masq_jax.errors import SettingsError
from masq_jax.models import StreamedLayers, decoder
from masq_jax.settings import QuantSettings


def resolve_loss_weights(st: QuantSettings, cfg, params, data) -> tuple[jax.Array, dict]:
    """``(weights [3] float32, report entry)``."""
    if isinstance(st.loss_weights, str):  # "mbq": gradient-derived
        if isinstance(params["layers"], StreamedLayers):
            raise SettingsError("--loss-weights mbq differentiates through the whole model at once; it cannot "
                                "stream layers: give the weights (e.g. --loss-weights 1,1,1) or drop --stream")
        w = gradient_modality_weights(cfg, params, data)
        return jnp.asarray(w, jnp.float32), {"source": "mbq-gradient", **dict(zip(NAMES, map(float, w)))}
    return jnp.asarray(st.loss_weights, jnp.float32), {"source": "given", **dict(zip(NAMES, st.loss_weights))}


def gradient_modality_weights(cfg, params, data, max_samples: int = 16) -> np.ndarray:
    """MBQ-style loss weights: mean |∂loss/∂output| over vision (audio) tokens divided by that over
    text tokens, from the FP model's next-token loss on text targets, averaged over layers.

    Without token ids (embedding-only sets) the loss is the squared norm of the final hidden state.
    """
    n = min(max_samples, data.samples)

    def loss_fn(deltas, h, batch, ids):
        bias = decoder.attention_bias(batch.valid, h.shape[1], h.dtype)

        def body(carry, xs):
            lp, d = xs
            out = decoder.layer_forward(cfg, lp, carry, (batch.cos, batch.sin), bias) + d
            return out, None

        h_n, _ = jax.lax.scan(body, h, (params["layers"], deltas))
        if ids is None:
            return jnp.sum(jnp.where(batch.valid[..., None], h_n, 0.0) ** 2)
        total, count = next_token_nll(decoder.head(cfg, params, h_n), ids, batch.valid, batch.modality_ids)
        return total / jnp.maximum(count, 1)

    grad_fn = jax.jit(jax.grad(loss_fn))
    sums, counts = np.zeros(NUM_MODALITIES), np.zeros(NUM_MODALITIES)
    for j in range(n):
        row = int(data.layout.rows[j])  # the j-th calibration sample, wherever the mesh put it
        sl = slice(row, row + 1)
        deltas = jnp.zeros((cfg.num_layers,) + data.h0[sl].shape, data.h0.dtype)
        ids = None if data.input_ids is None else data.input_ids[sl]
        g = grad_fn(deltas, data.h0[sl], data.batch[sl], ids)
        mag = np.asarray(jnp.mean(jnp.abs(g), axis=(0, -1)))[0]  # [S], averaged over layers and channels
        mid, valid = data.host_modality_ids[row], data.host_valid[row]
        for m in range(NUM_MODALITIES):
            sel = (mid == m) & valid
            sums[m] += mag[sel].sum()
            counts[m] += sel.sum()
    means = sums / np.maximum(counts, 1)
    text = means[TEXT] if counts[TEXT] else 1.0
    w = np.where(counts > 0, means / max(text, 1e-30), 0.0)
    w[TEXT] = 1.0
    return w
