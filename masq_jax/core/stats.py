"""Statistics of full-precision linear inputs (docs/method.md §2), accumulated in float32.

One implementation serves one linear (``modality_absmax``, ``absmax``, ``modality_counts``,
``gram``) and a whole decoder layer (``empty_stats`` + ``accumulate``, which keeps, for each of
the four distinct linear inputs ``qkv``, ``o``, ``gate_up``, ``down``, per modality and over all
tokens: the running max of |x| (SmoothQuant / MAS init), the sum of |x| and token counts (AWQ's
mean|x|), and when CMC needs it the per-modality Gram matrix XᵀX). Padding tokens never count.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax.core.checks import check_tokens
from masq_jax.modality import NUM_MODALITIES

HIGHEST = jax.lax.Precision.HIGHEST


def _onehot(modality_ids: jax.Array, valid: jax.Array | None) -> jax.Array:
    """``[T, 3]`` float32 membership of each (valid) token in each modality."""
    onehot = jax.nn.one_hot(modality_ids.reshape(-1), NUM_MODALITIES, dtype=jnp.float32)
    if valid is None:
        return onehot
    return onehot * valid.reshape(-1, 1).astype(jnp.float32)


def _per_modality_max(ax: jax.Array, onehot: jax.Array) -> jax.Array:
    """``[3, in]`` max over each modality's tokens of ``ax`` ``[T, in]`` (>= 0; 0 when absent)."""
    return jnp.max(ax[None] * onehot.T[:, :, None], axis=1, initial=0.0)


def modality_absmax(x: jax.Array, modality_ids: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """Per-modality per-input-channel max |x|: ``[3, in]`` float32, zeros for an absent modality.

    ``x`` [..., in]; ``modality_ids`` [...]; ``valid`` [...] bool marks real (non-padding) tokens.
    """
    check_tokens(x, modality_ids, valid)
    ax = jnp.abs(x.reshape(-1, x.shape[-1]).astype(jnp.float32))
    return _per_modality_max(ax, _onehot(modality_ids, valid))


def absmax(x: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """All-token per-input-channel max |x| (``[in]`` float32): SmoothQuant's statistic."""
    check_tokens(x, None, valid)
    return jnp.max(modality_absmax(x, jnp.zeros(x.shape[:-1], jnp.int32), valid), axis=0)


def modality_counts(modality_ids: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """Number of (valid) tokens per modality, int32 ``[3]``."""
    return jnp.sum(_onehot(modality_ids, valid), axis=0).astype(jnp.int32)


def gram(x: jax.Array, modality_ids: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """Per-modality Gram matrices ``Σ_{t∈m} x_tᵀ x_t``: ``[3, in, in]`` float32 (masked products)."""
    check_tokens(x, modality_ids, valid)
    return _masked_gram(x.reshape(-1, x.shape[-1]).astype(jnp.float32), _onehot(modality_ids, valid))


def _masked_gram(x2: jax.Array, onehot: jax.Array) -> jax.Array:
    xm = x2[None] * onehot.T[:, :, None]  # [3, T, in]
    return jnp.einsum("mti,mtj->mij", xm, xm, precision="highest")


def empty_stats(dims: dict[str, int], with_gram: bool | str) -> dict[str, dict[str, jax.Array]]:
    """Zeroed accumulators for input groups of the given widths; ``with_gram="validation"`` adds the
    Gram matrices and token counts of a validation fold (``gram_val``, ``count_val``)."""
    out = {}
    for group, d in dims.items():
        s = {
            "absmax": jnp.zeros((NUM_MODALITIES, d), jnp.float32),
            "absmax_all": jnp.zeros((d,), jnp.float32),
            "abssum": jnp.zeros((NUM_MODALITIES, d), jnp.float32),
            "count": jnp.zeros((NUM_MODALITIES,), jnp.float32),
        }
        if with_gram:
            s["gram"] = jnp.zeros((NUM_MODALITIES, d, d), jnp.float32)
            if with_gram == "validation":  # CMC's held-out fold: its own Gram and counts besides the totals
                s["gram_val"] = jnp.zeros((NUM_MODALITIES, d, d), jnp.float32)
                s["count_val"] = jnp.zeros((NUM_MODALITIES,), jnp.float32)
        out[group] = s
    return out


def modality_token_index(modality_ids, valid, multiple: int = 128, shards: int = 1) -> tuple[np.ndarray, ...]:
    """Host-side flat token indices of each modality (valid tokens only), padded to a multiple of
    ``multiple`` with an out-of-range index (gathers as a zero row): lets ``accumulate`` form each
    modality's Gram from its own tokens instead of three masked products over all of them.

    ``shards > 1`` (samples split in equal blocks over the mesh's data axis): each block gets its
    own local indices, padded to one length, concatenated ``[shards · K]`` (gathered where the tokens live).
    """
    mid = np.asarray(modality_ids).reshape(shards, -1)
    ok = np.asarray(valid).reshape(shards, -1).astype(bool)
    out = []
    for m in range(NUM_MODALITIES):
        local = [np.nonzero((mid[d] == m) & ok[d])[0].astype(np.int32) for d in range(shards)]
        width = max(len(i) for i in local)
        width += (-width) % multiple
        if shards > 1:
            width = max(width, multiple)  # every block gathers at least one padded row
        out.append(np.concatenate([np.concatenate([i, np.full(width - len(i), mid.shape[1], np.int32)])
                                   for i in local]))
    return tuple(out)


def accumulate(stats: dict, inputs: dict[str, jax.Array], modality_ids: jax.Array, valid: jax.Array,
               gram_index: tuple[jax.Array, ...] | None = None, val_index: tuple[jax.Array, ...] | None = None,
               val_valid: jax.Array | None = None, shards: int = 1) -> dict:
    """Fold a batch of linear inputs ``[B, S, in]`` into ``stats`` (pure; jit-able).

    ``gram_index`` (from ``modality_token_index``): gather each modality's tokens for its Gram matrix
    (the FLOPs of one product over all tokens instead of three masked ones); without it, masked.
    ``val_index`` / ``val_valid``: the same for the tokens of the validation fold (``gram_val``,
    ``count_val``; they also count in the totals). ``shards``: the indices are per block of samples
    (``modality_token_index(..., shards=)``), so each device gathers its own tokens and one sum
    across the mesh's data axis completes the Gram.
    """
    onehot = _onehot(modality_ids, valid)  # [T, 3]
    new = {}
    for group, acc in stats.items():
        x = inputs[group].reshape(-1, inputs[group].shape[-1]).astype(jnp.float32)
        ax = jnp.abs(x)
        per_mod = _per_modality_max(ax, onehot)
        upd = {
            "absmax": jnp.maximum(acc["absmax"], per_mod),
            "absmax_all": jnp.maximum(acc["absmax_all"], jnp.max(per_mod, axis=0)),
            "abssum": acc["abssum"] + jnp.einsum("tm,ti->mi", onehot, ax, precision="highest"),
            "count": acc["count"] + jnp.sum(onehot, axis=0),
        }
        if "gram" in acc and gram_index is not None:
            upd["gram"] = acc["gram"] + _indexed_gram(x, gram_index, shards)
        elif "gram" in acc:
            upd["gram"] = acc["gram"] + _masked_gram(x, onehot)
        if "gram_val" in acc:
            upd["gram_val"] = acc["gram_val"] + _indexed_gram(x, val_index, shards)
            upd["count_val"] = acc["count_val"] + jnp.sum(_onehot(modality_ids, val_valid), axis=0)
        new[group] = upd
    return new


def _indexed_gram(x: jax.Array, index: tuple[jax.Array, ...], shards: int = 1) -> jax.Array:
    """``[3, in, in]``: each modality's Gram from its gathered token rows (out-of-range rows are zero);
    with ``shards`` blocks, a block-local gather per block and a sum over blocks."""
    grams = []
    for idx in index:
        if shards == 1:
            xg = jnp.take(x, idx, axis=0, mode="fill", fill_value=0.0)
            grams.append(jnp.dot(xg.T, xg, precision="highest"))
            continue
        xb = x.reshape(shards, -1, x.shape[-1])
        take = jax.vmap(lambda a, i: jnp.take(a, i, axis=0, mode="fill", fill_value=0.0))
        xg = take(xb, idx.reshape(shards, -1))
        grams.append(jnp.einsum("dki,dkj->ij", xg, xg, precision="highest"))
    return jnp.stack(grams)


def mean_abs(stats_group: dict) -> jax.Array:
    """Per-modality mean |x| ``[3, in]`` (zeros for a modality without tokens)."""
    return stats_group["abssum"] / jnp.maximum(stats_group["count"], 1.0)[:, None]


def mean_abs_all(stats_group: dict) -> jax.Array:
    """All-token mean |x| ``[in]``."""
    return jnp.sum(stats_group["abssum"], axis=0) / jnp.maximum(jnp.sum(stats_group["count"]), 1.0)
