"""Run in a fresh process: write a random Qwen2 checkpoint larger than the memory a streamed run may
use, quantize it (``--stream`` or not) and print JSON with the weight bytes, the resident memory
before the run and the peak after it (what ``test_stream.py`` compares).

``python tests/calibrate/stream_worker.py DIR LAYERS stream|load``
"""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np

from masq_jax.calib.calibset import CalibSet
from masq_jax.calibrate.runner import run_quantize
from masq_jax.families.toy import CONFIGS, save_checkpoint
from masq_jax.resources import peak_host_bytes
from masq_jax.settings import QuantSettings


def calibset(hidden: int, samples: int = 4, seq: int = 24) -> CalibSet:
    """Embedding samples with text, vision and audio runs at different magnitudes (1-D positions)."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(samples):
        mid = np.zeros(seq, np.int32)
        mid[4:12], mid[14:20] = 1, 2
        scale = np.where(mid == 0, 1.0, np.where(mid == 1, 8.0, 3.0))[:, None]
        out.append(dict(inputs_embeds=(rng.standard_normal((seq, hidden)) * scale).astype(np.float32),
                        position_ids=np.arange(seq), modality_ids=mid))
    return CalibSet.from_samples(out)


def current_host_bytes() -> int:
    """Resident set size of this process now (bytes; Linux ``/proc``, else the peak so far)."""
    import resource

    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:
        return peak_host_bytes()


def main(directory: str, layers: str, mode: str) -> None:
    warnings.simplefilter("ignore")
    weight_bytes = save_checkpoint(f"{directory}/ckpt", "wide", num_layers=int(layers))
    cs = calibset(CONFIGS["wide"]["hidden_size"])
    st = QuantSettings(method="rtn", wbits=4, abits=8, samples=len(cs))
    before = current_host_bytes()
    rep = run_quantize(f"{directory}/ckpt", cs, f"{directory}/out", st, progress=False, stream=mode == "stream")
    print(json.dumps({"weight_bytes": weight_bytes, "before": before, "peak": peak_host_bytes(),
                      "sqnr": rep["sqnr"]["mean"]["all"]}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
