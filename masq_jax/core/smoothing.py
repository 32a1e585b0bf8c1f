"""Smoothing (docs/method.md §3-§4): the SmoothQuant initialisation formula, the MAS linear and the
modality-weighted block loss, AWQ's scale family.

Pure, jit-able functions of one linear; stack layers on a leading axis and ``jax.vmap`` (all shape
checks look at one layer). Statistics live in ``masq_jax.core.stats``, the α grid search in
``masq_jax.core.search``, the AdamW loop that learns the vectors in ``masq_jax.core.training``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from masq_jax.core.checks import check_tokens, flat_tokens, per_modality, weight_dims
from masq_jax.core.matmul import grid_matmul, split_matmul
from masq_jax.core.quant import IDENTITY_BITS, SPEC_BOUND, Bound, fake_quant, fake_quant_grid, validate_bits
from masq_jax.errors import CoreInputError
from masq_jax.modality import NUM_MODALITIES

# Named floors and clamps (docs/method.md §3, §4).
FACTOR_FLOOR = 1e-5  # every smoothing factor and every weight absmax is floored here at init
SMOOTH_CLAMP = 1e-2  # before every training step: |s| < 1e-2 -> sign(s) * 1e-2
AWQ_SCALE_FLOOR = 1e-4  # AWQ: mean|x|^alpha floored here before normalisation (as llm-awq)
HIGHEST = jax.lax.Precision.HIGHEST
MATMUL_DTYPES = ("float32", "bfloat16")  # precision of the MAS training products (mas_linear)


# ----------------------------------------------------------------------------------------------
# initialisation and baselines (docs/method.md §3)


def init_factors(act_absmax: jax.Array, weight: jax.Array, alpha: float = 0.5) -> jax.Array:
    """SmoothQuant formula ``s = max|x|^α / max_i|W[i]|^(1-α)`` per channel (docs/method.md §3).

    ``act_absmax`` [in] or [3, in] (per modality); ``weight`` [out, in]. The weight absmax and every
    factor are floored at ``FACTOR_FLOOR`` (1e-5), so an absent modality (zero stats) gets 1e-5:
    replace its row (e.g. with the text row) if that matters to you.
    """
    out_dim, in_dim = weight_dims(weight)
    if act_absmax.shape[-1] != in_dim or act_absmax.ndim not in (1, 2):
        raise CoreInputError(f"act_absmax must be [in] or [3, in] with in={in_dim}, got {tuple(act_absmax.shape)}")
    w_max = jnp.maximum(jnp.max(jnp.abs(weight.astype(jnp.float32)), axis=0), FACTOR_FLOOR)
    s = jnp.power(act_absmax.astype(jnp.float32), alpha) / jnp.power(w_max, 1.0 - alpha)
    return jnp.maximum(s, FACTOR_FLOOR)


def smoothquant_factors(act_absmax_all: jax.Array, weight: jax.Array, alpha: float = 0.5) -> jax.Array:
    """SmoothQuant baseline: one vector [in] from the all-token statistics (use as ``smooth`` [in])."""
    if act_absmax_all.ndim != 1:
        raise CoreInputError(f"act_absmax_all must be the all-token statistic [in], got {tuple(act_absmax_all.shape)}")
    return init_factors(act_absmax_all, weight, alpha)


def rtn_factors(in_dim: int) -> jax.Array:
    """RTN baseline: no smoothing, ones [3, in]."""
    return jnp.ones((NUM_MODALITIES, in_dim), jnp.float32)


def clamp_smooth(s: jax.Array, min_abs: float = SMOOTH_CLAMP) -> jax.Array:
    """docs/method.md §4 clamp before every step: ``|s| < min_abs -> sign(s)·min_abs`` with sign(0) = +."""
    small = jnp.abs(s) < min_abs
    return jnp.where(small, jnp.where(s < 0, -min_abs, min_abs).astype(s.dtype), s)


# ----------------------------------------------------------------------------------------------
# the MAS linear and its loss (docs/method.md §4)


def mas_linear(
    x: jax.Array,
    modality_ids: jax.Array,
    weight: jax.Array,
    bias: jax.Array | None,
    smooth: jax.Array,
    *,
    wbits: int,
    abits: int,
    w_symmetric: bool = True,
    group_size: int | None = None,
    bound: Bound = SPEC_BOUND,
    modalities: tuple[int, ...] = (0, 1, 2),
    matmul_dtype: str = "float32",
) -> jax.Array:
    """``y = b + Σ_m Q_a((mask_m ⊙ x)/s_m) · Q_w(W·diag(s_m))ᵀ`` (docs/method.md §4), differentiable in ``smooth``.

    ``modalities`` (static): the modalities present in ``modality_ids``; the weight is quantized once
    per listed modality, so a text-only batch passes ``(0,)`` and pays one weight quantization.

    ``x`` [..., in]; ``modality_ids`` [...]; ``weight`` [out, in]; ``smooth`` [3, in] (one vector
    per modality) or [in] (shared, e.g. SmoothQuant). Activations: symmetric per token; weights per
    output channel or per group. Returned in float32. ``matmul_dtype`` (static): "float32" runs the
    products at HIGHEST precision; "bfloat16" on bf16 tensor cores at float32-level accuracy
    (``masq_jax.core.matmul``): one exact pass on the integer grid (``quant.fake_quant_grid``) when both
    operands are quantized per row, else three split passes.
    Per-token activation quantization makes ``Q_a(mask_m ⊙ x / s_m)`` the row ``Q_a(x_t / s_m)`` for
    tokens of m and zero elsewhere, which is how it is evaluated (one activation quantization).
    """
    wbits = validate_bits(wbits, "wbits")
    abits = validate_bits(abits, "abits")
    check_tokens(x, modality_ids)
    out_dim, in_dim = weight_dims(weight, x.shape[-1])
    if not modalities or any(m not in range(NUM_MODALITIES) for m in modalities):
        raise CoreInputError(f"modalities must be a non-empty tuple of ids in 0..2, got {modalities!r}")
    if matmul_dtype not in MATMUL_DTYPES:
        raise CoreInputError(f"matmul_dtype must be one of {', '.join(MATMUL_DTYPES)}, got {matmul_dtype!r}")
    s3 = per_modality(smooth, in_dim).astype(jnp.float32)
    x2, mid, _ = flat_tokens(x, modality_ids)
    x2 = x2.astype(jnp.float32)
    w = weight.astype(jnp.float32)
    qdot = _QuantDot(wbits, abits, w_symmetric, group_size, bound, matmul_dtype)
    if smooth.ndim == 1:  # one shared vector (SmoothQuant, AWQ, RTN): one weight, one matmul
        s1 = smooth.astype(jnp.float32)
        y = qdot(qdot.activations(x2 / s1), w * s1[None, :])
        if bias is not None:
            y = y + bias.astype(jnp.float32)
        return y.reshape(*x.shape[:-1], out_dim)
    xq = qdot.activations(x2 / s3[mid])
    y = jnp.zeros((x2.shape[0], out_dim), jnp.float32)
    for m in modalities:
        y = y + jnp.where((mid == m)[:, None], qdot(xq, w * s3[m][None, :]), 0.0)
    if bias is not None:
        y = y + bias.astype(jnp.float32)
    return y.reshape(*x.shape[:-1], out_dim)


class _QuantDot:
    """``Q_a(x) · Q_w(w)ᵀ`` in float32 (HIGHEST) or on bf16 tensor cores (see ``mas_linear``)."""

    def __init__(self, wbits, abits, w_symmetric, group_size, bound, matmul_dtype):
        self.wbits, self.abits, self.bound = wbits, abits, bound
        self.w_symmetric, self.group_size = w_symmetric, group_size
        self.bf16 = matmul_dtype == "bfloat16"
        # Integer-grid products need one scale per activation row and per weight row.
        self.grid = self.bf16 and max(abits, wbits) < IDENTITY_BITS and group_size is None

    def activations(self, xs):
        """The quantized activations: ``(grid, scale)`` on the grid path, else the fake-quant values."""
        if self.grid:
            return fake_quant_grid(xs, self.abits, symmetric=True, bound=self.bound)
        return fake_quant(xs, self.abits, symmetric=True, bound=self.bound)

    def __call__(self, xq, ws):
        if self.grid:
            gx, sx = xq
            gw, sw = fake_quant_grid(ws, self.wbits, symmetric=self.w_symmetric, bound=self.bound)
            return grid_matmul(gx, gw) * sx * sw.T
        wq = fake_quant(ws, self.wbits, symmetric=self.w_symmetric, group_size=self.group_size, bound=self.bound)
        if self.bf16:
            return split_matmul(xq, wq)
        return jnp.dot(xq, wq.T, precision=HIGHEST)


def block_loss(
    pred: jax.Array,
    target: jax.Array,
    modality_ids: jax.Array,
    valid: jax.Array | None = None,
    *,
    lambda_vision: float = 0.5,
    lambda_audio: float = 1.0,
    lambda_text: float = 1.0,
) -> jax.Array:
    """Modality-weighted MAE (docs/method.md §4): ``(Σ_text|Δ| + λ_a Σ_audio|Δ| + λ_v Σ_vision|Δ|) / (H·N)``.

    ``pred``/``target`` [..., H]; ``N`` counts valid tokens of all modalities (padding excluded via
    ``valid``). Defaults are the published scripts' λ_v = 0.5, λ_a = 1.0. Float32 scalar.
    """
    if pred.shape != target.shape:
        raise CoreInputError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    check_tokens(pred, modality_ids, valid)
    d, mid, val = flat_tokens(jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32)), modality_ids, valid)
    lam = jnp.stack([jnp.asarray(lambda_text, jnp.float32), jnp.asarray(lambda_vision, jnp.float32),
                     jnp.asarray(lambda_audio, jnp.float32)])
    wt = lam[jnp.clip(mid, 0, NUM_MODALITIES - 1)]
    if val is not None:
        wt = jnp.where(val, wt, 0.0)
        n = jnp.sum(val)
    else:
        n = mid.shape[0]
    return jnp.sum(wt * jnp.sum(d, axis=-1)) / (d.shape[-1] * jnp.maximum(n, 1))


def awq_scales(mean_abs: jax.Array, alpha) -> jax.Array:
    """AWQ's ``s = mean|x|^α`` floored at 1e-4 and normalised by sqrt(max·min) (as in llm-awq)."""
    s = jnp.maximum(jnp.power(mean_abs, alpha), AWQ_SCALE_FLOOR)
    return s / jnp.sqrt(jnp.max(s) * jnp.min(s))
