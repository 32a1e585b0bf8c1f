"""``artifact.info.artifact_bytes``: an artefact's bytes by part, read from the safetensors header,
against the tensors themselves (loaded, ``nbytes`` summed by name); ``report.json`` records it and
``masq quantize``'s summary states per-modality weights as such."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from masq_jax.artifact.info import artifact_bytes, describe_bytes
from masq_jax.calib.synthetic import SyntheticSpec, synthetic_calibset
from masq_jax.calibrate.runner import run_quantize
from masq_jax.cli import print_summary
from masq_jax.families.toy import make_config, random_params
from masq_jax.settings import QuantSettings

pytestmark = pytest.mark.filterwarnings("ignore")
CFG = make_config("tiny")
PARAMS = random_params(CFG, seed=1)


@pytest.fixture(scope="module", params=["rtn", "mas"])
def run(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / request.param
    calib = synthetic_calibset(SyntheticSpec(hidden_size=CFG.hidden_size, samples=2, text_len=8, image_h=2, image_w=2,
                                             audio_len=4, vary=False, seed=0))
    rep = run_quantize((CFG, PARAMS), calib, str(out), QuantSettings(method=request.param, wbits=8, abits=8, epochs=0,
                                                                     samples=2), progress=False)
    return request.param, out, rep


def test_breakdown_matches_the_tensors(run):
    method, out, rep = run
    b = artifact_bytes(out)
    flat = load_file(str(out / "model.safetensors"))
    by = lambda pred: sum(v.nbytes for k, v in flat.items() if pred(k))  # noqa: E731
    field = lambda k: k.rsplit(".", 1)[-1]  # noqa: E731
    assert b["weights"] == by(lambda k: field(k) in ("qvalue", "scale", "zero_point"))
    assert b["branches"] == by(lambda k: field(k) in ("smooth", "lora_l", "lora_r"))
    assert b["embeddings"] == flat["embed"].nbytes and b["lm_head"] == flat["lm_head"].nbytes  # the toy is untied
    assert b["weights"] + b["branches"] + b["embeddings"] + b["lm_head"] + b["other"] == by(lambda k: True)
    assert b["model_file"] == (out / "model.safetensors").stat().st_size
    assert b["embed_dtype"] == "bf16" and b["store_dtype"] == "bfloat16" and not b["tied_embeddings"]
    assert json.loads((out / "report.json").read_text())["artifact_bytes"] == rep["artifact_bytes"] == b
    if method == "mas":  # one weight per modality, [L, 3, ...]
        q = flat["layers.q_proj.qvalue"]
        assert q.shape[:2] == (CFG.num_layers, 3)
        per = b["weights_per_modality"]
        assert list(per) == ["text", "vision", "audio"] and len(set(per.values())) == 1
        assert sum(per.values()) == b["weights"]
        assert "(per-modality)" in describe_bytes(b)
    else:
        assert "weights_per_modality" not in b and "per-modality" not in describe_bytes(b)


def test_summary_states_the_breakdown(run, capsys):
    method, out, rep = run
    print_summary(method, rep, str(out))
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith("artefact "))
    assert "embeddings" in line and "(untied, bf16)" in line
    if method == "mas":
        assert "weights text" in line and "vision" in line and "audio" in line and "(per-modality)" in line


def test_megabytes_arithmetic():
    b = {"weights": 3_000_000, "weights_per_modality": {"text": 1_000_000, "vision": 1_000_000, "audio": 1_000_000},
         "branches": 0, "embeddings": 5_000_000, "lm_head": 0, "other": 200_000, "tied_embeddings": True,
         "embed_dtype": "bf16", "support_files": 0, "total": 8_400_000}
    assert describe_bytes(b) == ("8.4 MB: weights text 1.0 MB, vision 1.0 MB, audio 1.0 MB (per-modality); "
                                 "embeddings 5.0 MB (tied, bf16); norms/biases 0.2 MB")
    assert np.isclose(float(describe_bytes({**b, "total": 50_000}).split()[0]), 50.0)
