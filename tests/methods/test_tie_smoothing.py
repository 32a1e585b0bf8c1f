"""``--tie-smoothing``: one vector per input group and modality (q/k/v, o, gate/up), learned (MAS,
MASQuant) or searched (AWQ, MBQ) as one unit, so the quantized model can run merged GEMMs."""

from __future__ import annotations

import numpy as np
import pytest

import masq_jax
from masq_jax.calibrate.runner import run_quantize
from masq_jax.methods.base import TIE_GROUPS
from masq_jax.settings import QuantSettings
from masq_jax.errors import SettingsError
from tests.methods.test_registry import CFG, PARAMS, calib

pytestmark = pytest.mark.filterwarnings("ignore")
BASE = dict(wbits=4, abits=8, samples=4, rank=8, rank_floor=0, epochs=1)


def _smooth(path, name):
    q = masq_jax.load(path, merge=False)  # the seven linears (a tied artefact loads merged)
    s = np.asarray(q.params["layers"][name].smooth)
    return s if not q.per_modality else s[:, 0]  # [L, 3, in]


@pytest.mark.parametrize("method", ["masquant", "awq"])
def test_tied_vectors_are_one_per_input_group_and_differ_from_untied(tmp_path, method):
    out = {}
    for tie in (False, True):
        out[tie] = tmp_path / f"{method}-{tie}"
        rep = run_quantize((CFG, PARAMS), calib(), str(out[tie]), QuantSettings(method=method, tie_smoothing=tie,
                           **BASE), eval_set=calib(2, seed=3), progress=False)
        assert rep["settings"]["tie_smoothing"] is tie
        assert np.isfinite(rep["sqnr"]["mean"]["vision"])
    for leader, members in TIE_GROUPS.items():
        tied = [_smooth(out[True], n) for n in members]
        for s in tied[1:]:
            np.testing.assert_array_equal(s, tied[0])
    untied = [_smooth(out[False], n) for n in TIE_GROUPS["q_proj"]]
    assert not all(np.array_equal(untied[0], s) for s in untied[1:])  # untied: the group's vectors differ
    assert not np.array_equal(_smooth(out[True], "k_proj"), _smooth(out[False], "k_proj"))


def test_tied_mas_training_moves_the_shared_vector_and_lowers_the_loss(tmp_path):
    """The shared vector is trained on the sum of its linears' gradients: it leaves its init (MAS
    with 0 epochs) and the block loss falls over epochs as for untied training."""
    reps = {}
    for label, epochs in (("init", 0), ("trained", 3)):
        reps[label] = run_quantize((CFG, PARAMS), calib(), str(tmp_path / label),
                                   QuantSettings(method="mas", tie_smoothing=True, **{**BASE, "epochs": epochs}),
                                   eval_set=calib(2, seed=3), progress=False)
    s0, s1 = _smooth(tmp_path / "init", "v_proj"), _smooth(tmp_path / "trained", "v_proj")
    assert not np.allclose(s0, s1)
    np.testing.assert_array_equal(s1, _smooth(tmp_path / "trained", "q_proj"))
    losses = reps["trained"]["layers"][0]["loss_per_epoch"]
    assert losses[-1] < losses[0]


def test_tie_smoothing_must_be_a_bool():
    with pytest.raises(SettingsError, match="tie_smoothing must be True or False"):
        QuantSettings(tie_smoothing="yes")
