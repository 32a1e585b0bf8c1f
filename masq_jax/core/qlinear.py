"""The one quantized-linear abstraction every path uses (docs/method.md §6).

A ``QLinear`` holds the stored text-smoothed integer weight ``Wq = Q_w(W · diag(s_text))``, the
per-modality smoothing vectors and the per-modality low-rank factors. For a token of modality m:

    y = b + Q_a(x / s_m) · Wqᵀ + [m ≠ text] · (x / s_m) · L_m · R_m

Modality ids: 0 text, 1 vision, 2 audio. Text's low-rank factors are stored as zeros (never used).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from masq_jax.core.quant import SPEC_BOUND, QArray, dequantize, fake_quant, quantize, validate_bits
from masq_jax.modality import NON_TEXT, NUM_MODALITIES, TEXT


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class QLinear:
    """Stored quantized linear: ``weight`` [out, in] as QArray, ``smooth`` [3, in], ``lora_l``
    [3, in, r], ``lora_r`` [3, r, out], ``bias`` [out] or None; ``abits`` (16 = not quantized)."""

    weight: QArray
    smooth: jax.Array
    lora_l: jax.Array
    lora_r: jax.Array
    bias: jax.Array | None
    abits: int = dataclasses.field(metadata=dict(static=True))
    act_bound: str = dataclasses.field(default=SPEC_BOUND, metadata=dict(static=True))

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    @property
    def rank(self) -> int:
        return self.lora_l.shape[-1]


def make_qlinear(
    weight: jax.Array,
    bias: jax.Array | None = None,
    *,
    wbits: int,
    abits: int,
    smooth: jax.Array | None = None,
    lora_l: jax.Array | None = None,
    lora_r: jax.Array | None = None,
    w_symmetric: bool = True,
    group_size: int | None = None,
    bound: str = SPEC_BOUND,
) -> QLinear:
    """Build a QLinear from a float weight [out, in]: stores ``Q_w(W · diag(s_text))``.

    ``smooth`` defaults to ones (no smoothing); missing low-rank factors mean rank 0.
    """
    out_dim, in_dim = weight.shape
    abits = validate_bits(abits, "abits")  # fail here, not at the first call
    if smooth is None:
        smooth = jnp.ones((NUM_MODALITIES, in_dim), jnp.float32)
    if lora_l is None or lora_r is None:
        lora_l = jnp.zeros((NUM_MODALITIES, in_dim, 0), jnp.float32)
        lora_r = jnp.zeros((NUM_MODALITIES, 0, out_dim), jnp.float32)
    w_text = weight * smooth[TEXT][None, :].astype(weight.dtype)
    qw = quantize(w_text, wbits, symmetric=w_symmetric, group_size=group_size, bound=bound)
    return QLinear(qw, smooth, lora_l, lora_r, bias, abits=abits, act_bound=bound)


def qlinear_reference(x: jax.Array, modality_ids: jax.Array, ql: QLinear) -> jax.Array:
    """Plain-XLA evaluation of docs/method.md §6 in float32 (the reference every kernel is checked against).

    ``x``: [..., in]; ``modality_ids``: [...] int (0 text, 1 vision, 2 audio). Returns [..., out].
    """
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
    mid = modality_ids.reshape(-1)
    s = ql.smooth.astype(jnp.float32)[mid]  # [T, in]
    xs = x2 / s
    xq = fake_quant(xs, ql.abits, symmetric=True, bound=ql.act_bound)
    w = dequantize(ql.weight, jnp.float32)
    y = jnp.dot(xq, w.T, precision=jax.lax.Precision.HIGHEST)
    if ql.rank:
        for m in NON_TEXT:  # text (the base) has no branch
            down = jnp.dot(xs, ql.lora_l[m].astype(jnp.float32), precision=jax.lax.Precision.HIGHEST)
            up = jnp.dot(down, ql.lora_r[m].astype(jnp.float32), precision=jax.lax.Precision.HIGHEST)
            y = y + jnp.where((mid == m)[:, None], up, 0.0)
    if ql.bias is not None:
        y = y + ql.bias.astype(jnp.float32)
    return y.reshape(*lead, -1).astype(x.dtype)
