"""Tied embeddings are stored once: an artefact of a model whose head is its embedding (by config,
or an ``lm_head`` bit-identical to ``embed``) holds one matrix and re-ties it on load; its logits
equal those of the same artefact written the old way (both matrices), which still loads."""

from __future__ import annotations

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import masq_jax
from masq_jax.artifact.info import read_info
from masq_jax.calib.synthetic import SyntheticSpec, synthetic_calibset
from masq_jax.calibrate.runner import run_quantize
from masq_jax.families.toy import make_config, random_params
from masq_jax.settings import QuantSettings

pytestmark = pytest.mark.filterwarnings("ignore")
CFG = make_config("tiny")
IDS = jnp.arange(12)[None] % CFG.vocab_size
MIDS = jnp.array([[0, 0, 1, 1, 1, 2, 2, 0, 0, 0, 0, 0]])


def quantize(tmp_path, name, cfg, params):
    calib = synthetic_calibset(SyntheticSpec(hidden_size=cfg.hidden_size, samples=2, text_len=8, image_h=2, image_w=2,
                                             audio_len=4, vary=False, seed=0))
    st = QuantSettings(method="rtn", wbits=8, abits=8, samples=2, store_dtype="float32")
    run_quantize((cfg, params), calib, str(tmp_path / name), st, progress=False)
    return tmp_path / name


def as_old_artefact(src, dst):
    """The artefact as the code before this change wrote it: ``lm_head`` stored beside ``embed``."""
    dst.mkdir()
    flat = load_file(str(src / "model.safetensors"))
    save_file({**flat, "lm_head": flat["embed"].copy()}, str(dst / "model.safetensors"), metadata={"format": "masq-jax"})
    cfg = json.loads((src / "config.json").read_text())
    cfg["tie_word_embeddings"] = False
    qc = cfg["quantization_config"]
    qc.pop("tied_embeddings")
    qc["decoder_config"]["tie_word_embeddings"] = False
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize("how", ["identical lm_head", "config ties"])
def test_tied_head_is_stored_once_and_retied(tmp_path, how):
    params = random_params(CFG, seed=1)
    if how == "identical lm_head":
        cfg, params = CFG, {**params, "lm_head": params["embed"]}
    else:
        cfg = dataclasses.replace(CFG, tie_word_embeddings=True)
        params = {k: v for k, v in params.items() if k != "lm_head"}
    out = quantize(tmp_path, "tied", cfg, params)
    stored = load_file(str(out / "model.safetensors"))
    assert "lm_head" not in stored and "embed" in stored
    assert read_info(out).tied_embeddings
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True
    q = masq_jax.load(out)
    assert q.config.tie_word_embeddings and "lm_head" not in q.params
    old = masq_jax.load(as_old_artefact(out, tmp_path / "old"))  # both matrices: still loads
    assert "lm_head" in old.params and not old.config.tie_word_embeddings
    np.testing.assert_array_equal(np.asarray(q(input_ids=IDS, modality_ids=MIDS)),
                                  np.asarray(old(input_ids=IDS, modality_ids=MIDS)))
    saved = old.params["lm_head"].size * old.params["lm_head"].dtype.itemsize
    grown = (tmp_path / "old/model.safetensors").stat().st_size - (out / "model.safetensors").stat().st_size
    assert saved <= grown < saved + 200  # the matrix plus its header entry


def test_distinct_head_is_kept(tmp_path):
    params = random_params(CFG, seed=1)
    out = quantize(tmp_path, "untied", CFG, params)
    stored = load_file(str(out / "model.safetensors"))
    assert "lm_head" in stored and not read_info(out).tied_embeddings
    assert not masq_jax.load(out).config.tie_word_embeddings
