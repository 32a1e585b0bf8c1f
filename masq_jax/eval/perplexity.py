"""Next-token negative log-likelihood and perplexity on text targets (one NLL for every caller)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from masq_jax.modality import TEXT
from masq_jax.models import decoder


def next_token_nll(logits: jax.Array, input_ids: jax.Array, valid: jax.Array,
                   modality_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(Σ NLL, count)`` of next-token prediction over text targets whose context and target are
    real tokens; ``logits`` [B, S, V] of positions 0..S-1, ``input_ids`` [B, S]."""
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, input_ids[:, 1:, None], axis=-1)[..., 0]
    ok = valid[:, 1:] & valid[:, :-1] & (modality_ids[:, 1:] == TEXT)
    return jnp.sum(jnp.where(ok, nll, 0.0)), jnp.sum(ok)


def perplexity(cfg, params_by_name: dict[str, dict], finals: dict[str, jax.Array], data) -> dict | None:
    """``{name: perplexity, ..., "tokens": n}`` from each model's final hidden states (None when the
    data has no token ids). ``params_by_name[name]`` supplies that model's final norm and head."""
    if data.input_ids is None:
        return None
    out = {}
    cnt = 0
    for name, h in finals.items():
        tot, cnt = 0.0, 0
        for k in data.chunks():
            part = data.take(data.batch, k)
            logits = decoder.head(cfg, params_by_name[name], data.take(h, k))
            s, c = next_token_nll(logits, data.take(data.input_ids, k), part.valid, part.modality_ids)
            tot, cnt = tot + float(s), cnt + int(c)
        out[name] = math.exp(tot / max(cnt, 1))
    out["tokens"] = cnt
    return out
