"""XLA implementation of ``qmatmul`` (docs/method.md §6) and the activation pre-pass shared with the kernels.

The integer settings (abits <= 8, symmetric per-channel weights) run a real integer GEMM:
``lax.dot_general(int8, int8, preferred_element_type=int32)`` then ``acc · s_a[t] · s_w[n]``, which
is exact on the integer accumulation and equals ``qlinear_reference`` up to float32 rounding. The
other settings dequantize and multiply in the input's precision (float32 at HIGHEST for float32
input, so it equals the reference; bf16 operands with float32 accumulation for bf16 input).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from masq_jax.kernels.prepare import INT, PreparedQLinear, mode_of, weight_int_nk
from masq_jax.core.qlinear import QLinear
from masq_jax.core.quant import SCALE_MAX, SCALE_MIN, dequantize, int_values, symmetric_range
from masq_jax.modality import AUDIO, TEXT, VISION

HIGHEST = jax.lax.Precision.HIGHEST


def select_smooth(smooth: jax.Array, mid: jax.Array | None) -> jax.Array:
    """Per-token smoothing rows ``[T, K]`` (``[1, K]`` when every token is text, ``mid is None``)."""
    s = smooth.astype(jnp.float32)
    if mid is None:
        return s[TEXT][None, :]
    m = mid[:, None]
    return jnp.where(m == TEXT, s[TEXT][None], jnp.where(m == VISION, s[VISION][None], s[AUDIO][None]))


def smoothed(x2: jax.Array, smooth: jax.Array, mid: jax.Array | None) -> jax.Array:
    """``x / s_m`` in float32, with the reference's exact arithmetic (a division, not a reciprocal)."""
    return x2.astype(jnp.float32) / select_smooth(smooth, mid)


def quantize_activations(xs: jax.Array, abits: int, bound: str) -> tuple[jax.Array, jax.Array]:
    """Dynamic per-token symmetric quantization (docs/method.md §1): int8 values ``[T, K]`` and scale ``[T, 1]``.

    Same operations as ``masq_jax.core.quant.fake_quant``, so the integers are identical to the reference's.
    """
    divisor, qmin, qmax = symmetric_range(abits, bound)
    absmax = jnp.max(jnp.abs(xs), axis=-1, keepdims=True)
    scale = jnp.clip(absmax / divisor, SCALE_MIN, SCALE_MAX)
    q = jnp.clip(jnp.round(xs / scale), qmin, qmax).astype(jnp.int8)
    return q, scale


def _compute_dtype(dtype):
    return jnp.float32 if jnp.dtype(dtype) == jnp.float32 else jnp.bfloat16


def _fdot(a: jax.Array, b: jax.Array, cd) -> jax.Array:
    """``a @ b`` in compute dtype ``cd`` with float32 accumulation (HIGHEST when ``cd`` is float32)."""
    prec = HIGHEST if cd == jnp.float32 else None
    return jnp.dot(a.astype(cd), b.astype(cd), precision=prec, preferred_element_type=jnp.float32)


def _int_dot(q: jax.Array, w: jax.Array, w_contract: int) -> jax.Array:
    dims = (((1,), (w_contract,)), ((), ()))
    return jax.lax.dot_general(q, w, dims, preferred_element_type=jnp.int32)


def _flatten(x: jax.Array, modality_ids: jax.Array | None):
    x2 = x.reshape(-1, x.shape[-1])
    mid = None if modality_ids is None else modality_ids.reshape(-1).astype(jnp.int32)
    return x2, mid


def qmatmul_xla_qlinear(x: jax.Array, modality_ids: jax.Array | None, ql: QLinear) -> jax.Array:
    """Spec §6 on a ``QLinear`` (the XLA reference path). ``modality_ids=None`` means all text."""
    lead = x.shape[:-1]
    x2, mid = _flatten(x, modality_ids)
    cd = _compute_dtype(x.dtype)
    xs = smoothed(x2, ql.smooth, mid)
    if mode_of(ql) == INT:
        q, sa = quantize_activations(xs, ql.abits, ql.act_bound)
        acc = _int_dot(q, int_values(ql.weight).astype(jnp.int8), 1)  # [T, N]
        y = acc.astype(jnp.float32) * sa * ql.weight.scale[:, 0, 0].astype(jnp.float32)[None, :]
    else:
        xa = xs
        if ql.abits < 16:
            q, sa = quantize_activations(xs, ql.abits, ql.act_bound)
            xa = q.astype(jnp.float32) * sa
        y = _fdot(xa, dequantize(ql.weight, jnp.float32).T, cd)
    if ql.rank and mid is not None:
        for m in (VISION, AUDIO):
            up = _fdot(_fdot(xs, ql.lora_l[m], cd), ql.lora_r[m], cd)
            y = y + jnp.where((mid == m)[:, None], up, 0.0)
    if ql.bias is not None:
        y = y + ql.bias.astype(jnp.float32)
    return y.reshape(*lead, -1).astype(x.dtype)


def lowrank_down(x2: jax.Array, mid: jax.Array, p: PreparedQLinear) -> jax.Array:
    """Folded down-projection ``x · diag(1/s_m) L_m`` for both non-text modalities, ``[T, 2·rp]``
    float32, zero outside each token's own modality (so the up-projection needs no gather)."""
    d = jnp.dot(x2.astype(p.lora_l.dtype), p.lora_l, preferred_element_type=jnp.float32)
    rp = p.rank_pad
    col_mod = jnp.where(jnp.arange(2 * rp) < rp, VISION, AUDIO)
    return jnp.where(mid[:, None] == col_mod[None, :], d, 0.0)


def dequantized_nk(p: PreparedQLinear, dtype=jnp.float32) -> jax.Array:
    """Dequantized weight ``[N, K]`` (unpadded) in ``dtype``; one elementwise XLA fusion."""
    q = weight_int_nk(p)[: p.out_features, : p.in_features].astype(jnp.float32)
    sc, sh = p.wscale.T[: p.out_features], None if p.wshift is None else p.wshift.T[: p.out_features]
    if p.group_size is not None:
        sc = jnp.repeat(sc, p.group_size, axis=1)[:, : p.in_features]
        sh = None if sh is None else jnp.repeat(sh, p.group_size, axis=1)[:, : p.in_features]
    w = q * sc if sh is None else q * sc + sh
    return w.astype(dtype)


def dequantized_kn(p: PreparedQLinear) -> jax.Array:
    """Float32 weight ``[K, N]`` (unpadded) from the prepared layout."""
    return dequantized_nk(p, jnp.float32).T


def epilogue_xla(y, sa, p: PreparedQLinear, d):
    """Scale (integer mode), bias and low-rank up-projection on a ``[T, Np]`` accumulator."""
    y = y.astype(jnp.float32)
    if sa is not None:
        y = y * sa * p.wscale[0][None, :]
    if p.bias is not None:
        y = y + p.bias
    if d is not None:
        y = y + jnp.dot(d.astype(p.lora_r.dtype), p.lora_r, preferred_element_type=jnp.float32)
    return y


def qmatmul_xla_prepared(x: jax.Array, modality_ids: jax.Array | None, p: PreparedQLinear) -> jax.Array:
    """Spec §6 on a ``PreparedQLinear`` in plain XLA (the fallback when no kernel applies)."""
    lead = x.shape[:-1]
    x2, mid = _flatten(x, modality_ids)
    k, n = p.in_features, p.out_features
    cd = _compute_dtype(x.dtype)
    xs = smoothed(x2, p.smooth, mid)
    sa = None
    if p.mode == INT:
        q, sa = quantize_activations(xs, p.abits, p.act_bound)
        w = weight_int_nk(p)[:, :k].astype(jnp.int8)  # [Np, K]
        y = _int_dot(q, w, 1)
    else:
        xa = xs
        if p.abits < 16:
            q, s = quantize_activations(xs, p.abits, p.act_bound)
            xa = q.astype(jnp.float32) * s
        prec = HIGHEST if cd == jnp.float32 else None
        y = jax.lax.dot_general(xa.astype(cd), dequantized_nk(p, cd), (((1,), (1,)), ((), ())),
                                precision=prec, preferred_element_type=jnp.float32)
        y = jnp.pad(y, ((0, 0), (0, p.n_pad - n)))
    d = lowrank_down(x2, mid, p) if (p.rank and mid is not None) else None
    y = epilogue_xla(y, sa, p, d)[:, :n]
    return y.reshape(*lead, n).astype(x.dtype)


def prepass(x2, mid, p: PreparedQLinear, mp: int):
    """Fused activation pre-pass (one XLA fusion region, shared by the Triton and Mosaic paths):
    ``x / s_m``, per-token quantization (INT) or bf16 cast (FLOAT), the folded low-rank
    down-projection, and padding to ``[Mp, Kp]``."""
    m, k = x2.shape
    xs = smoothed(x2, p.smooth, mid)
    pad = ((0, mp - m), (0, p.k_pad - k))
    sa = None
    if p.mode == INT:
        q, sa = quantize_activations(xs, p.abits, p.act_bound)
        a = jnp.pad(q, pad)
        sa = jnp.pad(sa, ((0, mp - m), (0, 0)), constant_values=1.0)
    else:
        a = jnp.pad(xs.astype(jnp.bfloat16), pad)
    d = mid_p = None
    if p.rank and mid is not None:
        d = jnp.pad(lowrank_down(x2, mid, p).astype(jnp.bfloat16), ((0, mp - m), (0, 0)))
        mid_p = jnp.pad(mid, (0, mp - m))
    return a, sa, mid_p, d
