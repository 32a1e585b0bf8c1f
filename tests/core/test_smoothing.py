"""masq_jax.core.smoothing (and the one-linear trainer) against float64 NumPy references of
docs/method.md §3-§4, plus properties and bad input."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.core.np_refs import mixed_vision_batch, np_mas_linear, np_sqnr_tokens
from masq_jax.core import smoothing as sm
from masq_jax.core import search, stats, training
from masq_jax.core.qlinear import make_qlinear, qlinear_reference
from masq_jax.core.quant import QuantSpec
from masq_jax.errors import CoreInputError, QuantConfigError


def _batch(seed=0, tokens=48, din=32, dout=24, present=(0, 1, 2)):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((tokens, din)).astype(np.float32)
    mid = rng.choice(np.asarray(present), size=tokens).astype(np.int32)
    x[mid == 1, :4] *= 20.0
    w = (rng.standard_normal((dout, din)) / np.sqrt(din)).astype(np.float32)
    b = rng.standard_normal(dout).astype(np.float32)
    return x, mid, w, b


def test_init_factors_formula_and_floors():
    x, mid, w, _ = _batch()
    w[:, 5] = 0.0  # a dead weight column: weight absmax floored at 1e-5
    amax = np.array(stats.modality_absmax(jnp.asarray(x), jnp.asarray(mid)))
    amax[2] = 0.0  # absent modality: every factor floored at 1e-5
    for alpha in (0.5, 0.8):
        got = np.asarray(sm.init_factors(jnp.asarray(amax), jnp.asarray(w), alpha))
        wmax = np.maximum(np.abs(w.astype(np.float64)).max(0), 1e-5)
        ref = np.maximum(amax.astype(np.float64) ** alpha / wmax ** (1 - alpha), 1e-5)
        np.testing.assert_allclose(got, ref, rtol=1e-5)
        np.testing.assert_array_equal(got[2], np.float32(1e-5))
    sq = np.asarray(sm.smoothquant_factors(stats.absmax(jnp.asarray(x)), jnp.asarray(w)))
    ref = np.maximum(np.abs(x.astype(np.float64)).max(0) ** 0.5 / np.maximum(np.abs(w).max(0), 1e-5) ** 0.5, 1e-5)
    np.testing.assert_allclose(sq, ref, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(sm.rtn_factors(7)), np.ones((3, 7)))


def test_clamp_smooth():
    s = jnp.asarray([-0.005, 0.0, 0.005, 0.5, -0.5, 1e-2, -1e-2, -0.0, 3.0])
    got = np.asarray(sm.clamp_smooth(s))
    np.testing.assert_allclose(got, [-1e-2, 1e-2, 1e-2, 0.5, -0.5, 1e-2, -1e-2, 1e-2, 3.0])


@pytest.mark.parametrize("wbits,abits,sym,gs", [(4, 8, True, None), (8, 8, True, None), (4, 6, True, None), (4, 16, False, 8)])
def test_mas_linear_matches_numpy(wbits, abits, sym, gs):
    x, mid, w, b = _batch(seed=1)
    smooth = np.exp(np.random.default_rng(1).uniform(-1, 1, (3, 32))).astype(np.float32)
    y = sm.mas_linear(jnp.asarray(x), jnp.asarray(mid), jnp.asarray(w), jnp.asarray(b), jnp.asarray(smooth),
                      wbits=wbits, abits=abits, w_symmetric=sym, group_size=gs)
    ref = np_mas_linear(x, mid, w, b, smooth, wbits, abits, sym, gs)
    rel = np.linalg.norm(np.asarray(y, np.float64) - ref) / np.linalg.norm(ref)
    assert rel < 2e-3
    assert np.isclose(np.asarray(y), ref, rtol=1e-4, atol=1e-4).all(-1).mean() > 0.9
    # shared [in] vector == the same vector repeated for every modality, and no bias
    y1 = sm.mas_linear(jnp.asarray(x), jnp.asarray(mid), jnp.asarray(w), None, jnp.asarray(smooth[0]),
                       wbits=wbits, abits=abits, w_symmetric=sym, group_size=gs)
    y3 = sm.mas_linear(jnp.asarray(x), jnp.asarray(mid), jnp.asarray(w), None, jnp.asarray(np.tile(smooth[:1], (3, 1))),
                       wbits=wbits, abits=abits, w_symmetric=sym, group_size=gs)
    # (the shared path quantizes the weight once; float rounding may flip a rare tie)
    a1, a3 = np.asarray(y1, np.float64), np.asarray(y3, np.float64)
    assert np.linalg.norm(a1 - a3) / np.linalg.norm(a3) < 1e-4
    assert np.isclose(a1, a3, rtol=1e-5, atol=1e-5).mean() > 0.99


def test_mas_linear_equals_integer_qlinear_when_vectors_agree():
    # fake quant (calibration) == stored integers (inference) when every modality uses s_text
    x, mid, w, b = _batch(seed=2)
    s = np.exp(np.random.default_rng(2).uniform(-1, 1, 32)).astype(np.float32)
    s3 = jnp.asarray(np.tile(s, (3, 1)))
    y_fake = sm.mas_linear(jnp.asarray(x), jnp.asarray(mid), jnp.asarray(w), jnp.asarray(b), s3, wbits=4, abits=8)
    ql = make_qlinear(jnp.asarray(w), jnp.asarray(b), wbits=4, abits=8, smooth=s3)
    y_int = qlinear_reference(jnp.asarray(x), jnp.asarray(mid), ql)
    np.testing.assert_allclose(np.asarray(y_fake), np.asarray(y_int), rtol=1e-6, atol=1e-6)


def test_mas_linear_gradient_wrt_smooth():
    x, mid, w, b = _batch(seed=3, present=(0, 1))
    s = jnp.asarray(np.exp(np.random.default_rng(3).uniform(-0.5, 0.5, (3, 32))), jnp.float32)
    target = jnp.asarray(x @ w.T + b)

    def loss(sv):
        y = sm.mas_linear(jnp.asarray(x), jnp.asarray(mid), jnp.asarray(w), jnp.asarray(b), sv, wbits=4, abits=8)
        return sm.block_loss(y, target, jnp.asarray(mid))

    g = np.asarray(jax.jit(jax.grad(loss))(s))
    assert np.isfinite(g).all()
    assert np.abs(g[0]).sum() > 0 and np.abs(g[1]).sum() > 0
    np.testing.assert_array_equal(g[2], 0.0)  # audio absent: its vector gets no gradient


def test_block_loss_matches_numpy_and_ignores_padding():
    rng = np.random.default_rng(4)
    pred = rng.standard_normal((2, 10, 16)).astype(np.float32)
    tgt = rng.standard_normal((2, 10, 16)).astype(np.float32)
    mid = rng.integers(0, 3, size=(2, 10)).astype(np.int32)
    valid = np.ones((2, 10), bool)
    valid[1, 7:] = False
    pred[1, 7:] = 1e6  # garbage in padded positions must not count
    lam = {0: 1.0, 1: 0.3, 2: 0.7}
    d = np.abs(pred.astype(np.float64) - tgt).sum(-1)
    wts = np.vectorize(lam.get)(mid) * valid
    ref = (wts * d).sum() / (16 * valid.sum())
    got = sm.block_loss(jnp.asarray(pred), jnp.asarray(tgt), jnp.asarray(mid), jnp.asarray(valid),
                        lambda_vision=0.3, lambda_audio=0.7)
    np.testing.assert_allclose(float(got), ref, rtol=1e-5)
    # defaults: published lambda_v = 0.5, lambda_a = 1.0, no mask
    d2 = np.abs(tgt.astype(np.float64) - 2 * tgt).sum(-1)
    ref2 = (np.vectorize({0: 1.0, 1: 0.5, 2: 1.0}.get)(mid) * d2).sum() / (16 * 20)
    np.testing.assert_allclose(float(sm.block_loss(jnp.asarray(2 * tgt), jnp.asarray(tgt), jnp.asarray(mid))), ref2, rtol=1e-5)


def _sqnr(y, ref, sel):
    return np_sqnr_tokens(ref[sel], y[sel]).mean()


def test_mas_beats_smoothquant_on_mixed_batch():
    x, mid, w = mixed_vision_batch(6)
    xj, mj, wj = jnp.asarray(x), jnp.asarray(mid), jnp.asarray(w)
    ref = x.astype(np.float64) @ w.T.astype(np.float64)
    s_sq = sm.smoothquant_factors(stats.absmax(xj), wj)
    s_init = sm.init_factors(stats.modality_absmax(xj, mj), wj)
    trained = jax.jit(functools.partial(training.train_smoothing, wbits=4, abits=8, steps=60))(xj, mj, wj, None, s_init)
    losses = np.asarray(trained.losses)
    assert losses[-5:].mean() < losses[0]
    assert np.all(np.abs(np.asarray(trained.smooth)) >= 1e-2)
    res = {}
    for name, s in (("rtn", sm.rtn_factors(64)), ("sq", s_sq), ("mas_init", s_init), ("mas", trained.smooth)):
        y = np.asarray(sm.mas_linear(xj, mj, wj, None, s, wbits=4, abits=8), np.float64)
        res[name] = {m: _sqnr(y, ref, mid == m) for m in (0, 1)}
        res[name]["all"] = np_sqnr_tokens(ref, y).mean()
    assert res["mas"]["all"] > res["sq"]["all"] + 0.5, res
    assert res["mas"][0] > res["sq"][0] and res["mas"][1] > res["sq"][1] - 0.1, res
    assert res["mas"]["all"] >= res["mas_init"]["all"] - 0.1, res


def test_train_smoothing_clamps_and_does_not_retrace():
    x, mid, w, b = _batch(seed=7)
    s0 = jnp.full((3, 32), 0.004, jnp.float32).at[1].set(-0.003)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(xx, ss):
        return training.train_smoothing(xx, jnp.asarray(mid), jnp.asarray(w), jnp.asarray(b), ss, wbits=4, abits=8,
                                  steps=3, lr=1e-4)

    r = run(jnp.asarray(x), s0)
    run(jnp.asarray(x) * 1.5, s0 * 2)
    s = np.asarray(r.smooth)
    assert np.all(np.abs(s) >= 1e-2)
    assert np.all(s[1] < 0) and np.all(s[0] > 0)  # the clamp keeps the sign
    assert r.losses.shape == (3,)


def test_vmap_over_layers_equals_loop():
    layers = [_batch(seed=10 + i) for i in range(3)]
    X = jnp.stack([jnp.asarray(l[0]) for l in layers])
    M = jnp.stack([jnp.asarray(l[1]) for l in layers])
    W = jnp.stack([jnp.asarray(l[2]) for l in layers])
    B = jnp.stack([jnp.asarray(l[3]) for l in layers])

    def per_layer(x, mid, w, b):
        amax = stats.modality_absmax(x, mid)
        s = sm.init_factors(amax, w)
        sq = sm.smoothquant_factors(stats.absmax(x), w)
        y = sm.mas_linear(x, mid, w, b, s, wbits=4, abits=8)
        loss = sm.block_loss(y, x @ w.T + b, mid)
        awq = search.search_alpha(x, w, search.awq_candidates(jnp.abs(x).mean(0)), weights=QuantSpec(4, False, 8),
                                  activations=QuantSpec(16), n_grid=5)
        tr = training.train_smoothing(x, mid, w, b, s, wbits=4, abits=8, steps=2)
        return amax, s, sq, y, loss, awq.alpha, awq.smooth, tr.smooth

    vm = jax.jit(jax.vmap(per_layer))(X, M, W, B)
    one = jax.jit(per_layer)
    for i in range(3):
        lo = one(X[i], M[i], W[i], B[i])
        for a, b_ in zip(vm, lo):
            np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b_), rtol=2e-5, atol=2e-6)


def test_bf16_input_works():
    x, mid, w, b = _batch(seed=8)
    xb = jnp.asarray(x, jnp.bfloat16)
    s = sm.init_factors(stats.modality_absmax(xb, jnp.asarray(mid)), jnp.asarray(w, jnp.bfloat16))
    y = sm.mas_linear(xb, jnp.asarray(mid), jnp.asarray(w, jnp.bfloat16), None, s, wbits=4, abits=8)
    assert y.dtype == jnp.float32 and np.isfinite(np.asarray(y)).all()
    ref = np_mas_linear(np.asarray(xb, np.float64), mid, np.asarray(jnp.asarray(w, jnp.bfloat16), np.float64), None,
                        np.asarray(s), 4, 8)
    assert np.linalg.norm(np.asarray(y) - ref) / np.linalg.norm(ref) < 5e-3
    tr = training.train_smoothing(xb, jnp.asarray(mid), jnp.asarray(w, jnp.bfloat16), None, s, wbits=4, abits=8, steps=2)
    assert tr.smooth.dtype == jnp.float32


def test_bad_input():
    x, mid, w, b = _batch()
    xj, mj, wj = jnp.asarray(x), jnp.asarray(mid), jnp.asarray(w)
    s = jnp.ones((3, 32))
    with pytest.raises(CoreInputError, match="modality_ids must have shape"):
        stats.modality_absmax(xj, mj[:-1])
    with pytest.raises(CoreInputError, match="modality_ids must be integers"):
        stats.modality_absmax(xj, mj.astype(jnp.float32))
    with pytest.raises(CoreInputError, match=r"weight must be \[out, in\]"):
        sm.mas_linear(xj, mj, wj[None], None, s, wbits=4, abits=8)
    with pytest.raises(CoreInputError, match="must equal weight's in dimension"):
        sm.mas_linear(xj, mj, wj.T, None, s, wbits=4, abits=8)
    with pytest.raises(CoreInputError, match=r"smooth must be \[3, in\]"):
        sm.mas_linear(xj, mj, wj, None, jnp.ones((2, 32)), wbits=4, abits=8)
    with pytest.raises(QuantConfigError, match="wbits"):
        sm.mas_linear(xj, mj, wj, None, s, wbits=1, abits=8)
    with pytest.raises(QuantConfigError, match="abits"):
        sm.mas_linear(xj, mj, wj, None, s, wbits=4, abits=17)
    with pytest.raises(QuantConfigError, match="group_size=5 does not divide"):
        sm.mas_linear(xj, mj, wj, None, s, wbits=4, abits=8, group_size=5)
    with pytest.raises(CoreInputError, match="act_absmax must be"):
        sm.init_factors(jnp.ones(31), wj)
    with pytest.raises(CoreInputError, match="act_absmax_all must be"):
        sm.smoothquant_factors(jnp.ones((3, 32)), wj)
    with pytest.raises(CoreInputError, match="pred and target must have the same shape"):
        sm.block_loss(xj, xj[:, :5], mj)
    with pytest.raises(CoreInputError, match="valid must have shape"):
        sm.block_loss(xj, xj, mj, jnp.ones(3, bool))
    with pytest.raises(CoreInputError, match="steps"):
        training.train_smoothing(xj, mj, wj, None, s, wbits=4, abits=8, steps=-1)
    assert issubclass(CoreInputError, ValueError)
