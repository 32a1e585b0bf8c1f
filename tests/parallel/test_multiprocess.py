"""Multi-host calibration as two ``jax.distributed`` processes on this CPU (2 devices each, one
4-device mesh): one artefact, written by process 0, equal to one device's; a restart of the whole
job with --resume gives the uninterrupted artefact bit for bit (slow: about 5 minutes)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.parallel.mesh_worker import CFG, PARAMS, calib, settings, summary
from tests.parallel.test_mesh import check_closed_form, check_learned

from masq_jax.calibrate.runner import run_quantize


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_two_processes(tmp: Path, method: str, resume: bool) -> dict:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    worker = Path(__file__).with_name("multiprocess_worker.py")
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, str(worker), str(i), port, str(tmp), method] + (["resume"] if resume else []), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-4000:]
    return json.loads((tmp / f"{method}.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rtn", "masquant"])
def test_two_processes_give_one_devices_artefact(tmp_path, method):
    sharded = run_two_processes(tmp_path, method, resume=method == "masquant")
    if method == "masquant":
        assert sharded["resume_equal"]  # the whole job restarted with --resume: the same artefact, bit for bit
    assert (sharded["processes"], sharded["devices"]) == (2, 4)
    assert (sharded["mesh"]["data"], sharded["mesh"]["model"], sharded["mesh"]["processes"]) == (2, 2, 2)
    rep = run_quantize((CFG, PARAMS), calib(), str(tmp_path / "one"), settings(method), eval_set=calib(3, seed=5),
                       progress=False)
    result = {"runs": {f"{method}|none": summary(tmp_path / "one", rep), f"{method}|multi": sharded}}
    (check_closed_form if method == "rtn" else check_learned)(result, method, "multi")
