"""Per-linear analyses behind the notebooks: range ratios, the smoothing-mismatch noise model,
SQNR versus CMC rank, effective rank of the cross-modal residual.

Everything works on ONE linear's captured full-precision inputs (``x`` [T, in], ``modality_ids``
[T]) and its weight ``W`` [out, in]; ``capture_layers`` walks a full-precision model and yields
those inputs layer by layer. The rank sweeps run in float64 NumPy on top of the package's own
quantizers (``masq_jax.core.quant.fake_quant``) and whitening (``masq_jax.core.cmc.whitening``), so the curves
are exactly what ``masq_jax.core.cmc.low_rank_compensation`` would give at each rank.
"""

from __future__ import annotations

import functools
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax.core import cmc, metrics, stats as core_stats
from masq_jax.core.quant import SPEC_BOUND, fake_quant, symmetric_range, validate_bits
from masq_jax.core.smoothing import mas_linear
from masq_jax.errors import MasqError
from masq_jax.modality import TEXT
from masq_jax.models import decoder
RATIO_FLOOR = 1e-6  # channels whose reference range is below this are left out of range ratios


class AnalysisInputError(MasqError):
    """An argument of an analysis helper with the wrong shape or value."""


# ------------------------------------------------------------------------------------------------
# Walking the full-precision model.


@functools.partial(jax.jit, static_argnames=("cfg",))
def _capture(cfg, lp, h, batch):
    return batch.layer(cfg, lp, h, capture=True)


def capture_layers(cfg, params, prep, layers=None, *, with_gram: bool = False,
                   chunk: int = 8) -> Iterator[tuple[int, dict, dict, dict]]:
    """Yield ``(index, layer_params, inputs, stats)`` for each decoder layer of the FP model.

    ``prep`` is ``masq_jax.calibrate.batch.prepare(...)`` output. ``inputs`` maps the four input groups
    (``qkv``, ``o``, ``gate_up``, ``down``) to the valid tokens' inputs ``[T, in]`` (float32) and
    ``"modality_ids"`` to ``[T]``; ``stats`` is ``masq_jax.core.stats`` statistics of those tokens.
    ``layers`` (an iterable of indices, default all) only selects what is yielded: the FP hidden state
    always runs through every layer up to the last one requested.
    """
    n = cfg.num_layers
    want = set(range(n)) if layers is None else {int(i) for i in layers}
    if not want or min(want) < 0 or max(want) >= n:
        raise AnalysisInputError(f"layers must be indices in 0..{n - 1}, got {sorted(want)}")
    valid = np.asarray(prep.batch.valid).reshape(-1)
    mid = np.asarray(prep.batch.modality_ids).reshape(-1)[valid]
    h = prep.h0
    for i in range(max(want) + 1):
        lp = jax.tree_util.tree_map(lambda a: a[i], params["layers"])
        outs, caps = [], []
        for s in range(0, h.shape[0], chunk):
            sl = slice(s, s + chunk)
            o, c = _capture(cfg, lp, h[sl], prep.batch[sl])
            outs.append(o)
            if i in want:
                caps.append(c)
        if i in want:
            inputs = {g: np.concatenate([np.asarray(c[g], np.float32).reshape(-1, c[g].shape[-1]) for c in caps])[valid]
                      for g in decoder.INPUT_GROUPS}
            stats = core_stats.empty_stats(decoder.input_dims(cfg), with_gram)
            stats = core_stats.accumulate(stats, {g: jnp.asarray(v)[None] for g, v in inputs.items()},
                                           jnp.asarray(mid)[None], jnp.ones((1, mid.size), bool))
            yield i, lp, {**inputs, "modality_ids": mid}, stats
        h = jnp.concatenate(outs)


# ------------------------------------------------------------------------------------------------
# Modality dominance (paper Figures 1 and 4).


def range_ratio(absmax: np.ndarray, modality: int, reference: int = TEXT) -> np.ndarray:
    """Per-channel ``max|x_modality| / max|x_reference|`` from ``absmax`` [3, in]; NaN where the
    reference range is below ``RATIO_FLOOR`` (dead channels)."""
    a = np.asarray(absmax, np.float64)
    if a.ndim != 2 or a.shape[0] != 3:
        raise AnalysisInputError(f"absmax must be [3, in] (text, vision, audio), got {a.shape}")
    den = a[reference]
    return np.where(den > RATIO_FLOOR, a[modality] / np.where(den > RATIO_FLOOR, den, 1.0), np.nan)


def _check_linear(x, w, what="x"):
    x = np.asarray(x)
    w = np.asarray(w)
    if w.ndim != 2:
        raise AnalysisInputError(f"weight must be [out, in], got shape {w.shape}")
    if x.ndim != 2 or x.shape[1] != w.shape[1]:
        raise AnalysisInputError(f"{what} must be [tokens, in={w.shape[1]}], got shape {x.shape}")
    if x.shape[0] == 0:
        raise AnalysisInputError(f"{what} has no tokens (is the modality present in the data?)")


def predicted_sqnr(x, weight, smooth, *, wbits: int, abits: int, w_symmetric: bool = True) -> float:
    """Token-averaged SQNR (dB) of ``Q_a(x/s)·Q_w(W·diag(s))ᵀ`` predicted by the uniform-noise model.

    Each quantizer adds independent noise of variance ``Δ²/12`` (``Δ`` its step: per token for the
    activations, per output channel for the weights), so for token t the output error power is
    ``Δ_a,t²/12 · ‖W·diag(s)‖_F² + Σ_i Δ_w,i²/12 · ‖x_t/s‖²`` (per-output-channel weight grid,
    ``group_size=None``). Compare with the measured ``linear_sqnr``.
    """
    _check_linear(x, weight)
    validate_bits(wbits, "wbits")
    validate_bits(abits, "abits")
    x = np.asarray(x, np.float64)
    w = np.asarray(weight, np.float64)
    s = np.asarray(smooth, np.float64)
    xs, ws = x / s, w * s[None, :]
    y = x @ w.T
    qa = symmetric_range(abits, SPEC_BOUND)[0] if abits < 16 else np.inf
    da = np.abs(xs).max(axis=1) / qa  # [T]
    if wbits >= 16:
        dw2 = np.zeros(w.shape[0])
    elif w_symmetric:
        dw2 = (np.abs(ws).max(axis=1) / symmetric_range(wbits, SPEC_BOUND)[0]) ** 2
    else:
        dw2 = ((ws.max(axis=1) - ws.min(axis=1)) / (2 ** wbits - 1)) ** 2
    err = (da ** 2 / 12.0) * np.sum(ws ** 2) + (dw2.sum() / 12.0) * np.sum(xs ** 2, axis=1)  # [T], summed over out
    sig = np.sum(y ** 2, axis=1)
    return float(np.mean(10.0 * np.log10(sig / err)))


def linear_sqnr(x, weight, bias, smooth, *, wbits: int, abits: int, w_symmetric: bool = True,
                group_size: int | None = None) -> float:
    """Measured token-averaged SQNR (dB) of one smoothed, fake-quantized linear against ``x·Wᵀ + b``.

    ``smooth`` [in] is one vector for every token (RTN: ones; SmoothQuant; or one modality's vector,
    which with ``x`` holding that modality's tokens is the MAS upper bound).
    """
    _check_linear(x, weight)
    validate_bits(wbits, "wbits")
    validate_bits(abits, "abits")
    b = None if bias is None else jnp.asarray(bias, jnp.float32)
    return float(_linear_sqnr(jnp.asarray(x, jnp.float32), jnp.asarray(weight, jnp.float32), b,
                              jnp.asarray(smooth, jnp.float32), wbits=int(wbits), abits=int(abits),
                              w_symmetric=bool(w_symmetric), group_size=group_size))


@functools.partial(jax.jit, static_argnames=("wbits", "abits", "w_symmetric", "group_size"))
def _linear_sqnr(x, w, b, s, *, wbits, abits, w_symmetric, group_size):
    mid = jnp.zeros((x.shape[0],), jnp.int32)
    yq = mas_linear(x, mid, w, b, s, wbits=wbits, abits=abits, w_symmetric=w_symmetric, group_size=group_size)
    ref = jnp.dot(x, w.T, precision="highest") + (0.0 if b is None else b)
    return metrics.sqnr(ref, yq)


# ------------------------------------------------------------------------------------------------
# SQNR versus CMC rank (paper Figure 6).


def cmc_rank_curve(x, weight, bias, s_m, s_text, cov, *, wbits: int, abits: int, whiten: bool = True,
                   damping: float = 0.0, eig_floor: float | None = None, w_symmetric: bool = True,
                   group_size: int | None = None, x_eval=None) -> np.ndarray:
    """SQNR (dB, token mean) of the single-weight CMC linear for one modality at every rank 0..k.

    The linear (docs/method.md §6) is ``b + Q_a(x/s_m)·Wqᵀ + (x/s_m)·L_r·R_r`` with ``Wq = Q_w(W·diag(s_text))``
    and ``L_r R_r`` the rank-r factors of ``ΔW_m = W·diag(s_m) − Wq`` (docs/method.md §5): whitened by
    ``cov = X̃ᵀX̃`` (with ``damping``/``eig_floor`` as in ``cmc.whitening``) or the plain SVD
    (``whiten=False``). ``x`` are modality-m tokens; ``x_eval`` (default ``x``) the tokens measured,
    e.g. held-out ones. Returns ``[k + 1]`` with k = min(in, out); index r is rank r. Truncations of
    one SVD, with the error norm updated rank by rank in float64 (exact, cheap for every rank).
    """
    _check_linear(x, weight)
    x_eval = x if x_eval is None else x_eval
    _check_linear(x_eval, weight, "x_eval")
    w = np.asarray(weight, np.float64)
    out_dim, in_dim = w.shape
    cov = np.asarray(cov)
    if cov.shape != (in_dim, in_dim):
        raise AnalysisInputError(f"cov must be [in, in]=[{in_dim}, {in_dim}], got {cov.shape}")
    s_m = np.asarray(s_m, np.float32)
    s_text = np.asarray(s_text, np.float32)
    wq = np.asarray(fake_quant(jnp.asarray(weight, jnp.float32) * s_text[None, :], wbits, symmetric=w_symmetric,
                               group_size=group_size), np.float64)
    dw = w * s_m.astype(np.float64)[None, :] - wq  # [out, in]
    a = dw.T  # [in, out]
    if whiten:
        t, t_pinv = (np.asarray(v, np.float64) for v in cmc.whitening(jnp.asarray(cov), damping=damping,
                                                                        eig_floor=eig_floor))
        u, sig, vt = np.linalg.svd(t @ a, full_matrices=False)
        left = t_pinv @ u  # L = T⁺ U
    else:
        u, sig, vt = np.linalg.svd(a, full_matrices=False)
        left = u
    xe = np.asarray(x_eval, np.float32)
    xt32 = xe / s_m[None, :]
    xq = np.asarray(fake_quant(jnp.asarray(xt32), abits, symmetric=True), np.float64)
    xt = xt32.astype(np.float64)
    ref = xe.astype(np.float64) @ w.T
    e0 = xq @ wq.T - ref  # rank-0 error [T, out] (bias cancels)
    if bias is not None:
        ref = ref + np.asarray(bias, np.float64)[None, :]
    z = (xt @ left) * sig[None, :]  # branch output coordinates on the right singular vectors
    p = e0 @ vt.T  # [T, k]
    err = np.sum(e0 ** 2, axis=1)[:, None] + np.concatenate(
        [np.zeros((xe.shape[0], 1)), np.cumsum(2.0 * z * p + z ** 2, axis=1)], axis=1)  # [T, k+1]
    err = np.maximum(err, np.finfo(np.float64).tiny)
    sqnr = 10.0 * (np.log10(np.sum(ref ** 2, axis=1))[:, None] - np.log10(err))
    return sqnr.mean(axis=0)


def rank_to_reach(curve: np.ndarray, target: float) -> int | None:
    """Smallest rank whose SQNR in ``curve`` (from ``cmc_rank_curve``) is at least ``target``."""
    hit = np.flatnonzero(np.asarray(curve) >= target)
    return None if hit.size == 0 else int(hit[0])


# ------------------------------------------------------------------------------------------------
# Effective rank of the cross-modal residual (paper Figure 5).


def residual_effective_rank(weight, s_m, s_text, cov=None, *, wbits: int, w_symmetric: bool = True,
                            group_size: int | None = None, damping: float = 0.0) -> float:
    """``exp(entropy(σ/Σσ))`` of the residual ``ΔW_m = W·diag(s_m) − Q_w(W·diag(s_text))``: of
    ``T·ΔWᵀ`` with ``TᵀT = cov`` (whitened) or of ``ΔWᵀ`` itself (``cov=None``)."""
    w = jnp.asarray(weight, jnp.float32)
    dw = cmc.cmc_residual(w, jnp.asarray(s_m, jnp.float32), jnp.asarray(s_text, jnp.float32), wbits=wbits,
                          w_symmetric=w_symmetric, group_size=group_size)
    sv = cmc.residual_spectrum(dw, None if cov is None else jnp.asarray(cov), damping=damping)
    return float(metrics.effective_rank(sv))


def smoothed_covariance(gram: np.ndarray, smooth: np.ndarray) -> np.ndarray:
    """``diag(1/s)·XᵀX·diag(1/s)`` (``core.cmc.smoothed_covariance``) as a NumPy array."""
    return np.asarray(cmc.smoothed_covariance(jnp.asarray(gram), jnp.asarray(smooth)))
