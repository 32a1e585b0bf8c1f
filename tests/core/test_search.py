"""masq_jax.core.search (the one α grid search of AWQ and MBQ) against a float64 NumPy reference
of the same objective."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from masq_jax.core import search
from masq_jax.core.quant import QuantSpec
from masq_jax.errors import CoreInputError
from tests.core.np_refs import mixed_vision_batch, np_search_alpha


W4, A16 = QuantSpec(4), QuantSpec(16)
W4G16 = QuantSpec(4, symmetric=False, group_size=16)


def _check(res, ref_errs, ref_cands):
    np.testing.assert_allclose(np.asarray(res.errors), ref_errs, rtol=2e-2)
    best = int(round(float(res.alpha) * len(ref_errs)))
    assert ref_errs[best] <= ref_errs.min() * 1.02  # the chosen α is (near) the reference's optimum
    np.testing.assert_allclose(np.asarray(res.smooth), ref_cands[best], rtol=1e-4)


def test_awq_weight_only_matches_numpy():
    x, _, w = mixed_vision_batch(5, tokens=256, din=64, dout=32)
    mean_abs = np.abs(x.astype(np.float64)).mean(0)
    run = jax.jit(lambda x_, w_, m_: search.search_alpha(x_, w_, search.awq_candidates(m_), weights=W4G16,
                                                         activations=A16))
    res = run(jnp.asarray(x), jnp.asarray(w), jnp.asarray(mean_abs, jnp.float32))
    errs, cands = np_search_alpha(x, w, "awq", 4, 16, False, 16, mean_abs=mean_abs)
    _check(res, errs, cands)
    assert errs.min() < errs[0]  # smoothing helps on outlier channels: alpha 0 is not best


@pytest.mark.parametrize("abits", [8, 6])
def test_smoothquant_family_with_activation_quant_and_modality_weights_matches_numpy(abits):
    x, mid, w = mixed_vision_batch(6, tokens=256, din=64, dout=48)
    absmax = np.abs(x).max(0)
    lam = np.where(mid == 1, 0.25, 1.0).astype(np.float32)  # MBQ: vision errors count a quarter
    res = search.search_alpha(jnp.asarray(x), jnp.asarray(w), search.smoothquant_candidates(jnp.asarray(absmax),
                              jnp.asarray(w)), weights=W4, activations=QuantSpec(abits), token_weights=jnp.asarray(lam))
    errs, cands = np_search_alpha(x, w, "smoothquant", 4, abits, True, None, token_weights=lam, act_absmax=absmax)
    _check(res, errs, cands)
    uniform = search.search_alpha(jnp.asarray(x), jnp.asarray(w), search.smoothquant_candidates(
        jnp.asarray(absmax), jnp.asarray(w)), weights=W4, activations=QuantSpec(abits))
    errs_u, _ = np_search_alpha(x, w, "smoothquant", 4, abits, act_absmax=absmax)
    np.testing.assert_allclose(np.asarray(uniform.errors), errs_u, rtol=2e-2)
    assert not np.allclose(errs_u, errs)  # the weights change the objective


def test_bad_input():
    x, _, w = mixed_vision_batch(1, tokens=16, din=8, dout=4)
    cand = search.awq_candidates(jnp.ones(8))
    with pytest.raises(CoreInputError, match="n_grid"):
        search.search_alpha(jnp.asarray(x), jnp.asarray(w), cand, weights=W4, activations=A16, n_grid=0)
    with pytest.raises(CoreInputError, match="tokens, in"):
        search.search_alpha(jnp.asarray(x)[None], jnp.asarray(w), cand, weights=W4, activations=A16)
    with pytest.raises(CoreInputError, match="in dimension"):
        search.search_alpha(jnp.asarray(x), jnp.asarray(w).T, cand, weights=W4, activations=A16)
    with pytest.raises(CoreInputError, match="valid must have shape"):
        search.search_alpha(jnp.asarray(x), jnp.asarray(w), cand, weights=W4, activations=A16, token_weights=jnp.ones(3))
