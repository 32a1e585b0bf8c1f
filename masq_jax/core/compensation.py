"""One linear's cross-modal compensation, as the quantizer runs it (docs/method.md §5).

The single implementation of MASQuant's branch: ``linear_inputs`` builds, per non-text modality, the
residual ``ΔW_m = W·diag(s_m) − Q_w(W·diag(s_text))`` and the smoothed Gram matrices (all tokens and,
when collected, a validation fold); ``validate`` fits on the other tokens under every candidate
shrinkage and scores each on the fold at every rank (``cmc.validated_fit``); ``fit`` refits on all
tokens with the chosen shrinkage at the storage rank, columns beyond the allocated rank zeroed.
``methods.masquant`` runs these per linear of a layer (allocation, deployment and report on top);
the one-linear demo, the benchmarks and the tests call the same functions (``factors``).

Pure and jit-able; the (vision, audio) axis is one ``lax.map`` loop (``per_modality``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from masq_jax.core import cmc, shrinkage as shrink_mod, stats as core_stats
from masq_jax.core.cmc import Fit
from masq_jax.core.quant import QuantSpec
from masq_jax.errors import CoreInputError
from masq_jax.modality import NON_TEXT, NUM_MODALITIES, TEXT

__all__ = ["FIXED_DAMPING", "FIXED_RHO", "shrinkage_candidates", "per_modality", "linear_inputs", "validate",
           "fit", "factors"]

FIXED_DAMPING = 1e-2  # the earlier default (relative damping δ); ρ = δ / (1 + δ)
FIXED_RHO = FIXED_DAMPING / (1.0 + FIXED_DAMPING)


def shrinkage_candidates(shrinkage: str | float, cov_fit: jax.Array, n_fit) -> list[jax.Array]:
    """Shrinkage amounts ρ tried for one covariance: with ``"auto"`` OAS's and the fixed damping's
    (the fold picks), with ``"oas"`` OAS's alone, else the one given."""
    if shrinkage == "auto":
        return [shrink_mod.oas_shrinkage(cov_fit, n_fit), jnp.float32(FIXED_RHO)]
    if shrinkage == "oas":
        return [shrink_mod.oas_shrinkage(cov_fit, n_fit)]
    return [jnp.float32(float(shrinkage))]


def per_modality(fn, *xs):
    """``fn`` over the leading (vision, audio) axis as one loop inside the program (``lax.map``):
    batched eighs can wedge XLA:CPU's thread pool, and a loop compiles the body once."""
    return jax.lax.map(lambda args: fn(*args), xs)


def linear_inputs(w: jax.Array, s: jax.Array, weights: QuantSpec, gram: jax.Array, count: jax.Array,
                  gram_val: jax.Array | None = None, count_val: jax.Array | None = None) -> dict[str, jax.Array]:
    """Per non-text modality (stacked on a leading axis of 2): the residual ``dw`` [2, out, in], the
    smoothed Gram matrices ``c_all`` (and ``c_val``, the fold's) [2, in, in], token counts ``n_all``
    (``n_val``) [2] and the modality-smoothed weight ``wm`` [2, out, in]. ``w`` [out, in], ``s`` [3, in]
    (text, vision, audio), ``gram`` [3, in, in] raw ``Σ xᵀx`` per modality, ``count`` [3]."""
    out_dim, in_dim = w.shape
    if s.shape != (NUM_MODALITIES, in_dim) or gram.shape != (NUM_MODALITIES, in_dim, in_dim):
        raise CoreInputError(f"s must be [3, {in_dim}] and gram [3, {in_dim}, {in_dim}] for a [{out_dim}, {in_dim}] "
                             f"weight, got {tuple(s.shape)} and {tuple(gram.shape)}")
    w = w.astype(jnp.float32)
    s = s.astype(jnp.float32)
    wq = weights.fake_quant(w * s[TEXT][None, :])
    idx = jnp.asarray(NON_TEXT)
    sm = s[idx]
    out = {
        "dw": jax.vmap(lambda v: cmc.cmc_residual(w, v, s[TEXT], wq))(sm),
        "c_all": jax.vmap(cmc.smoothed_covariance)(gram[idx], sm),
        "n_all": jnp.asarray(count)[idx],
        "wm": w[None] * sm[:, None, :],
    }
    if gram_val is not None:
        out["c_val"] = jax.vmap(cmc.smoothed_covariance)(gram_val[idx], sm)
        out["n_val"] = jnp.asarray(count_val)[idx]
    return out


def validate(x: dict[str, jax.Array], weights: QuantSpec, *, shrinkage: str | float, rank: int, storage_rank: int,
             svd: str = "gram", return_factors: bool = False) -> tuple[jax.Array, ...]:
    """Per non-text modality ([2] leading): the relative validation-error curve ``[storage_rank + 1]`` of
    the shrinkage preferred at ``rank`` (fitted on all-but-fold tokens, scored on the fold), MAS's
    relative validation error (the modality's own quantized weight) and the chosen candidate; with
    ``return_factors`` also that candidate's fit-fold factors ``L [in, storage_rank]``, ``R``.
    ``x`` from ``linear_inputs`` with a fold."""

    def one(dw, c_all, c_val, n_all, n_val, wm):
        c_fit = c_all - c_val
        ref = jnp.maximum(jnp.sum(wm.T * jnp.dot(c_val, wm.T, precision=cmc.HIGHEST)), 1e-30)
        e = (wm - weights.fake_quant(wm)).T
        mas = jnp.sum(e * jnp.dot(c_val, e, precision=cmc.HIGHEST)) / ref
        rhos = shrinkage_candidates(shrinkage, c_fit, n_all - n_val)
        fitted = cmc.validated_fit(dw, c_fit, c_val, rhos, rank, max_rank=storage_rank, svd=svd,
                                   return_factors=return_factors)
        curves, best = fitted[:2]
        return curves[best] / ref, mas, best, *(fitted[2] if return_factors else ())

    return per_modality(one, x["dw"], x["c_all"], x["c_val"], x["n_all"], x["n_val"], x["wm"])


def fit(x: dict[str, jax.Array], *, storage_rank: int, choice: jax.Array, alloc: jax.Array, shrinkage: str | float,
        svd: str = "gram", mode: Fit = "auto", deployed: jax.Array | None = None
        ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The stored branches ``(L [3, in, storage_rank], R [3, storage_rank, out], ρ [2])``: per non-text
    modality the fit on all tokens under candidate ``choice`` [2] (OAS recomputed on all tokens), columns
    beyond ``alloc`` [2] zeroed; text's rows zero. ``mode``: ``cmc.low_rank_compensation``'s ``fit``
    ("auto" keeps its in-sample guard against plain SVD). ``deployed`` [2] bool: fit only those
    modalities (zeros elsewhere, not computed)."""
    cap = storage_rank

    def one(dw, c, n, k, r_alloc, use=None):
        rho = jnp.stack(shrinkage_candidates(shrinkage, c, n))[k]

        def solve(dw, c):
            l, r = cmc.low_rank_compensation(dw, c, cap, damping=shrink_mod.damping_of(rho), svd=svd, fit=mode)
            keep = (jnp.arange(cap) < r_alloc).astype(jnp.float32)
            return l.astype(jnp.float32) * keep[None, :], r.astype(jnp.float32) * keep[:, None]

        if use is None:
            return (*solve(dw, c), rho)
        zeros = lambda dw, c: (jnp.zeros((dw.shape[1], cap), jnp.float32),  # noqa: E731
                               jnp.zeros((cap, dw.shape[0]), jnp.float32))
        return (*jax.lax.cond(use, solve, zeros, dw, c), rho)

    extra = () if deployed is None else (deployed,)
    l, r, rho = per_modality(one, x["dw"], x["c_all"], x["n_all"], jnp.asarray(choice, jnp.int32),
                             jnp.asarray(alloc, jnp.int32), *extra)
    out_dim, in_dim = x["dw"].shape[1:]
    return (jnp.concatenate([jnp.zeros((1, in_dim, cap), jnp.float32), l]),
            jnp.concatenate([jnp.zeros((1, cap, out_dim), jnp.float32), r]), rho)


def factors(w: jax.Array, s: jax.Array, x: jax.Array, modality_ids: jax.Array, rank: int, weights: QuantSpec, *,
            shrinkage: float = FIXED_RHO, svd: str = "gram", mode: Fit = "auto") -> tuple[jax.Array, jax.Array]:
    """Branches ``(L [3, in, rank], R [3, rank, out])`` of one linear from its activations ``x`` [..., in]
    and ``modality_ids``: the quantizer's fit (``linear_inputs`` then ``fit``) at a fixed shrinkage ρ
    and ``rank`` everywhere — what ``--cov-shrinkage ρ --rank-budget off --cmc-deploy paper`` stores."""
    x2 = x.reshape(-1, x.shape[-1])
    mid = modality_ids.reshape(-1)
    inputs = linear_inputs(w, s, weights, core_stats.gram(x2, mid), core_stats.modality_counts(mid))
    zeros = jnp.zeros((len(NON_TEXT),), jnp.int32)
    l, r, _ = fit(inputs, storage_rank=rank, choice=zeros, alloc=zeros + rank, shrinkage=shrinkage, svd=svd,
                  mode=mode)
    return l, r
