"""``masq_jax.quantize_many``: every preset × method from one load of the model and of the calibration
data, each artefact byte for byte what ``quantize`` writes alone."""

import hashlib
from pathlib import Path

import pytest

import masq_jax
from masq_jax import api

pytestmark = pytest.mark.filterwarnings("ignore")
KW = dict(calib="synthetic", samples=4, eval_samples=2, epochs=1, progress=False)


def _sha(path: Path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_loads_once_and_matches_separate_runs(tmp_path, monkeypatch):
    loads = []
    real = api.load_checkpoint
    monkeypatch.setattr(api, "load_checkpoint", lambda *a, **k: loads.append(a) or real(*a, **k))
    seen = []
    reps = masq_jax.quantize_many("toy:tiny", str(tmp_path / "many"), methods=["rtn", "smoothquant"],
                                  presets=["w4a8", "w8a8"], on_report=lambda p, m, out, rep: seen.append((p, m, out)),
                                  **KW)
    assert len(loads) == 1
    assert set(reps) == {(p, m) for p in ("w4a8", "w8a8") for m in ("rtn", "smoothquant")}
    assert [(p, m) for p, m, _ in seen] == [("w4a8", "rtn"), ("w4a8", "smoothquant"), ("w8a8", "rtn"),
                                            ("w8a8", "smoothquant")]
    for p, m, out in seen:
        assert Path(out) == tmp_path / "many" / p / m
        assert reps[p, m]["settings"]["wbits"] == (4 if p == "w4a8" else 8)
        assert reps[p, m]["stages"]["load_model"]["seconds"] > 0
    alone = masq_jax.quantize("toy:tiny", str(tmp_path / "alone"), method="smoothquant", preset="w8a8", **KW)
    assert _sha(tmp_path / "alone") == _sha(tmp_path / "many" / "w8a8" / "smoothquant")
    assert alone["sqnr"]["mean"] == reps["w8a8", "smoothquant"]["sqnr"]["mean"]


def test_one_preset_writes_out_per_method(tmp_path):
    reps = masq_jax.quantize_many("toy:tiny", str(tmp_path / "q"), methods=["rtn", "smoothquant"], presets=["w8a8"],
                                  **KW)
    assert len(reps) == 2
    assert (tmp_path / "q" / "rtn" / "model.safetensors").exists()
    assert (tmp_path / "q" / "smoothquant" / "model.safetensors").exists()
