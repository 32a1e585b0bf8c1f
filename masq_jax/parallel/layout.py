"""How calibration samples are spread along the mesh's ``data`` axis and visited in chunks.

Samples are padded to a multiple of the ``data`` size with masked samples (``valid`` all False:
they count in no statistic, loss or metric) and laid out so that every chunk a jitted pass takes
holds consecutive logical samples spread evenly over the devices: chunk ``c`` is rows
``[c·C, c·C + k)`` of every device's block (a local slice, no transfer), and holds logical samples
``c·C·D … c·C·D + k·D − 1`` in order. Anything that depends on sample order (the CMC validation
fold, the search token sample, the training order) therefore sees what one device sees. With one
device the layout is the identity and a chunk is a plain slice.

``offload`` keeps the whole-set activations (decoder inputs, each layer's FP and quantized outputs)
off the devices: ``"host"`` in NumPy arrays, ``"disk"`` in memory-mapped temporary files; every
chunk is copied to the devices when a pass takes it and its outputs come straight back.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import tempfile
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from masq_jax.errors import SettingsError


@dataclasses.dataclass(frozen=True)
class SampleLayout:
    """``samples`` logical samples over ``shards`` devices, ``chunk`` rows per device per pass."""

    samples: int
    shards: int = 1
    chunk: int = 8
    mesh: Mesh | None = dataclasses.field(default=None, compare=False)
    offload: str | None = None  # None (devices), "host" or "disk"

    @classmethod
    def for_mesh(cls, samples: int, mesh: Mesh | None, chunk: int = 8, offload: str | None = None) -> SampleLayout:
        if offload not in OFFLOADS:
            raise SettingsError(f"--offload-activations {offload}: expected one of host, disk")
        return cls(samples, 1 if mesh is None else int(mesh.shape["data"]), chunk, mesh, offload)

    @property
    def padded(self) -> int:
        """Samples including the masked padding (a multiple of ``shards``)."""
        return math.ceil(self.samples / self.shards) * self.shards

    @property
    def per_shard(self) -> int:
        return self.padded // self.shards

    @property
    def bounds(self) -> list[tuple[int, int]]:
        """Per-device row range ``[lo, hi)`` of each chunk."""
        return [(lo, min(lo + self.chunk, self.per_shard)) for lo in range(0, self.per_shard, self.chunk)]

    @property
    def num_chunks(self) -> int:
        return len(self.bounds)

    @functools.cached_property
    def logical(self) -> np.ndarray:
        """``[padded]`` the logical sample at each physical row (``>= samples``: padding)."""
        out = np.empty(self.padded, np.int64)
        for c, (lo, hi) in enumerate(self.bounds):
            k = hi - lo
            for d in range(self.shards):
                out[d * self.per_shard + lo: d * self.per_shard + hi] = c * self.chunk * self.shards + d * k + np.arange(k)
        return out

    @functools.cached_property
    def rows(self) -> np.ndarray:
        """``[samples]`` the physical row of each logical sample."""
        return np.argsort(self.logical)[: self.samples]

    def arrange(self, array: np.ndarray, axis: int = 0) -> np.ndarray:
        """Host array with logical samples on ``axis`` -> physical layout, padding rows zero."""
        array = np.asarray(array)
        shape = list(array.shape)
        shape[axis] = self.padded
        out = np.zeros(shape, array.dtype)
        src = np.moveaxis(array, axis, 0)
        np.moveaxis(out, axis, 0)[self.rows] = src
        return out

    def restore(self, array: np.ndarray, axis: int = 0) -> np.ndarray:
        """Inverse of ``arrange``: the logical samples (padding dropped) of a host array."""
        return np.take(np.asarray(array), self.rows, axis=axis)

    # -- device side ---------------------------------------------------------------------------

    def sharding(self, ndim: int, axis: int = 0) -> NamedSharding | None:
        """Samples (``axis``) along ``data``, everything else replicated; None without a mesh."""
        if self.mesh is None:
            return None
        spec = [None] * ndim
        spec[axis] = "data"
        return NamedSharding(self.mesh, PartitionSpec(*spec))

    def place(self, array: Any, axis: int = 0) -> jax.Array:
        """An array already in physical layout (host or device), on device with its samples along
        ``data``."""
        sharding = self.sharding(np.ndim(array), axis)
        return jnp.asarray(array) if sharding is None else jax.device_put(array, sharding)

    def replicate(self, tree: Any) -> Any:
        """``tree`` replicated along ``data`` (what batch-1 training indexes into); as is without a mesh."""
        if self.mesh is None or self.shards == 1:
            return tree
        rep = NamedSharding(self.mesh, PartitionSpec())
        return jax.tree_util.tree_map(lambda a: jax.device_put(a, rep), tree)

    def take(self, tree: Any, c: int) -> Any:
        """Chunk ``c`` of every array in ``tree`` (samples on axis 0): ``[shards·k, ...]``, on the
        devices (host / disk arrays are copied there)."""
        lo, hi = self.bounds[c]
        if any(isinstance(a, np.ndarray) for a in jax.tree_util.tree_leaves(tree)):
            return jax.tree_util.tree_map(
                lambda a: self.place(self.take_host(a, c)) if isinstance(a, np.ndarray) else self.take(a, c), tree)
        if self.shards == 1:
            return jax.tree_util.tree_map(lambda a: a[lo:hi], tree)
        return _take(tree, self.shards, self.per_shard, lo, hi)

    def take_host(self, array: np.ndarray, c: int) -> np.ndarray:
        """``take`` for a host array in physical layout."""
        lo, hi = self.bounds[c]
        a = np.asarray(array)
        return a.reshape(self.shards, self.per_shard, *a.shape[1:])[:, lo:hi].reshape(-1, *a.shape[1:])

    def put(self, parts: Sequence[Any]) -> Any:
        """Chunks (``take``'s outputs, in order) back into one array per leaf in physical layout
        (on the devices, or with ``offload`` in host / disk memory)."""
        if self.offload is not None:
            return jax.tree_util.tree_map(lambda *xs: self._put_offloaded(xs), *parts)
        if self.shards == 1:
            return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *parts)
        return _put(tuple(parts), self.shards)


    def store(self, array: Any) -> Any:
        """A whole-set array (physical layout) where ``offload`` keeps activations."""
        if self.offload is None:
            return array
        return self._put_offloaded([self.take(array, c) for c in range(self.num_chunks)])

    def _put_offloaded(self, parts: Sequence[Any]) -> np.ndarray:
        from masq_jax.parallel.mesh import to_host

        first = parts[0]
        shape, dtype = (self.padded,) + tuple(first.shape[1:]), np.dtype(first.dtype)
        if self.offload == "disk":  # the file goes when the array does
            out = np.memmap(tempfile.TemporaryFile(prefix="masq-activations-"), dtype=dtype, mode="w+", shape=shape)
        else:
            out = np.empty(shape, dtype)
        blocks = out.reshape(self.shards, self.per_shard, *shape[1:])
        for (lo, hi), part in zip(self.bounds, parts):
            blocks[:, lo:hi] = to_host(part).reshape(self.shards, hi - lo, *shape[1:])
        return out


OFFLOADS = (None, "host", "disk")


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _take(tree, shards: int, per_shard: int, lo: int, hi: int):
    def one(a):
        return a.reshape(shards, per_shard, *a.shape[1:])[:, lo:hi].reshape(shards * (hi - lo), *a.shape[1:])

    return jax.tree_util.tree_map(one, tree)


@functools.partial(jax.jit, static_argnums=(1,))
def _put(parts, shards: int):
    def one(*xs):
        blocks = [x.reshape(shards, -1, *x.shape[1:]) for x in xs]
        joined = jnp.concatenate(blocks, axis=1)
        return joined.reshape(-1, *joined.shape[2:])

    return jax.tree_util.tree_map(one, *parts)
