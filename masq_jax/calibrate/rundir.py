"""The run directory: ``OUT.partial`` while calibrating (orbax checkpoints, one step per finished
layer, and the run's fingerprint), renamed to ``OUT`` only when the artefact is complete.

A ``.partial`` made with another model, calibration set or settings is refused (``overwrite``
starts again instead), as is an existing ``OUT`` without ``overwrite`` (``calibrate.preflight``); a
run that stops before its first layer checkpoint removes its ``.partial`` (``discard_if_empty``):
nothing to resume. Nothing outside ``OUT.partial`` is written before the final rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import jax

from masq_jax import parallel
from masq_jax.calibrate.preflight import check_out
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
        check_out(self.out, resume, overwrite)
        run_json = self.partial / "run.json"
        existed = self.partial.exists()
        if existed and resume:
            try:
                saved = json.loads(run_json.read_text())["fingerprint"]
            except (OSError, ValueError, KeyError):
                saved = None
                if not overwrite:
                    raise CheckpointError(f"{run_json} is missing or corrupt; pass --overwrite to start again") from None
            if saved != fingerprint and not overwrite:
                raise CheckpointError(
                    f"{self.partial} was made with a different model, calibration set or settings; "
                    "rerun with the same options, or pass --overwrite to start again"
                )
            existed = saved == fingerprint
        elif existed:  # --overwrite without --resume (check_out refused the rest): start again
            existed = False
        self.resumed = existed
        parallel.sync("masq-run-dir-checked")
        if self.partial.exists() and not existed and parallel.is_writer():  # --overwrite: start again
            shutil.rmtree(self.partial)
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

    def discard_if_empty(self) -> None:
        """Remove ``OUT.partial`` when it holds no layer checkpoint (a run that failed before its first
        layer leaves nothing to resume, and nothing that blocks the corrected command)."""
        if self.finished_layers():
            return
        self.manager.close()
        parallel.sync("masq-run-discard")
        if parallel.is_writer():
            shutil.rmtree(self.partial, ignore_errors=True)

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
            if self.out.is_dir() and (overwrite or not any(self.out.iterdir())):
                shutil.rmtree(self.out)  # checked before the run: a directory, empty or --overwrite
            os.replace(self.partial, self.out)
        parallel.sync("masq-run-renamed")
