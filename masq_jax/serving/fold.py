"""Folding smoothing vectors into the model itself, so a checkpoint needs no custom op (pure NumPy).

A smoothed linear computes ``y = Q_a(x / s) · Wqᵀ + b`` with ``Wq = Q_w(W · diag(s))``. A serving
engine runs ``y = Q_a(x') · Wqᵀ + b``, so ``x' = x / s`` must come out of the op that produces ``x``:

* q/k/v read ``rms_norm(h) · γ_in``: ``γ_in / s`` gives ``x / s`` when q, k and v share ``s``;
* gate/up read ``rms_norm(h) · γ_post``: the same, when gate and up share ``s``;
* o_proj reads the attention output, linear in v: dividing v_proj's output row ``(g, d)`` (its weight
  row and bias) by ``s_o[h·D + d]`` divides the output of every query head ``h`` of KV group ``g``, so
  it is exact when those heads share the value (always for MHA, where each group has one head);
* down_proj reads ``silu(gate) · up``, linear in up: dividing up_proj's output row ``j`` by
  ``s_down[j]`` is exact.

Dividing a quantized weight's row divides its scales (per row or per group of that row), so the
integer values stay as they are. Every function here returns what to divide by, or raises
``ExportError`` naming the first linear whose vectors cannot be folded.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from masq_jax.errors import MasqError

QKV_GROUP = ("q_proj", "k_proj", "v_proj")
GATE_UP_GROUP = ("gate_proj", "up_proj")


class ExportError(MasqError):
    """An artefact (or request) that cannot be written in the asked checkpoint format."""


@dataclasses.dataclass(frozen=True)
class FoldPlan:
    """What one layer's folded tensors are divided by: the two RMSNorm weights ``[H]``, v_proj's
    output rows ``[nKV·D]`` (weight and bias) and up_proj's output rows ``[I]``."""

    input_norm: np.ndarray
    post_attn_norm: np.ndarray
    v_rows: np.ndarray
    up_rows: np.ndarray


def _shared(vectors: dict[str, np.ndarray], group: tuple[str, ...], into: str, layer: int) -> np.ndarray:
    first = vectors[group[0]]
    for name in group[1:]:
        if not np.array_equal(vectors[name], first):
            raise ExportError(f"layer {layer} {name}: its smoothing vector differs from {group[0]}'s, so it cannot be "
                              f"folded into {into}; export needs one vector per input group (calibrate with "
                              "--tie-smoothing)")
    return first


def o_proj_rows(s_o: np.ndarray, num_heads: int, num_kv_heads: int, head_dim: int, layer: int = 0) -> np.ndarray:
    """v_proj's output-row divisors ``[nKV·D]`` for o_proj's vector ``s_o`` ``[nH·D]``; raises when the
    query heads of a KV group do not share their values (GQA)."""
    group = num_heads // num_kv_heads
    s = np.asarray(s_o).reshape(num_kv_heads, group, head_dim)
    if not (s == s[:, :1]).all():
        raise ExportError(f"layer {layer} o_proj: its smoothing vector differs between the {group} query heads of a "
                          f"KV group ({num_heads} heads, {num_kv_heads} KV heads), so it cannot be folded into "
                          "v_proj's rows; export a method that leaves o_proj unsmoothed (RTN) or a model without GQA")
    return s[:, 0].reshape(-1)


def fold_plan(vectors: dict[str, np.ndarray], num_heads: int, num_kv_heads: int, head_dim: int,
              layer: int = 0) -> FoldPlan:
    """The divisors of one layer from its seven smoothing vectors ``{linear: [in]}`` (one modality)."""
    return FoldPlan(
        input_norm=_shared(vectors, QKV_GROUP, "input_layernorm", layer),
        post_attn_norm=_shared(vectors, GATE_UP_GROUP, "post_attention_layernorm", layer),
        v_rows=o_proj_rows(vectors["o_proj"], num_heads, num_kv_heads, head_dim, layer),
        up_rows=np.asarray(vectors["down_proj"]),
    )


def fold_fp_layer(lp: dict, vectors: dict[str, np.ndarray], num_heads: int, num_kv_heads: int,
                  head_dim: int) -> dict:
    """A full-precision layer (``masq_jax.models`` layout, no layer axis) with smoothing applied and
    folded: every weight becomes ``W · diag(s)``, the norms and v/up rows absorb ``1/s``. Its outputs
    equal the original layer's up to rounding (the float64 check of the fold)."""
    plan = fold_plan(vectors, num_heads, num_kv_heads, head_dim)
    out = {"input_norm": lp["input_norm"] / plan.input_norm,
           "post_attn_norm": lp["post_attn_norm"] / plan.post_attn_norm}
    for name, s in vectors.items():
        p = dict(lp[name])
        p["w"] = p["w"] * s[None, :]
        out[name] = p
    rows = {"v_proj": plan.v_rows, "up_proj": plan.up_rows}
    for name, r in rows.items():
        out[name]["w"] = out[name]["w"] / r[:, None]
        if out[name].get("b") is not None:
            out[name]["b"] = out[name]["b"] / r
    return out
