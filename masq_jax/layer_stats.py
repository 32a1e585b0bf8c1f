"""Per-layer statistics of the full-precision linear inputs (spec §2), accumulated in float32.

Four distinct inputs feed the seven linears of a decoder layer: ``qkv`` (q, k, v), ``o``,
``gate_up`` (gate, up) and ``down``. For each we keep, per modality and over all tokens, the
running max of |x| (SmoothQuant / MAS init), the sum of |x| and token counts (AWQ's mean|x|), and,
when CMC needs it, the per-modality Gram matrix XᵀX (whitening covariance before smoothing).
Padding tokens never count.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

NUM_MODALITIES = 3
INPUT_GROUPS = ("qkv", "o", "gate_up", "down")
LINEAR_INPUT = {
    "q_proj": "qkv",
    "k_proj": "qkv",
    "v_proj": "qkv",
    "o_proj": "o",
    "gate_proj": "gate_up",
    "up_proj": "gate_up",
    "down_proj": "down",
}


def empty_stats(dims: dict[str, int], with_gram: bool) -> dict[str, dict[str, jax.Array]]:
    """Zeroed accumulators for input groups of the given widths."""
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
        out[group] = s
    return out


def modality_token_index(modality_ids, valid, multiple: int = 128) -> tuple[np.ndarray, ...]:
    """Host-side flat token indices of each modality (valid tokens only), padded to a multiple of
    ``multiple`` with an out-of-range index (gathers as a zero row): lets ``accumulate`` form each
    modality's Gram from its own tokens instead of three masked products over all of them."""
    mid = np.asarray(modality_ids).reshape(-1)
    ok = np.asarray(valid).reshape(-1).astype(bool)
    out = []
    for m in range(NUM_MODALITIES):
        idx = np.nonzero((mid == m) & ok)[0].astype(np.int32)
        out.append(np.concatenate([idx, np.full((-len(idx)) % multiple, mid.size, np.int32)]))
    return tuple(out)


def accumulate(stats: dict, inputs: dict[str, jax.Array], modality_ids: jax.Array, valid: jax.Array,
               gram_index: tuple[jax.Array, ...] | None = None) -> dict:
    """Fold a batch of linear inputs ``[B, S, in]`` into ``stats`` (pure; jit-able).

    ``gram_index`` (from ``modality_token_index``): gather each modality's tokens for its Gram matrix
    (the FLOPs of one product over all tokens instead of three masked ones); without it, masked.
    """
    onehot = jax.nn.one_hot(modality_ids.reshape(-1), NUM_MODALITIES, dtype=jnp.float32)
    onehot = onehot * valid.reshape(-1, 1).astype(jnp.float32)  # [T, 3]
    new = {}
    for group, acc in stats.items():
        x = inputs[group].reshape(-1, inputs[group].shape[-1]).astype(jnp.float32)
        ax = jnp.abs(x)
        per_mod = jnp.max(ax[None] * onehot.T[:, :, None], axis=1)  # [3, in]
        upd = {
            "absmax": jnp.maximum(acc["absmax"], per_mod),
            "absmax_all": jnp.maximum(acc["absmax_all"], jnp.max(per_mod, axis=0)),
            "abssum": acc["abssum"] + jnp.einsum("tm,ti->mi", onehot, ax, precision="highest"),
            "count": acc["count"] + jnp.sum(onehot, axis=0),
        }
        if "gram" in acc and gram_index is not None:
            grams = []
            for idx in gram_index:
                xg = jnp.take(x, idx, axis=0, mode="fill", fill_value=0.0)
                grams.append(jnp.dot(xg.T, xg, precision="highest"))
            upd["gram"] = acc["gram"] + jnp.stack(grams)
        elif "gram" in acc:
            xm = x[None] * onehot.T[:, :, None]  # [3, T, in]
            upd["gram"] = acc["gram"] + jnp.einsum("mti,mtj->mij", xm, xm, precision="highest")
        new[group] = upd
    return new


def mean_abs(stats_group: dict) -> jax.Array:
    """Per-modality mean |x| ``[3, in]`` (zeros for a modality without tokens)."""
    return stats_group["abssum"] / jnp.maximum(stats_group["count"], 1.0)[:, None]


def mean_abs_all(stats_group: dict) -> jax.Array:
    """All-token mean |x| ``[in]``."""
    return jnp.sum(stats_group["abssum"], axis=0) / jnp.maximum(jnp.sum(stats_group["count"]), 1.0)
