"""Metrics of docs/method.md §7: token-averaged SQNR (overall and per modality) and effective rank.

``sqnr`` and ``sqnr_by_modality`` are jit-able (arrays in, arrays out); ``sqnr_table`` turns the
result into the plain ``{"all", "text", "vision", "audio"}`` dict (``None`` for an absent modality)
used in report.json.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from masq_jax.core.checks import check_tokens
from masq_jax.errors import CoreInputError
from masq_jax.modality import NAMES, NUM_MODALITIES


def token_sqnr(ref: jax.Array, approx: jax.Array) -> jax.Array:
    """Per-token SQNR in dB, ``10·log10(mean(x²)/mean((x−x̂)²))`` over the last axis (float32).

    An exact token gives +inf; an all-zero reference token reproduced exactly gives NaN.
    """
    if ref.shape != approx.shape:
        raise CoreInputError(f"ref and approx must have the same shape, got {tuple(ref.shape)} and {tuple(approx.shape)}")
    if ref.ndim < 1:
        raise CoreInputError("ref must be [..., features]")
    r = ref.astype(jnp.float32)
    e = r - approx.astype(jnp.float32)
    return 10.0 * (jnp.log10(jnp.mean(r * r, axis=-1)) - jnp.log10(jnp.mean(e * e, axis=-1)))


def sqnr(ref: jax.Array, approx: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Token-averaged SQNR in dB (docs/method.md §7); ``mask`` [...] selects the tokens (NaN if none)."""
    t = token_sqnr(ref, approx)
    if mask is None:
        return jnp.mean(t)
    if mask.shape != t.shape:
        raise CoreInputError(f"mask must have shape ref.shape[:-1]={tuple(t.shape)}, got {tuple(mask.shape)}")
    mask = mask.astype(bool)
    n = jnp.sum(mask)
    total = jnp.sum(jnp.where(mask, t, 0.0))
    return jnp.where(n > 0, total / jnp.maximum(n, 1), jnp.nan)


def sqnr_by_modality(ref: jax.Array, approx: jax.Array, modality_ids: jax.Array,
                     valid: jax.Array | None = None) -> jax.Array:
    """Per-modality token-averaged SQNR, float32 [3] (text, vision, audio); NaN for an absent modality."""
    check_tokens(ref, modality_ids, valid)
    t = token_sqnr(ref, approx)
    ok = jnp.ones(t.shape, bool) if valid is None else valid.astype(bool)
    out = []
    for m in range(NUM_MODALITIES):
        sel = ok & (modality_ids == m)
        n = jnp.sum(sel)
        out.append(jnp.where(n > 0, jnp.sum(jnp.where(sel, t, 0.0)) / jnp.maximum(n, 1), jnp.nan))
    return jnp.stack(out)


@jax.jit
def _sqnr_all_and_by_modality(ref, approx, modality_ids, valid):
    return sqnr(ref, approx, valid), sqnr_by_modality(ref, approx, modality_ids, valid)


def sqnr_table(ref, approx, modality_ids, valid=None) -> dict[str, float | None]:
    """``{"all": dB, "text": dB, "vision": dB, "audio": dB}`` as Python floats, ``None`` when absent."""
    ref, approx, mid = jnp.asarray(ref), jnp.asarray(approx), jnp.asarray(modality_ids)
    check_tokens(ref, mid, valid)
    valid = jnp.ones(mid.shape, bool) if valid is None else jnp.asarray(valid, bool)
    allv, per = jax.device_get(_sqnr_all_and_by_modality(ref, approx, mid, valid))
    out = {"all": None if allv != allv else float(allv)}
    for name, v in zip(NAMES, per):
        out[name] = None if v != v else float(v)
    return out


def sqnr_sums(ref: jax.Array, approx: jax.Array, modality_ids: jax.Array,
              valid: jax.Array) -> list[tuple[float, int]]:
    """``[(Σ token SQNR dB, token count)]`` for text, vision, audio and all tokens, over valid tokens
    with a finite SQNR: the per-chunk sums that stream into a per-layer mean (``masq_jax.eval.sqnr``)."""
    per_tok = token_sqnr(ref, approx)
    out = []
    for m in range(NUM_MODALITIES):
        sel = (modality_ids == m) & valid & jnp.isfinite(per_tok)
        out.append((float(jnp.sum(jnp.where(sel, per_tok, 0.0))), int(jnp.sum(sel))))
    sel = valid & jnp.isfinite(per_tok)
    out.append((float(jnp.sum(jnp.where(sel, per_tok, 0.0))), int(jnp.sum(sel))))
    return out


def effective_rank(singular_values: jax.Array) -> jax.Array:
    """``exp(entropy(σ/Σσ))`` over the last axis (docs/method.md §5, the paper's Figure 5); 0 for an all-zero spectrum."""
    s = jnp.abs(singular_values.astype(jnp.promote_types(singular_values.dtype, jnp.float32)))
    tot = jnp.sum(s, axis=-1, keepdims=True)
    p = s / jnp.where(tot > 0, tot, 1.0)
    ent = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)
    return jnp.where(tot[..., 0] > 0, jnp.exp(ent), 0.0)
