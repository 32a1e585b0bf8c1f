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

from masq_jax.core import cmc, compensation, deploy, rank_budget, smoothing
from masq_jax.methods.base import INIT_SOURCE, TIE_GROUPS
from masq_jax.methods.mas import MAS
from masq_jax.methods.options import Option, number, words_or_number
from masq_jax.modality import NAMES, NON_TEXT, TEXT
from masq_jax.models import decoder

BUDGET_HEADROOM = 2  # a linear's storage rank: up to 2x its --rank (zero-padded where unused)
INFO_KEYS = ("rank", "storage_rank", "shrinkage", "val_sqnr", "mas_val_sqnr", "needed_rank")
# Per linear and modality (text included), the validated deployment (``--cmc-deploy auto``): its code
# (core.deploy: 0 branch / text's own path, 1 text's vector, 2 one shared vector) and the fold's
# output SQNRs (dB) of the chosen deployment, of MAS (one weight per modality), of the paper's form
# and of the shared (SmoothQuant) vector.
DEPLOY_KEYS = ("deploy", "out_sqnr", "mas_out_sqnr", "paper_out_sqnr", "shared_out_sqnr")
GUARD_DB = deploy.GUARD_DB  # the guard names every unit whose validated output SQNR is further than this below MAS's


def _check_rank(v):
    if not (v >= 0):
        return f"--rank must be >= 0 (a ratio <= 1 or an absolute rank), got {v}"
    if v > 1 and float(v) != int(v):
        return f"--rank {v}: above 1 it is an absolute rank and must be an integer"
    return None


def _check_shrinkage(v):
    if v not in ("auto", "oas") and (isinstance(v, (str, bool)) or not 0.0 <= float(v) <= 1.0):
        return f"--cov-shrinkage takes 'auto', 'oas' or a number in [0, 1], got {v!r}"
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
           "fixed 1e-2 damping, whichever a validation fold of samples prefers), 'oas' (OAS alone: one fit per "
           "linear and modality on the fold, cheaper) or a fixed ρ in [0, 1]",
           parse=words_or_number("auto", "oas"), check=_check_shrinkage),
    Option("rank_budget", "auto", "CMC ranks per linear and modality from validated error curves: 'auto' (the "
           "parameters --rank gives, reallocated), 'off' (--rank everywhere) or a mean rank",
           parse=words_or_number("auto", "off"), check=_check_budget),
    Option("cmc_solver", "gram", "CMC decompositions: 'gram' (eigh of min(in,out)-sized Gram matrices after an eigh "
           "of the covariance), 'output' (one eigh of a min(in,out)-sized matrix per fit, Cholesky whitening where "
           "in < out; the fewest, the same fit up to rounding) or 'svd' (dense SVDs)",
           choices=("gram", "output", "svd")),
    Option("cmc_deploy", "auto", "'auto': per linear and modality, the text weight plus a branch, text's vector, one "
           "shared vector, or the modality's vector on a few channels with an exact channel branch, whichever the "
           "validation fold prefers (docs/method.md §5); 'paper': the text weight plus a branch for every non-text "
           "modality (the earlier artefact)", choices=("auto", "paper")),
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
        """Branches fitted and validated per linear and modality, the rank budget allocated, then (with
        ``--cmc-deploy auto`` and a fold) each linear's deployment chosen on the fold's tokens
        (``select_deployment``); returns the deployed vectors, the branches and what was chosen."""
        cfg_shapes = {n: tuple(lp[n]["w"].shape) for n in decoder.LINEAR_NAMES}
        budget = {n: min(r, ranks[n]) for n, r in _resolved(st, _budget_rank(st), cfg_shapes).items()}
        has_val = "gram_val" in stats[decoder.INPUT_OF["q_proj"]]
        shared = smoothquant_vectors(lp, stats, st) if has_val and st.cmc_deploy == "auto" else None
        if has_val:
            val = jax.device_get(_validate(lp, factors, stats, st, tuple(sorted(ranks.items())),
                                           tuple(sorted(budget.items())), shared))
            alloc, info = allocate_layer(val, stats, st, ranks, budget, cfg_shapes)
        else:
            alloc = {n: np.full(len(NON_TEXT), budget[n]) for n in decoder.LINEAR_NAMES}
            val, info = None, empty_info()
        info["rank"][:] = [alloc[n] for n in decoder.LINEAR_NAMES]
        info["storage_rank"][:] = [[ranks[n]] * len(NON_TEXT) for n in decoder.LINEAR_NAMES]
        choice = {n: (np.zeros(len(NON_TEXT), np.int32) if val is None else val[n]["choice"])
                  for n in decoder.LINEAR_NAMES}
        codes, deployed = None, None
        if shared is not None:
            codes = select_deployment(lp, factors, stats, st, val, alloc, shared, info)
            nt = list(NON_TEXT)
            deployed = {n: jnp.asarray(codes[n][nt] == deploy.BRANCH) for n in decoder.LINEAR_NAMES}
        lora, rho = _final(lp, factors, stats, st, tuple(sorted(ranks.items())),
                           {n: jnp.asarray(alloc[n], jnp.int32) for n in alloc}, choice, has_val, deployed)
        rho = jax.device_get(rho)
        info["shrinkage"][:] = [rho[n] for n in decoder.LINEAR_NAMES]
        if codes is not None:
            factors, lora = deployed_factors(lp, factors, shared, codes, lora, val, alloc)
        return factors, lora, info

    def compensation_info_template(self) -> dict:
        return empty_info()

    def compensation_report(self, info: dict) -> dict:
        """One layer's ``report.json`` entry per linear: chosen rank, shrinkage and validated SQNRs per
        non-text modality and, with ``--cmc-deploy auto``, the deployment of every modality with the
        fold's output SQNRs it was chosen on."""
        out = {}
        for i, n in enumerate(decoder.LINEAR_NAMES):
            out[n] = {k: {NAMES[m]: _json_number(info[k][i, j]) for j, m in enumerate(NON_TEXT)} for k in INFO_KEYS}
            if np.isfinite(info["deploy"][i]).all():
                out[n]["deployment"] = {NAMES[m]: deploy.LABELS[int(info["deploy"][i, m])] for m in range(len(NAMES))}
                for k in DEPLOY_KEYS[1:]:
                    out[n][k] = {NAMES[m]: _json_number(info[k][i, m]) for m in range(len(NAMES))}
        return out

    def compensation_warnings(self, infos: list[dict]) -> list[str]:
        """The guard. With a chosen deployment: per linear and modality, the layers whose validated
        output SQNR stays more than ``GUARD_DB`` below MAS's, with what was shipped there. Without
        one (``--cmc-deploy paper``): where the validated CMC error stays above MAS's at the chosen
        rank, and the rank that would reach it."""
        chosen = [inf for inf in infos if inf is not None and np.isfinite(inf["deploy"]).all()]
        if chosen:
            return _deployment_warnings(chosen, len(infos))
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


def _deployment_warnings(infos: list[dict], n_layers: int) -> list[str]:
    out = []
    for i, n in enumerate(decoder.LINEAR_NAMES):
        for m in range(len(NAMES)):
            gaps = [inf["mas_out_sqnr"][i, m] - inf["out_sqnr"][i, m] for inf in infos]
            bad = [(g, inf) for g, inf in zip(gaps, infos) if np.isfinite(g) and g > GUARD_DB]
            if not bad:
                continue
            shipped = sorted({deploy.LABELS[int(inf["deploy"][i, m])] for _, inf in bad})
            out.append(f"masquant: {n} {NAMES[m]}: no one-weight deployment reaches MAS on the validation fold in "
                       f"{len(bad)} of {n_layers} layers (up to {max(g for g, _ in bad):.1f} dB below); shipped the "
                       f"best of them there ({', '.join(shipped)})")
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
    """``{key: [7 linears, 2 non-text modalities]}`` and ``{deploy key: [7 linears, 3 modalities]}``
    float32, NaN where unknown (the checkpointed layout)."""
    n = len(decoder.LINEAR_NAMES)
    info = {k: np.full((n, len(NON_TEXT)), np.nan, np.float32) for k in INFO_KEYS}
    return info | {k: np.full((n, len(NAMES)), np.nan, np.float32) for k in DEPLOY_KEYS}


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


def _inputs(lp, factors, stats, name, st):
    """``compensation.linear_inputs`` of one linear of the layer (with the fold when collected)."""
    g = stats[decoder.INPUT_OF[name]]
    return compensation.linear_inputs(lp[name]["w"], factors[name], st.weights, g["gram"], g["count"],
                                      g.get("gram_val"), g.get("count_val"))


@functools.partial(jax.jit, static_argnames=("st", "ranks", "base"))
def _validate(lp, factors, stats, st, ranks, base, shared=None):
    """Per linear: ``compensation.validate``'s relative validation-error curves ``[2, storage rank + 1]``
    (the shrinkage preferred at ``--rank``, ``base``), MAS's relative validation error ``[2]`` and the
    chosen candidate ``[2]``. With ``shared`` (the deployment's selection) also the fit-fold factors at
    the storage rank of that candidate (``l`` [2, in, r], ``r`` [2, r, out]) and the channel options'
    orders against text's and the shared vector (``order``, ``order_shared`` [2, r])."""
    ranks, base = dict(ranks), dict(base)
    select = shared is not None
    out = {}
    for name in decoder.LINEAR_NAMES:
        x = _inputs(lp, factors, stats, name, st)
        res = compensation.validate(x, st.weights, shrinkage=st.cov_shrinkage, rank=base[name],
                                    storage_rank=ranks[name], svd=st.cmc_solver, return_factors=select)
        out[name] = {"curve": res[0], "mas": res[1], "choice": res[2]}
        if select:
            w, s = lp[name]["w"].astype(jnp.float32), factors[name].astype(jnp.float32)
            diag = jnp.diagonal(x["c_all"] - x["c_val"], axis1=1, axis2=2)
            sm = s[jnp.asarray(NON_TEXT)]
            order = {"order": jax.vmap(lambda v, d: deploy.channel_order(w, v, s[TEXT], d, ranks[name]))(sm, diag),
                     "order_shared": jax.vmap(lambda v, d: deploy.channel_order(w, v, shared[name], d,
                                                                                ranks[name]))(sm, diag)}
            out[name] |= {"l": res[3], "r": res[4], **order}
    return out


@functools.partial(jax.jit, static_argnames=("st", "ranks", "validated"))
def _final(lp, factors, stats, st, ranks, alloc, choice, validated, deployed=None):
    """``compensation.fit`` per linear: the refit on all tokens with the chosen shrinkage at the storage
    rank, columns beyond each modality's allocated rank zeroed. Returns the lora and the ρ used.
    Without a validation fold the fit keeps ``fit="auto"``'s in-sample guard against plain SVD.
    ``deployed`` ({linear: [2] bool}, the selection's whitened branches): fit only those."""
    ranks = dict(ranks)
    lora, rhos = {}, {}
    for name in decoder.LINEAR_NAMES:
        x = _inputs(lp, factors, stats, name, st)
        l, r, rhos[name] = compensation.fit(x, storage_rank=ranks[name], choice=choice[name], alloc=alloc[name],
                                            shrinkage=st.cov_shrinkage, svd=st.cmc_solver,
                                            mode="whitened" if validated else "auto",
                                            deployed=None if deployed is None else deployed[name])
        lora[name] = (l, r)
    return lora, rhos


# ----------------------------------------------------------------------------------------------
# the validated deployment (--cmc-deploy auto; core.deploy)


def smoothquant_vectors(lp: dict, stats: dict, st) -> dict[str, jax.Array]:
    """The all-token SmoothQuant vector ``[in]`` of every linear, as the ``smoothquant`` method builds
    it (init on q, o, up from ``absmax_all``; k, v copy q's, gate copies up's; down_proj unsmoothed)."""
    out = {}
    for name in decoder.LINEAR_NAMES:
        src = INIT_SOURCE.get(name)
        if src is None:
            out[name] = jnp.ones((lp[name]["w"].shape[1],), jnp.float32)
        else:
            out[name] = smoothing.init_factors(stats[decoder.INPUT_OF[src]]["absmax_all"],
                                               lp[src]["w"].astype(jnp.float32), alpha=st.alpha)
    return out


def deployed_factors(lp, factors: dict, shared: dict, codes: dict[str, np.ndarray], lora: dict, val: dict,
                     alloc: dict) -> tuple[dict, dict]:
    """The vectors and branches the artefact stores (row ``TEXT`` decides the stored weight): a linear
    on the shared base takes its shared vector for text and every ``SHARED`` modality, a
    ``TEXT_VECTOR`` modality takes text's, ``BRANCH`` keeps its own (with the refitted branch),
    ``CHANNELS`` / ``SHARED_CHANNELS`` the mixed vector and exact channel branch."""
    vec, out_lora = {}, {}
    for name, s in factors.items():
        c = codes[name]
        base = shared[name].astype(s.dtype) if int(c[TEXT]) == deploy.SHARED else s[TEXT]
        rows = [s[m] if int(c[m]) == deploy.BRANCH and m != TEXT else base for m in range(len(NAMES))]
        l, r = lora[name]
        for j, m in enumerate(NON_TEXT):
            if int(c[m]) in (deploy.CHANNELS, deploy.SHARED_CHANNELS):
                order = val[name]["order_shared" if int(c[m]) == deploy.SHARED_CHANNELS else "order"][j]
                rows[m], lc, rc = deploy.channel_branch(lp[name]["w"], s[m], base, jnp.asarray(order),
                                                        int(alloc[name][j]))
                l, r = l.at[m].set(lc), r.at[m].set(rc)
        vec[name], out_lora[name] = jnp.stack(rows), (l, r)
    return vec, out_lora


PATHS = ("mas", "paper", "text_vector", "channels", "shared", "shared_channels")  # what ``_score`` measures


def select_deployment(lp, factors, stats, st, val, alloc, shared, info) -> dict[str, np.ndarray]:
    """Per linear, the deployment codes ``[3]`` (``core.deploy``) chosen on the fold's tokens with the
    fit-fold branches at their allocated ranks (what the fold did not see); ``info``'s deployment
    entries are filled in. With ``--tie-smoothing`` the linears of one input group choose together
    (summed errors) and without the channel option, so they keep one vector."""
    counts = np.bincount(np.asarray(jax.device_get(stats[decoder.INPUT_OF["q_proj"]]["val_mid"])),
                         minlength=len(NAMES))[: len(NAMES)]
    fit = {n: {k: val[n][k] for k in ("l", "r", "order", "order_shared")} for n in decoder.LINEAR_NAMES}
    errs = jax.device_get(_score(lp, factors, stats, st, fit, {n: jnp.asarray(alloc[n], jnp.int32) for n in alloc},
                                 shared, tuple(int(c) for c in counts)))
    groups = ([[n for n in decoder.LINEAR_NAMES if INIT_SOURCE.get(n, n) == g] for g in [*TIE_GROUPS, "down_proj"]]
              if st.tie_smoothing else [[n] for n in decoder.LINEAR_NAMES])
    codes = {}

    def rel(e, k):
        return np.asarray(e[k], np.float64) / np.maximum(np.asarray(e["energy"], np.float64), 1e-30)

    for group in groups:
        tot = {k: sum(np.asarray(errs[n][k], np.float64) for n in group) for k in errs[group[0]]}
        present = (counts > 0) & (tot["energy"] > 0)
        grid = np.stack([np.stack([rel(tot, "paper"), rel(tot, "text_vector"), rel(tot, "channels")], axis=1),
                         np.stack([rel(tot, "shared"), rel(tot, "shared"), rel(tot, "shared_channels")], axis=1)])
        allowed = np.ones(grid.shape, bool)
        if st.tie_smoothing:  # the channel option's vector depends on each linear's weight: not one per group
            allowed[:, :, 2] = False
        base, pick = deploy.choose(grid, present, allowed)
        code = np.asarray([deploy.CODES[base][int(p)] for p in pick], np.int32)
        code[TEXT] = deploy.CODES[base][1] if base else deploy.BRANCH
        for n in group:
            codes[n] = code
            i = decoder.LINEAR_NAMES.index(n)
            e = {k: rel(errs[n], k) for k in PATHS}
            by_code = {deploy.BRANCH: e["paper"], deploy.TEXT_VECTOR: e["text_vector"], deploy.SHARED: e["shared"],
                       deploy.CHANNELS: e["channels"], deploy.SHARED_CHANNELS: e["shared_channels"]}
            chosen = np.asarray([by_code[int(c)][m] for m, c in enumerate(code)])
            db = lambda v: np.where(present, -10.0 * np.log10(np.maximum(v, 1e-30)), np.nan)  # noqa: E731
            info["deploy"][i] = code
            info["out_sqnr"][i], info["mas_out_sqnr"][i] = db(chosen), db(e["mas"])
            info["paper_out_sqnr"][i], info["shared_out_sqnr"][i] = db(e["paper"]), db(e["shared"])
    return codes


@functools.partial(jax.jit, static_argnames=("st", "counts"))
def _score(lp, factors, stats, st, fit, alloc, shared, counts):
    """Per linear, the squared output errors ``[3]`` on the fold's tokens (``val_x``, ordered by
    modality with ``counts`` tokens each) of every path in ``PATHS`` — MAS (one weight per modality),
    the paper's form (text weight + the fit-fold branch at its allocated rank), text's vector and the
    channel option on it, the shared vector and the channel option on it — and the output energy ``[3]``."""
    act = st.activations
    bounds = np.concatenate([[0], np.cumsum(counts)])
    out = {}
    for name in decoder.LINEAR_NAMES:
        x = stats[decoder.INPUT_OF[name]]["val_x"]
        w = lp[name]["w"].astype(jnp.float32)
        s = factors[name].astype(jnp.float32)
        wq = st.weights.fake_quant(w * s[TEXT][None, :])
        wq_shared = st.weights.fake_quant(w * shared[name][None, :])
        f = fit[name]
        res = {k: [] for k in (*PATHS, "energy")}
        for m in range(len(NAMES)):
            xm = x[int(bounds[m]):int(bounds[m + 1])]
            ref = jnp.dot(xm, w.T, precision=cmc.HIGHEST)
            res["energy"].append(jnp.sum(jnp.square(ref)))
            on_shared = deploy.path_error(xm, ref, shared[name], wq_shared, act)
            res["shared"].append(on_shared)
            own = deploy.path_error(xm, ref, s[TEXT], wq, act)
            if m == TEXT:
                for k in ("mas", "paper", "text_vector", "channels"):
                    res[k].append(own)
                res["shared_channels"].append(on_shared)
                continue
            j = NON_TEXT.index(m)
            keep = (jnp.arange(f["l"].shape[-1]) < alloc[name][j]).astype(jnp.float32)
            res["text_vector"].append(own)
            res["mas"].append(deploy.path_error(xm, ref, s[m], st.weights.fake_quant(w * s[m][None, :]), act))
            res["paper"].append(deploy.path_error(xm, ref, s[m], wq, act, f["l"][j] * keep[None, :],
                                                  f["r"][j] * keep[:, None]))
            for key, base, stored, order in (("channels", s[TEXT], wq, f["order"][j]),
                                              ("shared_channels", shared[name], wq_shared, f["order_shared"][j])):
                sv, lc, rc = deploy.channel_branch(w, s[m], base, order, alloc[name][j])
                res[key].append(deploy.path_error(xm, ref, sv, stored, act, lc, rc))
        out[name] = {k: jnp.stack(v) for k, v in res.items()}
    return out
