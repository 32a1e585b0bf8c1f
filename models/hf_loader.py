"""Load an HF checkpoint directory (config.json + safetensors) into (DecoderConfig, params)."""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

import jax.numpy as jnp

from masq_jax.models.config import DecoderConfig, config_from_hf
from masq_jax.models.errors import CheckpointNotFoundError, ModelLoadError
from masq_jax.models.params import assemble, hf_rules, map_keys
from masq_jax.models.safetensors_io import open_checkpoint_dir


def read_config(directory: str) -> dict:
    """config.json of ``directory`` as a dict (clear errors when missing or not JSON)."""
    p = os.path.join(directory, "config.json")
    if not os.path.exists(p):
        raise CheckpointNotFoundError(f"{directory}: no config.json (expected an HF model directory or a .gguf file)")
    try:
        with open(p) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{p}: not valid JSON ({e})") from None


def load_hf_dir(directory: str, dtype: Any = jnp.float32, stream: bool = False) -> tuple[DecoderConfig, dict]:
    """(config, params) from an HF directory of one of the supported architectures; ``stream``
    leaves the decoder layers on disk (``params.StreamedLayers``)."""
    cfg = config_from_hf(read_config(directory))
    tensors = open_checkpoint_dir(directory)
    mapped, unmatched = map_keys(tensors, hf_rules())
    mapped = {p: k for p, k in mapped.items() if not (p[0] == "layers" and p[3] >= cfg.num_layers)}
    if unmatched:
        warnings.warn(f"{directory}: ignoring {len(unmatched)} unrecognised tensor(s), e.g. {unmatched[:3]}")
    has_lm_head = not cfg.tie_word_embeddings
    sources = {p: (k, tensors[k][0], tensors[k][1]) for p, k in mapped.items()}
    params = assemble(cfg, sources, dtype, has_lm_head, stream=stream, source=directory)
    return cfg, params

