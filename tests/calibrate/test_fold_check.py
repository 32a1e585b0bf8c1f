"""The fold check (masq_jax.calibrate.fold_check): the shipped model and this run's MAS model on the
validation fold, against the held-out evaluation of written artefacts, and its warning lines."""

from __future__ import annotations

import numpy as np
import pytest

from masq_jax import artifact
from masq_jax.calib.synthetic import SyntheticSpec, synthetic_calibset
from masq_jax.calibrate.batch import prepare
from masq_jax.calibrate.fold_check import fold_set, fold_warnings
from masq_jax.calibrate.runner import run_quantize
from masq_jax.eval.sqnr import layer_sqnr
from masq_jax.families.toy import make_config, random_params
from masq_jax.settings import QuantSettings

pytestmark = pytest.mark.filterwarnings("ignore")
CFG = make_config("tiny")
PARAMS = random_params(CFG, seed=1)
COLS = ("all", "text", "vision", "audio")


def calib(samples=8):
    return synthetic_calibset(SyntheticSpec(hidden_size=CFG.hidden_size, samples=samples, text_len=8, image_h=4,
                                            image_w=4, audio_len=8, vary=True, seed=3))


def settings(method, **kw):
    return QuantSettings(method=method, wbits=4, abits=8, epochs=1, samples=8, rank=8, rank_floor=0,
                         store_dtype="float32", **kw)


def test_fold_is_every_fourth_sample():
    cal = calib(10)
    fold = fold_set(cal)
    assert len(fold) == 2 and fold[0] is cal[3] and fold[1] is cal[7]
    assert fold_set(calib(3)) is None


def test_fold_check_equals_the_artefacts_evaluated_on_the_fold(tmp_path):
    """``--cmc-deploy paper`` keeps the learned vectors, so this run's MAS model is the ``mas``
    method's: the check's two columns equal the written masquant and mas artefacts read back and
    evaluated (``eval.sqnr``) on the fold's samples."""
    cal = calib()
    rep = run_quantize((CFG, PARAMS), cal, str(tmp_path / "mq"), settings("masquant", cmc_deploy="paper"),
                       progress=False)
    run_quantize((CFG, PARAMS), cal, str(tmp_path / "mas"), settings("mas"), progress=False)
    fold = prepare(CFG, PARAMS, fold_set(cal))
    check = rep["validation_fold"]
    assert check["samples"] == 2 and len(check["per_layer"]) == CFG.num_layers
    for col, name in (("shipped", "mq"), ("mas", "mas")):
        table = layer_sqnr(CFG, PARAMS, artifact.read_artifact(str(tmp_path / name)), fold)[0]
        for k in COLS:
            np.testing.assert_allclose(check[col][k], table["mean"][k], atol=1e-3)
    assert check["shipped"]["vision"] != check["mas"]["vision"]


def test_fold_check_runs_for_the_default_and_survives_resume(tmp_path):
    class Stop(Exception):
        pass

    def stop(i, row):
        if i >= 0:
            raise Stop

    st = settings("masquant")
    rep = run_quantize((CFG, PARAMS), calib(), str(tmp_path / "a"), st, progress=False)
    with pytest.raises(Stop):
        run_quantize((CFG, PARAMS), calib(), str(tmp_path / "b"), st, progress=False, on_layer=stop)
    again = run_quantize((CFG, PARAMS), calib(), str(tmp_path / "b"), st, progress=False, resume=True)
    assert again["validation_fold"] == rep["validation_fold"]
    assert "fold_check" in rep["stages"]
    no_fold = run_quantize((CFG, PARAMS), calib(), str(tmp_path / "c"),
                           settings("masquant", cmc_deploy="paper", cov_shrinkage=0.01, rank_budget="off"),
                           progress=False)
    assert "validation_fold" not in no_fold  # every sample was fitted on: nothing held out to check


def check_of(shipped, mas):
    """A fold check whose per-layer SQNRs are ``shipped`` / ``mas`` ({modality: [per layer]})."""
    n = len(shipped["vision"])
    row = lambda d, i: {k: (d[k][i] if k in d else 20.0) for k in COLS}  # noqa: E731
    per = [{"shipped": row(shipped, i), "mas": row(mas, i)} for i in range(n)]
    mean = lambda d: {k: float(np.mean(d[k])) if k in d else 20.0 for k in COLS}  # noqa: E731
    return {"samples": 4, "shipped": mean(shipped), "mas": mean(mas), "per_layer": per}


def test_warning_names_the_modality_and_where_the_gap_grows():
    mas = {"text": [30.0] * 6, "vision": [30.0] * 6, "audio": [30.0] * 6}
    # vision: the gap to MAS grows by 0.1, 0.8, 0.0, 0.9, 0.1, 0.3 (mean gap > 0.3); text: within 0.3
    vision = list(30.0 - np.cumsum([0.1, 0.8, 0.0, 0.9, 0.1, 0.3]))
    check = check_of({"text": [29.8] * 6, "vision": vision, "audio": [31.0] * 6}, mas)
    lines = fold_warnings("masquant", check)
    assert len(lines) == 1
    gap = 30.0 - np.mean(vision)
    assert lines[0].startswith(f"masquant: model vision: the shipped model is {gap:.2f} dB below MAS")
    assert "layers 1, 3, 5 " in lines[0]
    assert fold_warnings("masquant", check_of(mas, mas)) == []
