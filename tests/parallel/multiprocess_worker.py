"""One process of a two-process ``jax.distributed`` run on CPU (2 devices each, gloo collectives),
started from the coordinator environment as ``masq quantize`` starts it:
quantize on the 4-device global mesh data=2,model=2 and, from process 0, write the summary that
``test_multiprocess.py`` compares against one device.

``python tests/parallel/multiprocess_worker.py PROCESS_ID PORT OUT_DIR METHOD [resume]`` (``resume``:
also stop the whole job after layer 0, restart it with ``--resume`` and compare the artefacts).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import jax


class Interrupt(Exception):
    pass


def main(process_id: str, port: str, out: str, method: str, resume: str = "") -> None:
    os.environ.update(JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=process_id)
    from masq_jax import parallel

    assert parallel.initialize_distributed()  # what masq quantize does first: from the environment
    assert parallel.initialize_distributed()  # twice is harmless
    sys.path.insert(0, str(Path(__file__).parent))
    from mesh_worker import CFG, PARAMS, calib, settings, summary

    from masq_jax.calibrate.runner import run_quantize

    path = Path(out) / method
    rep = run_quantize((CFG, PARAMS), calib(), str(path), settings(method), eval_set=calib(3, seed=5),
                       progress=False, mesh="data=2,model=2")
    result = {"processes": jax.process_count(), "devices": len(jax.devices()), **summary(path, rep)}
    if resume:  # the whole job stops after layer 0 (every process), then restarts with --resume
        cut = Path(out) / f"{method}-cut"

        def stop(i, row):
            if i == 0:
                raise Interrupt

        try:
            run_quantize((CFG, PARAMS), calib(), str(cut), settings(method), eval_set=calib(3, seed=5),
                         progress=False, mesh="data=2,model=2", on_layer=stop)
        except Interrupt:
            pass
        run_quantize((CFG, PARAMS), calib(), str(cut), settings(method), eval_set=calib(3, seed=5),
                     progress=False, mesh="data=2,model=2", resume=True)
        result["resume_equal"] = (path / "model.safetensors").read_bytes() == (cut / "model.safetensors").read_bytes()
    if parallel.is_writer():
        (Path(out) / f"{method}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:6])
