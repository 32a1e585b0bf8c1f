"""The run's device mesh: ``--mesh data=D,model=M`` parsed and built over ``jax.devices()`` (every
process's devices when ``jax.distributed`` is up), the multi-host start, and bytes per device."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from masq_jax.errors import SettingsError

AXES = ("data", "model")  # calibration samples along ``data``; the linears' weights along ``model``



def _env_int(name: str) -> int:
    try:
        return int(os.environ.get(name, "1"))
    except ValueError:
        return 1


def cluster_environment() -> bool:
    """Whether this process is one of several that ``jax.distributed`` should join: a coordinator
    address, a SLURM step or Open MPI job of more than one task, a multi-host TPU slice."""
    env = os.environ
    return bool(env.get("JAX_COORDINATOR_ADDRESS")
                or (_env_int("SLURM_NTASKS") > 1 and "SLURM_PROCID" in env)
                or _env_int("OMPI_COMM_WORLD_SIZE") > 1
                or "," in env.get("TPU_WORKER_HOSTNAMES", "")
                or env.get("MEGASCALE_COORDINATOR_ADDRESS"))


@dataclasses.dataclass(frozen=True)
class MeshSpec:
    """The shape of a mesh: ``data`` × ``model`` devices."""

    data: int = 1
    model: int = 1

    @classmethod
    def parse(cls, text: str) -> MeshSpec:
        """``"data=4,model=2"`` (either axis may be left out: it is 1)."""
        sizes: dict[str, int] = {}
        for part in filter(None, (p.strip() for p in str(text).split(","))):
            name, eq, value = part.partition("=")
            name = name.strip()
            if not eq or name not in AXES:
                raise SettingsError(f"--mesh {text}: expected data=D,model=M (axes {', '.join(AXES)})")
            if name in sizes:
                raise SettingsError(f"--mesh {text}: axis {name} given twice")
            try:
                sizes[name] = int(value)
            except ValueError:
                raise SettingsError(f"--mesh {text}: {name}={value.strip()!r} is not a whole number") from None
            if sizes[name] < 1:
                raise SettingsError(f"--mesh {text}: {name} must be at least 1")
        return cls(**sizes)

    @property
    def size(self) -> int:
        return self.data * self.model

    def build(self) -> Mesh:
        """The mesh over the first ``data·model`` devices (all processes' devices, process-major)."""
        devices = jax.devices()
        if self.size > len(devices):
            hint = ("; on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N makes N devices"
                    if devices[0].platform == "cpu" else "")
            raise SettingsError(f"--mesh data={self.data},model={self.model} needs {self.size} devices, "
                                f"{len(devices)} are visible{hint}")
        return Mesh(np.asarray(devices[: self.size]).reshape(self.data, self.model), AXES)


def make_mesh(mesh: str | MeshSpec | Mesh | None) -> Mesh | None:
    """A ``jax.sharding.Mesh`` with axes ``("data", "model")`` from a spec string, a MeshSpec or a
    mesh (returned as is after checking its axis names); None stays None (one device)."""
    if mesh is None or isinstance(mesh, Mesh):
        if mesh is not None and tuple(mesh.axis_names) != AXES:
            raise SettingsError(f"mesh axes are {tuple(mesh.axis_names)}; masq-jax needs {AXES}")
        return mesh
    spec = mesh if isinstance(mesh, MeshSpec) else MeshSpec.parse(mesh)
    return spec.build()


def initialize_distributed() -> bool:
    """Start ``jax.distributed`` when a cluster environment is present, and return whether this is a
    multi-process run. SLURM, Open MPI and TPU slices are detected by JAX itself; elsewhere set
    ``JAX_COORDINATOR_ADDRESS`` (host:port of process 0), ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID`` on every process. CPU processes talk through gloo. Safe to call twice;
    ``MASQ_NO_DISTRIBUTED=1`` opts out."""
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    if not cluster_environment() or os.environ.get("MASQ_NO_DISTRIBUTED"):
        return False
    kwargs = {}
    for key, env in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")):
        if os.environ.get(env):
            try:
                kwargs[key] = int(os.environ[env])
            except ValueError:
                raise SettingsError(f"{env}={os.environ[env]!r} is not a whole number") from None
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # only CPU backends read it
    try:
        jax.distributed.initialize(**kwargs)
    except (ValueError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SettingsError(f"jax.distributed could not start ({first}); check JAX_COORDINATOR_ADDRESS, "
                            "JAX_NUM_PROCESSES and JAX_PROCESS_ID (or set MASQ_NO_DISTRIBUTED=1)") from None
    return jax.process_count() > 1


def is_writer() -> bool:
    """Whether this process writes the artefact, checkpoints and report (process 0)."""
    return jax.process_index() == 0


def sync(name: str) -> None:
    """Wait for every process at ``name`` (a no-op in a one-process run)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def to_host(array: Any) -> np.ndarray:
    """The whole of a (possibly sharded, possibly multi-process) array as a NumPy array."""
    if isinstance(array, jax.Array) and not array.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(array, tiled=True))
    return np.asarray(array)


def device_bytes(tree: Any) -> dict[str, int]:
    """Bytes each device holds of the arrays in ``tree`` (from their shardings; replicas count on
    every device that holds one)."""
    out: dict[str, int] = {}
    for leaf in jax.tree_util.tree_leaves(tree):
        if not isinstance(leaf, jax.Array):
            continue
        for shard in leaf.addressable_shards:
            key = str(shard.device.id)
            out[key] = out.get(key, 0) + int(shard.data.nbytes)
    return out


def mesh_record(mesh: Mesh | None) -> dict:
    """What report.json says about the mesh: axis sizes, processes and devices."""
    if mesh is None:
        return {"data": 1, "model": 1, "processes": jax.process_count(), "devices": [str(jax.devices()[0])]}
    return {"data": int(mesh.shape["data"]), "model": int(mesh.shape["model"]), "processes": jax.process_count(),
            "devices": [str(d) for d in mesh.devices.reshape(-1)]}
