"""``toy:NAME``: random-weight decoders of real (or tiny) sizes, for benchmarks, tests and notebooks."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from masq_jax.errors import MasqError
from masq_jax.families.base import ModelFamily
from masq_jax.models.config import DecoderConfig

MROPE = {128: (16, 24, 24), 64: (8, 12, 12), 16: (2, 3, 3)}
CONFIGS = {
    # Qwen2.5-Omni-3B / 7B Thinker text decoders.
    "omni3b": dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_layers=36, num_heads=16,
                   num_kv_heads=2, head_dim=128),
    "omni7b": dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_layers=28, num_heads=28,
                   num_kv_heads=4, head_dim=128),
    # 512 wide, 2 layers: where a modality's few hundred calibration tokens under-determine its covariance.
    "wide": dict(vocab_size=256, hidden_size=512, intermediate_size=1024, num_layers=2, num_heads=8,
                 num_kv_heads=2, head_dim=64),
    "small": dict(vocab_size=1024, hidden_size=256, intermediate_size=704, num_layers=4, num_heads=4,
                  num_kv_heads=2, head_dim=64),
    "tiny": dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                 num_kv_heads=2, head_dim=16),
}


def make_config(name: str) -> DecoderConfig:
    return DecoderConfig(arch="qwen2_5_omni_thinker", rope_theta=1e6, rms_norm_eps=1e-6,
                         mrope_section=MROPE[CONFIGS[name]["head_dim"]],
                         tie_word_embeddings=False, attention_bias=True,
                         hf_config={"architectures": ["Qwen2_5OmniThinkerForConditionalGeneration"]},
                         **CONFIGS[name])


def random_params(cfg: DecoderConfig, seed: int = 0, dtype=jnp.float32) -> dict:
    """Random weights with the stacked layout of masq_jax.models (std 0.02, RMSNorm weights ~1)."""
    keys = iter(jax.random.split(jax.random.PRNGKey(seed), 32))
    L, H, I = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim

    def w(*shape):
        return (0.02 * jax.random.normal(next(keys), shape, jnp.float32)).astype(dtype)

    layers = {
        "input_norm": (1.0 + 0.1 * jax.random.normal(next(keys), (L, H))).astype(dtype),
        "post_attn_norm": (1.0 + 0.1 * jax.random.normal(next(keys), (L, H))).astype(dtype),
        "q_proj": {"w": w(L, q, H), "b": w(L, q)}, "k_proj": {"w": w(L, kv, H), "b": w(L, kv)},
        "v_proj": {"w": w(L, kv, H), "b": w(L, kv)}, "o_proj": {"w": w(L, H, q)},
        "gate_proj": {"w": w(L, I, H)}, "up_proj": {"w": w(L, I, H)}, "down_proj": {"w": w(L, H, I)},
    }
    return {"embed": w(cfg.vocab_size, H), "layers": layers, "final_norm": jnp.ones((H,), dtype),
            "lm_head": w(cfg.vocab_size, H)}


def save_checkpoint(path: str, name: str = "small", *, num_layers: int | None = None, seed: int = 0) -> int:
    """Write a random Qwen2 text checkpoint with toy config ``name``'s widths as an HF directory
    (config.json, one safetensors shard per layer, the index), a layer at a time so that writing a
    model larger than memory never holds it; returns the weight bytes written (float32)."""
    import json
    import os

    import numpy as np
    from safetensors.numpy import save_file

    c = dict(CONFIGS[name], num_layers=num_layers or CONFIGS[name]["num_layers"])
    H, I, L = c["hidden_size"], c["intermediate_size"], c["num_layers"]
    q, kv = c["num_heads"] * c["head_dim"], c["num_kv_heads"] * c["head_dim"]
    rng = np.random.default_rng(seed)
    os.makedirs(path, exist_ok=True)
    w = lambda *shape: (0.02 * rng.standard_normal(shape, np.float32)).astype(np.float32)  # noqa: E731
    shards = L + 1
    weight_map, total = {}, 0
    for i in range(shards):
        if i < L:
            pre = f"model.layers.{i}."
            tensors = {pre + "input_layernorm.weight": 1 + 0.1 * w(H) / 0.02,
                       pre + "post_attention_layernorm.weight": 1 + 0.1 * w(H) / 0.02,
                       pre + "self_attn.q_proj.weight": w(q, H), pre + "self_attn.q_proj.bias": w(q),
                       pre + "self_attn.k_proj.weight": w(kv, H), pre + "self_attn.k_proj.bias": w(kv),
                       pre + "self_attn.v_proj.weight": w(kv, H), pre + "self_attn.v_proj.bias": w(kv),
                       pre + "self_attn.o_proj.weight": w(H, q), pre + "mlp.gate_proj.weight": w(I, H),
                       pre + "mlp.up_proj.weight": w(I, H), pre + "mlp.down_proj.weight": w(H, I)}
        else:
            tensors = {"model.embed_tokens.weight": w(c["vocab_size"], H), "model.norm.weight": np.ones(H, np.float32),
                       "lm_head.weight": w(c["vocab_size"], H)}
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()}, os.path.join(path, fname))
        weight_map.update({k: fname for k in tensors})
        total += sum(v.size * 4 for v in tensors.values())
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": H,
              "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": c["num_heads"],
              "num_key_value_heads": c["num_kv_heads"], "head_dim": c["head_dim"], "vocab_size": c["vocab_size"],
              "rms_norm_eps": 1e-6, "rope_theta": 1e6, "hidden_act": "silu", "tie_word_embeddings": False,
              "max_position_embeddings": 4096, "torch_dtype": "float32"}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    return total


PREFIX = "toy:"


class Toy(ModelFamily):
    name = "toy"
    summary = "toy:NAME: a random decoder of a real or tiny size, seed 0, in memory (no tokenizer)"
    archs = ("qwen2_5_omni_thinker",)

    def recognise(self, spec):
        return isinstance(spec, str) and spec.startswith(PREFIX)

    def resolve(self, spec):
        if spec[len(PREFIX):] not in CONFIGS:
            raise MasqError(f"--model {spec}: toy models are {', '.join(PREFIX + n for n in CONFIGS)}")
        return spec

    def source(self, spec):
        return spec

    def config(self, spec):
        return make_config(spec[len(PREFIX):])

    def load(self, spec, dtype=jnp.float32, stream: bool = False):
        cfg = make_config(spec[len(PREFIX):])
        return cfg, random_params(cfg, dtype=dtype)

    def frontend(self, spec):
        raise MasqError(f"--model {spec}: random toy decoders have no tokenizer; generate from token ids in Python")
