"""core.compensation (the quantizer's one compensation) against float64 NumPy: the validated curves,
MAS's fold error and the chosen shrinkage, and the stored refit with its allocated ranks."""

import jax.numpy as jnp
import numpy as np
import pytest

from masq_jax.core import compensation
from masq_jax.core.quant import QuantSpec
from tests.core.np_refs import np_fake_quant, np_lowrank_whitened, np_xnorm_residual

DIN, DOUT = 24, 16
SPEC = QuantSpec(4)


def _problem(seed=0, tokens=(200, 120, 40)):
    """A weight, three distinct vectors and per-modality tokens split into fit and fold (every 4th)."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((DOUT, DIN)) / 4).astype(np.float32)
    s = np.exp(rng.uniform(-1, 1, (3, DIN))).astype(np.float32)
    xs = [(rng.standard_normal((n, DIN)) * np.exp(rng.uniform(-1, 1, DIN))).astype(np.float32) for n in tokens]
    gram = np.stack([x.astype(np.float64).T @ x for x in xs])
    gram_val = np.stack([x[::4].astype(np.float64).T @ x[::4] for x in xs])
    count = np.array(tokens)
    count_val = np.array([len(x[::4]) for x in xs])
    return w, s, gram, count, gram_val, count_val


def _np_oas(c, n):
    d = c.shape[0]
    mu, alpha = np.trace(c) / d, np.sum(c * c) / d**2
    den = (n + 1.0) * (alpha - mu * mu / d)
    return 1.0 if den <= 0 else min((alpha + mu * mu) / den, 1.0)


def _np_shrink(c, rho):
    return (1 - rho) * c + rho * np.trace(c) / c.shape[0] * np.eye(c.shape[0])


@pytest.mark.parametrize("svd", ["svd", "output"])
@pytest.mark.parametrize("shrinkage", ["auto", "oas", 0.3])
def test_validate_matches_float64_brute_force(shrinkage, svd):
    w, s, gram, count, gram_val, count_val = _problem()
    x = compensation.linear_inputs(*(jnp.asarray(a) for a in (w, s)), SPEC, *(jnp.asarray(a, jnp.float32) for a in
                                                                            (gram, count, gram_val, count_val)))
    cap, rank = 12, 5
    curve, mas, choice = (np.asarray(v) for v in compensation.validate(x, SPEC, shrinkage=shrinkage, rank=rank,
                                                                        storage_rank=cap, svd=svd))
    wq = np_fake_quant(w.astype(np.float64) * s[0], 4)
    for j, m in enumerate((1, 2)):
        inv = 1.0 / s[m].astype(np.float64)
        c_all, c_val = (g[m] * inv[:, None] * inv[None, :] for g in (gram, gram_val))
        c_fit = c_all - c_val
        dw = w.astype(np.float64) * s[m] - wq
        wm = w.astype(np.float64) * s[m]
        ref = np.trace(wm @ c_val @ wm.T)
        e = wm - np_fake_quant(wm, 4)
        np.testing.assert_allclose(mas[j], np.trace(e @ c_val @ e.T) / ref, rtol=1e-4)
        oas = _np_oas(c_fit, count[m] - count_val[m])
        rhos = {"auto": [oas, 0.01 / 1.01], "oas": [oas]}.get(shrinkage, [shrinkage])
        curves = []
        for rho in rhos:
            l, r = np_lowrank_whitened(dw, _np_shrink(c_fit, rho), cap)
            curves.append([np_xnorm_residual(dw, c_val, l[:, :k], r[:k]) / ref for k in range(cap + 1)])
        best = int(np.argmin([c[rank] for c in curves]))
        assert int(choice[j]) == best
        np.testing.assert_allclose(curve[j], curves[best], rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize("svd", ["svd", "output"])
def test_fit_is_the_shrunk_whitened_refit_on_all_tokens_with_allocated_columns(svd):
    w, s, gram, count, _, _ = _problem(1)
    x = compensation.linear_inputs(jnp.asarray(w), jnp.asarray(s), SPEC, jnp.asarray(gram, jnp.float32),
                                   jnp.asarray(count))
    cap, alloc = 10, np.array([3, 7])
    l, r, rho = compensation.fit(x, storage_rank=cap, choice=np.array([0, 0]), alloc=alloc, shrinkage=0.2,
                                 svd=svd, mode="whitened")
    l, r = np.asarray(l, np.float64), np.asarray(r, np.float64)
    assert l.shape == (3, DIN, cap) and r.shape == (3, cap, DOUT)
    assert not l[0].any() and not r[0].any()
    np.testing.assert_allclose(np.asarray(rho), 0.2)
    wq = np_fake_quant(w.astype(np.float64) * s[0], 4)
    for j, m in enumerate((1, 2)):
        inv = 1.0 / s[m].astype(np.float64)
        c = gram[m] * inv[:, None] * inv[None, :]
        dw = w.astype(np.float64) * s[m] - wq
        lr, rr = np_lowrank_whitened(dw, _np_shrink(c, 0.2), int(alloc[j]))
        assert not l[m][:, alloc[j]:].any() and not r[m][alloc[j]:].any()
        want = lr @ rr
        np.testing.assert_allclose(l[m] @ r[m], want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_fit_deployed_mask_skips_modalities():
    w, s, gram, count, _, _ = _problem(2)
    x = compensation.linear_inputs(jnp.asarray(w), jnp.asarray(s), SPEC, jnp.asarray(gram, jnp.float32),
                                   jnp.asarray(count))
    z = np.zeros(2, np.int32)
    full = compensation.fit(x, storage_rank=6, choice=z, alloc=z + 6, shrinkage=0.1)
    part = compensation.fit(x, storage_rank=6, choice=z, alloc=z + 6, shrinkage=0.1, deployed=np.array([False, True]))
    assert not np.asarray(part[0][1]).any()
    np.testing.assert_array_equal(np.asarray(part[0][2]), np.asarray(full[0][2]))
