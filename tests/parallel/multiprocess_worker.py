"""One process of a two-process ``jax.distributed`` run on CPU (2 devices each, gloo collectives),
started from the coordinator environment as ``masq quantize`` starts it:
quantize on the 4-device global mesh data=2,model=2 and, from process 0, write the summary that
``test_multiprocess.py`` compares against one device.

``python tests/parallel/multiprocess_worker.py PROCESS_ID PORT OUT_DIR METHOD``
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import jax


def main(process_id: str, port: str, out: str, method: str) -> None:
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
    if parallel.is_writer():
        result = {"processes": jax.process_count(), "devices": len(jax.devices()), **summary(path, rep)}
        (Path(out) / f"{method}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:5])
