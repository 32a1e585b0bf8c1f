"""masq_jax.core.stats: the per-modality statistics (docs/method.md §2) against float64 NumPy, both Gram paths."""

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax.core import stats as layer_stats


def _batch(seed=0, b=3, s=37, d=24):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((b, s, d)) * np.exp(rng.uniform(-2, 2, d))).astype(np.float32)
    mid = rng.integers(0, 3, (b, s)).astype(np.int32)
    mid[:, :2] = 0
    valid = np.ones((b, s), bool)
    valid[1, 30:] = False
    return x, mid, valid


def test_statistics_match_numpy_with_both_gram_paths():
    x, mid, valid = _batch()
    d = x.shape[-1]
    ref_max, ref_sum, ref_gram = np.zeros((3, d)), np.zeros((3, d)), np.zeros((3, d, d))
    for m in range(3):
        xm = x[(mid == m) & valid].astype(np.float64)
        ref_max[m], ref_sum[m], ref_gram[m] = np.abs(xm).max(0), np.abs(xm).sum(0), xm.T @ xm
    index = layer_stats.modality_token_index(mid, valid, multiple=16)
    assert all(len(i) % 16 == 0 for i in index)
    for gi in (None, tuple(jnp.asarray(i) for i in index)):
        stats = layer_stats.empty_stats({"down": d}, with_gram=True)
        f = jax.jit(layer_stats.accumulate)
        for _ in range(2):  # two identical batches: sums and Grams double, maxima stay
            stats = f(stats, {"down": jnp.asarray(x)}, jnp.asarray(mid), jnp.asarray(valid), gi)
        g = stats["down"]
        np.testing.assert_allclose(np.asarray(g["absmax"]), ref_max, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(g["absmax_all"]), ref_max.max(0), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(g["abssum"]), 2 * ref_sum, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(g["gram"]), 2 * ref_gram, rtol=1e-5, atol=1e-5 * np.abs(ref_gram).max())
        np.testing.assert_array_equal(np.asarray(g["count"]), 2 * np.array([((mid == m) & valid).sum() for m in range(3)]))


def test_modality_absmax_and_absmax():
    x, mid = _tokens()  # audio absent
    got = np.asarray(layer_stats.modality_absmax(jnp.asarray(x), jnp.asarray(mid)))
    assert got.shape == (3, 32) and got.dtype == np.float32
    for m in range(2):
        np.testing.assert_array_equal(got[m], np.abs(x[mid == m]).max(0))
    np.testing.assert_array_equal(got[2], 0.0)
    # the masked Gram of one linear (what CMC's covariance helper uses) against NumPy
    g = np.asarray(layer_stats.gram(jnp.asarray(x), jnp.asarray(mid)))
    for m in range(2):
        xm = x[mid == m].astype(np.float64)
        np.testing.assert_allclose(g[m], xm.T @ xm, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(g[2], 0.0)
    np.testing.assert_array_equal(np.asarray(layer_stats.absmax(jnp.asarray(x))), np.abs(x).max(0))
    valid = np.ones(48, bool)
    valid[np.argmax(np.abs(x[:, 0]))] = False  # padding excluded
    got_v = np.asarray(layer_stats.modality_absmax(jnp.asarray(x), jnp.asarray(mid), valid=jnp.asarray(valid)))
    for m in range(2):
        np.testing.assert_array_equal(got_v[m], np.abs(x[(mid == m) & valid]).max(0))
    # leading axes and bf16
    got3 = layer_stats.modality_absmax(jnp.asarray(x, jnp.bfloat16).reshape(6, 8, 32), jnp.asarray(mid).reshape(6, 8))
    assert got3.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got3)[0], np.abs(np.asarray(jnp.asarray(x, jnp.bfloat16), np.float32)[mid == 0]).max(0))
    np.testing.assert_array_equal(np.asarray(layer_stats.modality_counts(jnp.asarray(mid))), [(mid == 0).sum(), (mid == 1).sum(), 0])




def _tokens(seed=0, tokens=48, din=32):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((tokens, din)).astype(np.float32)
    mid = rng.choice(np.asarray([0, 1]), size=tokens).astype(np.int32)
    x[mid == 1, :4] *= 20.0
    return x, mid
