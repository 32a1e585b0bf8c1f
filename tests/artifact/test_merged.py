"""Merged GEMMs in the model: an artefact calibrated with ``--tie-smoothing`` loads with one
``qkv_proj`` and one ``gate_up_proj`` per layer (SwiGLU in the epilogue) and gives the logits and
greedy tokens of its seven-linear twin; untied or per-modality artefacts cannot merge."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import masq_jax
from masq_jax.artifact.qmodel import merge_tied
from masq_jax.calibrate.runner import run_quantize
from masq_jax.errors import ArtifactError
from masq_jax.models import decoder
from masq_jax.models.generate import generate
from masq_jax.parallel.rules import model_axis
from masq_jax.settings import QuantSettings
from tests.artifact.test_qmodel import CFG, PARAMS, calib
from tests.kernels.test_qmatmul import _has_gpu, _has_hopper

pytestmark = pytest.mark.filterwarnings("ignore")
MERGED_KEYS = {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}
IDS = jnp.array([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]]) % CFG.vocab_size
MIDS = jnp.array([[0, 0, 1, 1, 1, 1, 2, 2, 2, 0, 0, 0]])


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    """masquant W4A8 rank 8 with tied vectors (q/k/v carry biases, so bias and low-rank merge too)."""
    path = tmp_path_factory.mktemp("tied") / "q"
    run_quantize((CFG, PARAMS), calib(4, 0), str(path), QuantSettings(method="masquant", wbits=4, abits=8, epochs=1,
                 samples=4, rank=8, rank_floor=0, tie_smoothing=True), progress=False)
    return path


def _close(a, b):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, atol=1e-4 * float(np.abs(b).max()))


def test_tied_artefact_runs_merged_gemms_with_the_seven_linears_outputs(tied):
    merged, seven = masq_jax.load(tied), masq_jax.load(tied, merge=False)
    assert merged.merged and set(merged.params["layers"]) & set(decoder.LINEAR_NAMES) == {"o_proj", "down_proj"}
    assert MERGED_KEYS <= set(merged.params["layers"]) and not seven.merged
    assert merged.params["layers"]["qkv_proj"].rank == 3 * seven.params["layers"]["q_proj"].rank
    for mids in (MIDS, None):  # mixed modalities (low-rank branch live) and all text
        _close(merged(input_ids=IDS, modality_ids=mids), seven(input_ids=IDS, modality_ids=mids))
    np.testing.assert_array_equal(generate(merged, IDS, max_new_tokens=6, modality_ids=MIDS),
                                  generate(seven, IDS, max_new_tokens=6, modality_ids=MIDS))


@pytest.mark.parametrize("impl", ["pallas", "mosaic"])
@pytest.mark.parametrize("where", ["here", pytest.param("gpu", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not _has_gpu(), reason="needs a CUDA GPU")])])
def test_merged_model_through_the_pallas_kernel(tied, where, impl):
    """The merged QKV GEMM and the gate|up GEMM with its in-kernel SwiGLU (Pallas / Mosaic GPU
    interpret mode off GPU, compiled under ``-m gpu``) against the kernel's seven linears (its
    low-rank branch runs in bf16, so the XLA path is not the twin)."""
    if where == "gpu" and impl == "mosaic" and not _has_hopper():
        pytest.skip("the Mosaic GPU kernel needs a Hopper GPU (wgmma)")
    merged, seven = (masq_jax.load(tied, implementation=impl, merge=m) for m in (True, False))
    assert merged.merged
    _close(merged(input_ids=IDS, modality_ids=MIDS), seven(input_ids=IDS, modality_ids=MIDS))


def test_linears_whose_vectors_differ_do_not_merge(tied):
    layers = dict(masq_jax.load(tied, merge=False).params["layers"])
    layers["k_proj"] = dataclasses.replace(layers["k_proj"], smooth=layers["k_proj"].smooth * 1.01)
    with pytest.raises(ArtifactError, match="q_proj, k_proj, v_proj do not share their smoothing vectors"):
        merge_tied(layers)


def test_per_modality_artefacts_keep_the_seven_linears(tmp_path):
    path = tmp_path / "mas"
    run_quantize((CFG, PARAMS), calib(4, 0), str(path), QuantSettings(method="mas", wbits=4, abits=8, epochs=0,
                 samples=4, tie_smoothing=True), progress=False)
    assert not masq_jax.load(path).merged
    with pytest.raises(ArtifactError, match="per-modality weights cannot run merged GEMMs"):
        masq_jax.load(path, merge=True)
    with pytest.raises(ArtifactError, match="merge must be None, True or False"):
        masq_jax.load(path, merge="yes")


def test_merged_linears_split_by_output_rows_on_a_mesh():
    key = jax.tree_util.DictKey
    for name in ("qkv_proj", "gate_up_proj"):
        assert model_axis((key("layers"), key(name), key("qvalue"))) == model_axis(
            (key("layers"), key("q_proj"), key("qvalue"))) == -2
