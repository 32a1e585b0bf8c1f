"""Which one-weight deployment of a linear to ship, decided on held-out tokens (docs/method.md §5,
"Validated deployment").

The paper stores ``Wq = Q_w(W·diag(s_text))`` and gives every other modality ``m`` its own vector and
a rank-r branch for ``W·diag(s_m) − Wq``. That branch's truncation error does not shrink with the
bits, so where ``s_m`` is far from ``s_text`` or a modality has few calibration tokens it can cost
more than it removes (measured: held-out audio 26–30 dB below MAS at W8A8 on a 512-wide set). Other
deployments keep one stored weight and a branch-free text path:

* ``BRANCH`` (the paper): ``Q_a(x/s_m)·Wqᵀ + (x/s_m)·L_m·R_m`` with ``Wq = Q_w(W·diag(s_text))``;
* ``TEXT_VECTOR``: the modality reads the text path, ``Q_a(x/s_text)·Wqᵀ`` (no branch);
* ``SHARED``: one all-token vector for every modality of the linear (SmoothQuant's), no branch —
  the stored weight becomes ``Q_w(W·diag(s_shared))`` and text reads it too;
* ``CHANNELS`` / ``SHARED_CHANNELS``: modality ``m`` reads the stored weight (text's / the shared one,
  smoothed by ``s_b``) through ``s_b`` except on ``k`` channels where it keeps its own ``s_m``; the
  smoothing mismatch ``W·diag(s' − s_b)`` then lives in ``k`` columns and a rank-``k`` branch carries
  it exactly (``channel_branch``): no covariance, nothing fitted, nothing to overfit with few tokens.

``path_error`` / ``output_errors`` measure a deployment's output error per modality on tokens (fake
quant exactly as ``core.qlinear.qlinear_reference``); ``choose`` picks, per linear, the stored weight
(text's or the shared one) and per non-text modality how it reads it, minimising the largest loss
of any modality against the best option that modality has (minimax regret in dB, ties broken by the
sum). Text never takes a branch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax.core.quant import QuantSpec
from masq_jax.modality import NUM_MODALITIES, TEXT

BRANCH, TEXT_VECTOR, SHARED, CHANNELS, SHARED_CHANNELS = 0, 1, 2, 3, 4
LABELS = ("branch", "text-vector", "shared", "channels", "shared+channels")
# (base, option) -> deployment code. Base 0 stores Q_w(W·diag(s_text)): a modality reads it through its
# own vector and a whitened branch, through text's vector, or through the channel option; base 1
# stores Q_w(W·diag(s_shared)): read through the shared vector (listed twice: no whitened branch is
# fitted against it) or the channel option.
CODES = ((BRANCH, TEXT_VECTOR, CHANNELS), (SHARED, SHARED, SHARED_CHANNELS))
HIGHEST = jax.lax.Precision.HIGHEST
GUARD_DB = 0.3  # the guards name what stays further than this below MAS on the validation fold (the goal's allowance)


def path_error(x: jax.Array, ref: jax.Array, smooth: jax.Array, wq: jax.Array, activations: QuantSpec,
               lora_l: jax.Array | None = None, lora_r: jax.Array | None = None) -> jax.Array:
    """``Σ_t ‖ref_t − ŷ_t‖²`` for tokens ``x`` [T, in] of one modality read through one path:
    ``ŷ = Q_a(x/s)·wqᵀ + (x/s)·L·R`` (``smooth`` [in], ``wq`` [out, in] the dequantized stored weight,
    the branch optional), ``ref`` [T, out] the full-precision outputs ``x·Wᵀ``. Fake quant exactly as
    ``core.qlinear.qlinear_reference``; float32, HIGHEST precision."""
    xs = x.astype(jnp.float32) / smooth[None, :]
    y = jnp.dot(activations.fake_quant(xs), wq.T, precision=HIGHEST)
    if lora_l is not None and lora_l.shape[-1]:
        y = y + jnp.dot(jnp.dot(xs, lora_l, precision=HIGHEST), lora_r, precision=HIGHEST)
    return jnp.sum(jnp.square(ref - y))


def rescaled(s_m: jax.Array, s_b: jax.Array) -> jax.Array:
    """``γ·s_m`` with ``γ = exp(median_j log|s_b_j / s_m_j|)``: ``s_m``'s shape at ``s_b``'s scale.

    Per-token dynamic activation quantization is scale-invariant (``Q_a(x/(γs)) = Q_a(x/s)/γ``), so a
    modality's vector matters only up to a global factor; matching ``s_b``'s scale first leaves
    ``γ·s_m`` equal to ``s_b`` on most channels and far from it only where the modality's shape really
    differs (its massive channels), which is where ``channel_branch`` keeps it."""
    gamma = jnp.exp(jnp.median(jnp.log(jnp.abs(s_b) / jnp.abs(s_m))))
    return gamma * s_m


def channel_order(w: jax.Array, s_m: jax.Array, s_b: jax.Array, cov_diag: jax.Array, r: int) -> jax.Array:
    """The ``r`` channels (int32, best first) where modality ``m`` keeps its own (``rescaled``) vector
    ``s' = γ·s_m`` instead of the stored weight's ``s_b``: by the output energy the mismatch moves,
    ``E[(x_j/s'_j)²]·(s'_j − s_b_j)²·‖W[:, j]‖²`` (``cov_diag``: the diagonal of ``m``'s covariance of
    ``x/s_m``), the part of the paper's residual ``channel_branch`` carries exactly."""
    s_new = rescaled(s_m, s_b)
    gamma2 = jnp.square(s_new[0] / s_m[0])
    energy = cov_diag / gamma2 * jnp.square(s_new - s_b) * jnp.sum(jnp.square(w.astype(jnp.float32)), axis=0)
    return jnp.argsort(-energy)[:r].astype(jnp.int32)


def channel_branch(w: jax.Array, s_m: jax.Array, s_b: jax.Array, order: jax.Array, k) -> tuple[
        jax.Array, jax.Array, jax.Array]:
    """``(s' [in], L [in, r], R [r, out])``: ``rescaled(s_m, s_b)`` on the first ``k`` channels of
    ``order`` [r] (a traced ``k <= r`` allowed), ``s_b`` elsewhere, and the branch that makes the
    mismatch exact: ``(x/s')·L·R = (x/s')·(W·diag(s') − W·diag(s_b))ᵀ`` with ``L`` selecting those
    channels and ``R = diag(s' − s_b)_K · W[:, K]ᵀ``. Columns beyond ``k`` are zero. The modality's
    large channels then reach the output through the unquantized branch, and the stored weight's
    quantization error is read at its own scale everywhere else."""
    in_dim = w.shape[1]
    target = rescaled(s_m, s_b)
    keep = (jnp.arange(order.shape[0]) < k).astype(jnp.float32)
    l = jax.nn.one_hot(order, in_dim, dtype=jnp.float32).T * keep[None, :]
    chosen = jnp.sum(l, axis=1) > 0
    s_new = jnp.where(chosen, target, s_b)
    r = ((target - s_b)[order] * keep)[:, None] * w.astype(jnp.float32)[:, order].T
    return s_new, l, r


def output_errors(x: jax.Array, modality_ids: jax.Array, w: jax.Array, smooth: jax.Array, wq: jax.Array,
                  lora_l: jax.Array, lora_r: jax.Array, activations: QuantSpec) -> tuple[jax.Array, jax.Array]:
    """``(error [3], energy [3])``: per modality, ``Σ_t ‖x_t Wᵀ − ŷ_t‖²`` and ``Σ_t ‖x_t Wᵀ‖²`` over the
    tokens ``x`` [T, in] of that modality (``modality_ids`` [T]; other ids are ignored), each read
    through its own path (``path_error``): ``smooth`` [3, in], ``wq`` [3, out, in] (one weight repeated
    for the one-weight deployments, three for MAS's upper bound), ``lora_l`` [3, in, r], ``lora_r``
    [3, r, out] (zeros where there is no branch). Masked over all tokens: the convenient form for a
    handful of tokens (``masquant`` slices each modality's tokens instead)."""
    x = x.astype(jnp.float32)
    ref = jnp.dot(x, w.astype(jnp.float32).T, precision=HIGHEST)
    err, energy = [], []
    for m in range(NUM_MODALITIES):
        mask = (modality_ids == m).astype(jnp.float32)[:, None]
        err.append(path_error(x * mask, ref * mask, smooth[m], wq[m], activations, lora_l[m], lora_r[m]))
        energy.append(jnp.sum(mask * jnp.square(ref)))
    return jnp.stack(err), jnp.stack(energy)


def choose(errors: np.ndarray, present: np.ndarray, allowed: np.ndarray | None = None) -> tuple[int, np.ndarray]:
    """``(base, option per modality [3])`` for one linear.

    ``errors`` [B, 3, K]: relative output error of every (base, modality, option) — a base is a stored
    weight with text's path (text's K entries all repeat that one path), an option how a non-text
    modality reads it (with or without a branch); ``present`` [3] bool: modalities with held-out
    tokens (the others do not vote and take option 0); ``allowed`` [B, 3, K] bool (default all).

    Within a base each non-text modality takes its best allowed option. Then the base whose largest
    regret ``log(E_m / min over every base and option of E_m)`` over present modalities is smallest
    wins; ties go to the smaller summed regret, then to the lower base index.
    """
    errors = np.asarray(errors, np.float64)
    present = np.asarray(present, bool)
    n_base = errors.shape[0]
    allowed = np.ones(errors.shape, bool) if allowed is None else np.asarray(allowed, bool)
    masked = np.where(allowed, errors, np.inf)
    picks = np.argmin(masked, axis=2)  # [B, 3]
    picks[:, TEXT] = 0
    picks[:, ~present] = 0
    chosen = np.take_along_axis(masked, picks[:, :, None], axis=2)[:, :, 0]  # [B, 3]
    if not present.any():
        return 0, picks[0].astype(np.int32)
    tiny = 1e-30
    best = masked.min(axis=(0, 2))  # [3]: the best any deployment gives each modality
    regret = np.log(np.maximum(chosen, tiny) / np.maximum(best, tiny)[None, :])[:, present]  # [B, present]
    keys = [(regret[b].max(), regret[b].sum(), b) for b in range(n_base)]
    b = min(keys)[2]
    return int(b), picks[b].astype(np.int32)
