"""NNX wrapper, path dispatch and the quantized-artefact hook.

``Model`` holds the stacked params as ``nnx.Param`` leaves and runs the functional core
(``decoder.forward``) under one jit keyed by the static config; ``Model.params`` gives the pure dict back.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from masq_jax.models import decoder
from masq_jax.models.config import DecoderConfig
from masq_jax.models.errors import CheckpointNotFoundError

_QUANTIZED_LOADER: Callable[..., Any] | None = None


def register_quantized_loader(fn: Callable[..., Any]) -> None:
    """Register ``fn(path, dtype) -> model`` for directories whose config.json has quantization_config."""
    global _QUANTIZED_LOADER
    _QUANTIZED_LOADER = fn


@functools.partial(jax.jit, static_argnums=0)
def _jit_forward(cfg, params, input_ids, inputs_embeds, position_ids, attention_mask):
    return decoder.forward(cfg, params, input_ids, inputs_embeds, position_ids, attention_mask)


class Model(nnx.Module):
    """The decoder as an nnx.Module: ``model(input_ids=..., inputs_embeds=..., position_ids=...,
    attention_mask=...) -> logits [B, S, V]`` (float32)."""

    def __init__(self, config: DecoderConfig, params: dict):
        self.config = config
        self.weights = nnx.data(jax.tree.map(nnx.Param, params))

    @property
    def params(self) -> dict:
        """The pure params pytree (MODEL_API.md layout)."""
        return jax.tree.map(lambda v: v[...], self.weights, is_leaf=lambda x: isinstance(x, nnx.Variable))

    def __call__(self, input_ids=None, inputs_embeds=None, position_ids=None, attention_mask=None):
        if (input_ids is None) == (inputs_embeds is None):
            raise decoder.InputError("pass exactly one of input_ids or inputs_embeds")
        if position_ids is not None:
            position_ids = jnp.asarray(position_ids)
            if position_ids.ndim not in (2, 3):
                raise decoder.InputError(f"position_ids must be [B, S] or [3, B, S], got {position_ids.shape}")
        return _jit_forward(
            self.config,
            self.params,
            None if input_ids is None else jnp.asarray(input_ids),
            None if inputs_embeds is None else jnp.asarray(inputs_embeds),
            position_ids,
            None if attention_mask is None else jnp.asarray(attention_mask),
        )


def _check_path(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointNotFoundError(f"{path}: no such file or directory (expected an HF model directory or a .gguf file)")
    return path


def load_params(path: str | os.PathLike, dtype: Any = jnp.float32) -> tuple[DecoderConfig, dict]:
    """(DecoderConfig, params) from an HF directory or a .gguf file."""
    path = _check_path(path)
    if os.path.isfile(path):
        if path.endswith(".gguf"):
            from masq_jax.models.gguf_loader import load_gguf

            return load_gguf(path, dtype)
        raise CheckpointNotFoundError(f"{path}: a file that is not .gguf; pass an HF model directory or a .gguf file")
    from masq_jax.models.hf_loader import load_hf_dir

    return load_hf_dir(path, dtype)


def load_pretrained(path: str | os.PathLike, dtype: Any = jnp.float32):
    """A callable Model from an HF directory, a .gguf file, or a quantized artefact directory
    (delegated to the loader registered with register_quantized_loader)."""
    path = _check_path(path)
    cfg_json = os.path.join(path, "config.json")
    if os.path.isdir(path) and os.path.exists(cfg_json):
        try:
            with open(cfg_json) as f:
                quantized = "quantization_config" in json.load(f)
        except json.JSONDecodeError:
            quantized = False
        if quantized:
            if _QUANTIZED_LOADER is None:
                raise CheckpointNotFoundError(
                    f"{path} is a quantized artefact but no quantized loader is registered "
                    "(import masq_jax's pipeline, which registers it)"
                )
            return _QUANTIZED_LOADER(path, dtype)
    cfg, params = load_params(path, dtype)
    return Model(cfg, params)
