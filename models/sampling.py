"""Next-token choice: greedy, or temperature + nucleus (top-p) sampling as transformers does it.

``filter_logits`` is transformers' ``TemperatureLogitsWarper`` then ``TopPLogitsWarper``: divide by
the temperature, then drop the tokens outside the smallest set whose probability reaches ``top_p``
(the most likely token always stays). ``next_token`` samples from what is left with a JAX key.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from masq_jax.models.errors import InputError


def check_sampling(temperature: float, top_p: float) -> None:
    """One clear line for a temperature below 0 or a top_p outside (0, 1]."""
    if not (temperature >= 0):
        raise InputError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if not (0 < top_p <= 1):
        raise InputError(f"top_p must be in (0, 1], got {top_p}")


def filter_logits(logits: jax.Array, temperature: float, top_p: float) -> jax.Array:
    """``logits`` [..., V] divided by ``temperature`` (> 0), with tokens outside the top-p nucleus at -inf."""
    scaled = logits.astype(jnp.float32) / temperature
    if top_p >= 1.0:
        return scaled
    sorted_logits = jnp.sort(scaled, axis=-1)  # ascending, as transformers sorts
    cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
    # The removed tokens are a prefix of the ascending order: all below the smallest kept logit.
    n_removed = jnp.minimum(jnp.sum(cumulative <= (1.0 - top_p), axis=-1), scaled.shape[-1] - 1)
    threshold = jnp.take_along_axis(sorted_logits, n_removed[..., None], axis=-1)
    return jnp.where(scaled < threshold, -jnp.inf, scaled)


def next_token(logits: jax.Array, key: jax.Array, temperature: float, top_p: float) -> jax.Array:
    """int32 ``[...]``: argmax for ``temperature == 0``, else a draw from the filtered distribution."""
    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, filter_logits(logits, temperature, top_p), axis=-1).astype(jnp.int32)
