"""Temperature and top-p on a fixed logits table, against transformers' own logits warpers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from masq_jax.models.sampling import filter_logits, next_token

LOGITS = np.array([[2.0, 1.0, 0.5, 0.1, -1.0, -3.0], [0.0, 0.0, 3.0, 1.0, -2.0, 0.5]], np.float32)


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 1.0), (1.0, 0.8), (1.3, 0.5), (0.5, 0.95)])
def test_filtered_logits_equal_transformers_warpers(temperature, top_p):
    import torch
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    ref = torch.tensor(LOGITS)
    ref = TemperatureLogitsWarper(temperature)(None, ref)
    if top_p < 1:
        ref = TopPLogitsWarper(top_p)(None, ref)
    got = np.asarray(filter_logits(jnp.asarray(LOGITS), temperature, top_p))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(ref.numpy()))
    np.testing.assert_allclose(got[np.isfinite(got)], ref.numpy()[np.isfinite(got)], rtol=1e-6)


def test_draws_follow_the_filtered_distribution():
    n = 20000
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    draws = np.asarray(jax.vmap(lambda k: next_token(jnp.asarray(LOGITS), k, 1.3, 0.8))(keys))  # [n, 2]
    probs = np.asarray(jax.nn.softmax(filter_logits(jnp.asarray(LOGITS), 1.3, 0.8), axis=-1))
    for row in range(2):
        freq = np.bincount(draws[:, row], minlength=LOGITS.shape[1]) / n
        np.testing.assert_allclose(freq, probs[row], atol=0.015)
        assert (freq[probs[row] == 0] == 0).all()  # tokens outside the nucleus never drawn
    assert np.array_equal(np.asarray(next_token(jnp.asarray(LOGITS), keys[0], 0.0, 1.0)), [0, 2])  # greedy
