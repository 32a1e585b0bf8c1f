"""Methods are units behind one protocol: the registry, the per-modality SmoothQuant added through
``methods/`` alone, and no module outside the registry testing a method's name."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import masq_jax
from masq_jax.calib.synthetic import SyntheticSpec, synthetic_calibset
from masq_jax.calibrate.runner import run_quantize
from masq_jax.families.toy import make_config, random_params
from masq_jax.errors import SettingsError
from masq_jax.methods import Method, get, names
from masq_jax.settings import QuantSettings

pytestmark = pytest.mark.filterwarnings("ignore")
CFG = make_config("tiny")
PARAMS = random_params(CFG, seed=1)
PACKAGE = Path(masq_jax.__file__).parent


def calib(samples=4, seed=0):
    return synthetic_calibset(SyntheticSpec(hidden_size=CFG.hidden_size, samples=samples, text_len=8, image_h=4,
                                            image_w=4, audio_len=8, vary=False, seed=seed))


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_registry_lists_every_method_once():
    assert names() == ("rtn", "smoothquant", "awq", "mbq", "mas", "masquant", "smoothquant_pm")
    for name in names():
        m = get(name)
        assert isinstance(m, Method) and m.name == name and m.summary
    with pytest.raises(SettingsError, match="gptq.*not one of.*smoothquant_pm"):
        get("gptq")
    with pytest.raises(SettingsError, match="not one of"):
        QuantSettings(method="gptq")


def test_nothing_outside_the_registry_tests_a_method_name():
    pattern = re.compile(r"method\s*(==|!=|\bin\b|\bnot in\b)")
    hits = [f"{p.relative_to(PACKAGE)}:{i}" for p in PACKAGE.rglob("*.py") if "methods" not in p.parts
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_per_modality_smoothquant_is_mas_without_training(tmp_path):
    """The method added through methods/ alone: its artefact is bit for bit MAS's with 0 epochs (the
    same per-modality SmoothQuant init, one weight per modality), and it differs from SmoothQuant."""
    base = dict(wbits=4, abits=8, samples=4, rank=8, rank_floor=0)
    reps = {}
    for label, kw in (("pm", dict(method="smoothquant_pm")), ("mas0", dict(method="mas", epochs=0)),
                      ("sq", dict(method="smoothquant"))):
        reps[label] = run_quantize((CFG, PARAMS), calib(), str(tmp_path / label), QuantSettings(**base, **kw),
                                   eval_set=calib(2, seed=3), progress=False)
    assert sha(tmp_path / "pm" / "model.safetensors") == sha(tmp_path / "mas0" / "model.safetensors")
    assert sha(tmp_path / "pm" / "model.safetensors") != sha(tmp_path / "sq" / "model.safetensors")
    q = masq_jax.load(tmp_path / "pm")
    assert q.quantization_config["per_modality_weights"] is True and q.per_modality
    s = np.asarray(q.params["layers"]["q_proj"].smooth)  # [L, 3 weights, 3, in]
    assert not np.allclose(s[:, 0, 0], s[:, 1, 0])  # text's and vision's vectors differ
    assert all("loss_per_epoch" not in layer for layer in reps["pm"]["layers"])
    assert np.isfinite(reps["pm"]["sqnr"]["mean"]["vision"])
    out = q(input_ids=jnp.arange(5)[None], modality_ids=jnp.array([[0, 1, 1, 2, 0]]))
    assert bool(jnp.isfinite(out).all())


def text_only(calibset):
    """The same samples with every token marked text (a text-only model's calibration)."""
    return type(calibset)([dataclasses.replace(s, modality_ids=np.zeros_like(s.modality_ids)) for s in calibset])


def test_per_modality_smoothquant_is_smoothquant_on_text_only_data(tmp_path):
    """With text alone, text's own statistics are the all-token statistics: smoothquant_pm's text
    vector is SmoothQuant's (to float rounding), and so is its held-out SQNR (why the Qwen2.5-0.5B
    table measures smoothquant_pm at one preset only)."""
    base = dict(wbits=4, abits=8, samples=4, rank=8, rank_floor=0)
    reps, models = {}, {}
    for label in ("smoothquant_pm", "smoothquant"):
        reps[label] = run_quantize((CFG, PARAMS), text_only(calib()), str(tmp_path / label),
                                   QuantSettings(**base, method=label), eval_set=text_only(calib(2, seed=3)),
                                   progress=False)
        models[label] = masq_jax.load(tmp_path / label)
    for name in ("q_proj", "o_proj", "up_proj", "down_proj"):  # [L, weights, 3, in] against [L, 3, in]
        pm = np.asarray(models["smoothquant_pm"].params["layers"][name].smooth)[:, 0, 0]
        np.testing.assert_allclose(pm, np.asarray(models["smoothquant"].params["layers"][name].smooth)[:, 0],
                                   rtol=1e-5)
    pm_db, sq_db = (reps[m]["sqnr"]["mean"]["text"] for m in ("smoothquant_pm", "smoothquant"))
    assert abs(pm_db - sq_db) < 0.05, (pm_db, sq_db)
