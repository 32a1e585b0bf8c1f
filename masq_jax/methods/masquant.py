"""MASQuant = MAS + cross-modal compensation (docs/method.md §5): the vectors are learned as in MAS,
then one text-smoothed weight is stored and every other modality gets a whitened low-rank branch
``L_m R_m`` fitted to its residual ``W·diag(s_m) − Q_w(W·diag(s_text))``.

Fitted so that it generalises (docs/method.md §5, "validated compensation"): every 4th calibration
sample is a validation fold with its own Gram matrices. Per linear and modality the branch is fitted
on the other samples under each candidate covariance shrinkage (OAS and the fixed 1e-2 damping, or
the ``--cov-shrinkage`` given), scored on the validation fold at every rank from one set of products
(``core.cmc.validation_curve``), and the better shrinkage kept; the layer's rank budget is spent on
those validated curves (``core.rank_budget``); then the branch is refitted on all tokens at the
allocated rank (stored zero-padded to the linear's storage rank). A unit whose validated error stays
above MAS's own (one weight per modality) is reported with the rank it would need.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax.core import cmc, rank_budget, shrinkage
from masq_jax.methods.mas import MAS
from masq_jax.methods.options import Option, number, words_or_number
from masq_jax.modality import NAMES, NON_TEXT, TEXT
from masq_jax.models import decoder

FIXED_DAMPING = 1e-2  # the earlier default (relative damping δ); ρ = δ / (1 + δ)
FIXED_RHO = FIXED_DAMPING / (1.0 + FIXED_DAMPING)
BUDGET_HEADROOM = 2  # a linear's storage rank: up to 2x its --rank (zero-padded where unused)
INFO_KEYS = ("rank", "storage_rank", "shrinkage", "val_sqnr", "mas_val_sqnr", "needed_rank")


def _check_rank(v):
    if not (v >= 0):
        return f"--rank must be >= 0 (a ratio <= 1 or an absolute rank), got {v}"
    if v > 1 and float(v) != int(v):
        return f"--rank {v}: above 1 it is an absolute rank and must be an integer"
    return None


def _check_shrinkage(v):
    if v != "auto" and (isinstance(v, (str, bool)) or not 0.0 <= float(v) <= 1.0):
        return f"--cov-shrinkage takes 'auto' or a number in [0, 1], got {v!r}"
    return None


def _check_budget(v):
    if v not in ("auto", "off") and (isinstance(v, (str, bool)) or not float(v) > 0):
        return f"--rank-budget takes 'auto', 'off' or a mean rank > 0, got {v!r}"
    return None


OPTIONS = (
    Option("rank", 0.02, "CMC rank: ratio of min(in,out) if <= 1, else absolute (docs/method.md §5)",
           parse=number("a ratio <= 1 or an absolute rank"), check=_check_rank),
    Option("rank_floor", 32, "lower bound on the CMC rank (the reference's)", parse=int),
    Option("cov_shrinkage", "auto", "CMC whitening-covariance shrinkage ρ towards tr(C)/d·I: 'auto' (OAS or the "
           "fixed 1e-2 damping, whichever a validation fold of samples prefers) or a fixed ρ in [0, 1]",
           parse=words_or_number("auto"), check=_check_shrinkage),
    Option("rank_budget", "auto", "CMC ranks per linear and modality from validated error curves: 'auto' (the "
           "parameters --rank gives, reallocated), 'off' (--rank everywhere) or a mean rank",
           parse=words_or_number("auto", "off"), check=_check_budget),
    Option("cmc_solver", "gram", "CMC decompositions: eigh of min(in,out)-sized Gram matrices (fast) or dense SVDs",
           choices=("gram", "svd")),
)


class MASQuant(MAS):
    name = "masquant"
    summary = "MAS vectors, one stored text weight plus whitened low-rank compensation per modality"
    per_modality_weights = False
    compensates = True
    options = OPTIONS

    def learn(self, cfg, st, lp, factors, h, target, batch, modality_weights, key):
        """MAS's learning, then every non-text vector takes text's sign channel by channel (``align_signs``)."""
        trained, losses = super().learn(cfg, st, lp, factors, h, target, batch, modality_weights, key)
        return align_signs(trained, st), losses

    def gram_statistics(self, st):
        """A validation fold whenever something is chosen on it (shrinkage ``auto`` or a rank budget)."""
        return "validation" if st.cov_shrinkage == "auto" or st.rank_budget != "off" else True

    def ranks(self, cfg, st) -> dict[str, int]:
        """Storage rank per linear: ``--rank`` with ``--rank-budget off``, else room to reallocate."""
        shapes = decoder.linear_shapes(cfg)
        base = _resolved(st, st.rank, shapes)
        if st.rank_budget == "off":
            return base
        budget = _resolved(st, _budget_rank(st), shapes)
        return {n: min(min(shapes[n]), BUDGET_HEADROOM * max(budget[n], base[n])) for n in decoder.LINEAR_NAMES}

    def compensate(self, lp, factors, stats, st, ranks):
        cfg_shapes = {n: tuple(lp[n]["w"].shape) for n in decoder.LINEAR_NAMES}
        budget = {n: min(r, ranks[n]) for n, r in _resolved(st, _budget_rank(st), cfg_shapes).items()}
        has_val = "gram_val" in stats[decoder.INPUT_OF["q_proj"]]
        if has_val:
            val = jax.device_get(_validate(lp, factors, stats, st, tuple(sorted(ranks.items())),
                                           tuple(sorted(budget.items()))))
            alloc, info = allocate_layer(val, stats, st, ranks, budget, cfg_shapes)
        else:
            alloc = {n: np.full(len(NON_TEXT), budget[n]) for n in decoder.LINEAR_NAMES}
            val, info = None, empty_info()
        info["rank"][:] = [alloc[n] for n in decoder.LINEAR_NAMES]
        info["storage_rank"][:] = [[ranks[n]] * len(NON_TEXT) for n in decoder.LINEAR_NAMES]
        choice = {n: (np.zeros(len(NON_TEXT), np.int32) if val is None else val[n]["choice"])
                  for n in decoder.LINEAR_NAMES}
        lora, rho = _final(lp, factors, stats, st, tuple(sorted(ranks.items())),
                           {n: jnp.asarray(alloc[n], jnp.int32) for n in alloc}, choice, has_val)
        rho = jax.device_get(rho)
        info["shrinkage"][:] = [rho[n] for n in decoder.LINEAR_NAMES]
        return lora, info

    def compensation_info_template(self) -> dict:
        return empty_info()

    def compensation_report(self, info: dict) -> dict:
        """One layer's ``report.json`` entry: chosen rank, shrinkage and validated SQNRs per linear."""
        out = {}
        for i, n in enumerate(decoder.LINEAR_NAMES):
            out[n] = {k: {NAMES[m]: _json_number(info[k][i, j]) for j, m in enumerate(NON_TEXT)} for k in INFO_KEYS}
        return out

    def compensation_warnings(self, infos: list[dict]) -> list[str]:
        """The guard: per linear and modality, the layers where the validated CMC error stays above
        MAS's (one weight per modality) at the chosen rank, and the rank that would reach it."""
        out = []
        for i, n in enumerate(decoder.LINEAR_NAMES):
            for j, m in enumerate(NON_TEXT):
                bad = [(layer, inf) for layer, inf in enumerate(infos) if inf is not None
                       and np.isfinite(inf["val_sqnr"][i, j]) and inf["val_sqnr"][i, j] < inf["mas_val_sqnr"][i, j]]
                if not bad:
                    continue
                ranks = sorted(int(inf["rank"][i, j]) for _, inf in bad)
                need = [inf["needed_rank"][i, j] for _, inf in bad]
                cap = max(int(inf["storage_rank"][i, j]) for _, inf in bad)
                need_s = (f"more than {cap} (the storage rank; raise --rank)" if any(not np.isfinite(v) for v in need)
                          else f"{int(min(need))}–{int(max(need))}")
                gap = max(inf["mas_val_sqnr"][i, j] - inf["val_sqnr"][i, j] for _, inf in bad)
                out.append(f"masquant: {n} {NAMES[m]}: validated CMC error above MAS's in {len(bad)} of {len(infos)} "
                           f"layers (up to {gap:.1f} dB) at rank {ranks[0]}–{ranks[-1]}; it would need rank {need_s}")
        return out


def align_signs(factors: dict, st) -> dict:
    """``s_m ← sign(s_text)·|s_m|`` per channel for vision and audio, when the weight quantizer is
    symmetric (odd): then ``Q_a(x/s_m)·Q_w(W·diag(s_m))ᵀ`` is exactly unchanged (negating a channel
    negates both factors; absmax scales do not see signs), so MAS's model is the same. AdamW can carry
    a vector across zero and §4's clamp keeps the new sign; such a channel adds ``|s_m| + |s_text|``
    to the CMC residual ``W·(diag(s_m) − diag(s_text))``, full-rank error the low-rank branch cannot
    fit (docs/method.md §5, "Sign alignment"). Affine (W4A16) weights are left as they are."""
    if not st.weights.symmetric:
        return factors
    idx = jnp.asarray(NON_TEXT)

    def one(s):
        sign = jnp.where(s[..., TEXT, :] < 0, -1.0, 1.0).astype(s.dtype)
        return s.at[..., idx, :].set(jnp.abs(s[..., idx, :]) * sign[..., None, :])

    return {n: one(v) for n, v in factors.items()}


def _json_number(v):
    v = float(v)
    return None if not math.isfinite(v) else (int(v) if v.is_integer() and abs(v) < 2**31 else round(v, 4))


def empty_info() -> dict[str, np.ndarray]:
    """``{key: [7 linears, 2 modalities]}`` float32, NaN where unknown (the checkpointed layout)."""
    return {k: np.full((len(decoder.LINEAR_NAMES), len(NON_TEXT)), np.nan, np.float32) for k in INFO_KEYS}


def _budget_rank(st) -> float:
    """The rank (ratio or absolute) whose parameters make a layer's budget."""
    return st.rank if st.rank_budget in ("auto", "off") else float(st.rank_budget)


def _resolved(st, rank, shapes: dict[str, tuple[int, int]]) -> dict[str, int]:
    """``rank`` per linear by the reference's rule (ratio of min(in, out), floored at ``--rank-floor``)."""
    return {n: cmc.resolve_rank(rank, shapes[n][1], shapes[n][0], floor=st.rank_floor) for n in decoder.LINEAR_NAMES}


def allocate_layer(val: dict, stats: dict, st, ranks: dict[str, int], budget: dict[str, int],
                   shapes: dict[str, tuple[int, int]]) -> tuple[dict[str, np.ndarray], dict]:
    """Ranks ``{linear: [2]}`` from the validated curves (``--rank-budget``) and the layer's validated
    SQNRs (the caller records the ranks)."""
    alloc = {n: np.full(len(NON_TEXT), budget[n], np.int64) for n in decoder.LINEAR_NAMES}
    units = []
    for j, m in enumerate(NON_TEXT):  # one budget per modality: one modality never buys rank with another's
        mine, curves, costs, spend = [], [], [], 0.0
        for n in decoder.LINEAR_NAMES:
            g = stats[decoder.INPUT_OF[n]]
            n_val, n_all = float(g["count_val"][m]), float(g["count"][m])
            if n_val == 0 or n_val == n_all:
                continue  # no validation (or no fit) tokens of this modality: keep --rank
            mine.append(n)
            curves.append(np.asarray(val[n]["curve"][j][: ranks[n] + 1], np.float64))
            costs.append(float(sum(shapes[n])))
            spend += budget[n] * costs[-1]
        units += [(n, j) for n in mine]
        if st.rank_budget != "off" and mine:
            for n, r in zip(mine, rank_budget.allocate(curves, costs, spend)):
                alloc[n][j] = r
    info = empty_info()
    for i, n in enumerate(decoder.LINEAR_NAMES):
        for j in range(len(NON_TEXT)):
            curve = np.asarray(val[n]["curve"][j], np.float64)
            mas = float(val[n]["mas"][j])
            if (n, j) not in units:
                continue
            r = int(alloc[n][j])
            info["val_sqnr"][i, j] = _db(curve[min(r, len(curve) - 1)])
            info["mas_val_sqnr"][i, j] = _db(mas)
            reach = np.nonzero(curve <= mas)[0]
            info["needed_rank"][i, j] = reach[0] if len(reach) else np.nan
    return alloc, info


def _db(rel_err: float) -> float:
    return float(10.0 * np.log10(1.0 / max(rel_err, 1e-30)))


def _candidates(st, cov_fit, n_fit):
    """Shrinkage amounts tried on the fit fold: OAS and the fixed damping, or the one given."""
    if st.cov_shrinkage == "auto":
        return [shrinkage.oas_shrinkage(cov_fit, n_fit), jnp.float32(FIXED_RHO)]
    return [jnp.float32(float(st.cov_shrinkage))]


def _residuals(lp, factors, name, st):
    """``(W, s [3, in], Wq)`` of one linear: its weight, vectors and stored text weight (dequantized)."""
    w = lp[name]["w"].astype(jnp.float32)
    s = factors[name].astype(jnp.float32)
    wq = st.weights.fake_quant(w * s[TEXT][None, :])
    return w, s, wq


def _per_modality(fn, *xs):
    """``fn`` over the leading (vision, audio) axis as one loop inside the program (``lax.map``):
    batched eighs can wedge XLA:CPU's thread pool, and a loop compiles the body once."""
    return jax.lax.map(lambda args: fn(*args), xs)


def _modality_inputs(lp, factors, stats, name, st):
    """Per non-text modality (stacked on a leading axis): residual ΔW_m, smoothed Gram matrices
    (all tokens, validation fold), token counts and the modality-smoothed weight."""
    g = stats[decoder.INPUT_OF[name]]
    w, s, wq = _residuals(lp, factors, name, st)
    idx = jnp.asarray(NON_TEXT)
    sm = s[idx]
    out = {
        "dw": jax.vmap(lambda v: cmc.cmc_residual(w, v, s[TEXT], wq))(sm),
        "c_all": jax.vmap(cmc.smoothed_covariance)(g["gram"][idx], sm),
        "n_all": g["count"][idx],
        "wm": w[None] * sm[:, None, :],
    }
    if "gram_val" in g:
        out["c_val"] = jax.vmap(cmc.smoothed_covariance)(g["gram_val"][idx], sm)
        out["n_val"] = g["count_val"][idx]
    return out


@functools.partial(jax.jit, static_argnames=("st", "ranks", "base"))
def _validate(lp, factors, stats, st, ranks, base):
    """Per linear: relative validation-error curves ``[2, storage rank + 1]`` of the shrinkage preferred
    at ``--rank`` (``base``),
    MAS's relative validation error ``[2]`` and the chosen candidate ``[2]``."""
    ranks, base = dict(ranks), dict(base)
    out = {}
    for name in decoder.LINEAR_NAMES:
        x = _modality_inputs(lp, factors, stats, name, st)

        def one(dw, c_all, c_val, n_all, n_val, wm, rank=ranks[name]):
            c_fit = c_all - c_val
            ref = jnp.maximum(jnp.sum(wm.T * jnp.dot(c_val, wm.T, precision=cmc.HIGHEST)), 1e-30)
            e = (wm - st.weights.fake_quant(wm)).T
            mas = jnp.sum(e * jnp.dot(c_val, e, precision=cmc.HIGHEST)) / ref
            curves, best = cmc.validated_fit(dw, c_fit, c_val, _candidates(st, c_fit, n_all - n_val), base[name],
                                             max_rank=rank, svd=st.cmc_solver)
            return curves[best] / ref, mas, best

        curve, mas, best = _per_modality(one, x["dw"], x["c_all"], x["c_val"], x["n_all"], x["n_val"], x["wm"])
        out[name] = {"curve": curve, "mas": mas, "choice": best}
    return out


@functools.partial(jax.jit, static_argnames=("st", "ranks", "validated"))
def _final(lp, factors, stats, st, ranks, alloc, choice, validated):
    """Refit on all tokens with the chosen shrinkage (recomputed on all tokens for OAS) at the storage
    rank, columns beyond each modality's allocated rank zeroed. Returns the lora and the ρ used.
    Without a validation fold the fit keeps ``fit="auto"``'s in-sample guard against plain SVD."""
    ranks = dict(ranks)
    lora, rhos = {}, {}
    for name in decoder.LINEAR_NAMES:
        x = _modality_inputs(lp, factors, stats, name, st)
        cap = ranks[name]

        def one(dw, c, n, k, r_alloc):
            rho = jnp.stack(_candidates(st, c, n))[k]
            l, r = cmc.low_rank_compensation(dw, c, cap, damping=shrinkage.damping_of(rho), svd=st.cmc_solver,
                                             fit="whitened" if validated else "auto")
            keep = (jnp.arange(cap) < r_alloc).astype(jnp.float32)
            return l.astype(jnp.float32) * keep[None, :], r.astype(jnp.float32) * keep[:, None], rho

        l, r, rho = _per_modality(one, x["dw"], x["c_all"], x["n_all"], jnp.asarray(choice[name]), alloc[name])
        out_dim, in_dim = lp[name]["w"].shape
        lora[name] = (jnp.concatenate([jnp.zeros((1, in_dim, cap), jnp.float32), l]),
                      jnp.concatenate([jnp.zeros((1, cap, out_dim), jnp.float32), r]))
        rhos[name] = rho
    return lora, rhos
