"""The artefact's unquantized tensors (embeddings, head, norms, biases) are stored in bfloat16 by
default and in float32 on request (``store_dtype``); the quantized weights are the same bytes either
way. A bf16-stored artefact holds exactly the float32 one's tensors rounded to bf16, computes in
float32 once loaded, and generates the same greedy tokens as the float32-stored one."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

import masq_jax
from masq_jax.artifact.info import read_config
from masq_jax.calib.synthetic import SyntheticSpec, synthetic_calibset
from masq_jax.calibrate.runner import run_quantize
from masq_jax.errors import SettingsError
from masq_jax.families.toy import make_config, random_params
from masq_jax.settings import QuantSettings

pytestmark = pytest.mark.filterwarnings("ignore")
CFG = make_config("tiny")
PARAMS = random_params(CFG, seed=1)
UNQUANTIZED = ("embed", "lm_head", "final_norm", "layers.input_norm", "layers.post_attn_norm")


@pytest.fixture(scope="module", params=["rtn", pytest.param("smoothquant", marks=pytest.mark.slow),
                                               pytest.param("masquant", marks=pytest.mark.slow)])
def pair(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    calib = synthetic_calibset(SyntheticSpec(hidden_size=CFG.hidden_size, samples=4, text_len=8, image_h=4,
                                             image_w=4, audio_len=8, vary=False, seed=0))
    for store in ("bfloat16", "float32"):
        st = QuantSettings(method=request.param, wbits=8, abits=8, epochs=1, samples=4, rank=8, rank_floor=0,
                           store_dtype=store)
        run_quantize((CFG, PARAMS), calib, str(root / store), st, progress=False)
    return root / "bfloat16", root / "float32"


def test_unquantized_tensors_take_the_store_dtype_and_quantized_ones_do_not_change(pair):
    bf, f32 = (load_file(str(p / "model.safetensors")) for p in pair)
    assert bf.keys() == f32.keys()
    biases = [k for k in bf if k.endswith(".bias")]
    assert biases  # the toy has q/k/v biases
    for key in bf:
        if key in UNQUANTIZED or key in biases:
            assert f32[key].dtype == np.float32 and bf[key].dtype == jnp.bfloat16, key
            np.testing.assert_array_equal(bf[key], f32[key].astype(jnp.bfloat16), err_msg=key)
        else:  # integer codes, scales, smoothing vectors, low-rank factors
            assert bf[key].dtype == f32[key].dtype and bf[key].dtype != jnp.bfloat16, key
            np.testing.assert_array_equal(bf[key], f32[key], err_msg=key)
    assert [read_config(p)["quantization_config"]["store_dtype"] for p in pair] == ["bfloat16", "float32"]
    assert (pair[0] / "model.safetensors").stat().st_size < (pair[1] / "model.safetensors").stat().st_size


def test_bf16_storage_generates_as_float32_storage(pair):
    """Greedy tokens agree wherever the float32-stored model's top-2 logit margin exceeds the change
    the bf16 storage makes to the logits (a random toy has near-ties; a choice inside one may flip)."""
    qb, qf = (masq_jax.load(p) for p in pair)
    assert qb.params["embed"].dtype == jnp.float32  # computes in float32 whatever it is stored in
    ids = jnp.asarray(np.random.default_rng(0).integers(0, CFG.vocab_size, (4, 12)), jnp.int32)
    n = 12
    tb = masq_jax.generate(qb, ids, max_new_tokens=n, eos_token_id=None)
    tf = masq_jax.generate(qf, ids, max_new_tokens=n, eos_token_id=None)
    full = jnp.concatenate([ids, jnp.asarray(tf)], axis=1)  # teacher-forced along the float32 tokens
    lb, lf = np.asarray(qb(input_ids=full)), np.asarray(qf(input_ids=full))
    assert np.abs(lb - lf).max() <= 0.02 * np.abs(lf).max()  # logits close
    decided = 0
    for row in range(ids.shape[0]):
        for t in range(n):
            pos = ids.shape[1] - 1 + t
            top2 = np.sort(lf[row, pos])[-2:]
            if top2[1] - top2[0] <= 2 * np.abs(lb[row, pos] - lf[row, pos]).max():
                break  # a near-tie: the rest of this row may follow another token
            assert tb[row, t] == tf[row, t], (row, t)
            decided += 1
    assert decided >= 0.5 * tf.size  # the check is not vacuous (a random toy has many near-ties)


def test_store_dtype_setting():
    assert QuantSettings(method="rtn", store_dtype="bf16").store_dtype == "bfloat16"
    assert QuantSettings(method="rtn").store_dtype == "bfloat16"
    with pytest.raises(SettingsError, match="--store-dtype must be one of bfloat16, float32"):
        QuantSettings(method="rtn", store_dtype="float16")


def test_cli_flag_reaches_the_settings():
    from masq_jax.cli import build_parser

    a = build_parser().parse_args(["quantize", "--out", "x", "--store-dtype", "float32"])
    assert a.store_dtype == "float32"
    assert build_parser().parse_args(["quantize", "--out", "x"]).store_dtype is None
