"""The pieces of masq_jax.parallel on one device: the sample layout (padding, order, chunks), the
mesh spec, and where the rules put each parameter."""

from __future__ import annotations

import numpy as np
import pytest
from jax.sharding import Mesh

from masq_jax.parallel import MeshSpec, SampleLayout, make_mesh
from masq_jax.parallel.rules import model_axis
from masq_jax.settings import QuantSettings


@pytest.mark.parametrize("samples, shards, chunk", [(6, 1, 8), (6, 4, 1), (13, 4, 2), (64, 8, 3), (3, 8, 8)])
def test_layout_pads_keeps_order_and_round_trips(samples, shards, chunk):
    lay = SampleLayout(samples, shards, chunk)
    assert lay.padded % shards == 0 and 0 <= lay.padded - samples < shards
    assert sorted(lay.logical.tolist()) == list(range(lay.padded))  # a permutation of the padded set
    x = np.arange(samples * 2, dtype=np.float32).reshape(samples, 2) + 1
    phys = lay.arrange(x)
    assert (phys[lay.logical >= samples] == 0).all()  # padding rows are zeros (masked samples)
    np.testing.assert_array_equal(lay.restore(phys), x)
    parts = [np.asarray(lay.take(phys, c)) for c in range(lay.num_chunks)]
    # every chunk holds consecutive logical samples in order: concatenated, they are the set in order
    logical = np.concatenate([lay.take_host(lay.logical, c) for c in range(lay.num_chunks)])
    assert logical.tolist() == list(range(lay.padded))
    np.testing.assert_array_equal(np.concatenate(parts)[: samples], x)
    np.testing.assert_array_equal(np.asarray(lay.put(parts)), phys)


def test_one_device_layout_is_the_identity():
    lay = SampleLayout(10, 1, 4)
    assert lay.logical.tolist() == list(range(10)) and [b for b in lay.bounds] == [(0, 4), (4, 8), (8, 10)]


def test_mesh_spec_parses_and_builds_on_what_exists():
    assert MeshSpec.parse("data=2,model=4") == MeshSpec(2, 4)
    assert MeshSpec.parse("model=2") == MeshSpec(1, 2)
    mesh = make_mesh("data=1,model=1")
    assert isinstance(mesh, Mesh) and mesh.axis_names == ("data", "model")
    assert make_mesh(None) is None


@pytest.mark.parametrize("path, axis", [
    (("layers", "q_proj", "w"), -2), (("layers", "q_proj", "b"), -1), (("layers", "o_proj", "w"), -1),
    (("layers", "down_proj", "w"), -1), (("layers", "gate_proj", "w"), -2), (("embed",), -2),
    (("layers", "input_norm"), None), (("final_norm",), None),
    (("layers", "up_proj", "weight", "qvalue"), -2), (("layers", "up_proj", "weight", "scale"), -3),
    (("layers", "down_proj", "weight", "qvalue"), -1), (("layers", "down_proj", "smooth"), -1),
    (("layers", "down_proj", "lora_l"), -2), (("layers", "v_proj", "lora_r"), -1), (("layers", "v_proj", "smooth"), None),
])
def test_rules_split_output_rows_of_qkv_gate_up_and_input_columns_of_o_down(path, axis):
    class Key:
        def __init__(self, key):
            self.key = key

    assert model_axis(tuple(Key(k) for k in path)) == axis


def test_mesh_is_not_part_of_the_settings():
    assert "mesh" not in QuantSettings().to_json()  # a run may resume on another mesh


def test_cluster_environment_detection(monkeypatch):
    from masq_jax.parallel import mesh

    for k in ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "SLURM_PROCID", "OMPI_COMM_WORLD_SIZE",
              "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(k, raising=False)
    assert not mesh.cluster_environment()
    monkeypatch.setenv("SLURM_NTASKS", "1")  # a one-task SLURM shell is not a cluster run
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert not mesh.cluster_environment() and not mesh.initialize_distributed()
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert mesh.cluster_environment()
    monkeypatch.setenv("JAX_PROCESS_ID", "one")
    from masq_jax.errors import SettingsError

    with pytest.raises(SettingsError, match="JAX_PROCESS_ID='one' is not a whole number"):
        mesh.initialize_distributed()
