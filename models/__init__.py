"""Flax ports of the Qwen2.5-Omni Thinker / Qwen2.5-VL / Qwen2 / Llama decoders and their loaders.

Public API (docs/models.md): DecoderConfig, the functional core (embed, rope, attention_bias,
layer_forward, layers_forward, head, forward, dense_linear, LINEAR_NAMES, INPUT_OF, INPUT_GROUPS,
input_dims, output_dims, linear_shapes), load_params, load_pretrained, Model, get_rope_index helpers,
error classes. Full-precision checkpoints only: ``masq_jax.load`` adds the quantized artefacts.
"""

from masq_jax.models.config import ARCHS, SUPPORTED_HF_ARCHITECTURES, DecoderConfig, config_from_hf
from masq_jax.models.decoder import (
    INPUT_GROUPS,
    INPUT_OF,
    LINEAR_NAMES,
    attention_bias,
    default_positions,
    dense_linear,
    embed,
    forward,
    head,
    input_dims,
    layer_forward,
    layers_forward,
    linear_shapes,
    output_dims,
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
from masq_jax.models.generate import generate
from masq_jax.models.model import LinearFactory, Model, load_params, load_pretrained
from masq_jax.models.params import StreamedLayers, layer_params
from masq_jax.models.rope_index import get_rope_index, omni_rope_index, vl_rope_index

__all__ = [
    "ARCHS", "SUPPORTED_HF_ARCHITECTURES", "DecoderConfig", "config_from_hf",
    "INPUT_GROUPS", "INPUT_OF", "LINEAR_NAMES", "attention_bias", "default_positions", "dense_linear", "embed",
    "forward", "head", "input_dims", "layer_forward", "layers_forward", "linear_shapes", "output_dims",
    "rms_norm", "rope",
    "CheckpointNotFoundError", "ConfigError", "InputError", "MissingTensorsError", "ModelLoadError",
    "ShapeMismatchError", "UnsupportedArchitectureError",
    "LinearFactory", "Model", "generate", "load_params", "load_pretrained", "StreamedLayers", "layer_params",
    "get_rope_index", "omni_rope_index", "vl_rope_index",
]
