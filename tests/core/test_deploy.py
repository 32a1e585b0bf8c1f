"""core.deploy: a deployment's output error against a float64 NumPy reference and against the stored
linear's own evaluation, and the chooser against brute-force enumeration."""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from masq_jax.core import deploy
from masq_jax.core.qlinear import make_qlinear, qlinear_reference
from masq_jax.core.quant import QuantSpec


def np_fake_quant(x, bits):
    """docs/method.md §1 symmetric per-row fake quant in float64."""
    qmax = 2 ** (bits - 1) - 1
    scale = np.clip(np.abs(x).max(axis=-1, keepdims=True) / qmax, 1e-5, 1e4)
    return np.clip(np.round(x / scale), -qmax, qmax) * scale


@pytest.mark.parametrize("bits", [8, 6])
def test_path_error_matches_float64_reference(bits):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 24)) * np.r_[np.full(3, 30.0), np.ones(21)]
    w = rng.normal(size=(16, 24))
    s = rng.uniform(0.5, 3.0, 24)
    wq = np_fake_quant(w * s, 4)
    l, r = rng.normal(size=(24, 3)) * 0.1, rng.normal(size=(3, 16)) * 0.1
    ref = x @ w.T
    xs = x / s
    want = np.sum((ref - (np_fake_quant(xs, bits) @ wq.T + xs @ l @ r)) ** 2)
    got = deploy.path_error(*(jnp.asarray(v, jnp.float32) for v in (x, ref, s, wq)), QuantSpec(bits),
                            jnp.asarray(l, jnp.float32), jnp.asarray(r, jnp.float32))
    np.testing.assert_allclose(float(got), want, rtol=2e-3)
    no_branch = np.sum((ref - np_fake_quant(xs, bits) @ wq.T) ** 2)
    got = deploy.path_error(*(jnp.asarray(v, jnp.float32) for v in (x, ref, s, wq)), QuantSpec(bits))
    np.testing.assert_allclose(float(got), no_branch, rtol=2e-3)


def test_output_errors_is_the_stored_linears_error():
    """A one-weight deployment's per-modality error equals what ``qlinear_reference`` of the stored
    ``QLinear`` (the artefact's own evaluation) gives on the same tokens."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(60, 32)), jnp.float32)
    mid = jnp.asarray(rng.integers(0, 3, 60), jnp.int32)
    w = jnp.asarray(rng.normal(size=(20, 32)), jnp.float32)
    s = jnp.asarray(rng.uniform(0.3, 3.0, (3, 32)), jnp.float32)
    l = jnp.asarray(rng.normal(size=(3, 32, 4)) * 0.05, jnp.float32).at[0].set(0.0)
    r = jnp.asarray(rng.normal(size=(3, 4, 20)) * 0.05, jnp.float32).at[0].set(0.0)
    ql = make_qlinear(w, None, wbits=4, abits=8, smooth=s, lora_l=l, lora_r=r)
    y = np.asarray(qlinear_reference(x, mid, ql), np.float64)
    ref = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T
    wq = QuantSpec(4).fake_quant(w * s[0][None, :])
    err, energy = deploy.output_errors(x, mid, w, s, jnp.broadcast_to(wq, (3, *wq.shape)), l, r, QuantSpec(8))
    for m in range(3):
        sel = np.asarray(mid) == m
        np.testing.assert_allclose(float(err[m]), np.sum((ref[sel] - y[sel]) ** 2), rtol=1e-3)
        np.testing.assert_allclose(float(energy[m]), np.sum(ref[sel] ** 2), rtol=1e-4)


def brute_force(errors, present):
    """Every (base, option per present non-text modality): the minimax-regret, then summed-regret one."""
    n_base, _, k = errors.shape
    best = errors.min(axis=(0, 2))
    out = []
    for b in range(n_base):
        for opts in itertools.product(range(k), repeat=2):
            pick = np.array([0, *opts])
            pick[~present] = 0
            e = errors[b, np.arange(3), pick]
            reg = np.log(e / best)[present]
            out.append(((reg.max(), reg.sum(), b), b, tuple(pick)))
    key, b, pick = min(out)
    return key, b, pick


def test_choose_matches_brute_force():
    rng = np.random.default_rng(2)
    for trial in range(300):
        errors = np.exp(rng.normal(size=(2, 3, 3)) * 2)
        errors[:, 0, 1:] = errors[:, 0, :1]  # text: one path per base
        present = np.array([True, *(rng.random(2) > 0.2)])
        b, pick = deploy.choose(errors, present)
        key, b_bf, _ = brute_force(errors, present)
        # the objective reached equals brute force's optimum (the pick itself may differ on exact ties)
        best = errors.min(axis=(0, 2))
        e = errors[b, np.arange(3), pick]
        reg = np.log(e / best)[present]
        assert (reg.max(), reg.sum(), b) == pytest.approx(key), trial
        assert np.all(pick[~present] == 0) and pick[0] == 0


def test_choose_constructed_cases():
    present = np.ones(3, bool)
    # the branch pays everywhere: text base, branches
    e = np.array([[[1.0, 1.0], [0.1, 1.0], [0.2, 1.0]], [[2.0, 2.0], [0.5, 0.9], [0.5, 0.9]]])
    assert deploy.choose(e, present) == (0, pytest.approx([0, 0, 0]))
    # a distant vector: the branch is useless, text's vector worse still; the shared weight wins
    e = np.array([[[1.0, 1.0], [50.0, 80.0], [0.2, 1.0]], [[1.1, 1.1], [2.0, 1.2], [0.3, 0.9]]])
    b, pick = deploy.choose(e, present)
    assert b == 1 and list(pick) == [0, 1, 0]
    # an absent modality neither votes nor moves off option 0
    e[0, 1] = [1e6, 1e6]
    b, pick = deploy.choose(e, np.array([True, False, True]))
    assert b == 0 and pick[1] == 0
    # options can be forbidden
    b, pick = deploy.choose(e, present, allowed=np.array([[[1, 1]] * 3, [[1, 0]] * 3], bool))
    assert b == 1 and pick[1] == 0


def test_channel_branch_is_exact_without_quantization():
    """Unquantized, the channel deployment reproduces ``x·Wᵀ`` for any k (the branch carries the
    smoothing mismatch exactly); only the first k channels of ``order`` leave ``s_b``, at s_m's shape."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 20))
    w = rng.normal(size=(12, 20))
    s_b, s_m = rng.uniform(0.5, 2.0, 20), rng.uniform(0.05, 0.3, 20)
    s_m[[3, 7]] = 9.0  # two channels where the modality's shape really differs
    wj, smj, sbj = (jnp.asarray(v, jnp.float32) for v in (w, s_m, s_b))
    order = deploy.channel_order(wj, smj, sbj, jnp.ones(20, jnp.float32), 6)
    assert set(np.asarray(order[:2]).tolist()) == {3, 7}
    gamma = np.exp(np.median(np.log(s_b / s_m)))
    for k in (0, 2, 5):
        sv, l, r = (np.asarray(v, np.float64) for v in deploy.channel_branch(wj, smj, sbj, order, k))
        chosen = np.asarray(order[:k])
        want = s_b.copy()
        want[chosen] = gamma * s_m[chosen]
        np.testing.assert_allclose(sv, want, rtol=1e-5)
        xs = x / sv
        y = xs @ (w * s_b).T + xs @ l @ r
        np.testing.assert_allclose(y, x @ w.T, rtol=1e-4, atol=1e-4)
        assert np.count_nonzero(np.any(l != 0, axis=0)) == k


def test_rescaled_matches_the_base_where_shapes_agree():
    rng = np.random.default_rng(4)
    s_b = rng.uniform(0.5, 2.0, 31)
    s_m = 0.125 * s_b
    s_m[:3] *= 50.0
    got = np.asarray(deploy.rescaled(jnp.asarray(s_m, jnp.float32), jnp.asarray(s_b, jnp.float32)), np.float64)
    np.testing.assert_allclose(got[3:], s_b[3:], rtol=1e-5)
    np.testing.assert_allclose(got[:3], 50.0 * s_b[:3], rtol=1e-5)
