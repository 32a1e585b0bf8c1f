"""masq_jax.cmc against float64 NumPy (docs/method.md §5), robustness on singular covariances, bad input."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.core.np_refs import (np_fake_quant, np_lowrank_whitened, np_plain_lowrank, np_qlinear, np_xnorm_residual)
from masq_jax.core import cmc, compensation
from masq_jax.core.quant import QuantSpec
from masq_jax.core.qlinear import make_qlinear, qlinear_reference
from masq_jax.errors import CoreInputError


def _problem(seed=0, tokens=400, din=48, dout=40, kind="normal"):
    """Activations X [tokens, din] of a given pathology and a residual ΔW [dout, din]."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((tokens, din)) * np.exp(rng.uniform(-1, 1, din))
    if kind == "dead":
        x[:, :7] = 0.0
    elif kind == "huge":
        x[:, :3] *= 1e4
        x[:, 3:6] *= 1e-4
    elif kind == "lowrank":
        x = rng.standard_normal((tokens, 3)) @ rng.standard_normal((3, din))
    elif kind == "zero":
        x[:] = 0.0
    dw = rng.standard_normal((dout, din)) * 0.1
    dw[:, :2] *= 20.0
    return x.astype(np.float32), dw.astype(np.float32)


def _cov(x):
    return (x.astype(np.float64).T @ x.astype(np.float64))



def build_cmc_qlinear(weight, bias, smooth, x, mid, *, rank, wbits, abits, shrinkage=0.0):
    """The full CMC ``QLinear`` (docs/method.md §5-§6) from its two library steps: the quantizer's
    branches (``compensation.factors``) and ``make_qlinear`` for ``Q_w(W·diag(s_text))`` and the vectors."""
    l, r = compensation.factors(weight, smooth, x, mid, rank, QuantSpec(wbits), shrinkage=shrinkage, svd="svd")
    return make_qlinear(weight, bias, wbits=wbits, abits=abits, smooth=smooth, lora_l=l, lora_r=r)


def test_whitened_matches_numpy_reference_and_is_optimal():
    x, dw = _problem(0)
    c = _cov(x)
    for r in (1, 5, 20):
        l, rr = cmc.low_rank_compensation(jnp.asarray(dw), jnp.asarray(c, jnp.float32), r, fit="whitened")
        assert l.shape == (48, r) and rr.shape == (r, 40) and l.dtype == jnp.float32
        lr_ref, rr_ref = np_lowrank_whitened(dw, c, r)
        prod = np.asarray(l, np.float64) @ np.asarray(rr, np.float64)
        np.testing.assert_allclose(prod, lr_ref @ rr_ref, rtol=1e-3, atol=1e-3 * np.abs(lr_ref @ rr_ref).max())
        # Theorem 2: the residual equals the whitened tail energy, below the plain SVD's residual
        t = np.sqrt(np.linalg.eigvalsh(c)).max()
        res = np_xnorm_residual(dw, c, l, rr)
        res_opt = np_xnorm_residual(dw, c, lr_ref, rr_ref)
        lp, rp = np_plain_lowrank(dw, r)
        assert res <= res_opt * (1 + 1e-4) + 1e-9 * t
        assert res_opt < np_xnorm_residual(dw, c, lp, rp)
    # auto picks the whitened solution on a well-conditioned covariance
    la, ra = cmc.low_rank_compensation(jnp.asarray(dw), jnp.asarray(c, jnp.float32), 5)
    lw, rw = cmc.low_rank_compensation(jnp.asarray(dw), jnp.asarray(c, jnp.float32), 5, fit="whitened")
    np.testing.assert_array_equal(np.asarray(la), np.asarray(lw))
    lp_j, rp_j = cmc.low_rank_compensation(jnp.asarray(dw), jnp.asarray(c, jnp.float32), 5, fit="plain")
    lp, rp = np_plain_lowrank(dw, 5)
    np.testing.assert_allclose(np.asarray(lp_j) @ np.asarray(rp_j), lp @ rp, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind,tokens", [("normal", 20), ("dead", 400), ("huge", 400), ("lowrank", 400),
                                         ("zero", 400), ("normal", 400)])
@pytest.mark.parametrize("damping", [0.0, 0.05])
def test_never_worse_than_plain_svd_and_finite(kind, tokens, damping):
    x, dw = _problem(1, tokens=tokens, kind=kind)
    c = _cov(x)
    scale = np.trace(c) * (dw.astype(np.float64) ** 2).sum() + 1e-30
    for r in (1, 4, 16, 40):
        l, rr = cmc.low_rank_compensation(jnp.asarray(dw), jnp.asarray(c, jnp.float32), r, damping=damping)
        assert np.isfinite(np.asarray(l)).all() and np.isfinite(np.asarray(rr)).all()
        lp, rp = np_plain_lowrank(dw, r)
        res, res_p = np_xnorm_residual(dw, c, l, rr), np_xnorm_residual(dw, c, lp, rp)
        assert res <= res_p * (1 + 1e-4) + 1e-9 * scale, (kind, r, res, res_p)
        lw, rw = cmc.low_rank_compensation(jnp.asarray(dw), jnp.asarray(c, jnp.float32), r, fit="whitened",
                                           damping=damping)
        assert np.isfinite(np.asarray(lw)).all() and np.isfinite(np.asarray(rw)).all()


def test_whitening_wins_on_singular_covariance_with_x64():
    # fewer tokens than channels: whitening exploits the null space; float64 under x64
    x, dw = _problem(2, tokens=12, din=48, dout=40)
    c = _cov(x)
    with jax.enable_x64(True):
        l, rr = cmc.low_rank_compensation(jnp.asarray(dw, jnp.float64), jnp.asarray(c), 12)
        assert l.dtype == jnp.float64
    lp, rp = np_plain_lowrank(dw, 12)
    res, res_p = np_xnorm_residual(dw, c, l, rr), np_xnorm_residual(dw, c, lp, rp)
    assert res < 1e-8 * res_p  # X ΔWᵀ has rank <= 12: rank 12 whitened is exact on these tokens
    l32, r32 = cmc.low_rank_compensation(jnp.asarray(dw), jnp.asarray(c, jnp.float32), 12)
    assert np_xnorm_residual(dw, c, l32, r32) < 1e-3 * res_p


def test_full_rank_cmc_reproduces_modality_weight_on_its_tokens():
    rng = np.random.default_rng(3)
    din, dout = 32, 24
    for tokens in (300, 20):  # well-conditioned and singular (fewer tokens per modality than channels)
        x = rng.standard_normal((tokens, din)).astype(np.float32)
        mid = rng.integers(0, 3, size=tokens).astype(np.int32)
        x[mid == 1, :3] *= 30
        w = (rng.standard_normal((dout, din)) / np.sqrt(din)).astype(np.float32)
        b = rng.standard_normal(dout).astype(np.float32)
        s = np.exp(rng.uniform(-1, 1, (3, din))).astype(np.float32)
        build = jax.jit(build_cmc_qlinear, static_argnames=("rank", "wbits", "abits"))
        run = jax.jit(qlinear_reference)
        xm = (jnp.asarray(x), jnp.asarray(mid))
        ql = build(jnp.asarray(w), jnp.asarray(b), jnp.asarray(s), *xm, rank=min(din, dout), wbits=4, abits=16)
        y = np.asarray(run(jnp.asarray(x), jnp.asarray(mid), ql), np.float64)
        ref = x.astype(np.float64) @ w.T.astype(np.float64) + b
        for m in (1, 2):
            sel = mid == m
            np.testing.assert_allclose(y[sel], ref[sel], rtol=1e-3, atol=1e-3 * np.abs(ref).max())
        wq_ref = np_fake_quant(w.astype(np.float64) * s[0], 4)
        text = mid == 0
        np.testing.assert_allclose(y[text], (x[text] / s[0]) @ wq_ref.T + b, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(np.asarray(ql.lora_l[0]), 0.0)
        # with activation quantization: the docs/method.md §6 formula in float64
        ql8 = build(jnp.asarray(w), jnp.asarray(b), jnp.asarray(s), *xm, rank=8, wbits=4, abits=8)
        y8 = np.asarray(run(jnp.asarray(x), jnp.asarray(mid), ql8), np.float64)
        ref8 = np_qlinear(x, mid, w, b, s, np.asarray(ql8.lora_l), np.asarray(ql8.lora_r), 4, 8)
        assert np.linalg.norm(y8 - ref8) / np.linalg.norm(ref8) < 2e-3


def test_cmc_residual_and_variant():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((16, 32)).astype(np.float32)
    s_m, s_t = np.exp(rng.uniform(-1, 1, (2, 32))).astype(np.float32)
    wq = np_fake_quant(w.astype(np.float64) * s_t, 4)
    d = cmc.cmc_residual(jnp.asarray(w), jnp.asarray(s_m), jnp.asarray(s_t), wbits=4)
    np.testing.assert_allclose(np.asarray(d), w.astype(np.float64) * s_m - wq, rtol=1e-4, atol=1e-4)
    d2 = cmc.cmc_residual(jnp.asarray(w), jnp.asarray(s_m), jnp.asarray(s_t), jnp.asarray(wq, jnp.float32))
    np.testing.assert_allclose(np.asarray(d2), np.asarray(d), rtol=1e-6, atol=1e-6)
    dq = cmc.cmc_residual(jnp.asarray(w), jnp.asarray(s_m), jnp.asarray(s_t), quantize_m=True, wbits=4, group_size=8)
    ref = np_fake_quant(w.astype(np.float64) * s_m, 4, True, 8) - np_fake_quant(w.astype(np.float64) * s_t, 4, True, 8)
    assert np.abs(np.asarray(dq) - ref).mean() < 1e-3 * np.abs(ref).mean() + 1e-6
    with pytest.raises(CoreInputError, match="wbits is required"):
        cmc.cmc_residual(jnp.asarray(w), jnp.asarray(s_m), jnp.asarray(s_t))
    with pytest.raises(CoreInputError, match="s_m must be"):
        cmc.cmc_residual(jnp.asarray(w), jnp.asarray(s_m[:5]), jnp.asarray(s_t), wbits=4)


def test_modality_covariance():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 30, 16)).astype(np.float32)
    mid = rng.integers(0, 2, size=(2, 30)).astype(np.int32)  # no audio
    valid = np.ones((2, 30), bool)
    valid[1, 20:] = False
    s = np.exp(rng.uniform(-1, 1, (3, 16))).astype(np.float32)
    c = np.asarray(cmc.modality_covariance(jnp.asarray(x), jnp.asarray(mid), jnp.asarray(s), jnp.asarray(valid)))
    assert c.shape == (3, 16, 16) and c.dtype == np.float32
    xf, mf, vf = x.reshape(-1, 16).astype(np.float64), mid.ravel(), valid.ravel()
    for m in (0, 1):
        xt = xf[(mf == m) & vf] / s[m]
        np.testing.assert_allclose(c[m], xt.T @ xt, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(c[2], 0.0)
    cb = cmc.modality_covariance(jnp.asarray(x, jnp.bfloat16), jnp.asarray(mid), jnp.asarray(s))
    assert cb.dtype == jnp.float32


def test_resolve_rank():
    assert cmc.resolve_rank(1, 3584, 512) == 512  # 1 = full rank
    assert cmc.resolve_rank(1.0, 3584, 18944) == 3584
    assert cmc.resolve_rank(0.05, 3584, 3584) == 179
    assert cmc.resolve_rank(0.01, 3584, 3584) == 35
    assert cmc.resolve_rank(0.005, 3584, 3584) == 32  # floored at 32
    assert cmc.resolve_rank(0.5, 40, 20) == 20 and cmc.resolve_rank(0.1, 40, 20) == 20  # floor capped at min
    assert cmc.resolve_rank(0.1, 400, 200, floor=0) == 20
    assert cmc.resolve_rank(64, 3584, 512) == 64
    assert cmc.resolve_rank(8, 3584, 512) == 32 and cmc.resolve_rank(8, 3584, 512, floor=0) == 8
    assert cmc.resolve_rank(0, 100, 100, floor=0) == 0
    for bad in (-0.1, 1.5, float("nan"), True, "0.1"):
        with pytest.raises(CoreInputError, match="rank"):
            cmc.resolve_rank(bad, 100, 100)
    with pytest.raises(CoreInputError, match=r"rank=600 is larger than min\(in, out\)=512"):
        cmc.resolve_rank(600, 3584, 512)


def test_spectrum_helpers():
    x, dw = _problem(6)
    c = _cov(x)
    sv_plain = np.asarray(cmc.residual_spectrum(jnp.asarray(dw)))
    np.testing.assert_allclose(sv_plain, np.linalg.svd(dw.astype(np.float64), compute_uv=False), rtol=1e-4)
    sv_w = np.asarray(cmc.residual_spectrum(jnp.asarray(dw), jnp.asarray(c, jnp.float32)))
    ev, u = np.linalg.eigh(c)
    t = np.sqrt(np.maximum(ev, 0))[:, None] * u.T
    np.testing.assert_allclose(sv_w, np.linalg.svd(t @ dw.T.astype(np.float64), compute_uv=False), rtol=1e-3,
                               atol=1e-5 * sv_w.max())
    e = sv_w.astype(np.float64) ** 2
    curve = np.asarray(cmc.energy_curve(jnp.asarray(sv_w)))
    np.testing.assert_allclose(curve, np.cumsum(e) / e.sum(), rtol=1e-5)
    # the whitened residual energy at rank r = 1 - optimal residual / total
    l, rr = np_lowrank_whitened(dw, c, 5)
    np.testing.assert_allclose(curve[4],
                               1 - np_xnorm_residual(dw, c, l, rr) / np_xnorm_residual(dw, c, l * 0, rr), rtol=1e-3)
    assert float(cmc.effective_rank(jnp.asarray(sv_w))) > 1.0


def test_vmap_over_layers_equals_loop_and_no_retrace():
    rng = np.random.default_rng(7)
    n, t, din, dout = 3, 60, 24, 16
    X = jnp.asarray(rng.standard_normal((n, t, din)), jnp.float32)
    M = jnp.asarray(rng.integers(0, 3, size=(n, t)), jnp.int32)
    W = jnp.asarray(rng.standard_normal((n, dout, din)) / 5, jnp.float32)
    S = jnp.asarray(np.exp(rng.uniform(-1, 1, (n, 3, din))), jnp.float32)

    @chex.assert_max_traces(n=2)  # once for vmap, once for the single layer
    def per_layer(x, mid, w, s):
        covs = cmc.modality_covariance(x, mid, s)
        ql = build_cmc_qlinear(w, None, s, x, mid, rank=8, wbits=4, abits=8, shrinkage=compensation.FIXED_RHO)
        sv = cmc.residual_spectrum(cmc.cmc_residual(w, s[1], s[0], wbits=4), covs[1])
        return covs, ql.lora_l, ql.lora_r, qlinear_reference(x, mid, ql), sv

    vm = jax.jit(jax.vmap(per_layer))
    out = vm(X, M, W, S)
    vm(X * 2, M, W, S)  # no retrace
    one = jax.jit(per_layer)
    for i in range(n):
        ref = one(X[i], M[i], W[i], S[i])
        for a, b in zip(out, ref):
            np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b), rtol=1e-4, atol=1e-4)


def test_bad_input():
    dw = jnp.ones((8, 16))
    c = jnp.eye(16)
    with pytest.raises(CoreInputError, match=r"rank=9 is larger than min\(in, out\)=8"):
        cmc.low_rank_compensation(dw, c, 9)
    with pytest.raises(CoreInputError, match="rank must be a non-negative integer"):
        cmc.low_rank_compensation(dw, c, 0.5)
    with pytest.raises(CoreInputError, match=r"cov must be \[in, in\]=\[16, 16\]"):
        cmc.low_rank_compensation(dw, jnp.eye(8), 2)
    with pytest.raises(CoreInputError, match="delta_w must be"):
        cmc.low_rank_compensation(jnp.ones(16), c, 2)
    with pytest.raises(CoreInputError, match="fit must be"):
        cmc.low_rank_compensation(dw, c, 2, fit="svd")
    with pytest.raises(CoreInputError, match=r"s must be \[3, 16\] and gram \[3, 16, 16\]"):
        compensation.linear_inputs(dw, jnp.ones((3, 16)), QuantSpec(4), jnp.ones((2, 16, 16)), jnp.ones(3))
    with pytest.raises(CoreInputError, match=r"smooth must be"):
        cmc.modality_covariance(jnp.ones((4, 16)), jnp.zeros(4, jnp.int32), jnp.ones((3, 15)))
    with pytest.raises(CoreInputError, match=r"rank=20 is larger"):
        compensation.factors(dw, jnp.ones((3, 16)), jnp.ones((4, 16)), jnp.zeros(4, jnp.int32), 20, QuantSpec(4))


@pytest.mark.parametrize("din,dout", [(48, 40), (40, 48)])
@pytest.mark.parametrize("kind,tokens", [("normal", 400), ("normal", 20), ("dead", 400), ("huge", 400)])
def test_gram_svd_option_matches_exact(din, dout, kind, tokens):
    x, dw = _problem(8, tokens=tokens, din=din, dout=dout, kind=kind)
    c = _cov(x)
    scale = np.trace(c) * (dw.astype(np.float64) ** 2).sum()
    for r in (3, 12, min(din, dout)):
        lg, rg = cmc.low_rank_compensation(jnp.asarray(dw), jnp.asarray(c, jnp.float32), r, svd="gram")
        ls, rs = cmc.low_rank_compensation(jnp.asarray(dw), jnp.asarray(c, jnp.float32), r)
        assert lg.shape == (din, r) and rg.shape == (r, dout)
        res_g, res_s = np_xnorm_residual(dw, c, lg, rg), np_xnorm_residual(dw, c, ls, rs)
        assert res_g <= res_s * (1 + 1e-3) + 1e-7 * scale, (r, res_g, res_s)
        lp, rp = np_plain_lowrank(dw, r)
        assert res_g <= np_xnorm_residual(dw, c, lp, rp) * (1 + 1e-3) + 1e-7 * scale
    # at full rank the product reproduces ΔWᵀ
    r = min(din, dout)
    lg, rg = cmc.low_rank_compensation(jnp.asarray(dw), jnp.asarray(c, jnp.float32), r, svd="gram", fit="plain")
    np.testing.assert_allclose(np.asarray(lg) @ np.asarray(rg), dw.T, atol=1e-4 * np.abs(dw).max())
    with pytest.raises(CoreInputError, match="svd must be"):
        cmc.low_rank_compensation(jnp.asarray(dw), jnp.asarray(c, jnp.float32), 2, svd="qr")


@pytest.mark.parametrize("din,dout", [(48, 40), (64, 24)])
def test_gram_output_side_equals_spec_whitened_product(din, dout):
    """out < in: the gram solver's output-side solution is docs/method.md §5's T⁻¹(TΔWᵀ)_r (float64 NumPy)."""
    x, dw = _problem(3, tokens=400, din=din, dout=dout)
    c = _cov(x)
    for r in (1, 6, dout):
        l, rr = cmc.low_rank_compensation(jnp.asarray(dw), jnp.asarray(c, jnp.float32), r, fit="whitened",
                                          svd="gram")
        assert l.shape == (din, r) and rr.shape == (r, dout)
        lr_ref, rr_ref = np_lowrank_whitened(dw, c, r)
        ref = lr_ref @ rr_ref
        prod = np.asarray(l, np.float64) @ np.asarray(rr, np.float64)
        np.testing.assert_allclose(prod, ref, rtol=1e-3, atol=2e-3 * np.abs(ref).max())
    # with damping it is the §5 solution on the damped covariance
    damp = 0.05
    cd = c + damp * np.trace(c) / din * np.eye(din)
    l, rr = cmc.low_rank_compensation(jnp.asarray(dw), jnp.asarray(c, jnp.float32), 4, fit="whitened",
                                      svd="gram", damping=damp)
    lr_ref, rr_ref = np_lowrank_whitened(dw, cd, 4)
    np.testing.assert_allclose(np.asarray(l, np.float64) @ np.asarray(rr, np.float64), lr_ref @ rr_ref,
                               rtol=1e-3, atol=2e-3 * np.abs(lr_ref @ rr_ref).max())


# ----------------------------------------------------------------------------------------------
# validated compensation (docs/method.md §5: shrinkage and rank chosen on held-out tokens)


def test_validation_curve_is_the_residual_of_every_prefix():
    """``validation_curve`` against ``tr(Eᵀ C_val E)`` of each prefix in float64, for the whitened
    factors and for arbitrary (non-orthogonal) ones."""
    x_fit, dw = _problem(seed=3, tokens=60, din=32, dout=24)
    x_val, _ = _problem(seed=4, tokens=80, din=32, dout=24)
    c_fit, c_val = x_fit.T @ x_fit, x_val.T @ x_val
    rng = np.random.default_rng(5)
    for l, r in (cmc.low_rank_compensation(jnp.asarray(dw, jnp.float32), jnp.asarray(c_fit, jnp.float32), 24,
                                           damping=0.1, fit="whitened"),
                 (rng.standard_normal((32, 7)), rng.standard_normal((7, 24)))):
        l, r = np.asarray(l, np.float64), np.asarray(r, np.float64)
        got = np.asarray(cmc.validation_curve(jnp.asarray(dw), jnp.asarray(l), jnp.asarray(r), jnp.asarray(c_val)))
        want = [np_xnorm_residual(dw, c_val, l[:, :k], r[:k]) for k in range(l.shape[1] + 1)]
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-4 * want[0])


def test_validated_fit_picks_the_shrinkage_that_generalises():
    """A fit fold of few tokens from an anisotropic population, a validation fold from the same
    population: the candidate chosen is the one with the smallest brute-force float64 validation
    residual at the rank, and with few fit tokens a strong shrinkage beats none."""
    rng = np.random.default_rng(7)
    din, dout, rank = 48, 40, 12
    scales = np.exp(rng.uniform(-1, 1, din))
    x_fit = rng.standard_normal((30, din)) * scales  # fewer tokens than channels
    x_val = rng.standard_normal((2000, din)) * scales
    dw = rng.standard_normal((dout, din))
    c_fit, c_val = x_fit.T @ x_fit, x_val.T @ x_val
    rhos = [0.0, 0.05, 0.3, 0.9]
    curves, best = cmc.validated_fit(jnp.asarray(dw, jnp.float32), jnp.asarray(c_fit, jnp.float32),
                                     jnp.asarray(c_val, jnp.float32), [jnp.float32(r) for r in rhos], rank)
    brute = []
    for rho in rhos:
        c = (1 - rho) * c_fit + rho * np.trace(c_fit) / din * np.eye(din)
        s, u = np.linalg.eigh(c)
        s = np.maximum(s, din * np.finfo(np.float64).eps * s.max())
        t = np.sqrt(s)[:, None] * u.T
        u2, sig, v2t = np.linalg.svd(t @ dw.T, full_matrices=False)
        l, r = np.linalg.pinv(t) @ u2[:, :rank], sig[:rank, None] * v2t[:rank]
        brute.append(np_xnorm_residual(dw, c_val, l, r))
    assert int(best) == int(np.argmin(brute))
    np.testing.assert_allclose(np.asarray(curves)[:, rank], brute, rtol=2e-3)
    assert brute[int(best)] < brute[0]  # shrinking beats the raw covariance of 30 tokens in 48 dims


# ----------------------------------------------------------------------------------------------
# the "output" solver: one eigh per whitened fit, output-side factors (L = ΔWᵀV, R = Vᵀ)


@pytest.mark.parametrize("din,dout", [(48, 40), (40, 40), (40, 48), (24, 64)])
@pytest.mark.parametrize("kind,tokens", [("normal", 400), ("normal", 20), ("dead", 400), ("huge", 400)])
def test_output_solver_is_the_spec_whitened_fit(din, dout, kind, tokens):
    """Any shape (out < in, out = in, out > in through the Cholesky factor): the product is docs/method.md
    §5's ``T⁻¹(TΔWᵀ)_r`` on the damped covariance (float64 NumPy), with ``out ≤ in`` in the output-side
    form (``L = ΔWᵀ Rᵀ``), and the residual is never above the spec's (to the gram solver's float32 bar)."""
    x, dw = _problem(11, tokens=tokens, din=din, dout=dout, kind=kind)
    c = _cov(x)
    damp = 0.05
    cd = c + damp * np.trace(c) / din * np.eye(din)
    scale = np.trace(cd) * (dw.astype(np.float64) ** 2).sum()
    for r in (1, 6, min(din, dout)):
        l, rr = cmc.low_rank_compensation(jnp.asarray(dw), jnp.asarray(c, jnp.float32), r, fit="whitened",
                                          svd="output", damping=damp)
        assert l.shape == (din, r) and rr.shape == (r, dout)
        l, rr = np.asarray(l, np.float64), np.asarray(rr, np.float64)
        if dout <= din:
            np.testing.assert_allclose(l, dw.T.astype(np.float64) @ rr.T, rtol=1e-4, atol=1e-4 * np.abs(l).max())
        lr_ref, rr_ref = np_lowrank_whitened(dw, cd, r)
        res, res_ref = np_xnorm_residual(dw, cd, l, rr), np_xnorm_residual(dw, cd, lr_ref, rr_ref)
        assert res <= res_ref * (1 + 1e-3) + 1e-7 * scale, (r, res, res_ref)
        if kind == "normal" and tokens == 400:  # well conditioned: the product itself is the spec's
            ref = lr_ref @ rr_ref
            np.testing.assert_allclose(l @ rr, ref, rtol=1e-3, atol=2e-3 * np.abs(ref).max())


@pytest.mark.parametrize("din,dout", [(40, 48), (24, 64)])
def test_output_solver_survives_a_singular_covariance(din, dout):
    """in < out and no damping on a rank-3 covariance (the Cholesky factor fails; the eigenvalue floor and
    pseudo-inverse take over): finite factors whose residual matches the best rank-r one (float64)."""
    x, dw = _problem(12, tokens=400, din=din, dout=dout, kind="lowrank")
    c = _cov(x)
    for r in (2, 3, 8):
        l, rr = cmc.low_rank_compensation(jnp.asarray(dw), jnp.asarray(c, jnp.float32), r, fit="whitened",
                                          svd="output")
        l, rr = np.asarray(l, np.float64), np.asarray(rr, np.float64)
        assert np.isfinite(l).all() and np.isfinite(rr).all()
        b = np.linalg.cholesky(c + 1e-9 * np.trace(c) * np.eye(din)).T @ dw.T.astype(np.float64)
        sig = np.linalg.svd(b, compute_uv=False)
        best = float(np.sum(sig[r:] ** 2))  # ‖X(ΔWᵀ − LR)‖² can go no lower than the tail of X ΔWᵀ's spectrum
        total = float(np.sum(sig ** 2))
        assert np_xnorm_residual(dw, c, l, rr) <= best + 1e-4 * total, r


@pytest.mark.parametrize("din,dout", [(48, 40), (40, 40), (40, 48)])
def test_validated_fit_output_solver_matches_brute_force(din, dout):
    """``validated_fit(svd="output")``: each candidate's curve is the float64 validation residual of every
    prefix of the spec's whitened factors on the shrunk fit covariance, the choice the brute-force one,
    and the returned factors are what the curve scored."""
    rng = np.random.default_rng(13)
    scales = np.exp(rng.uniform(-1, 1, din))
    x_fit = rng.standard_normal((30, din)) * scales
    x_val = rng.standard_normal((500, din)) * scales
    dw = rng.standard_normal((dout, din))
    c_fit, c_val = x_fit.T @ x_fit, x_val.T @ x_val
    rhos, rank, cap = [0.05, 0.4], 6, 12
    curves, best, (l, r) = cmc.validated_fit(jnp.asarray(dw, jnp.float32), jnp.asarray(c_fit, jnp.float32),
                                             jnp.asarray(c_val, jnp.float32), [jnp.float32(v) for v in rhos], rank,
                                             max_rank=cap, svd="output", return_factors=True)
    brute = []
    for rho in rhos:
        c = (1 - rho) * c_fit + rho * np.trace(c_fit) / din * np.eye(din)
        lr, rr = np_lowrank_whitened(dw, c, cap)
        brute.append([np_xnorm_residual(dw, c_val, lr[:, :k], rr[:k]) for k in range(cap + 1)])
    np.testing.assert_allclose(np.asarray(curves), brute, rtol=2e-3, atol=1e-6 * brute[0][0])
    assert int(best) == int(np.argmin([b[rank] for b in brute]))
    got = [np_xnorm_residual(dw, c_val, np.asarray(l)[:, :k], np.asarray(r)[:k]) for k in range(cap + 1)]
    np.testing.assert_allclose(got, brute[int(best)], rtol=2e-3, atol=1e-6 * brute[0][0])
