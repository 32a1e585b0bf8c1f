"""Run in a fresh process with 8 CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``):
quantize one model on one device and on several meshes, and write what ``test_mesh.py`` compares
(integer weights, smoothing vectors, SQNR, bytes per device, resume, generation) as JSON.

``python tests/parallel/mesh_worker.py OUT_DIR METHOD[,METHOD...] MESH[;MESH...]``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np

from masq_jax import artifact, parallel
from masq_jax.calib.synthetic import SyntheticSpec, synthetic_calibset
from masq_jax.calibrate.runner import run_quantize
from masq_jax.families.toy import make_config, random_params
from masq_jax.models import LINEAR_NAMES
from masq_jax.models.generate import generate
from masq_jax.settings import QuantSettings

CFG = make_config("tiny")
PARAMS = random_params(CFG, seed=1)
SAMPLES = 6  # not a multiple of 4 or 8: meshes with data=4/8 pad with masked samples


def calib(samples=SAMPLES, seed=0):
    spec = SyntheticSpec(hidden_size=CFG.hidden_size, samples=samples, text_len=8, image_h=4, image_w=4,
                         audio_len=8, vary=False, seed=seed)
    return synthetic_calibset(spec)


def settings(method):
    return QuantSettings(method=method, wbits=4, abits=8, epochs=1, samples=SAMPLES, rank=8, rank_floor=0)


def summary(path: Path, rep: dict) -> dict:
    q = artifact.read_artifact(path)
    out = {"sqnr": rep["sqnr"]["mean"], "mesh": rep["mesh"], "qvalue": {}, "smooth": {}}
    for name in LINEAR_NAMES:
        ql = q.params["layers"][name]
        out["qvalue"][name] = np.asarray(ql.weight.qvalue).astype(np.int16).tolist()
        out["smooth"][name] = np.asarray(ql.smooth, np.float64).tolist()
    return out


def weight_bytes(qmodel) -> dict[str, int]:
    """Bytes per device of the stored integer weights (per-channel scales of o/down, one per output
    row, stay replicated)."""
    return parallel.device_bytes([qmodel.params["layers"][n].weight.qvalue for n in LINEAR_NAMES])


class Interrupt(Exception):
    pass


def main(out_dir: str, methods: str, meshes: str) -> None:
    out = Path(out_dir)
    result = {"devices": len(jax.devices()), "runs": {}}
    for method in methods.split(","):
        for mesh in ["none"] + meshes.split(";"):
            path = out / f"{method}-{mesh.replace('=', '').replace(',', '-')}"
            rep = run_quantize((CFG, PARAMS), calib(), str(path), settings(method), eval_set=calib(3, seed=5),
                               progress=False, mesh=None if mesh == "none" else mesh)
            result["runs"][f"{method}|{mesh}"] = summary(path, rep)
    # Resume after an interrupted sharded run: the same artefact, bit for bit.
    mesh = meshes.split(";")[-1]
    full = out / "resume-full"
    run_quantize((CFG, PARAMS), calib(), str(full), settings("masquant"), progress=False, mesh=mesh)
    cut = out / "resume-cut"

    def stop(i, row):
        if i == 0:
            raise Interrupt

    try:
        run_quantize((CFG, PARAMS), calib(), str(cut), settings("masquant"), progress=False, mesh=mesh, on_layer=stop)
    except Interrupt:
        pass
    run_quantize((CFG, PARAMS), calib(), str(cut), settings("masquant"), progress=False, mesh=mesh, resume=True)
    result["resume_equal"] = (full / "model.safetensors").read_bytes() == (cut / "model.safetensors").read_bytes()
    # Activations offloaded to temporary files on the same mesh: the same artefact, bit for bit.
    off = out / "offload-disk"
    run_quantize((CFG, PARAMS), calib(), str(off), settings("masquant"), progress=False, mesh=mesh, offload="disk")
    result["offload_equal"] = (full / "model.safetensors").read_bytes() == (off / "model.safetensors").read_bytes()
    # The artefact on a mesh: bytes per device and greedy generation equal to one device's.
    prompt = np.asarray([[5, 17, 33, 2, 9, 64, 3, 11]], np.int32)
    one = artifact.read_artifact(full)
    ref = np.asarray(generate(one, input_ids=prompt, max_new_tokens=8, eos_token_id=None))
    result["generate"] = {}
    for m in meshes.split(";"):
        sharded = artifact.read_artifact(full, mesh=m)
        toks = np.asarray(generate(sharded, input_ids=prompt, max_new_tokens=8, eos_token_id=None))
        result["generate"][m] = {"equal": bool((toks == ref).all()), "device_bytes": weight_bytes(sharded)}
    result["generate"]["none"] = {"device_bytes": weight_bytes(one)}
    (out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:4])
