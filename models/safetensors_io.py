"""Torch-free safetensors reading: header JSON + NumPy memmap (bfloat16 through ml_dtypes)."""

from __future__ import annotations

import json
import os
import struct
from typing import Callable

import ml_dtypes
import numpy as np

from masq_jax.models.errors import CheckpointNotFoundError, ModelLoadError

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


def read_header(path: str) -> tuple[dict, int]:
    """(tensor header dict without __metadata__, byte offset of the data section)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ModelLoadError(f"{path}: not a safetensors file (truncated header)")
        (n,) = struct.unpack("<Q", raw)
        if n > 100 * 2**20:
            raise ModelLoadError(f"{path}: not a safetensors file (header length {n})")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelLoadError(f"{path}: corrupt safetensors header ({e})") from None
    header.pop("__metadata__", None)
    return header, 8 + n


def open_tensors(path: str) -> dict[str, tuple[Callable[[], np.ndarray], tuple[int, ...]]]:
    """key -> (lazy loader returning a NumPy array, shape) for one .safetensors file."""
    header, base = read_header(path)
    size = os.path.getsize(path)
    out = {}
    for key, info in header.items():
        dt = info["dtype"]
        if dt not in _DTYPES:
            raise ModelLoadError(f"{path}: tensor {key} has unsupported dtype {dt}")
        start, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if base + end > size:
            raise ModelLoadError(f"{path}: tensor {key} extends past the end of the file (truncated download?)")

        def load(start=start, end=end, shape=shape, dt=_DTYPES[dt]):
            count = int(np.prod(shape)) if shape else 1
            arr = np.memmap(path, dtype=dt, mode="r", offset=base + start, shape=(count,))
            return np.asarray(arr).reshape(shape)

        out[key] = (load, shape)
    return out


def open_checkpoint_dir(directory: str) -> dict[str, tuple[Callable[[], np.ndarray], tuple[int, ...]]]:
    """All tensors of model.safetensors, a sharded model.safetensors.index.json, or any *.safetensors."""
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    elif os.path.exists(os.path.join(directory, "model.safetensors")):
        files = ["model.safetensors"]
    else:
        files = sorted(f for f in os.listdir(directory) if f.endswith(".safetensors"))
    if not files:
        raise CheckpointNotFoundError(
            f"{directory}: no model.safetensors, model.safetensors.index.json or *.safetensors file"
        )
    out = {}
    for name in files:
        p = os.path.join(directory, name)
        if not os.path.exists(p):
            raise CheckpointNotFoundError(f"{p}: shard listed in model.safetensors.index.json is missing")
        out.update(open_tensors(p))
    return out
