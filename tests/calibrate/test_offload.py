"""``--offload-activations host|disk``: the calibration activations live off the devices and go there
a chunk at a time; the artefact and the report's SQNR are the on-device run's, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from masq_jax.calibrate.batch import prepare
from masq_jax.calibrate.runner import run_quantize
from masq_jax.errors import SettingsError
from tests.calibrate.test_runner import CFG, PARAMS, calib, settings


@pytest.mark.parametrize("method", ["mas", pytest.param("masquant", marks=pytest.mark.slow)])
def test_offloaded_activations_give_the_on_device_artefact(tmp_path, method):
    reps = {}
    for where in (None, "host", "disk"):
        reps[where] = run_quantize((CFG, PARAMS), calib(), str(tmp_path / str(where)), settings(method=method),
                                   eval_set=calib(3, seed=5), progress=False, offload=where)
    ref = (tmp_path / "None/model.safetensors").read_bytes()
    for where in ("host", "disk"):
        assert (tmp_path / where / "model.safetensors").read_bytes() == ref, where
        assert reps[where]["sqnr"] == reps[None]["sqnr"]
        assert reps[where]["mesh"]["offload_activations"] == where


def test_offloaded_inputs_are_host_arrays_and_a_bad_kind_is_refused():
    data = prepare(CFG, PARAMS, calib(), offload="disk")
    assert isinstance(data.h0, np.memmap)
    assert isinstance(prepare(CFG, PARAMS, calib(), offload="host").h0, np.ndarray)
    with pytest.raises(SettingsError, match="expected one of host, disk"):
        prepare(CFG, PARAMS, calib(), offload="gpu")
