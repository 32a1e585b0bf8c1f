"""MASQuant's sign alignment: vision/audio vectors take text's sign per channel. Exact for MAS's
per-modality products under symmetric quantizers (every preset but W4A16), and it removes the
flipped channels' full-rank share of the CMC residual W·(diag(s_m) − diag(s_text))."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from masq_jax.core.cmc import cmc_residual
from masq_jax.core.smoothing import mas_linear
from masq_jax.methods.masquant import align_signs
from masq_jax.settings import QuantSettings, preset

IN, OUT = 32, 16


def vectors(rng, flip=0.3):
    """[3, IN] vectors near each other (vision, audio = text × a factor in [0.7, 1.4]), a fraction
    ``flip`` of the non-text channels negated, as AdamW leaves them when it crosses zero."""
    t = rng.uniform(0.2, 3.0, IN) * rng.choice([-1.0, 1.0], IN, p=[0.1, 0.9])
    s = np.stack([t, t * rng.uniform(0.7, 1.4, IN), t * rng.uniform(0.7, 1.4, IN)])
    s[1:] *= np.where(rng.uniform(size=(2, IN)) < flip, -1.0, 1.0)
    return jnp.asarray(s, jnp.float32)


@pytest.mark.parametrize("name", ["w8a8", "w4a8", "w4a6"])
def test_aligned_vectors_give_mas_bit_identical_outputs(name):
    rng = np.random.default_rng(0)
    st = QuantSettings(**preset(name))
    x = jnp.asarray(rng.normal(size=(24, IN)) * rng.uniform(0.1, 5, IN), jnp.float32)
    w = jnp.asarray(rng.normal(size=(OUT, IN)), jnp.float32)
    b = jnp.asarray(rng.normal(size=OUT), jnp.float32)
    mid = jnp.asarray(np.repeat([0, 1, 2], 8))
    s = vectors(rng)
    a = align_signs({"up_proj": s}, st)["up_proj"]
    assert np.all(np.sign(a[1:]) == np.sign(a[0]))  # every channel agrees with text
    np.testing.assert_array_equal(np.abs(a), np.abs(s))  # magnitudes kept
    np.testing.assert_array_equal(a[0], s[0])  # text untouched
    assert np.any(np.asarray(a) != np.asarray(s))  # the case is not vacuous
    y0 = mas_linear(x, mid, w, b, s, **st.linear_kwargs())
    y1 = mas_linear(x, mid, w, b, a, **st.linear_kwargs())
    np.testing.assert_array_equal(np.asarray(y1), np.asarray(y0))


def test_affine_weights_are_left_alone():
    s = vectors(np.random.default_rng(1))
    st = QuantSettings(**preset("w4a16"))
    np.testing.assert_array_equal(np.asarray(align_signs({"q_proj": s}, st)["q_proj"]), np.asarray(s))


def test_alignment_shrinks_the_cmc_residual_to_the_unflipped_one():
    rng = np.random.default_rng(2)
    w = jnp.asarray(rng.normal(size=(OUT, IN)), jnp.float32)
    st = QuantSettings(**preset("w8a8"))
    s = vectors(rng)
    a = align_signs({"q_proj": s}, st)["q_proj"]
    wq = st.weights.fake_quant(w * s[0][None, :])
    before = float(jnp.linalg.norm(cmc_residual(w, s[1], s[0], wq)))
    after = float(jnp.linalg.norm(cmc_residual(w, a[1], s[0], wq)))
    # the unflipped reference, in float64: W·(diag(|s_v|·sign(s_t)) − diag(s_t)) + (W·diag(s_t) − Wq)
    sv = np.abs(np.asarray(s[1], np.float64)) * np.sign(np.asarray(s[0], np.float64))
    ref = np.asarray(w, np.float64) * sv[None, :] - np.asarray(wq, np.float64)
    np.testing.assert_allclose(after, np.linalg.norm(ref), rtol=1e-5)
    assert after < 0.5 * before, (before, after)
