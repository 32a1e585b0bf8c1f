"""The NNX wrapper and path dispatch for full-precision checkpoints.

``Model`` holds the stacked params as ``nnx.Param`` leaves and runs the functional core
(``decoder.forward``) under one jit keyed by the static config. Its ``linears`` (a hashable factory
of ``layer_forward`` linear hooks, static under jit) decides how the seven decoder linears run:
``None`` is the dense full-precision path; ``masq_jax.artifact.QuantizedModel`` is this class with
the quantized linears, so both share one call signature. This module knows nothing of quantization.
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
from masq_jax.models.errors import CheckpointNotFoundError, InputError, ModelLoadError

LinearFactory = Callable[[Any], decoder.LinearFn]  # modality_ids [B, S] | None -> linear hook


@functools.partial(jax.jit, static_argnums=(0, 7))
def _jit_forward(cfg, params, input_ids, inputs_embeds, position_ids, attention_mask, modality_ids, linears):
    linear = decoder.dense_linear if linears is None else linears(modality_ids)
    return decoder.forward(cfg, params, input_ids, inputs_embeds, position_ids, attention_mask, linear=linear)


def _as_array(value, dtype=None):
    return None if value is None else jnp.asarray(value, dtype)


class Model(nnx.Module):
    """The decoder as an nnx.Module: ``model(input_ids=..., inputs_embeds=..., position_ids=...,
    attention_mask=..., modality_ids=...) -> logits [B, S, V]`` (float32).

    ``modality_ids`` [B, S] (0 text, 1 vision, 2 audio) route tokens through per-modality linears
    where the linears have them (a quantized artefact); the full-precision model checks and ignores
    them. Omitted, every token is text.
    """

    def __init__(self, config: DecoderConfig, params: dict, linears: LinearFactory | None = None):
        self.config = config
        self.linears = linears
        self.weights = nnx.data(jax.tree.map(nnx.Param, params))

    @property
    def params(self) -> dict:
        """The pure params pytree (docs/models.md layout)."""
        return jax.tree.map(lambda v: v[...], self.weights, is_leaf=lambda x: isinstance(x, nnx.Variable))

    def __call__(self, input_ids=None, inputs_embeds=None, position_ids=None, attention_mask=None,
                 modality_ids=None):
        if (input_ids is None) == (inputs_embeds is None):
            raise InputError("pass exactly one of input_ids or inputs_embeds")
        tokens = (input_ids if inputs_embeds is None else inputs_embeds)
        lead = tuple(jnp.shape(tokens)[:2])
        position_ids = _as_array(position_ids)
        if position_ids is not None and position_ids.ndim not in (2, 3):
            raise InputError(f"position_ids must be [B, S] or [3, B, S], got {position_ids.shape}")
        modality_ids = _as_array(modality_ids, jnp.int32)
        if modality_ids is not None and tuple(modality_ids.shape) != lead:
            raise InputError(f"modality_ids must be [B, S]={lead}, got {tuple(modality_ids.shape)}")
        if self.linears is None:
            modality_ids = None  # the dense linears do not route: one compiled program either way
        return _jit_forward(self.config, self.params, _as_array(input_ids), _as_array(inputs_embeds), position_ids,
                            _as_array(attention_mask), modality_ids, self.linears)

    def generate(self, input_ids=None, **kwargs):
        """New tokens ``[B, max_new_tokens]`` with a KV cache (``masq_jax.models.generate.generate``)."""
        from masq_jax.models.generate import generate

        return generate(self, input_ids, **kwargs)


def _check_path(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointNotFoundError(f"{path}: no such file or directory (expected an HF model directory or a .gguf file)")
    return path


def load_params(path: str | os.PathLike, dtype: Any = jnp.float32, stream: bool = False) -> tuple[DecoderConfig, dict]:
    """(DecoderConfig, params) from an HF directory or a .gguf file; ``stream``: the decoder layers
    stay on disk and are read one at a time (``params["layers"]`` is a ``StreamedLayers``)."""
    path = _check_path(path)
    if os.path.isfile(path):
        if path.endswith(".gguf"):
            from masq_jax.models.gguf_loader import load_gguf

            return load_gguf(path, dtype, stream)
        raise CheckpointNotFoundError(f"{path}: a file that is not .gguf; pass an HF model directory or a .gguf file")
    _refuse_quantized(path)
    from masq_jax.models.hf_loader import load_hf_dir

    return load_hf_dir(path, dtype, stream)


def _refuse_quantized(directory: str) -> None:
    """This port loads full-precision weights: a config.json with ``quantization_config`` is refused."""
    cfg_json = os.path.join(directory, "config.json")
    try:
        with open(cfg_json) as f:
            qc = json.load(f).get("quantization_config")
    except (OSError, ValueError, AttributeError):
        return  # a missing or broken config.json is reported by the loader itself
    if qc is not None:
        method = qc.get("quant_method") if isinstance(qc, dict) else None
        raise ModelLoadError(f"{directory} holds a quantized checkpoint (quant_method={method!r}); this loader reads "
                             "full-precision weights: load a masq-jax artefact with masq_jax.load(path)")


def load_pretrained(path: str | os.PathLike, dtype: Any = jnp.float32) -> Model:
    """A callable full-precision ``Model`` from an HF directory or a .gguf file."""
    cfg, params = load_params(path, dtype)
    return Model(cfg, params)
