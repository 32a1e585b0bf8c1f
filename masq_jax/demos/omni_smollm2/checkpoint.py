"""omni-SmolLM2's trained front-ends on disk: ``encoders.safetensors`` (float32 tensors named by their
path in the encoder tree, e.g. ``vision.blocks.0.qkv.w``; the attention head count in the metadata),
written to a temporary name and renamed."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np

from masq_jax.demos.omni_smollm2 import model as M
from masq_jax.errors import MasqError


def _key(path) -> str:
    return ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def save_encoders(path: str | os.PathLike, enc: dict) -> None:
    from safetensors.numpy import save_file

    arrays = {k: v for k, v in enc.items() if k != "heads"}
    flat = {_key(p): np.ascontiguousarray(np.asarray(v, np.float32))
            for p, v in jax.tree_util.tree_flatten_with_path(arrays)[0]}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(flat, str(tmp), metadata={"heads": str(enc["heads"]), "format": "omni-smollm2-encoders/1"})
    os.replace(tmp, path)


def load_encoders(path: str | os.PathLike, hidden: int = 576) -> dict:
    """The encoder tree of ``save_encoders`` (shapes checked against ``model.init_encoders``)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "numpy") as f:
            meta, flat = f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise MasqError(f"{path}: not an omni-SmolLM2 encoders file ({type(e).__name__}: {e})") from None
    template = M.init_encoders(jax.random.PRNGKey(0), hidden, heads=int(meta.get("heads", 4)))
    heads = template.pop("heads")

    def fill(p, leaf):
        k = _key(p)
        if k not in flat or flat[k].shape != leaf.shape:
            raise MasqError(f"{path}: tensor {k} is missing or has the wrong shape; re-export the encoders")
        return jax.numpy.asarray(flat[k])

    return {**jax.tree_util.tree_map_with_path(fill, template), "heads": heads}
