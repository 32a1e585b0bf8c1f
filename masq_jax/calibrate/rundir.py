"""The run directory: ``OUT.partial`` while calibrating (orbax checkpoints, one step per finished
layer, and the run's fingerprint), renamed to ``OUT`` only when the artefact is complete.

A ``.partial`` made with another model, calibration set or settings is refused, as is an existing
``OUT`` without ``overwrite``; nothing outside ``OUT.partial`` is written before the final rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import jax

from masq_jax import parallel
from masq_jax.errors import CheckpointError, OutputDirError
from masq_jax.models import StreamedLayers
from masq_jax.settings import QuantSettings


def fingerprint(st: QuantSettings, cfg, params, calib_fingerprint: str) -> str:
    """A hash of the settings, the decoder config, a content probe of every tensor and the data."""
    h = hashlib.sha256()
    h.update(json.dumps(st.to_json(), sort_keys=True).encode())
    h.update(repr(cfg).encode())
    for leaf in jax.tree_util.tree_leaves(params):  # a cheap content probe of every tensor
        if isinstance(leaf, StreamedLayers):  # left on disk: its files' names, sizes and times
            h.update(leaf.fingerprint.encode())
            continue
        a = parallel.to_host(leaf).reshape(-1)
        h.update(a[:: max(1, a.size // 4096)].tobytes())
    h.update(calib_fingerprint.encode())
    return h.hexdigest()


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write ``payload`` as JSON to ``path`` through a temporary file and a rename (process 0 only)."""
    if not parallel.is_writer():
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


class RunDir:
    """``OUT.partial`` during a run (checkpoints + run.json), renamed to ``OUT`` at the end."""

    def __init__(self, out: str | os.PathLike, fingerprint: str, resume: bool, overwrite: bool):
        self.out = Path(out).absolute()
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.fingerprint = fingerprint
        if self.out.exists() and not overwrite:
            raise OutputDirError(f"--out {self.out} already exists; choose another directory or pass --overwrite")
        if self.partial.exists() and not resume:
            raise OutputDirError(f"{self.partial} holds an interrupted run; pass --resume to continue it or delete it")
        run_json = self.partial / "run.json"
        existed = self.partial.exists()
        if existed:
            try:
                saved = json.loads(run_json.read_text())["fingerprint"]
            except (OSError, ValueError, KeyError):
                raise CheckpointError(f"{run_json} is missing or corrupt; delete {self.partial} and start again") from None
            if saved != fingerprint:
                raise CheckpointError(
                    f"{self.partial} was made with a different model, calibration set or settings; "
                    "rerun with the same options, or delete it to start again"
                )
        parallel.sync("masq-run-dir-checked")  # every process has looked before process 0 creates it
        if not existed and parallel.is_writer():
            try:
                self.partial.mkdir(parents=True)
                write_json_atomic(run_json, {"fingerprint": fingerprint})
            except OSError as e:
                raise OutputDirError(f"--out {self.out}: cannot create {self.partial} ({e.strerror or e}); "
                                     "choose a writable directory") from None
        parallel.sync("masq-run-dir")
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.manager = ocp.CheckpointManager(
            self.partial / "checkpoints",
            options=ocp.CheckpointManagerOptions(max_to_keep=None, create=True, enable_async_checkpointing=False),
        )

    def finished_layers(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save_layer(self, index: int, state: dict) -> None:
        """Checkpoint one layer's state as host arrays (every process calls this; orbax writes once)."""
        state = jax.tree_util.tree_map(parallel.to_host, state)
        self.manager.save(index, args=self._ocp.args.StandardSave(state))
        self.manager.wait_until_finished()

    def load_layer(self, index: int, template: dict) -> dict:
        try:
            return self.manager.restore(index, args=self._ocp.args.StandardRestore(template))
        except Exception as e:  # orbax raises many kinds on damaged files
            raise CheckpointError(
                f"checkpoint of layer {index} in {self.partial} cannot be read ({type(e).__name__}); "
                f"delete {self.partial} and start again"
            ) from None

    def finish(self, overwrite: bool) -> None:
        self.manager.close()
        parallel.sync("masq-run-finished")
        if parallel.is_writer():
            (self.partial / "run.json").unlink(missing_ok=True)
            if self.out.exists() and overwrite:
                shutil.rmtree(self.out)
            os.replace(self.partial, self.out)
        parallel.sync("masq-run-renamed")
