"""MAS, modality-aware smoothing (docs/method.md §4): per-modality vectors initialised with the
SmoothQuant formula on each modality's statistics, then learned block-wise with AdamW on the
modality-weighted L1 loss of the layer output. The artefact keeps one weight per modality: the
paper's upper bound (``masquant`` stores one weight and compensates instead)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import optax

from masq_jax.core import smoothing
from masq_jax.core.training import train_vectors
from masq_jax.methods.base import SMOOTHED, TIE_GROUPS, Method, fill_absent, mas_hook, reference_init, untie
from masq_jax.methods.options import Option
from masq_jax.models import decoder

if TYPE_CHECKING:
    from masq_jax.settings import QuantSettings


def make_optimizer(st: QuantSettings) -> optax.GradientTransformation:
    """AdamW, lr ``st.lr``, no weight decay, default betas (docs/method.md §4)."""
    return optax.adamw(st.lr, weight_decay=0.0)


def block_loss(cfg, st, lp, factors, h, target, batch, weights):
    """The modality-weighted MAE of one layer's output on ``batch`` through the MAS linears."""
    pred = batch.layer(cfg, lp, h, linear=mas_hook(factors, batch.modality_ids, st, batch.active))
    return smoothing.block_loss(pred, target, batch.modality_ids, batch.valid, lambda_text=weights[0],
                                lambda_vision=weights[1], lambda_audio=weights[2])


@functools.partial(jax.jit, static_argnames=("cfg", "st"))
def train_block(cfg, st: QuantSettings, lp, factors, h, target, batch, weights, key):
    """AdamW over the smoothing vectors of one layer, batch 1, ``st.epochs`` epochs, as one scan.

    Returns (trained factors, per-epoch mean loss [epochs]); float32 master factors. Each epoch visits
    the samples in a fresh order drawn from ``key`` (over calibration-set indices, whatever the layout).
    """
    # --tie-smoothing: one trainable vector per input group (q/k/v, o, gate/up), read by each linear.
    expand = untie if st.tie_smoothing else (lambda tr: tr)
    trainable = {n: factors[n] for n in (TIE_GROUPS if st.tie_smoothing else SMOOTHED)}
    frozen = {n: factors[n] for n in decoder.LINEAR_NAMES if n not in SMOOTHED}
    n = batch.samples  # real samples (a mesh pads with masked ones, which training never visits)
    keys = jax.random.split(key, st.epochs)
    order = batch.training_rows()[jnp.concatenate([jax.random.permutation(k, n) for k in keys])]

    def loss(tr, j):
        return block_loss(cfg, st, lp, {**frozen, **expand(tr)}, h[j][None], target[j][None], batch.sample(j), weights)

    trained, losses = train_vectors(loss, trainable, order, make_optimizer(st))
    return {**frozen, **expand(trained)}, losses.reshape(st.epochs, n).mean(axis=1)


class MAS(Method):
    name = "mas"
    summary = "per-modality vectors learned block-wise; one weight per modality (the upper bound)"
    per_modality_vectors = True
    per_modality_weights = True
    options = (Option("lr", 5e-2, "AdamW learning rate of the smoothing vectors", parse=float,
                      check=lambda v: None if v > 0 else f"--lr must be > 0, got {v}"),)

    def trains(self, st):
        return st.epochs > 0

    def init_factors(self, cfg, lp, stats, sample, st, modality_weights):
        def vector(group_stats, w):
            s = smoothing.init_factors(group_stats["absmax"], w, alpha=st.alpha)
            return fill_absent(s, group_stats["count"])

        return reference_init(cfg, lp, stats, vector), {}

    def learn(self, cfg, st, lp, factors, h, target, batch, modality_weights, key):
        return train_block(cfg, st, lp, factors, h, target, batch, modality_weights, key)
