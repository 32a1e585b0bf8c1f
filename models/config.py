"""DecoderConfig: the static, hashable description of a decoder, built from an HF config.json dict.

Handles the five checkpoint families (Omni full / Omni thinker / Qwen2.5-VL / Qwen2 / Llama) and both
transformers 5 (``rope_parameters``) and older (``rope_theta`` + ``rope_scaling``) config layouts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from masq_jax.models.errors import ConfigError, UnsupportedArchitectureError

# The one table of architecture names (the HF-directory and GGUF model families, calib's rope layout
# and multimodal front end all read it).
ARCHS = ("qwen2_5_omni_thinker", "qwen2_5_vl", "qwen2", "llama")
MULTIMODAL_ARCHS = ("qwen2_5_omni_thinker", "qwen2_5_vl")  # decoders that take vision / audio tokens

# HF `architectures[0]` (or model_type) -> our arch name.
SUPPORTED_HF_ARCHITECTURES = {
    "Qwen2_5OmniForConditionalGeneration": "qwen2_5_omni_thinker",
    "Qwen2_5OmniModel": "qwen2_5_omni_thinker",  # the name in the original Qwen2.5-Omni-7B/3B config.json
    "Qwen2_5OmniThinkerForConditionalGeneration": "qwen2_5_omni_thinker",
    "Qwen2_5_VLForConditionalGeneration": "qwen2_5_vl",
    "Qwen2ForCausalLM": "qwen2",
    "LlamaForCausalLM": "llama",
}
# HF ``model_type`` -> our arch name.
MODEL_TYPES = {
    "qwen2_5_omni": "qwen2_5_omni_thinker",
    "qwen2_5_omni_thinker": "qwen2_5_omni_thinker",
    "qwen2_5_vl": "qwen2_5_vl",
    "qwen2": "qwen2",
    "llama": "llama",
}
# model_types with a multimodal processor and encoders (calib.multimodal's front end).
MULTIMODAL_MODEL_TYPES = tuple(t for t, a in MODEL_TYPES.items() if a in MULTIMODAL_ARCHS)


def is_multimodal_name(name: str | None) -> bool:
    """Whether an arch name or HF ``model_type`` (also a text sub-config's ``*_text``) names a
    multimodal decoder (3-row multimodal RoPE positions)."""
    base = name[: -len("_text")] if isinstance(name, str) and name.endswith("_text") else name
    return base in MULTIMODAL_ARCHS or MODEL_TYPES.get(base) in MULTIMODAL_ARCHS

# Token ids copied onto DecoderConfig when the config has them (calib needs them for get_rope_index).
_TOKEN_ID_KEYS = {
    "image_token_id": ("image_token_id", "image_token_index"),
    "video_token_id": ("video_token_id", "video_token_index"),
    "audio_token_id": ("audio_token_id", "audio_token_index"),
    "vision_start_token_id": ("vision_start_token_id",),
    "vision_end_token_id": ("vision_end_token_id",),
    "audio_start_token_id": ("audio_start_token_id",),
    "audio_end_token_id": ("audio_end_token_id",),
    "bos_token_id": ("bos_token_id",),
    "eos_token_id": ("eos_token_id",),
    "pad_token_id": ("pad_token_id",),
}


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Static decoder description; hashable (``hf_config`` is excluded from hash/eq) so it can be a
    ``jax.jit`` static argument."""

    arch: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float
    rms_norm_eps: float
    mrope_section: tuple[int, ...] | None
    tie_word_embeddings: bool
    attention_bias: bool
    image_token_id: int | None = None
    video_token_id: int | None = None
    audio_token_id: int | None = None
    vision_start_token_id: int | None = None
    vision_end_token_id: int | None = None
    audio_start_token_id: int | None = None
    audio_end_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    # get_rope_index settings (Omni: position_id_per_seconds / seconds_per_chunk; VL: tokens_per_second).
    spatial_merge_size: int = 2
    position_id_per_seconds: int = 25
    seconds_per_chunk: int = 2
    tokens_per_second: int = 4
    max_position_embeddings: int | None = None  # the longest sequence the checkpoint was made for
    hf_config: dict = dataclasses.field(default_factory=dict, hash=False, compare=False, repr=False)

    @property
    def is_multimodal(self) -> bool:
        return self.arch in MULTIMODAL_ARCHS

    @property
    def uses_mrope(self) -> bool:
        return self.mrope_section is not None


def _arch_of(hf: dict) -> str:
    archs = hf.get("architectures") or []
    for a in archs:
        if a in SUPPORTED_HF_ARCHITECTURES:
            return SUPPORTED_HF_ARCHITECTURES[a]
    if not archs and hf.get("model_type") in MODEL_TYPES:
        return MODEL_TYPES[hf["model_type"]]
    got = ", ".join(archs) if archs else f"model_type={hf.get('model_type')!r}"
    raise UnsupportedArchitectureError(
        f"unsupported architecture {got}; supported: {', '.join(SUPPORTED_HF_ARCHITECTURES)} "
        "(HF directories) and llama/qwen2 GGUF files"
    )


def _first(d: dict, keys: tuple[str, ...]) -> Any:
    for k in keys:
        v = d.get(k)
        if v is not None:
            return v
    return None


def _optional_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _rope(text: dict) -> tuple[float, tuple[int, ...] | None]:
    """(rope_theta, mrope_section) from rope_parameters (transformers 5) or rope_theta/rope_scaling."""
    rp = text.get("rope_parameters") or {}
    rs = text.get("rope_scaling") or {}
    theta = rp.get("rope_theta", text.get("rope_theta", 10000.0))
    rope_type = rp.get("rope_type") or rs.get("rope_type") or rs.get("type") or "default"
    mrope = rp.get("mrope_section", rs.get("mrope_section"))
    # Old Qwen2-VL configs name the mrope variant "mrope"; it is the default rotary otherwise.
    if rope_type not in ("default", "mrope"):
        raise ConfigError(f"rope type {rope_type!r} is not supported (only the default RoPE / mrope)")
    return float(theta), (tuple(int(x) for x in mrope) if mrope else None)


def config_from_hf(hf: dict) -> DecoderConfig:
    """Build a DecoderConfig from a config.json dict of one of the supported architectures."""
    arch = _arch_of(hf)
    outer = hf
    if hf.get("thinker_config") is not None:  # full Omni model: only the thinker is ported
        outer = hf["thinker_config"]
    text = outer.get("text_config") or outer
    if arch == "qwen2_5_vl" and "text_config" in outer:
        # transformers 5 VL configs keep text fields in text_config but some at top level too.
        text = {**{k: v for k, v in outer.items() if k not in ("vision_config", "text_config")}, **outer["text_config"]}
    act = text.get("hidden_act", "silu")
    if act != "silu":
        raise ConfigError(f"hidden_act={act!r} is not supported (SwiGLU with silu only)")
    if text.get("use_sliding_window"):
        raise ConfigError("use_sliding_window=true is not supported (full causal attention only)")
    theta, mrope = _rope(text)
    if arch in MULTIMODAL_ARCHS and mrope is None:
        raise ConfigError(f"{arch} config has no mrope_section in rope_parameters/rope_scaling")
    nh = int(text["num_attention_heads"])
    hd = text.get("head_dim") or int(text["hidden_size"]) // nh
    # Tying: the ForConditionalGeneration level decides for the multimodal families.
    tie = outer.get("tie_word_embeddings", text.get("tie_word_embeddings"))
    if tie is None:
        tie = False
    if arch == "llama":
        attn_bias = bool(text.get("attention_bias", False))
        if text.get("mlp_bias"):
            raise ConfigError("mlp_bias=true is not supported")
    else:
        attn_bias = True
    ids: dict[str, Any] = {}
    for name, keys in _TOKEN_ID_KEYS.items():
        v = _first(outer, keys)
        if v is None:
            v = _first(text, keys)
        if isinstance(v, list):  # eos can be a list; keep the first
            v = v[0] if v else None
        ids[name] = None if v is None else int(v)
    vision = outer.get("vision_config") or {}
    return DecoderConfig(
        arch=arch,
        vocab_size=int(text["vocab_size"]),
        hidden_size=int(text["hidden_size"]),
        intermediate_size=int(text["intermediate_size"]),
        num_layers=int(text["num_hidden_layers"]),
        num_heads=nh,
        num_kv_heads=int(text.get("num_key_value_heads") or nh),
        head_dim=int(hd),
        rope_theta=theta,
        rms_norm_eps=float(text.get("rms_norm_eps", 1e-6)),
        mrope_section=mrope,
        tie_word_embeddings=bool(tie),
        attention_bias=attn_bias,
        spatial_merge_size=int(vision.get("spatial_merge_size", 2)),
        position_id_per_seconds=int(outer.get("position_id_per_seconds", 25)),
        seconds_per_chunk=int(outer.get("seconds_per_chunk", 2)),
        tokens_per_second=int(vision.get("tokens_per_second", 4)),
        max_position_embeddings=_optional_int(_first(text, ("max_position_embeddings",))),
        hf_config=hf,
        **ids,
    )
