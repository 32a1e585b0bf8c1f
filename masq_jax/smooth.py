"""Smoothing: statistics, initialisation, the MAS linear and its loss, baselines (spec §2-§4).

Pure, jit-able functions on arrays. Modality ids: 0 text, 1 vision, 2 audio. Every function works on
one linear; stack layers on a leading axis and ``jax.vmap`` (all shape checks look at one layer).
Training of the vectors for ONE linear on its own output error lives here too (``train_smoothing``);
the pipeline's block-wise trainer is a separate module.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from masq_jax.errors import MasqError
from masq_jax.matmul import grid_matmul, split_matmul
from masq_jax.quant import IDENTITY_BITS, SPEC_BOUND, Bound, fake_quant, fake_quant_grid, validate_bits

NUM_MODALITIES = 3
TEXT, VISION, AUDIO = 0, 1, 2

# Named floors and clamps (spec §3, §4).
FACTOR_FLOOR = 1e-5  # every smoothing factor and every weight absmax is floored here at init
SMOOTH_CLAMP = 1e-2  # before every training step: |s| < 1e-2 -> sign(s) * 1e-2
AWQ_SCALE_FLOOR = 1e-4  # AWQ: mean|x|^alpha floored here before normalisation
HIGHEST = jax.lax.Precision.HIGHEST
MATMUL_DTYPES = ("float32", "bfloat16")  # precision of the MAS training products (mas_linear)


class CoreInputError(MasqError):
    """An array of the wrong rank/shape or an argument outside its accepted values (a ValueError)."""


# ----------------------------------------------------------------------------------------------
# argument checks (trace time: shapes are static)


def check_rank(name: str, a, ranks: tuple[int, ...], what: str) -> None:
    if a.ndim not in ranks:
        raise CoreInputError(f"{name} must be {what}, got shape {tuple(a.shape)}")


def check_tokens(x, modality_ids, valid=None) -> None:
    """``x`` [..., in] with ``modality_ids`` (and ``valid``) of shape x.shape[:-1]."""
    if x.ndim < 1:
        raise CoreInputError(f"x must be [..., in], got shape {tuple(x.shape)}")
    if modality_ids is not None and tuple(modality_ids.shape) != tuple(x.shape[:-1]):
        raise CoreInputError(
            f"modality_ids must have shape x.shape[:-1]={tuple(x.shape[:-1])}, got {tuple(modality_ids.shape)}"
        )
    if modality_ids is not None and not jnp.issubdtype(modality_ids.dtype, jnp.integer):
        raise CoreInputError(f"modality_ids must be integers (0 text, 1 vision, 2 audio), got {modality_ids.dtype}")
    if valid is not None and tuple(valid.shape) != tuple(x.shape[:-1]):
        raise CoreInputError(f"valid must have shape x.shape[:-1]={tuple(x.shape[:-1])}, got {tuple(valid.shape)}")


def _weight_in(weight, x_in: int | None = None) -> tuple[int, int]:
    check_rank("weight", weight, (2,), "[out, in]")
    out_dim, in_dim = weight.shape
    if x_in is not None and x_in != in_dim:
        raise CoreInputError(f"x's last axis ({x_in}) must equal weight's in dimension ({in_dim}); weight is [out, in]")
    return out_dim, in_dim


def _smooth3(smooth, in_dim: int):
    """Accept ``smooth`` [3, in] (per modality) or [in] (shared) and return [3, in]."""
    if smooth.shape == (in_dim,):
        return jnp.broadcast_to(smooth, (NUM_MODALITIES, in_dim))
    if smooth.shape != (NUM_MODALITIES, in_dim):
        raise CoreInputError(f"smooth must be [3, in]=[3, {in_dim}] or [in]=[{in_dim}], got {tuple(smooth.shape)}")
    return smooth


def _flat(x, modality_ids=None, valid=None):
    x2 = x.reshape(-1, x.shape[-1])
    mid = None if modality_ids is None else modality_ids.reshape(-1)
    val = None if valid is None else valid.reshape(-1).astype(bool)
    return x2, mid, val


# ----------------------------------------------------------------------------------------------
# statistics (spec §2)


def modality_absmax(x: jax.Array, modality_ids: jax.Array, num_modalities: int = NUM_MODALITIES,
                    valid: jax.Array | None = None) -> jax.Array:
    """Per-modality per-input-channel max |x|: [num_modalities, in] float32, zeros for an absent one.

    ``x`` [..., in]; ``modality_ids`` [...]; ``valid`` [...] bool marks real (non-padding) tokens.
    """
    check_tokens(x, modality_ids, valid)
    x2, mid, val = _flat(x, modality_ids, valid)
    ax = jnp.abs(x2.astype(jnp.float32))
    if val is not None:
        ax = jnp.where(val[:, None], ax, 0.0)
    rows = [jnp.max(jnp.where((mid == m)[:, None], ax, 0.0), axis=0, initial=0.0) for m in range(num_modalities)]
    return jnp.stack(rows)


def absmax(x: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """All-token per-input-channel max |x| ([in] float32): SmoothQuant's statistic."""
    check_tokens(x, None, valid)
    x2, _, val = _flat(x, None, valid)
    ax = jnp.abs(x2.astype(jnp.float32))
    if val is not None:
        ax = jnp.where(val[:, None], ax, 0.0)
    return jnp.max(ax, axis=0, initial=0.0)


def modality_counts(modality_ids: jax.Array, valid: jax.Array | None = None,
                    num_modalities: int = NUM_MODALITIES) -> jax.Array:
    """Number of (valid) tokens per modality, int32 [num_modalities]."""
    mid = modality_ids.reshape(-1)
    ok = jnp.ones_like(mid, bool) if valid is None else valid.reshape(-1).astype(bool)
    return jnp.stack([jnp.sum((mid == m) & ok) for m in range(num_modalities)]).astype(jnp.int32)


# ----------------------------------------------------------------------------------------------
# initialisation and baselines (spec §3)


def init_factors(act_absmax: jax.Array, weight: jax.Array, alpha: float = 0.5) -> jax.Array:
    """SmoothQuant formula ``s = max|x|^α / max_i|W[i]|^(1-α)`` per channel (spec §3).

    ``act_absmax`` [in] or [3, in] (per modality); ``weight`` [out, in]. The weight absmax and every
    factor are floored at ``FACTOR_FLOOR`` (1e-5), so an absent modality (zero stats) gets 1e-5:
    replace its row (e.g. with the text row) if that matters to you.
    """
    out_dim, in_dim = _weight_in(weight)
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
    """Spec §4 clamp before every step: ``|s| < min_abs -> sign(s)·min_abs`` with sign(0) = +."""
    small = jnp.abs(s) < min_abs
    return jnp.where(small, jnp.where(s < 0, -min_abs, min_abs).astype(s.dtype), s)


# ----------------------------------------------------------------------------------------------
# the MAS linear and its loss (spec §4)


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
    """``y = b + Σ_m Q_a((mask_m ⊙ x)/s_m) · Q_w(W·diag(s_m))ᵀ`` (spec §4), differentiable in ``smooth``.

    ``modalities`` (static): the modalities present in ``modality_ids``; the weight is quantized once
    per listed modality, so a text-only batch passes ``(0,)`` and pays one weight quantization.

    ``x`` [..., in]; ``modality_ids`` [...]; ``weight`` [out, in]; ``smooth`` [3, in] (one vector
    per modality) or [in] (shared, e.g. SmoothQuant). Activations: symmetric per token; weights per
    output channel or per group. Returned in float32. ``matmul_dtype`` (static): "float32" runs the
    products at HIGHEST precision; "bfloat16" on bf16 tensor cores at float32-level accuracy
    (``masq_jax.matmul``): one exact pass on the integer grid (``quant.fake_quant_grid``) when both
    operands are quantized per row, else three split passes.
    Per-token activation quantization makes ``Q_a(mask_m ⊙ x / s_m)`` the row ``Q_a(x_t / s_m)`` for
    tokens of m and zero elsewhere, which is how it is evaluated (one activation quantization).
    """
    wbits = validate_bits(wbits, "wbits")
    abits = validate_bits(abits, "abits")
    check_tokens(x, modality_ids)
    out_dim, in_dim = _weight_in(weight, x.shape[-1])
    if not modalities or any(m not in range(NUM_MODALITIES) for m in modalities):
        raise CoreInputError(f"modalities must be a non-empty tuple of ids in 0..2, got {modalities!r}")
    if matmul_dtype not in MATMUL_DTYPES:
        raise CoreInputError(f"matmul_dtype must be one of {', '.join(MATMUL_DTYPES)}, got {matmul_dtype!r}")
    s3 = _smooth3(smooth, in_dim).astype(jnp.float32)
    x2, mid, _ = _flat(x, modality_ids)
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
    """Modality-weighted MAE (spec §4): ``(Σ_text|Δ| + λ_a Σ_audio|Δ| + λ_v Σ_vision|Δ|) / (H·N)``.

    ``pred``/``target`` [..., H]; ``N`` counts valid tokens of all modalities (padding excluded via
    ``valid``). Defaults are the published scripts' λ_v = 0.5, λ_a = 1.0. Float32 scalar.
    """
    if pred.shape != target.shape:
        raise CoreInputError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    check_tokens(pred, modality_ids, valid)
    d, mid, val = _flat(jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32)), modality_ids, valid)
    lam = jnp.stack([jnp.asarray(lambda_text, jnp.float32), jnp.asarray(lambda_vision, jnp.float32),
                     jnp.asarray(lambda_audio, jnp.float32)])
    wt = lam[jnp.clip(mid, 0, NUM_MODALITIES - 1)]
    if val is not None:
        wt = jnp.where(val, wt, 0.0)
        n = jnp.sum(val)
    else:
        n = mid.shape[0]
    return jnp.sum(wt * jnp.sum(d, axis=-1)) / (d.shape[-1] * jnp.maximum(n, 1))


# ----------------------------------------------------------------------------------------------
# AWQ α-search (weight-only), vmapped over the grid like google/qwix


class AWQResult(NamedTuple):
    alpha: jax.Array  # best α (scalar)
    smooth: jax.Array  # [in]
    errors: jax.Array  # [n_grid] output MSE per grid point


def awq_scales(mean_abs: jax.Array, alpha) -> jax.Array:
    """AWQ's ``s = mean|x|^α`` floored at 1e-4 and normalised by sqrt(max·min) (as in llm-awq)."""
    s = jnp.maximum(jnp.power(mean_abs, alpha), AWQ_SCALE_FLOOR)
    return s / jnp.sqrt(jnp.max(s) * jnp.min(s))


def awq_search(
    x: jax.Array,
    weight: jax.Array,
    *,
    wbits: int,
    w_symmetric: bool = False,
    group_size: int | None = None,
    n_grid: int = 20,
    valid: jax.Array | None = None,
    bound: Bound = SPEC_BOUND,
    grid_batch_size: int | None = None,
) -> AWQResult:
    """Grid-search α ∈ {0, 1/n, …, (n-1)/n} for ``s = mean|x|^α`` minimising the output MSE of the
    weight-only-quantized linear ``(x/s)·Q_w(W·diag(s))ᵀ`` vs ``x·Wᵀ``. All grid points are evaluated
    in one vmapped computation (``grid_batch_size`` bounds memory via ``lax.map``)."""
    wbits = validate_bits(wbits, "wbits")
    if isinstance(n_grid, bool) or not isinstance(n_grid, (int, np.integer)) or n_grid < 1:
        raise CoreInputError(f"n_grid must be a positive integer, got {n_grid!r}")
    check_tokens(x, None, valid)
    _weight_in(weight, x.shape[-1])
    x2, _, val = _flat(x, None, valid)
    x2 = x2.astype(jnp.float32)
    if val is not None:
        x2 = jnp.where(val[:, None], x2, 0.0)
        n = jnp.maximum(jnp.sum(val), 1)
    else:
        n = x2.shape[0]
    mean_abs = jnp.sum(jnp.abs(x2), axis=0) / n
    w = weight.astype(jnp.float32)
    ref = jnp.dot(x2, w.T, precision=HIGHEST)
    alphas = jnp.arange(n_grid, dtype=jnp.float32) / n_grid

    def err(alpha):
        s = awq_scales(mean_abs, alpha)
        wq = fake_quant(w * s[None, :], wbits, symmetric=w_symmetric, group_size=group_size, bound=bound)
        y = jnp.dot(x2 / s, wq.T, precision=HIGHEST)
        return jnp.sum((y - ref) ** 2) / (n * w.shape[0])

    errors = jax.vmap(err)(alphas) if grid_batch_size is None else jax.lax.map(err, alphas, batch_size=grid_batch_size)
    best = jnp.argmin(errors)
    return AWQResult(alphas[best], awq_scales(mean_abs, alphas[best]), errors)


# ----------------------------------------------------------------------------------------------
# a small AdamW trainer for the vectors of ONE linear (synthetic demo, tests)


class TrainResult(NamedTuple):
    smooth: jax.Array  # [3, in] float32, clamped
    losses: jax.Array  # [steps] loss before each update


def train_smoothing(
    x: jax.Array,
    modality_ids: jax.Array,
    weight: jax.Array,
    bias: jax.Array | None,
    smooth_init: jax.Array,
    *,
    wbits: int,
    abits: int,
    steps: int = 200,
    lr: float = 5e-2,
    weight_decay: float = 0.0,
    valid: jax.Array | None = None,
    lambda_vision: float = 1.0,
    lambda_audio: float = 1.0,
    w_symmetric: bool = True,
    group_size: int | None = None,
    bound: Bound = SPEC_BOUND,
) -> TrainResult:
    """Learn per-modality vectors of one linear with AdamW (float32 master copy) on its output MAE.

    Full batch, ``steps`` steps in one ``lax.scan``; before every step ``clamp_smooth`` (spec §4),
    and once more at the end so the returned vectors are the clamped ones. Target: ``x·Wᵀ + b``.
    Loss weights default to 1 (the paper's best λ_text = λ_vision = 1).
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise CoreInputError(f"steps must be a non-negative integer, got {steps!r}")
    check_tokens(x, modality_ids, valid)
    out_dim, in_dim = _weight_in(weight, x.shape[-1])
    s0 = _smooth3(smooth_init, in_dim).astype(jnp.float32)
    xf = x.astype(jnp.float32)
    target = jnp.dot(xf, weight.astype(jnp.float32).T, precision=HIGHEST)
    if bias is not None:
        target = target + bias.astype(jnp.float32)
    opt = optax.adamw(lr, weight_decay=weight_decay)

    def loss_fn(s):
        y = mas_linear(xf, modality_ids, weight, bias, s, wbits=wbits, abits=abits, w_symmetric=w_symmetric,
                       group_size=group_size, bound=bound)
        return block_loss(y, target, modality_ids, valid, lambda_vision=lambda_vision, lambda_audio=lambda_audio)

    def step(carry, _):
        s, st = carry
        s = clamp_smooth(s)
        loss, g = jax.value_and_grad(loss_fn)(s)
        upd, st = opt.update(g, st, s)
        return (optax.apply_updates(s, upd), st), loss

    (s, _), losses = jax.lax.scan(step, (s0, opt.init(s0)), None, length=steps)
    return TrainResult(clamp_smooth(s), losses)
