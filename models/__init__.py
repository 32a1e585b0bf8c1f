"""Flax ports of the Qwen2.5-Omni Thinker / Qwen2.5-VL / Qwen2 / Llama decoders and their loaders.

Public API (see MODEL_API.md): DecoderConfig, the functional core (embed, rope, attention_bias,
layer_forward, layers_forward, head, forward, dense_linear, LINEAR_NAMES), load_params,
load_pretrained, Model, register_quantized_loader, get_rope_index helpers, error classes.
"""

from masq_jax.models.config import ARCHS, SUPPORTED_HF_ARCHITECTURES, DecoderConfig, config_from_hf
from masq_jax.models.decoder import (
    INPUT_OF,
    LINEAR_NAMES,
    attention_bias,
    default_positions,
    dense_linear,
    embed,
    forward,
    head,
    layer_forward,
    layers_forward,
    rms_norm,
    rope,
)
from masq_jax.models.errors import (
    CheckpointNotFoundError,
    ConfigError,
    InputError,
    MissingTensorsError,
    ModelLoadError,
    ShapeMismatchError,
    UnsupportedArchitectureError,
)
from masq_jax.models.model import Model, load_params, load_pretrained, register_quantized_loader
from masq_jax.models.rope_index import get_rope_index, omni_rope_index, vl_rope_index

__all__ = [
    "ARCHS", "SUPPORTED_HF_ARCHITECTURES", "DecoderConfig", "config_from_hf",
    "INPUT_OF", "LINEAR_NAMES", "attention_bias", "default_positions", "dense_linear", "embed", "forward",
    "head", "layer_forward", "layers_forward", "rms_norm", "rope",
    "CheckpointNotFoundError", "ConfigError", "InputError", "MissingTensorsError", "ModelLoadError",
    "ShapeMismatchError", "UnsupportedArchitectureError",
    "Model", "load_params", "load_pretrained", "register_quantized_loader",
    "get_rope_index", "omni_rope_index", "vl_rope_index",
]
