"""Merged GEMMs: linears that read one input and share its smoothing vectors become one ``QLinear``.

With ``--tie-smoothing`` (one vector per input group and modality) q/k/v read the same ``x / s_m``,
and so do gate/up: their stored weights are stacked along the output into one linear, so the
activation pre-pass (divide, absmax, round) runs once per group and one GEMM covers the group.
The low-rank factors stack block-diagonally: ``L = [L_q | L_k | L_v]`` along the rank and
``R = diag(R_q, R_k, R_v)``, which gives every member exactly its own ``(x/s_m)·L_m·R_m``.

``qmatmul(..., epilogue="swiglu")`` on a merged gate|up linear returns ``silu(g)·u`` directly: the
gate half is the first ``out/2`` columns, the up half the rest (each half aligned to 64 columns).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax.core.qlinear import QLinear
from masq_jax.core.quant import QArray
from masq_jax.errors import KernelConfigError
from masq_jax.models.decoder import swiglu  # noqa: F401  (the epilogue's reference, re-exported)

SWIGLU_ALIGN = 64  # each half of a merged gate|up linear starts on a 64-column boundary


def _same_layout(qls: Sequence[QLinear]) -> str | None:
    """Why ``qls`` cannot be stacked into one linear (None when they can), from static fields only."""
    a = qls[0]
    for b in qls[1:]:
        wa, wb = a.weight, b.weight
        if (wa.bits, wa.symmetric, wa.group_size, wa.bound) != (wb.bits, wb.symmetric, wb.group_size, wb.bound):
            return "their weight quantizers differ"
        if a.in_features != b.in_features or (a.abits, a.act_bound) != (b.abits, b.act_bound):
            return "their inputs or activation quantizers differ"
        if a.smooth.shape != b.smooth.shape:
            return "their smoothing vectors have different shapes"
    return None


def tied(qls: Sequence[QLinear]) -> bool:
    """Whether ``qls`` (one layer each, or stacked over layers) share one input layout and exactly
    the same smoothing vectors, so ``merge_qlinears`` preserves every output (a host check)."""
    if len(qls) < 2 or _same_layout(qls) is not None:
        return False
    first = np.asarray(jax.device_get(qls[0].smooth))
    return all(np.array_equal(first, np.asarray(jax.device_get(q.smooth))) for q in qls[1:])


def _pad_rows(a: jax.Array, rows: int, axis: int) -> jax.Array:
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, rows - a.shape[axis])
    return jnp.pad(a, pad)


def merge_qlinears(qls: Sequence[QLinear], *, align: int = 1) -> tuple[QLinear, tuple[int, ...]]:
    """``(merged, widths)``: ``qls`` stacked along the output (each member's rows zero-padded to a
    multiple of ``align``; ``widths`` are the padded widths, in order). One layer's QLinears
    (vmap it over stacked layers); the caller checks ``tied`` first. Jit-able."""
    if not qls:
        raise KernelConfigError("merge_qlinears needs at least one QLinear")
    why = _same_layout(qls)
    if why is not None:
        raise KernelConfigError(f"these linears cannot share one GEMM: {why}")
    widths = tuple(-(-q.out_features // align) * align for q in qls)
    n_total, k = sum(widths), qls[0].in_features
    w0 = qls[0].weight
    qvalue = jnp.concatenate([_pad_rows(q.weight.qvalue, n, 0) for q, n in zip(qls, widths)])
    scale = jnp.concatenate([_pad_rows(q.weight.scale, n, 0) for q, n in zip(qls, widths)])
    zp = None
    if w0.zero_point is not None:
        zp = jnp.concatenate([_pad_rows(q.weight.zero_point, n, 0) for q, n in zip(qls, widths)])
    weight = QArray(qvalue, scale, zp, bits=w0.bits, symmetric=w0.symmetric, group_size=w0.group_size,
                    shape=(n_total, k), bound=w0.bound)
    bias = None
    if any(q.bias is not None for q in qls):
        bdt = next(q.bias.dtype for q in qls if q.bias is not None)
        bias = jnp.concatenate([jnp.zeros((n,), bdt) if q.bias is None
                                else _pad_rows(q.bias.astype(bdt), n, 0) for q, n in zip(qls, widths)])
    # Block-diagonal low-rank factors: member i's rank columns of L feed only member i's outputs.
    ldt = jnp.result_type(*(q.lora_l.dtype for q in qls), *(q.lora_r.dtype for q in qls))
    lora_l = jnp.concatenate([q.lora_l.astype(ldt) for q in qls], axis=-1)
    blocks, r0 = [], 0
    r_total = lora_l.shape[-1]
    for q, n in zip(qls, widths):
        r = _pad_rows(q.lora_r.astype(ldt), n, q.lora_r.ndim - 1)  # [3, r_i, n]
        blocks.append(jnp.pad(r, ((0, 0), (r0, r_total - r0 - q.rank), (0, 0))))
        r0 += q.rank
    lora_r = jnp.concatenate(blocks, axis=-1)
    merged = QLinear(weight, qls[0].smooth, lora_l, lora_r, bias, abits=qls[0].abits, act_bound=qls[0].act_bound)
    return merged, widths


def split_outputs(y: jax.Array, widths: Sequence[int], outs: Sequence[int]) -> tuple[jax.Array, ...]:
    """The members' outputs ``[..., out_i]`` from a merged linear's ``[..., Σ widths]``."""
    res, off = [], 0
    for w, n in zip(widths, outs):
        res.append(y[..., off:off + n])
        off += w
    return tuple(res)

