"""Independent float64 NumPy references for the core tests (docs/method.md §1, §3-§7), written from the spec."""

from __future__ import annotations

import numpy as np

TEXT, VISION, AUDIO = 0, 1, 2


def np_fake_quant(x, bits, symmetric=True, group_size=None, bound="qmax"):
    """Spec §1 quantize-then-dequantize over the last axis, float64."""
    x = np.asarray(x, np.float64)
    if bits >= 16:
        return x.copy()
    shape = x.shape
    k = shape[-1]
    g = k if group_size is None else group_size
    xg = x.reshape(*shape[:-1], k // g, g)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        div, qmin = (qmax, -qmax) if bound == "qmax" else (qmax + 0.5, -qmax - 1)
        scale = np.clip(np.abs(xg).max(-1, keepdims=True) / div, 1e-5, 1e4)
        q = np.clip(np.round(xg / scale), qmin, qmax)
        return (q * scale).reshape(shape)
    levels = 2**bits - 1
    scale = np.clip((xg.max(-1, keepdims=True) - xg.min(-1, keepdims=True)) / levels, 1e-5, 1e4)
    zp = np.round(-xg.min(-1, keepdims=True) / scale)
    q = np.clip(np.round(xg / scale) + zp, 0, levels)
    return ((q - zp) * scale).reshape(shape)


def np_step(x, bits, symmetric=True, group_size=None, bound="qmax"):
    """The grid step (scale) broadcast to x's shape, float64."""
    x = np.asarray(x, np.float64)
    k = x.shape[-1]
    g = k if group_size is None else group_size
    xg = x.reshape(*x.shape[:-1], k // g, g)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        div = qmax if bound == "qmax" else qmax + 0.5
        s = np.clip(np.abs(xg).max(-1, keepdims=True) / div, 1e-5, 1e4)
    else:
        s = np.clip((xg.max(-1, keepdims=True) - xg.min(-1, keepdims=True)) / (2**bits - 1), 1e-5, 1e4)
    return np.broadcast_to(s, xg.shape).reshape(x.shape)


def assert_quant_close(got, ref, step, max_flip_frac=2e-3, rtol=1e-5, ignore=None):
    """float32 vs float64 quantizers agree except rare round-half flips, each at most one grid step.

    ``ignore`` marks elements whose x/scale is a tie by construction (the absmax under 'qmax+0.5').
    """
    got = np.asarray(got, np.float64)
    diff = np.abs(got - ref)
    tol = rtol * (np.abs(ref) + step)
    flips = diff > tol
    if ignore is not None:
        flips &= ~ignore
    assert np.all(diff[flips] <= step[flips] * 1.001 + tol[flips]), "a value moved by more than one grid step"
    assert flips.mean() <= max_flip_frac, f"{flips.mean():.2%} of values differ"


def np_mas_linear(x, mid, w, b, smooth, wbits, abits, w_symmetric=True, group_size=None):
    """Spec §4: y = b + sum_m Q_a((mask_m * x)/s_m) Q_w(W diag(s_m))^T, float64, literally."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    smooth = np.asarray(smooth, np.float64)
    y = np.zeros((x.shape[0], w.shape[0]))
    for m in range(3):
        xm = np.where((mid == m)[:, None], x, 0.0) / smooth[m]
        wq = np_fake_quant(w * smooth[m][None, :], wbits, w_symmetric, group_size)
        y += np_fake_quant(xm, abits) @ wq.T
    if b is not None:
        y += np.asarray(b, np.float64)
    return y


def np_qlinear(x, mid, w, b, smooth, lora_l, lora_r, wbits, abits, w_symmetric=True, group_size=None):
    """Spec §6 in float64: y = b + Q_a(x/s_m) Wq^T + [m != text] (x/s_m) L_m R_m."""
    x = np.asarray(x, np.float64)
    smooth = np.asarray(smooth, np.float64)
    wq = np_fake_quant(np.asarray(w, np.float64) * smooth[TEXT][None], wbits, w_symmetric, group_size)
    xs = x / smooth[mid]
    y = np_fake_quant(xs, abits) @ wq.T
    for m in (VISION, AUDIO):
        if lora_l is not None and lora_l.shape[-1]:
            y += np.where((mid == m)[:, None], xs @ np.asarray(lora_l[m], np.float64) @ np.asarray(lora_r[m], np.float64), 0)
    if b is not None:
        y += np.asarray(b, np.float64)
    return y


def np_sqnr_tokens(ref, approx):
    ref = np.asarray(ref, np.float64)
    approx = np.asarray(approx, np.float64)
    return 10 * np.log10((ref**2).mean(-1) / ((ref - approx) ** 2).mean(-1))


def np_lowrank_whitened(delta_w, cov, rank):
    """Spec §5 with a float64 exact inverse (cov must be well conditioned)."""
    a = np.asarray(delta_w, np.float64).T
    s, u = np.linalg.eigh(np.asarray(cov, np.float64))
    t = np.sqrt(s)[:, None] * u.T
    u2, sig, v2t = np.linalg.svd(t @ a, full_matrices=False)
    l = np.linalg.inv(t) @ u2[:, :rank]
    r = sig[:rank, None] * v2t[:rank]
    return l, r


def np_xnorm_residual(delta_w, cov, l, r):
    """||X (dW^T - L R)||_F^2 = tr(E^T C E), float64."""
    e = np.asarray(delta_w, np.float64).T - np.asarray(l, np.float64) @ np.asarray(r, np.float64)
    return float(np.trace(e.T @ np.asarray(cov, np.float64) @ e))


def np_plain_lowrank(delta_w, rank):
    u, s, vt = np.linalg.svd(np.asarray(delta_w, np.float64).T, full_matrices=False)
    return u[:, :rank], s[:rank, None] * vt[:rank]


def absmax_mask(x, group_size=None):
    """True at the per-group absmax element(s) along the last axis."""
    x = np.asarray(x, np.float64)
    k = x.shape[-1]
    g = k if group_size is None else group_size
    a = np.abs(x.reshape(*x.shape[:-1], k // g, g))
    return (a == a.max(-1, keepdims=True)).reshape(x.shape)
def mixed_vision_batch(seed, tokens=512, din=64, dout=64):
    """Text N(0,1); vision tokens concentrate energy on 8 channels at 10-100x text's range."""
    rng = np.random.default_rng(seed)
    mid = (rng.random(tokens) < 0.5).astype(np.int32)
    x = rng.standard_normal((tokens, din)).astype(np.float32)
    loud = rng.choice(din, 8, replace=False)
    gain = np.exp(rng.uniform(np.log(10), np.log(100), size=8))
    x[np.ix_(mid == 1, loud)] *= gain.astype(np.float32)
    x[:, loud[:2]] += 3.0 * (mid == 0)[:, None]  # text has its own mild outliers
    w = (rng.standard_normal((dout, din)) / np.sqrt(din)).astype(np.float32)
    return x, mid, w



def np_search_alpha(x, w, family, wbits, abits, w_symmetric=True, group_size=None, token_weights=None,
                    mean_abs=None, act_absmax=None, n_grid=20):
    """Float64 reference of core.search.search_alpha: the objective at every grid point.

    ``family`` "awq": ``s = max(mean_abs^α, 1e-4)`` normalised by sqrt(max·min) (llm-awq);
    "smoothquant": ``s = max(act_absmax^α / max(max|W|, 1e-5)^(1-α), 1e-5)``.
    """
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    lam = np.ones(x.shape[0]) if token_weights is None else np.asarray(token_weights, np.float64)
    ref = x @ w.T
    wmax = np.maximum(np.abs(w).max(0), 1e-5)
    errs, cands = [], []
    for i in range(n_grid):
        a = i / n_grid
        if family == "awq":
            s = np.maximum(np.asarray(mean_abs, np.float64) ** a, 1e-4)
            s = s / np.sqrt(s.max() * s.min())
        else:
            s = np.maximum(np.asarray(act_absmax, np.float64) ** a / wmax ** (1 - a), 1e-5)
        xq = np_fake_quant(x / s, abits, True) if abits < 16 else x / s
        y = xq @ np_fake_quant(w * s, wbits, w_symmetric, group_size).T
        err = ((y - ref) ** 2).mean(-1)
        errs.append((lam * err).sum() / lam.sum())
        cands.append(s)
    return np.asarray(errs), cands
