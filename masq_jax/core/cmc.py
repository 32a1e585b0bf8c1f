"""Cross-Modal Compensation (docs/method.md §5): one stored text weight plus whitened low-rank factors.

For a non-text modality m the stored weight ``Wq = Q_w(W·diag(s_text))`` misses
``ΔW_m = W·diag(s_m) − Wq``. ``low_rank_compensation`` finds ``L [in, r]``, ``R [r, out]`` minimising
``‖X̃_m (ΔW_mᵀ − L R)‖_F`` (X̃_m = modality-m activations divided by s_m, ``cov = X̃ᵀX̃``), robustly:

* computed in float32 at least (float64 when ``jax_enable_x64`` is on), covariance symmetrised;
* optional damping / shrinkage ``C + δ·(tr C / in)·I`` (helps held-out data);
* eigenvalues floored at ``eig_floor · λ_max`` (default ``in · eps``) and a pseudo-inverse that
  zeroes exactly-null directions, so singular or ill-conditioned covariances (fewer tokens than
  channels, dead channels, huge dynamic range) give finite factors;
* ``fit="auto"`` (default) also computes the plain truncated SVD of ``ΔWᵀ`` and returns whichever
  of the two has the smaller true residual ``tr(Eᵀ C E)``, so the result is never worse than plain SVD.

Everything is a pure, jit-able function of one linear; stack layers on a leading axis and vmap.
"""

from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular
import numpy as np

from masq_jax.core import stats
from masq_jax.core.checks import per_modality, weight_dims
from masq_jax.core.metrics import effective_rank
from masq_jax.core.quant import SPEC_BOUND, Bound, fake_quant, validate_bits
from masq_jax.errors import CoreInputError
from masq_jax.modality import NON_TEXT, NUM_MODALITIES, TEXT

__all__ = [
    "RANK_FLOOR",
    "resolve_rank",
    "compute_dtype",
    "low_rank_compensation",
    "whitening",
    "residual_spectrum",
    "energy_curve",
    "effective_rank",
    "validation_curve",
    "validated_fit",
    "cmc_residual",
    "modality_covariance",
    "smoothed_covariance",
]

RANK_FLOOR = 32  # the reference floors every rank at 32 (never above min(in, out))
HIGHEST = jax.lax.Precision.HIGHEST
Fit = Literal["auto", "whitened", "plain"]


# ----------------------------------------------------------------------------------------------
# rank


def resolve_rank(rank_or_ratio: float | int, in_dim: int, out_dim: int, floor: int = RANK_FLOOR) -> int:
    """The reference rank rule: a value ``<= 1`` is a ratio of ``min(in, out)`` (1 = full rank), a
    value ``> 1`` an absolute integer rank; the result is floored at ``floor`` but never exceeds
    ``min(in, out)``. ``floor=0`` keeps small ranks as given."""
    m = min(int(in_dim), int(out_dim))
    v = rank_or_ratio
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v) or v < 0:
        raise CoreInputError(f"rank must be a ratio in [0, 1] or an integer in 2..{m} (min(in, out)), got {v!r}")
    if isinstance(floor, bool) or not isinstance(floor, (int, np.integer)) or floor < 0:
        raise CoreInputError(f"floor must be a non-negative integer, got {floor!r}")
    if v <= 1:
        r = int(math.floor(float(v) * m + 1e-9))
    else:
        if float(v) != int(v):
            raise CoreInputError(f"rank > 1 must be an integer rank, got {v!r}; use a ratio in [0, 1] or an integer")
        r = int(v)
        if r > m:
            raise CoreInputError(f"rank={r} is larger than min(in, out)={m}; use a rank <= {m} or a ratio in [0, 1]")
    return min(max(r, int(floor)), m)


def _check_rank(rank, m: int) -> int:
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 0:
        raise CoreInputError(f"rank must be a non-negative integer (use resolve_rank for ratios), got {rank!r}")
    if rank > m:
        raise CoreInputError(f"rank={rank} is larger than min(in, out)={m}; use a rank in 0..{m}")
    return int(rank)


# ----------------------------------------------------------------------------------------------
# whitening


def compute_dtype():
    """float64 when ``jax_enable_x64`` is on, else float32 (never lower)."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)  # float32 unless x64 is on (also inside jax.enable_x64)


def _check_cov(cov, in_dim: int) -> None:
    if cov.shape != (in_dim, in_dim):
        raise CoreInputError(f"cov must be [in, in]=[{in_dim}, {in_dim}] (XᵀX of the smoothed inputs), got {tuple(cov.shape)}")


def _check_fit(fit: str) -> None:
    if fit not in ("auto", "whitened", "plain"):
        raise CoreInputError(f"fit must be 'auto', 'whitened' or 'plain', got {fit!r}")


def whitening(cov: jax.Array, *, eig_floor: float | None = None, damping: float = 0.0):
    """``(T, T_pinv)`` with ``TᵀT ≈ C`` (docs/method.md §5: ``T = S^{1/2}Uᵀ``) after symmetrising, damping
    (``C + damping·tr(C)/in·I``) and flooring eigenvalues at ``eig_floor·λ_max`` (default ``in·eps``);
    ``T_pinv`` zeroes directions whose floored eigenvalue is still 0 (an all-zero covariance)."""
    dt = compute_dtype()
    n = cov.shape[-1]
    c = cov.astype(dt)
    c = 0.5 * (c + c.T)
    if not (isinstance(damping, (int, float)) and damping == 0):  # may be a traced scalar
        c = c + (jnp.asarray(damping, dt) * jnp.trace(c) / n) * jnp.eye(n, dtype=dt)
    s, u = jnp.linalg.eigh(c)
    sq, inv = _floored_sqrt(s, eig_floor)
    return sq[:, None] * u.T, u * inv[None, :]


def _floored_sqrt(eigenvalues: jax.Array, eig_floor: float | None = None) -> tuple[jax.Array, jax.Array]:
    """``(√λ, 1/√λ)`` of a covariance's eigenvalues floored at ``eig_floor·λ_max`` (default ``in·eps``),
    with ``1/√λ = 0`` where the floored value is still 0 (the pseudo-inverse's rule)."""
    dt = eigenvalues.dtype
    rtol = eigenvalues.shape[-1] * float(jnp.finfo(dt).eps) if eig_floor is None else float(eig_floor)
    lam = jnp.maximum(jnp.maximum(eigenvalues, rtol * jnp.max(eigenvalues)), 0.0)
    sq = jnp.sqrt(lam)
    return sq, jnp.where(sq > 0, 1.0 / jnp.where(sq > 0, sq, 1.0), 0.0)


SOLVERS = ("svd", "gram", "output")


def _check_svd(svd: str) -> None:
    if svd not in SOLVERS:
        raise CoreInputError(f"svd must be 'svd' (exact), 'gram' (eigh of the smaller Gram matrix) or 'output' (one "
                             f"eigh of the output side per fit), got {svd!r}")


def _cholesky_factors(a: jax.Array, c: jax.Array, rank: int, aat: jax.Array | None = None
                      ) -> tuple[jax.Array, jax.Array]:
    """§5's whitened fit for ``in < out`` with one ``eigh`` (``a`` = ΔWᵀ [in, out], ``c`` the covariance,
    damped by the caller): ``T`` the Cholesky factor instead of ``eigh(c)``'s square root, ``U_r`` from
    ``eigh(T AAᵀ Tᵀ)``, ``(L, R) = (T⁻¹ U_r, U_rᵀ T A)``. ``aat``: ``AAᵀ`` when the caller has it; an
    eigenvalue floor and pseudo-inverse stand in for a Cholesky that fails."""
    in_dim = a.shape[0]
    aat = jnp.dot(a, a.T, precision=HIGHEST) if aat is None else aat
    c = 0.5 * (c + c.T)
    chol = jnp.linalg.cholesky(c)

    def triangular():
        t = chol.T
        return t, solve_triangular(t, jnp.eye(in_dim, dtype=t.dtype), lower=False)

    t, t_inv = jax.lax.cond(jnp.all(jnp.isfinite(chol)), triangular, lambda: whitening(c))
    bbt = jnp.dot(t, jnp.dot(aat, t.T, precision=HIGHEST), precision=HIGHEST)  # (TA)(TA)ᵀ [in, in]
    _, u = jnp.linalg.eigh(0.5 * (bbt + bbt.T))
    u = u[:, ::-1][:, :rank]
    return jnp.dot(t_inv, u, precision=HIGHEST), jnp.dot(jnp.dot(t.T, u, precision=HIGHEST).T, a, precision=HIGHEST)


def _output_curve(v: jax.Array, g_val: jax.Array) -> jax.Array:
    """``validation_curve`` for output-side factors ``(L, R) = (A V, Vᵀ)`` from ``g_val = Aᵀ C_val A``:
    then ``Lᵀ C_val A Rᵀ = Lᵀ C_val L = Vᵀ g_val V``, so the cross term is that matrix's diagonal and no
    ``[in, out]`` product with ``C_val`` is needed per candidate."""
    q = jnp.dot(v.T, jnp.dot(g_val, v, precision=HIGHEST), precision=HIGHEST)
    m = q * jnp.dot(v.T, v, precision=HIGHEST)
    block = jnp.diagonal(jnp.cumsum(jnp.cumsum(m, axis=0), axis=1))
    total = jnp.trace(g_val)
    curve = total - 2.0 * jnp.cumsum(jnp.diagonal(q)) + block
    return jnp.concatenate([total[None], curve])


def _truncated_svd(a, rank: int, svd: str = "svd"):
    """Rank-``rank`` factors ``(U_r, Σ_r V_rᵀ)`` of ``a`` [m, n].

    ``svd="gram"`` replaces the SVD by ``eigh`` of the smaller Gram matrix (much faster on GPU, where
    dense SVD is slow): ``L R`` is then the projection of ``a`` on the top-r singular subspace, exact
    in the product even where small singular values are inaccurate (they cancel).
    """
    if svd == "svd":
        u, s, vt = jnp.linalg.svd(a, full_matrices=False)
        return u[:, :rank], s[:rank, None] * vt[:rank]
    m, n = a.shape
    if m <= n:
        _, u = jnp.linalg.eigh(jnp.dot(a, a.T, precision=HIGHEST))
        u = u[:, ::-1][:, :rank]
        return u, jnp.dot(u.T, a, precision=HIGHEST)
    ev, v = jnp.linalg.eigh(jnp.dot(a.T, a, precision=HIGHEST))
    v = v[:, ::-1][:, :rank]
    sig = jnp.sqrt(jnp.maximum(ev[::-1][:rank], 0.0))
    inv = jnp.where(sig > 0, 1.0 / jnp.where(sig > 0, sig, 1.0), 0.0)
    return jnp.dot(a, v, precision=HIGHEST) * inv[None, :], sig[:, None] * v.T


def low_rank_compensation(
    delta_w: jax.Array,
    cov: jax.Array,
    rank: int,
    *,
    eig_floor: float | None = None,
    damping: float = 0.0,
    fit: Fit = "auto",
    svd: str = "svd",
) -> tuple[jax.Array, jax.Array]:
    """``(L [in, r], R [r, out])`` minimising ``‖X (ΔWᵀ − L R)‖_F`` with ``cov = XᵀX`` (docs/method.md §5).

    ``delta_w`` [out, in]; ``cov`` [in, in]; ``rank`` a static int in 0..min(in, out). ``fit``:
    "whitened" (docs/method.md §5 with a floored/damped spectrum), "plain" (truncated SVD of ΔWᵀ), or "auto"
    (both, keep the smaller true residual). ``svd``: "svd" (exact), "gram": every decomposition an
    eigh of a min(in, out)-sized matrix — the whitened solution from the output side when
    ``out < in`` (``_output_side``; ``eig_floor`` unused there), else ``_truncated_svd``'s Gram form —
    or "output": one eigh per whitened fit at any shape (the output side whenever ``out ≤ in``,
    ``_cholesky_factors`` where ``in < out``).
    Returned in the compute dtype (float32 / float64 with x64).
    """
    _check_fit(fit)
    _check_svd(svd)
    if delta_w.ndim != 2:
        raise CoreInputError(f"delta_w must be [out, in], got shape {tuple(delta_w.shape)}")
    out_dim, in_dim = delta_w.shape
    _check_cov(cov, in_dim)
    rank = _check_rank(rank, min(in_dim, out_dim))
    dt = compute_dtype()
    a = delta_w.astype(dt).T  # [in, out]
    if rank == 0:
        return jnp.zeros((in_dim, 0), dt), jnp.zeros((0, out_dim), dt)
    plain_svd = "gram" if svd == "output" else svd
    if fit == "plain":
        return _truncated_svd(a, rank, plain_svd)
    c = cov.astype(dt)
    c = 0.5 * (c + c.T)
    ca = jnp.dot(c, a, precision=HIGHEST)  # C ΔWᵀ: the output-side Gram and the residuals reuse it
    if (svd == "gram" and out_dim < in_dim) or (svd == "output" and out_dim <= in_dim):
        l_w, r_w = _output_side(a, ca, rank, damping, in_dim, jnp.trace(c))
    elif svd == "output":
        damped = c if (isinstance(damping, (int, float)) and damping == 0) else (
            c + (jnp.asarray(damping, dt) * jnp.trace(c) / in_dim) * jnp.eye(in_dim, dtype=dt))
        l_w, r_w = _cholesky_factors(a, damped, rank)
    else:
        t, t_pinv = whitening(cov, eig_floor=eig_floor, damping=damping)
        u2, r_w = _truncated_svd(jnp.dot(t, a, precision=HIGHEST), rank, svd)
        l_w = jnp.dot(t_pinv, u2, precision=HIGHEST)
    if fit == "whitened":
        return l_w, r_w
    l_p, r_p = _truncated_svd(a, rank, plain_svd)
    res_w = _xnorm2_lowrank(a, ca, c, l_w, r_w)
    res_p = _xnorm2_lowrank(a, ca, c, l_p, r_p)
    use_w = jnp.isfinite(res_w) & (res_w <= res_p)
    return jnp.where(use_w, l_w, l_p), jnp.where(use_w, r_w, r_p)


def _output_side(a, ca, rank: int, damping, in_dim: int, trace_c):
    """Whitened CMC without whitening when ``out < in``: the best rank-r ``X̃ (LR)`` is ``B V_r V_rᵀ``
    with ``B = X̃ ΔWᵀ`` and ``V_r`` the top eigenvectors of ``BᵀB = ΔW C ΔWᵀ`` ([out, out]), so
    ``L = ΔWᵀ V_r``, ``R = V_rᵀ``. The same product as docs/method.md §5's ``T⁻¹ (TΔWᵀ)_r`` whenever ``C`` is
    invertible (always, with damping), with one eigh of the smaller side and no inverse at all."""
    if not (isinstance(damping, (int, float)) and damping == 0):
        ca = ca + (jnp.asarray(damping, ca.dtype) * trace_c / in_dim) * a
    g = jnp.dot(a.T, ca, precision=HIGHEST)
    _, v = jnp.linalg.eigh(0.5 * (g + g.T))
    v = v[:, ::-1][:, :rank]
    return jnp.dot(a, v, precision=HIGHEST), v.T


def _xnorm2_lowrank(a, ca, c, l, r):
    """``‖X (A − L R)‖_F² = tr(AᵀCA) − 2 tr(Rᵀ Lᵀ C A) + tr(Rᵀ Lᵀ C L R)`` from ``CA`` (no in×in×out
    product per candidate)."""
    lca = jnp.dot(l.T, ca, precision=HIGHEST)  # [r, out]
    lcl = jnp.dot(l.T, jnp.dot(c, l, precision=HIGHEST), precision=HIGHEST)  # [r, r]
    rrt = jnp.dot(r, r.T, precision=HIGHEST)
    return jnp.sum(a * ca) - 2.0 * jnp.sum(r * lca) + jnp.sum(lcl * rrt)


def validation_curve(delta_w: jax.Array, l: jax.Array, r: jax.Array, cov_val: jax.Array) -> jax.Array:
    """``‖X_val (ΔWᵀ − L_k R_k)‖²_F`` for k = 0..rank (``[rank + 1]``): the residual on other tokens
    (``cov_val = X_valᵀ X_val``) of every prefix of the factors, from one set of products.

    With ``P = Lᵀ C_val ΔWᵀ`` and ``M = (Lᵀ C_val L) ∘ (R Rᵀ)``: residual(k) = tr(ΔW C_val ΔWᵀ)
    − 2 Σ_{i<k} ⟨P_i, R_i⟩ + Σ_{i,j<k} M_ij (any factors; no orthogonality assumed).
    """
    dt = compute_dtype()
    a, l, r, c = (v.astype(dt) for v in (delta_w.T, l, r, cov_val))
    ca = jnp.dot(c, a, precision=HIGHEST)
    total = jnp.sum(a * ca)
    cross = jnp.sum(jnp.dot(l.T, ca, precision=HIGHEST) * r, axis=1)  # [rank]
    m = jnp.dot(l.T, jnp.dot(c, l, precision=HIGHEST), precision=HIGHEST) * jnp.dot(r, r.T, precision=HIGHEST)
    block = jnp.diagonal(jnp.cumsum(jnp.cumsum(m, axis=0), axis=1))  # Σ_{i,j<k} M_ij for k = 1..rank
    curve = total - 2.0 * jnp.cumsum(cross) + block
    return jnp.concatenate([total[None], curve])


def validated_fit(delta_w: jax.Array, cov_fit: jax.Array, cov_val: jax.Array, shrinkages, rank: int, *,
                  max_rank: int | None = None, svd: str = "svd", return_factors: bool = False):
    """``(curves [K, max_rank+1], best)``: for each candidate shrinkage ``ρ_k`` the whitened fit on
    ``shrink(cov_fit, ρ_k)`` up to ``max_rank`` (default min(in, out)), scored by ``validation_curve``
    on ``cov_val``; ``best`` the candidate with the smallest validation residual at ``rank`` (int32;
    the first on ties).

    One decomposition serves every candidate where it can: shrinking towards ``tr(C)/d·I`` keeps
    ``C``'s eigenvectors (only the eigenvalues move), and with ``svd="gram"`` and ``out < in`` (or
    ``svd="output"`` and ``out ≤ in``) the output-side Gram is ``(1−ρ)·ΔW C ΔWᵀ + ρ·tr(C)/d·ΔW ΔWᵀ``
    (one small eigh per candidate); ``svd="output"`` with ``in < out``: one Cholesky and one eigh per
    candidate (``_cholesky_factors``).
    ``return_factors``: also the chosen candidate's fit-fold factors ``(L [in, max_rank], R [max_rank,
    out])`` (what the validation curve scored), as a third element."""
    _check_svd(svd)
    out_dim, in_dim = delta_w.shape
    _check_cov(cov_fit, in_dim)
    full = _check_rank(min(in_dim, out_dim) if max_rank is None else max_rank, min(in_dim, out_dim))
    rank = _check_rank(rank, full)
    dt = compute_dtype()
    a = delta_w.astype(dt).T
    c = cov_fit.astype(dt)
    c = 0.5 * (c + c.T)
    mu = jnp.trace(c) / in_dim
    curves, factors = [], []
    if svd == "output" and out_dim > in_dim:
        aat = jnp.dot(a, a.T, precision=HIGHEST)
        for rho in shrinkages:
            damped = (1.0 - rho) * c + (rho * mu) * jnp.eye(in_dim, dtype=dt)
            factors.append(_cholesky_factors(a, damped, full, aat))
            curves.append(validation_curve(delta_w, *factors[-1], cov_val))
    elif (svd == "gram" and out_dim < in_dim) or svd == "output":  # output side, one small eigh per candidate
        g0 = jnp.dot(a.T, jnp.dot(c, a, precision=HIGHEST), precision=HIGHEST)
        g1 = jnp.dot(a.T, a, precision=HIGHEST)
        g_val = jnp.dot(a.T, jnp.dot(cov_val.astype(dt), a, precision=HIGHEST), precision=HIGHEST) if (
            svd == "output") else None
        for rho in shrinkages:
            g = (1.0 - rho) * g0 + (rho * mu) * g1
            _, v = jnp.linalg.eigh(0.5 * (g + g.T))
            v = v[:, ::-1][:, :full]
            factors.append((jnp.dot(a, v, precision=HIGHEST), v.T))
            curves.append(_output_curve(v, g_val) if svd == "output"
                          else validation_curve(delta_w, *factors[-1], cov_val))
    else:
        s, u = jnp.linalg.eigh(c)
        ua = jnp.dot(u.T, a, precision=HIGHEST)
        for rho in shrinkages:
            sq, inv = _floored_sqrt((1.0 - rho) * s + rho * mu)  # shrinking keeps C's eigenvectors
            u2, r = _truncated_svd(sq[:, None] * ua, full, svd)
            factors.append((jnp.dot(u, inv[:, None] * u2, precision=HIGHEST), r))
            curves.append(validation_curve(delta_w, *factors[-1], cov_val))
    curves = jnp.stack(curves)
    best = jnp.argmin(curves[:, rank]).astype(jnp.int32)
    if not return_factors:
        return curves, best
    return curves, best, tuple(jnp.stack(f)[best] for f in zip(*factors))


# ----------------------------------------------------------------------------------------------
# spectrum diagnostics


def residual_spectrum(delta_w: jax.Array, cov: jax.Array | None = None, *, eig_floor: float | None = None,
                      damping: float = 0.0) -> jax.Array:
    """Singular values of ``T ΔWᵀ`` (whitened, with ``cov``) or of ``ΔWᵀ`` (``cov=None``), descending."""
    if delta_w.ndim != 2:
        raise CoreInputError(f"delta_w must be [out, in], got shape {tuple(delta_w.shape)}")
    a = delta_w.astype(compute_dtype()).T
    if cov is not None:
        _check_cov(cov, a.shape[0])
        t, _ = whitening(cov, eig_floor=eig_floor, damping=damping)
        a = jnp.dot(t, a, precision=HIGHEST)
    return jnp.linalg.svd(a, compute_uv=False)


def energy_curve(singular_values: jax.Array) -> jax.Array:
    """Fraction of ``Σσ²`` captured by the top-k values, for k = 1..n (last axis)."""
    e = jnp.cumsum(jnp.square(singular_values), axis=-1)
    tot = e[..., -1:]
    return jnp.where(tot > 0, e / jnp.where(tot > 0, tot, 1.0), 1.0)


# ----------------------------------------------------------------------------------------------
# residuals and covariances (assembled per linear by core.compensation)


def cmc_residual(
    weight: jax.Array,
    s_m: jax.Array,
    s_text: jax.Array,
    wq_dequant: jax.Array | None = None,
    *,
    quantize_m: bool = False,
    wbits: int | None = None,
    w_symmetric: bool = True,
    group_size: int | None = None,
    bound: Bound = SPEC_BOUND,
) -> jax.Array:
    """``ΔW_m = W·diag(s_m) − Wq`` ([out, in], float32), ``Wq = Q_w(W·diag(s_text))``.

    ``wq_dequant``: the stored text weight dequantized; computed from ``s_text`` with ``wbits`` when
    None. ``quantize_m=True`` gives the variant ``Q_w(W·diag(s_m)) − Wq`` (needs ``wbits``).
    """
    _, in_dim = weight_dims(weight)
    for name, v in (("s_m", s_m), ("s_text", s_text)):
        if v.shape != (in_dim,):
            raise CoreInputError(f"{name} must be [in]=[{in_dim}], got {tuple(v.shape)}")
    w = weight.astype(jnp.float32)
    qkw = dict(symmetric=w_symmetric, group_size=group_size, bound=bound)
    if wq_dequant is None or quantize_m:
        if wbits is None:
            raise CoreInputError("wbits is required when wq_dequant is None or quantize_m=True")
        wbits = validate_bits(wbits, "wbits")
    if wq_dequant is None:
        wq_dequant = fake_quant(w * s_text.astype(jnp.float32)[None, :], wbits, **qkw)
    elif wq_dequant.shape != weight.shape:
        raise CoreInputError(f"wq_dequant must have weight's shape {tuple(weight.shape)}, got {tuple(wq_dequant.shape)}")
    wm = w * s_m.astype(jnp.float32)[None, :]
    if quantize_m:
        wm = fake_quant(wm, wbits, **qkw)
    return wm - wq_dequant.astype(jnp.float32)


def smoothed_covariance(gram: jax.Array, smooth: jax.Array) -> jax.Array:
    """``diag(1/s)·XᵀX·diag(1/s)``: the whitening covariance of ``x̃ = x/s`` from raw Gram matrices.

    ``gram`` [3, in, in] with ``smooth`` [3, in] (per modality), or one [in, in] with [in].
    """
    inv = 1.0 / smooth
    return gram * inv[..., :, None] * inv[..., None, :]


def modality_covariance(x: jax.Array, modality_ids: jax.Array, smooth: jax.Array,
                        valid: jax.Array | None = None) -> jax.Array:
    """``C_m = Σ_{t∈m} x̃_tᵀ x̃_t`` with ``x̃ = x / s_m`` over (valid) modality-m tokens: [3, in, in]
    float32 (sum over calls to accumulate batches; zeros for an absent modality)."""
    s3 = per_modality(smooth, x.shape[-1]).astype(jnp.float32)
    return smoothed_covariance(stats.gram(x, modality_ids, valid), s3)
