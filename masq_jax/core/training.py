"""Learning smoothing vectors with AdamW (docs/method.md §4): one loop for every trainer.

``train_vectors`` runs one optimiser step per entry of ``order`` inside a ``lax.scan`` (one compile
for the whole schedule), clamping every vector before each step and once at the end. The block-wise
MAS trainer (``masq_jax.methods.mas``) and the one-linear trainer below both run it.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from masq_jax.core.checks import check_tokens, per_modality, weight_dims
from masq_jax.core.quant import SPEC_BOUND, Bound
from masq_jax.core.smoothing import SMOOTH_CLAMP, HIGHEST, block_loss, clamp_smooth, mas_linear
from masq_jax.errors import CoreInputError

LossFn = Callable[[Any, jax.Array], jax.Array]  # (vectors pytree, step index) -> scalar loss


def clamp_vectors(vectors: Any, min_abs: float = SMOOTH_CLAMP) -> Any:
    """``clamp_smooth`` on every leaf of a pytree of smoothing vectors."""
    return jax.tree_util.tree_map(lambda s: clamp_smooth(s, min_abs), vectors)


def train_vectors(loss_fn: LossFn, vectors: Any, order: jax.Array,
                  optimizer: optax.GradientTransformation) -> tuple[Any, jax.Array]:
    """``(clamped trained vectors, loss before each step [len(order)])``.

    ``loss_fn(vectors, j)`` is the loss of step ``j`` (e.g. the block loss of sample ``order[j]``);
    before every step every ``|s| < 1e-2`` becomes ``sign(s)·1e-2`` (docs/method.md §4).
    """

    def step(carry, j):
        tr, opt_state = carry
        tr = clamp_vectors(tr)
        loss, grads = jax.value_and_grad(loss_fn)(tr, j)
        updates, opt_state = optimizer.update(grads, opt_state, tr)
        return (optax.apply_updates(tr, updates), opt_state), loss

    (trained, _), losses = jax.lax.scan(step, (vectors, optimizer.init(vectors)), order)
    return clamp_vectors(trained), losses


class TrainResult(NamedTuple):
    smooth: jax.Array  # [3, in] float32, clamped
    losses: jax.Array  # [steps] loss before each update


def train_smoothing(
    x: jax.Array,
    modality_ids: jax.Array,
    weight: jax.Array,
    bias: jax.Array | None,
    smooth_init: jax.Array,
    *,
    wbits: int,
    abits: int,
    steps: int = 200,
    lr: float = 5e-2,
    weight_decay: float = 0.0,
    valid: jax.Array | None = None,
    lambda_vision: float = 1.0,
    lambda_audio: float = 1.0,
    w_symmetric: bool = True,
    group_size: int | None = None,
    bound: Bound = SPEC_BOUND,
) -> TrainResult:
    """Learn per-modality vectors of ONE linear on its own output MAE (full batch, ``steps`` steps).

    Target ``x·Wᵀ + b``; loss weights default to 1 (the paper's best λ_text = λ_vision = 1).
    For the synthetic one-linear demo and for studying a single linear; calibration trains blocks.
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise CoreInputError(f"steps must be a non-negative integer, got {steps!r}")
    check_tokens(x, modality_ids, valid)
    _, in_dim = weight_dims(weight, x.shape[-1])
    s0 = per_modality(smooth_init, in_dim).astype(jnp.float32)
    xf = x.astype(jnp.float32)
    target = jnp.dot(xf, weight.astype(jnp.float32).T, precision=HIGHEST)
    if bias is not None:
        target = target + bias.astype(jnp.float32)

    def loss_fn(s, _):
        y = mas_linear(xf, modality_ids, weight, bias, s, wbits=wbits, abits=abits, w_symmetric=w_symmetric,
                       group_size=group_size, bound=bound)
        return block_loss(y, target, modality_ids, valid, lambda_vision=lambda_vision, lambda_audio=lambda_audio)

    smooth, losses = train_vectors(loss_fn, s0, jnp.arange(steps), optax.adamw(lr, weight_decay=weight_decay))
    return TrainResult(smooth, losses)
