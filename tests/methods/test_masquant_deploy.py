"""MASQuant's validated deployment (``--cmc-deploy auto``): the fold's choice per linear and modality
against brute force over every one-weight deployment evaluated by the stored linear itself
(``qlinear_reference``), on constructed cases; the deployed vectors and branches; and the paper's
form (``--cmc-deploy paper``) reproducing the earlier artefact bit for bit."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from masq_jax.calib.synthetic import SyntheticSpec, synthetic_calibset
from masq_jax.calibrate.batch import prepare
from masq_jax.calibrate.layer import fp_layer_pass
from masq_jax.calibrate.runner import run_quantize
from masq_jax.core import deploy
from masq_jax.core.qlinear import make_qlinear, qlinear_reference
from masq_jax.families.toy import make_config, random_params
from masq_jax.methods import masquant as mq
from masq_jax.methods import registry
from masq_jax.models import decoder
from masq_jax.settings import QuantSettings

pytestmark = pytest.mark.filterwarnings("ignore")
CFG = make_config("tiny")
PARAMS = random_params(CFG, seed=1)
LP = jax.tree_util.tree_map(lambda a: a[0], PARAMS["layers"])

# sha256 of model.safetensors written by the code before the validated deployment existed (commit
# f352b07, default settings then) for the run in ``test_paper_flag_reproduces_the_earlier_artefact``.
GOLDEN = {(4, 8): "f46b5a169a59998d86d3892757c526a47498f70926e92f36f8c9e1131277d257",
          (8, 8): "afb3572631e857e5409c3386ae116e8e592be05da22dc6c818c108c51c1c35cf"}


def calib(samples=8, audio_len=8, seed=0):
    return synthetic_calibset(SyntheticSpec(hidden_size=CFG.hidden_size, samples=samples, text_len=8, image_h=4,
                                            image_w=4, audio_len=audio_len, vary=False, seed=seed))


@pytest.mark.parametrize("bits", [pytest.param((4, 8)), pytest.param((8, 8), marks=pytest.mark.slow)])
def test_paper_flag_reproduces_the_earlier_artefact(tmp_path, bits):
    st = QuantSettings(method="masquant", wbits=bits[0], abits=bits[1], epochs=1, samples=8, rank=8, rank_floor=0,
                       cmc_deploy="paper", store_dtype="float32")  # the earlier artefact stored float32
    run_quantize((CFG, PARAMS), calib(), str(tmp_path / "q"), st, progress=False)
    assert hashlib.sha256(Path(tmp_path / "q" / "model.safetensors").read_bytes()).hexdigest() == GOLDEN[bits]


def layer_case(st, samples=8, audio_len=8, edit=None):
    """One layer's statistics and MAS-init vectors (``edit`` rewrites them: the constructed case)."""
    method = registry.get("masquant")
    prep = prepare(CFG, PARAMS, calib(samples, audio_len))
    fp = fp_layer_pass(CFG, LP, prep.h0, prep, with_gram=method.gram_statistics(st))
    f, _ = method.init_factors(CFG, LP, fp.stats, fp.sample, st, jnp.asarray((1.0, 0.5, 1.0)))
    f = mq.align_signs(f, st)
    return method, fp.stats, (edit(f) if edit else f)


def brute_force_codes(st, stats, factors, val, alloc, shared):
    """Per linear, every (base, option per modality) deployment built as a ``QLinear`` and evaluated by
    ``qlinear_reference`` on the fold's tokens; the minimax-regret one (then summed regret, then base 0).
    Options: 0 own vector + fit-fold branch (base 0 only), 1 the base's vector, 2 the channel branch."""
    out = {}
    for n in decoder.LINEAR_NAMES:
        g = stats[decoder.INPUT_OF[n]]
        x, mid = g["val_x"], np.asarray(g["val_mid"])
        w = LP[n]["w"]
        ref = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T
        s = np.asarray(factors[n])
        present = np.array([np.any(mid == m) for m in range(3)])
        cap = val[n]["l"].shape[-1]
        rows = {}
        for base, opts in itertools.product((0, 1), itertools.product((0, 1, 2), repeat=2)):
            s_b = s[0] if base == 0 else np.asarray(shared[n])
            smooth = np.stack([s_b] * 3)
            l = np.zeros((3, w.shape[1], cap), np.float32)
            r = np.zeros((3, cap, w.shape[0]), np.float32)
            for j, m in enumerate((1, 2)):
                k = int(alloc[n][j])
                if opts[j] == 0 and base == 0:  # (base 1 has no whitened branch: option 0 is its vector)
                    smooth[m] = s[m]
                    l[m][:, :k], r[m][:k] = val[n]["l"][j][:, :k], val[n]["r"][j][:k]
                elif opts[j] == 2:
                    order = val[n]["order" if base == 0 else "order_shared"][j]
                    sv, lc, rc = deploy.channel_branch(w, jnp.asarray(s[m]), jnp.asarray(s_b), jnp.asarray(order), k)
                    smooth[m], l[m], r[m] = np.asarray(sv), np.asarray(lc), np.asarray(rc)
            ql = make_qlinear(w, None, smooth=jnp.asarray(smooth), lora_l=jnp.asarray(l), lora_r=jnp.asarray(r),
                              **st.linear_kwargs())
            y = np.asarray(qlinear_reference(x, jnp.asarray(mid), ql), np.float64)
            rows[base, opts] = np.array([np.sum((ref[mid == m] - y[mid == m]) ** 2) / max(np.sum(ref[mid == m] ** 2),
                                                                                           1e-30) for m in range(3)])
        best = np.min(np.stack(list(rows.values())), axis=0)
        scored = []
        for (base, opts), e in rows.items():
            if any(not present[m] and opts[j] != 0 for j, m in enumerate((1, 2))):
                continue
            reg = np.log(np.maximum(e, 1e-30) / np.maximum(best, 1e-30))[present]
            scored.append(((round(reg.max(), 3), round(reg.sum(), 3), base), base, opts))
        _, base, opts = min(scored)
        out[n] = [deploy.CODES[base][1] if base else deploy.BRANCH, *(deploy.CODES[base][o] for o in opts)]
    return out


def scale_vision(factor):
    return lambda f: {n: v.at[1].multiply(factor) for n, v in f.items()}


def clamp_channels(f):
    return {n: v.at[1, :4].set(1e-2) for n, v in f.items()}


CASES = {"few tokens": dict(samples=8, audio_len=2), "distant vectors": dict(edit=scale_vision(40.0)),
         "clamped channel": dict(edit=clamp_channels)}


@pytest.mark.parametrize("case", list(CASES))
def test_fold_choice_matches_brute_force(case):
    st = QuantSettings(method="masquant", wbits=8, abits=8, epochs=0, samples=8, rank=8, rank_floor=0)
    method, stats, f = layer_case(st, **CASES[case])
    ranks = method.ranks(CFG, st)
    deployed, lora, info = method.compensate(LP, f, stats, st, ranks)
    # the fold's own fit-fold factors and ranks, as compensate saw them
    shared = mq.smoothquant_vectors(LP, stats, st)
    budget = {n: min(r, ranks[n]) for n, r in mq._resolved(st, mq._budget_rank(st),
                                                           decoder.linear_shapes(CFG)).items()}
    val = jax.device_get(mq._validate(LP, f, stats, st, tuple(sorted(ranks.items())), tuple(sorted(budget.items())),
                                      shared))
    alloc = {n: info["rank"][i] for i, n in enumerate(decoder.LINEAR_NAMES)}
    want = brute_force_codes(st, stats, f, val, alloc, shared)
    got = {n: [int(c) for c in info["deploy"][i]] for i, n in enumerate(decoder.LINEAR_NAMES)}
    assert got == want
    for i, n in enumerate(decoder.LINEAR_NAMES):
        code, s, l = got[n], np.asarray(deployed[n]), np.asarray(lora[n][0])
        text = np.asarray(shared[n]) if code[0] == deploy.SHARED else np.asarray(f[n][0])
        np.testing.assert_array_equal(s[0], text)
        assert not np.any(l[0])  # text never has a branch
        for m in (1, 2):
            if code[m] in (deploy.SHARED, deploy.TEXT_VECTOR):
                np.testing.assert_array_equal(s[m], text)
                assert not np.any(l[m])
            elif code[m] == deploy.BRANCH:
                np.testing.assert_array_equal(s[m], np.asarray(f[n][m]))
            else:  # channels: the base's vector but on the branch's (selected) channels
                on = np.any(l[m] != 0, axis=1)
                np.testing.assert_array_equal(s[m][~on], text[~on])
        rep = method.compensation_report(info)[n]
        assert rep["deployment"]["text"] == deploy.LABELS[code[0]]


def test_tied_vectors_choose_together():
    st = QuantSettings(method="masquant", wbits=8, abits=8, epochs=0, samples=8, rank=8, rank_floor=0,
                       tie_smoothing=True)
    method, stats, f = layer_case(st, edit=scale_vision(40.0))
    deployed, _, info = method.compensate(LP, f, stats, st, method.ranks(CFG, st))
    for group in (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj")):
        for n in group[1:]:
            np.testing.assert_array_equal(np.asarray(deployed[n]), np.asarray(deployed[group[0]]))
