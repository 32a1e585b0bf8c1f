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
  the stored weight becomes ``Q_w(W·diag(s_shared))`` and text reads it too.

``output_errors`` measures a deployment's output error per modality on tokens (fake quant exactly
as ``core.qlinear.qlinear_reference``); ``choose`` picks, per linear, the deployment that minimises the
largest loss of any modality against the best option that modality has (minimax regret in dB, ties
broken by the sum): text never takes a branch, and a linear falls back to ``SHARED`` as a whole.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax.core.quant import QuantSpec
from masq_jax.modality import NON_TEXT, NUM_MODALITIES, TEXT

BRANCH, TEXT_VECTOR, SHARED = 0, 1, 2
LABELS = ("branch", "text-vector", "shared")
HIGHEST = jax.lax.Precision.HIGHEST


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


def choose(err_base: np.ndarray, err_shared: np.ndarray, present: np.ndarray,
           allowed: np.ndarray | None = None) -> tuple[int, np.ndarray]:
    """``(base, per-modality deployment [3])`` for one linear.

    ``err_base`` [3, 2]: relative error per modality of the text-base options ``(BRANCH, TEXT_VECTOR)``
    (text's two entries are its one path, repeated); ``err_shared`` [3]: the ``SHARED`` deployment's;
    ``present`` [3] bool: modalities with held-out tokens (the others do not vote and keep ``BRANCH``);
    ``allowed`` [3, 2] bool: text-base options that may be chosen (default all).

    Text base: each non-text modality takes its better allowed option. Then the base (text's vectors
    or ``SHARED``) whose largest regret ``log(E_m / min_options E_m)`` over present modalities is
    smaller wins, ties broken by the summed regret, then by the text base. Returns base 0 (text
    base) or ``SHARED``, and the deployment of each modality (text: ``BRANCH`` = its own path, or
    ``SHARED``).
    """
    err_base = np.asarray(err_base, np.float64)
    err_shared = np.asarray(err_shared, np.float64)
    present = np.asarray(present, bool)
    allowed = np.ones((NUM_MODALITIES, 2), bool) if allowed is None else np.asarray(allowed, bool)
    masked = np.where(allowed, err_base, np.inf)
    pick = np.argmin(masked, axis=1)
    pick[TEXT] = BRANCH
    for m in NON_TEXT:
        if not present[m]:
            pick[m] = BRANCH
    base_err = masked[np.arange(NUM_MODALITIES), pick]
    if not present.any():
        return 0, pick.astype(np.int32)
    tiny = 1e-30
    best = np.minimum(np.min(masked, axis=1), err_shared)
    regret = lambda e: np.log(np.maximum(e, tiny) / np.maximum(best, tiny))[present]  # noqa: E731
    r_base, r_shared = regret(base_err), regret(err_shared)
    if (r_shared.max(), r_shared.sum()) < (r_base.max(), r_base.sum()):
        return SHARED, np.full(NUM_MODALITIES, SHARED, np.int32)
    return 0, pick.astype(np.int32)
