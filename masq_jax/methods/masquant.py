"""MASQuant = MAS + cross-modal compensation (docs/method.md §5): the vectors are learned as in MAS,
then one text-smoothed weight is stored and every other modality gets a whitened low-rank branch
``L_m R_m`` fitted to its residual ``W·diag(s_m) − Q_w(W·diag(s_text))``."""

from __future__ import annotations

import functools

import jax

from masq_jax.core import cmc
from masq_jax.methods.mas import MAS
from masq_jax.models import decoder


class MASQuant(MAS):
    name = "masquant"
    summary = "MAS vectors, one stored text weight plus whitened low-rank compensation per modality"
    per_modality_weights = False
    compensates = True

    def ranks(self, cfg, st):
        shapes = decoder.linear_shapes(cfg)
        return {n: cmc.resolve_rank(st.rank, shapes[n][1], shapes[n][0], floor=st.rank_floor)
                for n in decoder.LINEAR_NAMES}

    def compensate(self, lp, factors, stats, st, ranks):
        return _compensate(lp, factors, stats, st, tuple(sorted(ranks.items())))

    def compensate_layers(self, lps, factors, stats, st, ranks):
        return _compensate_layers(lps, factors, stats, st, tuple(sorted(ranks.items())))


def compensate_layer(lp, factors, stats, st, ranks: dict[str, int]) -> dict:
    """Low-rank factors ``{linear: (L [3,in,r], R [3,r,out])}`` for one layer (text slot zero).

    The whitening covariance of modality m is ``diag(1/s_m) · XᵀX_m · diag(1/s_m)`` from the FP
    layer's Gram statistics, so each linear uses its own learned vectors.
    """
    lora = {}
    for name in decoder.LINEAR_NAMES:
        s = factors[name]
        covs = cmc.smoothed_covariance(stats[decoder.INPUT_OF[name]]["gram"], s)
        lora[name] = cmc.cmc_factors(lp[name]["w"], s, covs, ranks[name], **st.weight_kwargs(),
                                     damping=st.cov_damping, svd=st.cmc_solver)
    return lora


@functools.partial(jax.jit, static_argnames=("st", "ranks"))
def _compensate(lp, factors, stats, st, ranks):
    return compensate_layer(lp, factors, stats, st, dict(ranks))


@functools.partial(jax.jit, static_argnames=("st", "ranks"))
def _compensate_layers(lps, factors, stats, st, ranks):
    one = lambda args: compensate_layer(*args, st, dict(ranks))  # noqa: E731
    if jax.default_backend() == "cpu":
        # XLA:CPU can wedge its Eigen thread pool on this batched graph (14 batched eighs; reproduced
        # with jax 0.10.2 on the tiny test model): a loop over the layers inside one program instead.
        return jax.lax.map(one, (lps, factors, stats))
    return jax.vmap(lambda lp, f, s: one((lp, f, s)))(lps, factors, stats)
