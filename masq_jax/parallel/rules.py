"""Where each parameter lives on the mesh: replicated along ``data``; along ``model``, the seven
linears split on the dimension that keeps each matmul local (Megatron's layout): q/k/v/gate/up by
output rows, o/down by input columns, so attention heads and MLP columns stay on one device and one
all-reduce after o/down completes the layer. One set of rules serves full-precision params
(``{"w", "b"}``) and stored ``QLinear``s (integer weight, scales, vectors, low-rank factors)."""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from masq_jax.models.decoder import GATE_UP, LINEAR_NAMES, QKV

# Merged q|k|v and gate|up split by rows too: correct, though a device's rows can straddle members.
OUTPUT_SPLIT = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", QKV, GATE_UP)  # by output rows
INPUT_SPLIT = ("o_proj", "down_proj")  # by input columns

# (split, field) -> the axis (from the end) that ``model`` splits; absent = replicated.
_LINEAR_AXIS = {
    ("output", "w"): -2, ("output", "b"): -1, ("output", "bias"): -1, ("output", "qvalue"): -2,
    ("output", "scale"): -3, ("output", "zero_point"): -3, ("output", "lora_r"): -1,
    ("input", "w"): -1, ("input", "qvalue"): -1, ("input", "scale"): -2, ("input", "zero_point"): -2,
    ("input", "smooth"): -1, ("input", "lora_l"): -2,
}
_VOCAB_AXIS = {"embed": -2, "lm_head": -2}  # vocabulary rows along ``model``


def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def model_axis(path: tuple) -> int | None:
    """The axis (negative) of the leaf at ``path`` that ``model`` splits, or None (replicated)."""
    names = [_key_name(k) for k in path]
    linear = next((n for n in names if n in LINEAR_NAMES or n in (QKV, GATE_UP)), None)
    if linear is None:
        return _VOCAB_AXIS.get(names[0]) if len(names) == 1 else None
    split = "output" if linear in OUTPUT_SPLIT else "input"
    return _LINEAR_AXIS.get((split, names[-1]))


def param_sharding(path: tuple, shape: tuple[int, ...], mesh: Mesh) -> NamedSharding:
    """The leaf's sharding; replicated where ``model`` does not divide the split dimension."""
    axis = model_axis(path)
    m = mesh.shape["model"]
    spec = [None] * len(shape)
    if axis is not None and m > 1 and len(shape) >= -axis and shape[axis] % m == 0:
        spec[axis] = "model"
    return NamedSharding(mesh, PartitionSpec(*spec))


def shard_params(params: Any, mesh: Mesh | None) -> Any:
    """``params`` (FP or quantized, stacked over layers or one layer's) placed on ``mesh`` by the
    rules above; unchanged without a mesh."""
    if mesh is None:
        return params

    def place(path, leaf):
        if not hasattr(leaf, "shape"):
            return leaf
        return jax.device_put(leaf, param_sharding(path, tuple(leaf.shape), mesh))

    return jax.tree_util.tree_map_with_path(place, params)


def replicated_linears(params: Any, mesh: Mesh | None) -> list[str]:
    """Paths of linear tensors that ``model`` should split but cannot (the dimension is not a
    multiple of it): they are replicated, and report.json says so."""
    if mesh is None or mesh.shape["model"] == 1:
        return []
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        axis = model_axis(path)
        if axis is not None and hasattr(leaf, "shape") and leaf.shape[axis] % mesh.shape["model"]:
            out.append("/".join(_key_name(k) for k in path))
    return out
