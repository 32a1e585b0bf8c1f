"""Evaluation against the full-precision model: SQNR per layer × modality, perplexity, MBQ weights.

SQNR (spec §7) is measured on decoder-layer outputs: the FP model runs on FP inputs, the quantized
model on its own (quantized) inputs, so errors accumulate as at inference. Layers are streamed one at
a time, so memory stays at two hidden-state tensors whatever the depth.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax import metrics
from masq_jax.models import decoder
from masq_jax.qmodel import quantized_hook

MODALITY_NAMES = ("text", "vision", "audio")
CHUNK = 8


@functools.partial(jax.jit, static_argnames=("cfg",))
def _fp_layer(cfg, lp, h, cos, sin, valid):
    return decoder.layer_forward(cfg, lp, h, (cos, sin), decoder.attention_bias(valid, h.shape[1], h.dtype))


@functools.partial(jax.jit, static_argnames=("cfg", "per_modality", "implementation"))
def _q_layer(cfg, lp, h, cos, sin, valid, mid, per_modality, implementation):
    hook = quantized_hook(mid, per_modality, implementation)
    return decoder.layer_forward(cfg, lp, h, (cos, sin), decoder.attention_bias(valid, h.shape[1], h.dtype),
                                 linear=hook)


def _chunks(n):
    return [slice(i, i + CHUNK) for i in range(0, n, CHUNK)]


def _sqnr_sums(ref, approx, mid, valid):
    """Per-modality (sum of per-token SQNR dB, token count) for one chunk."""
    per_tok = metrics.token_sqnr(ref, approx)  # [B, S]
    out = []
    for m in range(3):
        sel = (mid == m) & valid & jnp.isfinite(per_tok)
        out.append((float(jnp.sum(jnp.where(sel, per_tok, 0.0))), int(jnp.sum(sel))))
    sel = valid & jnp.isfinite(per_tok)
    out.append((float(jnp.sum(jnp.where(sel, per_tok, 0.0))), int(jnp.sum(sel))))
    return out


def sqnr_table(per_layer_sums: list[list[tuple[float, int]]]) -> dict:
    """The report's ``{"per_layer": [...], "mean": {...}}`` from per-layer (sum, count) pairs."""
    rows = []
    for sums in per_layer_sums:
        row = {}
        for name, (s, c) in zip(MODALITY_NAMES + ("all",), sums):
            row[name] = None if c == 0 else s / c
        rows.append({"all": row["all"], **{n: row[n] for n in MODALITY_NAMES}})
    mean = {}
    for key in ("all",) + MODALITY_NAMES:
        vals = [r[key] for r in rows if r[key] is not None]
        mean[key] = None if not vals else float(np.mean(vals))
    return {"per_layer": rows, "mean": mean}


def layer_sqnr(cfg, params, qmodel, data) -> dict:
    """SQNR of every decoder-layer output of ``qmodel`` against the FP model on ``data``."""
    n_layers = cfg.num_layers
    per_layer = []
    h_fp, h_q = data.h0, data.h0
    for i in range(n_layers):
        lp = jax.tree_util.tree_map(lambda a: a[i], params["layers"])
        lq = jax.tree_util.tree_map(lambda a: a[i], qmodel.params["layers"])
        new_fp, new_q, sums = [], [], None
        for sl in _chunks(h_fp.shape[0]):
            f = _fp_layer(cfg, lp, h_fp[sl], data.cos[sl], data.sin[sl], data.valid[sl])
            q = _q_layer(cfg, lq, h_q[sl], data.cos[sl], data.sin[sl], data.valid[sl], data.modality_ids[sl],
                         qmodel.per_modality, qmodel.implementation)
            part = _sqnr_sums(f, q, data.modality_ids[sl], data.valid[sl])
            sums = part if sums is None else [(a + c, b + d) for (a, b), (c, d) in zip(sums, part)]
            new_fp.append(f)
            new_q.append(q)
        h_fp, h_q = jnp.concatenate(new_fp), jnp.concatenate(new_q)
        per_layer.append(sums)
    return {"sqnr": sqnr_table(per_layer), "_final": (h_fp, h_q)}


def _nll_sum(cfg, params, h, ids, valid, mid):
    """Sum of next-token NLL over text targets whose context and target are real tokens."""
    logits = decoder.head(cfg, params, h)[:, :-1]
    tgt = ids[:, 1:]
    ok = valid[:, 1:] & valid[:, :-1] & (mid[:, 1:] == 0)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0]
    return float(jnp.sum(jnp.where(ok, nll, 0.0))), int(jnp.sum(ok))


def perplexity_from_final(cfg, params, qparams, data, h_fp, h_q) -> dict | None:
    """FP and quantized perplexity on text targets (None when the set has no token ids)."""
    if data.input_ids is None:
        return None
    out = {}
    for key, (p, h) in {"fp": (params, h_fp), "quantized": (qparams, h_q)}.items():
        tot, cnt = 0.0, 0
        for sl in _chunks(h.shape[0]):
            s, c = _nll_sum(cfg, p, h[sl], data.input_ids[sl], data.valid[sl], data.modality_ids[sl])
            tot, cnt = tot + s, cnt + c
        out[key] = math.exp(tot / max(cnt, 1))
    out["tokens"] = cnt
    return out


def evaluate(cfg, params, qmodel, data) -> dict:
    """``{"sqnr": ..., "perplexity": ...}`` of a quantized model on prepared data."""
    res = layer_sqnr(cfg, params, qmodel, data)
    h_fp, h_q = res.pop("_final")
    res["perplexity"] = perplexity_from_final(cfg, params, qmodel.params, data, h_fp, h_q)
    return res


def gradient_modality_weights(cfg, params, data, max_samples: int = 16) -> np.ndarray:
    """MBQ-style loss weights (spec §4): mean |∂loss/∂output| over vision (audio) tokens divided by
    that over text tokens, from the FP model's next-token loss on text targets, averaged over layers.

    Without token ids (embedding-only sets) the loss is the squared norm of the final hidden state.
    """
    n = min(max_samples, data.h0.shape[0])

    def loss_fn(deltas, h, cos, sin, valid, mid, ids):
        bias = decoder.attention_bias(valid, h.shape[1], h.dtype)

        def body(carry, xs):
            lp, d = xs
            out = decoder.layer_forward(cfg, lp, carry, (cos, sin), bias) + d
            return out, None

        hN, _ = jax.lax.scan(body, h, (params["layers"], deltas))
        if ids is None:
            return jnp.sum(jnp.where(valid[..., None], hN, 0.0) ** 2)
        logits = decoder.head(cfg, params, hN)[:, :-1]
        logp = jax.nn.log_softmax(logits, axis=-1)
        nll = -jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]
        ok = valid[:, 1:] & valid[:, :-1] & (mid[:, 1:] == 0)
        return jnp.sum(jnp.where(ok, nll, 0.0)) / jnp.maximum(jnp.sum(ok), 1)

    grad_fn = jax.jit(jax.grad(loss_fn))
    sums, counts = np.zeros(3), np.zeros(3)
    for j in range(n):
        sl = slice(j, j + 1)
        deltas = jnp.zeros((cfg.num_layers,) + data.h0[sl].shape, data.h0.dtype)
        ids = None if data.input_ids is None else data.input_ids[sl]
        g = grad_fn(deltas, data.h0[sl], data.cos[sl], data.sin[sl], data.valid[sl], data.modality_ids[sl], ids)
        mag = np.asarray(jnp.mean(jnp.abs(g), axis=(0, -1)))[0]  # [S], averaged over layers and channels
        mid, valid = np.asarray(data.modality_ids[j]), np.asarray(data.valid[j])
        for m in range(3):
            sel = (mid == m) & valid
            sums[m] += mag[sel].sum()
            counts[m] += sel.sum()
    means = sums / np.maximum(counts, 1)
    text = means[0] if counts[0] else 1.0
    w = np.where(counts > 0, means / max(text, 1e-30), 0.0)
    w[0] = 1.0
    return w
