"""Calibration and inference on a JAX device mesh (8 CPU devices in a subprocess) against one device:
closed-form methods give the same integer weights, learning methods the same SQNR, parameter bytes
per device fall as 1/M along ``model``, a sharded run resumes bit for bit, and generation on a mesh
gives one device's tokens. The default suite runs one mesh; ``-m slow`` all four."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

FAST_MESHES = ("data=4,model=2",)  # padding (6 samples over 4) and a split model; the rest under -m slow
ALL_MESHES = ("data=8,model=1", "data=4,model=2", "data=2,model=4", "data=1,model=8")
CLOSED_FORM = ("rtn", "smoothquant", "awq")
LEARNED = ("mas", "masquant")


def run_worker(tmp: Path, meshes) -> dict:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    worker = Path(__file__).with_name("mesh_worker.py")
    proc = subprocess.run([sys.executable, str(worker), str(tmp), ",".join(CLOSED_FORM + LEARNED), ";".join(meshes)],
                          env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((tmp / "result.json").read_text())


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return run_worker(tmp_path_factory.mktemp("mesh"), FAST_MESHES)


def check_closed_form(result, method, mesh):
    """≥ 99.9 % of the integer weights equal (a differing reduction order can only move a value
    that sits on a rounding tie)."""
    one, sharded = result["runs"][f"{method}|none"], result["runs"][f"{method}|{mesh}"]
    equal = total = 0
    for name, q in one["qvalue"].items():
        a, b = np.asarray(q), np.asarray(sharded["qvalue"][name])
        equal, total = equal + int((a == b).sum()), total + a.size
    assert equal / total >= 0.999, (method, mesh, equal, total)


def check_learned(result, method, mesh):
    """SQNR within 0.1 dB per modality; smoothing vectors within 1e-3 relative (float32 reductions
    in another order, through one epoch of AdamW)."""
    one, sharded = result["runs"][f"{method}|none"], result["runs"][f"{method}|{mesh}"]
    for mod, value in one["sqnr"].items():
        if value is not None:
            assert abs(sharded["sqnr"][mod] - value) < 0.1, (method, mesh, mod)
    for name, s in one["smooth"].items():
        np.testing.assert_allclose(sharded["smooth"][name], s, rtol=1e-3, atol=1e-6, err_msg=f"{method} {mesh} {name}")


def check_report(result, mesh):
    rec = result["runs"][f"masquant|{mesh}"]["mesh"]
    data, model = (int(p.split("=")[1]) for p in mesh.split(","))
    assert (rec["data"], rec["model"], len(rec["devices"])) == (data, model, 8)
    assert rec["padded_samples"] == -6 % data  # 6 samples: masked padding up to a multiple of data
    assert set(rec["device_bytes"]["params"]) == {str(i) for i in range(8)}


def check_bytes(result, mesh):
    """The stored integer weights on each device: 1/M of one device's (exactly, when M divides every
    split dimension, as here)."""
    model = int(mesh.split("model=")[1])
    full = result["generate"]["none"]["device_bytes"]["0"]
    per_device = set(result["generate"][mesh]["device_bytes"].values())
    assert per_device == {full // model}, (mesh, per_device, full)


def check_all(result, meshes):
    assert result["devices"] == 8
    assert result["resume_equal"]  # an interrupted sharded run, resumed: the same artefact, bit for bit
    assert result["offload_equal"]  # activations in temporary files: the same artefact
    for mesh in meshes:
        for method in CLOSED_FORM:
            check_closed_form(result, method, mesh)
        for method in LEARNED:
            check_learned(result, method, mesh)
        check_report(result, mesh)
        check_bytes(result, mesh)
        check_fp_bytes(result, mesh)
        assert result["generate"][mesh]["equal"], mesh  # greedy tokens on the mesh = one device's


@pytest.mark.parametrize("mesh", FAST_MESHES)
@pytest.mark.parametrize("method", CLOSED_FORM)
def test_closed_form_methods_give_one_devices_integer_weights(result, method, mesh):
    check_closed_form(result, method, mesh)


@pytest.mark.parametrize("mesh", FAST_MESHES)
@pytest.mark.parametrize("method", LEARNED)
def test_learned_methods_match_one_device(result, method, mesh):
    check_learned(result, method, mesh)


@pytest.mark.parametrize("mesh", FAST_MESHES)
def test_report_records_the_mesh_and_padding(result, mesh):
    check_report(result, mesh)


@pytest.mark.parametrize("mesh", FAST_MESHES)
def test_stored_weight_bytes_per_device_fall_as_one_over_model(result, mesh):
    check_bytes(result, mesh)


def check_fp_bytes(result, mesh):
    """Full-precision params during calibration: the linears and embeddings split, norms replicated."""
    model = int(mesh.split("model=")[1])
    one = max(result["runs"]["rtn|none"]["mesh"]["device_bytes"]["params"].values())
    split = max(result["runs"][f"rtn|{mesh}"]["mesh"]["device_bytes"]["params"].values())
    assert split < one / model * 1.1, (mesh, one, split)


@pytest.mark.parametrize("mesh", FAST_MESHES)
def test_fp_parameter_bytes_per_device_fall_with_model(result, mesh):
    check_fp_bytes(result, mesh)


def test_sharded_resume_is_bit_for_bit(result):
    assert result["resume_equal"]


def test_sharded_run_with_activations_on_disk_is_bit_for_bit(result):
    assert result["offload_equal"]


@pytest.mark.parametrize("mesh", FAST_MESHES)
def test_generation_on_a_mesh_gives_one_devices_tokens(result, mesh):
    assert result["generate"][mesh]["equal"]


@pytest.mark.slow
def test_every_mesh_shape(tmp_path):
    """(8,1), (4,2), (2,4), (1,8): everything above."""
    check_all(run_worker(tmp_path, ALL_MESHES), ALL_MESHES)
