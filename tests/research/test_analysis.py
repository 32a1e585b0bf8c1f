"""masq_jax.analysis against independent float64 NumPy references (small random linears)."""

from __future__ import annotations

import numpy as np
import pytest

from masq_jax.research import analysis as an

IN, OUT, T = 24, 16, 96


def np_quant(x: np.ndarray, bits: int) -> np.ndarray:
    """Spec §1 symmetric fake quant over the last axis, in float32 like the package."""
    x = np.asarray(x, np.float32)
    qmax = 2 ** (bits - 1) - 1
    scale = np.clip(np.abs(x).max(axis=-1, keepdims=True) / np.float32(qmax), 1e-5, 1e4).astype(np.float32)
    return (np.clip(np.round(x / scale), -qmax, qmax) * scale).astype(np.float32)


def np_sqnr(ref: np.ndarray, approx: np.ndarray) -> float:
    e = ref - approx
    return float(np.mean(10 * np.log10(np.mean(ref ** 2, axis=-1) / np.mean(e ** 2, axis=-1))))


def np_whitening(cov: np.ndarray, damping: float, floor: float):
    c = 0.5 * (cov + cov.T)
    n = c.shape[0]
    c = c + damping * np.trace(c) / n * np.eye(n)
    s, u = np.linalg.eigh(c)
    s = np.maximum(s, floor * s.max())
    return np.sqrt(s)[:, None] * u.T, u / np.sqrt(s)[None, :]


@pytest.fixture(scope="module")
def linear():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, IN)).astype(np.float32) * rng.uniform(0.2, 3, IN).astype(np.float32)
    x[:, 3] *= 8  # an outlier channel
    w = (0.1 * rng.standard_normal((OUT, IN))).astype(np.float32)
    b = (0.05 * rng.standard_normal(OUT)).astype(np.float32)
    s_m = rng.uniform(0.5, 2.0, IN).astype(np.float32)
    s_t = rng.uniform(0.5, 2.0, IN).astype(np.float32)
    x_eval = (rng.standard_normal((40, IN)) * x.std(axis=0)).astype(np.float32)
    return x, w, b, s_m, s_t, x_eval


@pytest.mark.parametrize("whiten", [True, False])
def test_cmc_rank_curve_matches_explicit_factors(linear, whiten):
    x, w, b, s_m, s_t, x_eval = linear
    xt = (x / s_m).astype(np.float64)
    cov = xt.T @ xt
    damping = 1e-2
    curve = an.cmc_rank_curve(x, w, b, s_m, s_t, cov, wbits=4, abits=8, whiten=whiten, damping=damping,
                              x_eval=x_eval)
    k = min(IN, OUT)
    assert curve.shape == (k + 1,)
    wq = np_quant(w * s_t[None, :], 4).astype(np.float64)
    dw_t = (w.astype(np.float64) * s_m[None, :] - wq).T  # [in, out]
    if whiten:
        t, t_inv = np_whitening(cov, damping, IN * np.finfo(np.float32).eps)
        u, sig, vt = np.linalg.svd(t @ dw_t, full_matrices=False)
        left = t_inv @ u
    else:
        u, sig, vt = np.linalg.svd(dw_t, full_matrices=False)
        left = u
    xe_t = (x_eval / s_m).astype(np.float32)
    xq = np_quant(xe_t, 8).astype(np.float64)
    ref = x_eval.astype(np.float64) @ w.T.astype(np.float64) + b
    for r in (0, 1, 5, k // 2, k):
        lr = left[:, :r] @ (sig[:r, None] * vt[:r])
        y = xq @ wq.T + xe_t.astype(np.float64) @ lr + b
        assert curve[r] == pytest.approx(np_sqnr(ref, y), abs=2e-2), r
    # Full rank leaves only the activation error: Q_a(x̃)·Wqᵀ + x̃·ΔWᵀ = x·Wᵀ + (Q_a(x̃) − x̃)·Wqᵀ.
    assert curve[k] == pytest.approx(np_sqnr(ref, ref + (xq - xe_t) @ wq.T), abs=2e-2)


def test_whitened_curve_beats_plain_on_its_own_covariance(linear):
    """Theorem 2: on the tokens whose covariance it whitens, the whitened fit is optimal at every rank."""
    x, w, b, s_m, s_t, _ = linear
    xt = (x / s_m).astype(np.float64)
    cov = xt.T @ xt
    cw = an.cmc_rank_curve(x, w, b, s_m, s_t, cov, wbits=4, abits=16, whiten=True)
    cp = an.cmc_rank_curve(x, w, b, s_m, s_t, cov, wbits=4, abits=16, whiten=False)
    # The total squared error is what whitening minimises; the token-mean dB follows it closely.
    assert np.mean(cw[1:-1] - cp[1:-1]) > 0


def test_linear_sqnr_matches_numpy(linear):
    x, w, b, s_m, _, _ = linear
    got = an.linear_sqnr(x, w, b, s_m, wbits=4, abits=8)
    ref = x.astype(np.float64) @ w.T + b
    y = np_quant(x / s_m, 8).astype(np.float64) @ np_quant(w * s_m[None, :], 4).T.astype(np.float64) + b
    assert got == pytest.approx(np_sqnr(ref, y), abs=1e-2)


def test_predicted_sqnr_formula_and_agreement(linear):
    x, w, _, s_m, _, _ = linear
    xs, ws = x.astype(np.float64) / s_m, w.astype(np.float64) * s_m
    da = np.abs(xs).max(axis=1) / 127
    dw = np.abs(ws).max(axis=1) / 7
    err = np.array([(da[t] ** 2 / 12) * (ws ** 2).sum() + (dw ** 2).sum() / 12 * (xs[t] ** 2).sum() for t in range(T)])
    sig = ((x.astype(np.float64) @ w.T.astype(np.float64)) ** 2).sum(axis=1)
    want = float(np.mean(10 * np.log10(sig / err)))
    assert an.predicted_sqnr(x, w, s_m, wbits=4, abits=8) == pytest.approx(want, rel=1e-9)
    # The noise model predicts the measured SQNR of a random linear to within ~1 dB.
    measured = an.linear_sqnr(x, w, None, s_m, wbits=4, abits=8)
    assert abs(measured - want) < 1.5


def test_range_ratio_and_dead_channels():
    a = np.array([[1.0, 2.0, 0.0], [4.0, 1.0, 3.0], [0.5, 2.0, 1.0]])
    r = an.range_ratio(a, 1)
    np.testing.assert_allclose(r[:2], [4.0, 0.5])
    assert np.isnan(r[2])
    np.testing.assert_allclose(an.range_ratio(a, 2, reference=1), [0.125, 2.0, 1 / 3])
    with pytest.raises(an.AnalysisInputError, match="absmax"):
        an.range_ratio(a[:2], 1)


def np_erank(sv: np.ndarray) -> float:
    p = sv / sv.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def test_residual_effective_rank_matches_numpy(linear):
    x, w, _, s_m, s_t, _ = linear
    dw_t = (w.astype(np.float64) * s_m - np_quant(w * s_t, 4)).T
    plain = an.residual_effective_rank(w, s_m, s_t, wbits=4)
    assert plain == pytest.approx(np_erank(np.linalg.svd(dw_t, compute_uv=False)), rel=1e-4)
    xt = (x / s_m).astype(np.float64)
    cov = xt.T @ xt
    t, _ = np_whitening(cov, 1e-2, IN * np.finfo(np.float32).eps)
    white = an.residual_effective_rank(w, s_m, s_t, cov, wbits=4, damping=1e-2)
    assert white == pytest.approx(np_erank(np.linalg.svd(t @ dw_t, compute_uv=False)), rel=1e-3)


def test_smoothed_covariance_and_rank_to_reach():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((10, 5))
    s = rng.uniform(0.5, 2, 5)
    np.testing.assert_allclose(an.smoothed_covariance(x.T @ x, s), (x / s).T @ (x / s), rtol=2e-5)  # float32
    assert an.rank_to_reach(np.array([1.0, 2.0, 5.0, 4.0]), 3.0) == 2
    assert an.rank_to_reach(np.array([1.0, 2.0]), 3.0) is None


def test_bad_shapes_raise_clear_errors(linear):
    x, w, b, s_m, s_t, _ = linear
    with pytest.raises(an.AnalysisInputError, match="cov must be"):
        an.cmc_rank_curve(x, w, b, s_m, s_t, np.eye(3), wbits=4, abits=8)
    with pytest.raises(an.AnalysisInputError, match="no tokens"):
        an.linear_sqnr(x[:0], w, b, s_m, wbits=4, abits=8)
    with pytest.raises(an.AnalysisInputError, match=r"\[tokens, in="):
        an.predicted_sqnr(x[:, :5], w, s_m, wbits=4, abits=8)


def test_capture_layers_matches_numpy_rmsnorm_and_stats():
    from masq_jax.calib import synthetic_calibset
    from masq_jax.calibrate.batch import prepare
    from masq_jax.families.toy import make_config, random_params

    cfg = make_config("tiny")
    params = random_params(cfg)
    cs = synthetic_calibset(hidden_size=cfg.hidden_size, samples=3, image_h=2, image_w=3, audio_len=5, text_len=6)
    prep = prepare(cfg, params, cs)
    got = list(an.capture_layers(cfg, params, prep, layers=[0], with_gram=True))
    assert [g[0] for g in got] == [0]
    _, lp, inputs, stats = got[0]
    valid = np.asarray(prep.batch.valid).reshape(-1)
    h = np.asarray(prep.h0, np.float64).reshape(-1, cfg.hidden_size)[valid]
    norm = h / np.sqrt(np.mean(h ** 2, axis=-1, keepdims=True) + cfg.rms_norm_eps) * np.asarray(lp["input_norm"])
    np.testing.assert_allclose(inputs["qkv"], norm, rtol=1e-4, atol=1e-5)
    mid = inputs["modality_ids"]
    for m in range(3):
        xm = inputs["qkv"][mid == m].astype(np.float64)
        np.testing.assert_allclose(np.asarray(stats["qkv"]["absmax"][m]), np.abs(xm).max(axis=0), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(stats["qkv"]["gram"][m]), xm.T @ xm, rtol=1e-4, atol=1e-4)
    with pytest.raises(an.AnalysisInputError, match="layers"):
        next(an.capture_layers(cfg, params, prep, layers=[5]))
