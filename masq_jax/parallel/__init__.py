"""Scale-out on JAX's own SPMD: the device mesh of a run (``mesh``), where each parameter lives on
it (``rules``) and how calibration samples are spread along its ``data`` axis (``layout``)."""

from masq_jax.parallel.layout import SampleLayout
from masq_jax.parallel.mesh import (AXES, MeshSpec, device_bytes, initialize_distributed, is_writer, make_mesh,
                                    mesh_record, sync, to_host)
from masq_jax.parallel.rules import shard_params

__all__ = ["AXES", "MeshSpec", "SampleLayout", "device_bytes", "initialize_distributed", "is_writer", "make_mesh",
           "mesh_record", "shard_params", "sync", "to_host"]
