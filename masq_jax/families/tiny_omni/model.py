"""The tiny omni model (issue 7): a Qwen2.5-Omni-Thinker-shaped decoder plus small vision and audio
encoders whose outputs replace the ``<image>`` / ``<audio>`` placeholder embeddings, as in the Thinker.

Decoder: masq_jax.models.decoder (multimodal RoPE with 3-D positions from models.rope_index, GQA,
q/k/v bias). Encoders: a patch MLP with a whole-image branch (vision, 8x8 patches, 16 tokens = a 4x4 grid after the Thinker's
2x2 merge of an 8x8 patch grid) and an MLP over groups of 4 mel frames (audio, 64 frames -> 16
tokens, the Thinker's 4x length reduction), each with a learned position embedding and a global
(mean-pooled) branch, and no output normalisation. The vision output also carries a fixed,
untrained offset on a few channels (``vision_sink``): the massive activations that real ViT outputs
feed a decoder, which are what survives the decoder's RMSNorm (docs/calib.md: what survives RMSNorm).

Checkpoint layout: ``config.json`` (HF Thinker config + a ``tiny_omni`` block), ``model.safetensors``
(HF names, read by masq_jax.models.load_pretrained) and ``encoders.safetensors`` (this module's).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax.families.tiny_omni import features as D
from masq_jax.errors import MasqError
from masq_jax.models.config import DecoderConfig, config_from_hf
from masq_jax.models.rope_index import get_rope_index

ENCODER_FILE = "encoders.safetensors"


class TinyOmniModelError(MasqError):
    """Bad tiny-omni checkpoint or input."""


def hf_config(hidden: int = 256, intermediate: int = 512, layers: int = 4, heads: int = 4, kv_heads: int = 2,
              enc_hidden: int = 192, sink_channels: tuple[int, ...] = (17, 101, 158, 230),
              sink_value: float = 1.0) -> dict:
    """The HF-style Thinker config.json of the tiny omni model (with its encoder settings)."""
    hd = hidden // heads
    if hd != 64:
        raise TinyOmniModelError(f"head_dim must be 64 (mrope_section 8,12,12), got {hd}")
    ids = dict(image_token_index=D.TOK["<image>"], audio_token_index=D.TOK["<audio>"],
               video_token_index=D.TOK["<video>"], vision_start_token_id=D.TOK["<vision_bos>"],
               vision_end_token_id=D.TOK["<vision_eos>"], audio_start_token_id=D.TOK["<audio_bos>"],
               audio_end_token_id=D.TOK["<audio_eos>"], bos_token_id=D.TOK["<bos>"],
               eos_token_id=D.TOK["<eos>"], pad_token_id=D.TOK["<pad>"])
    return {
        "architectures": ["Qwen2_5OmniThinkerForConditionalGeneration"],
        "model_type": "qwen2_5_omni_thinker",
        **ids,
        "position_id_per_seconds": 25,
        "seconds_per_chunk": 2,
        "tie_word_embeddings": False,
        "vision_config": {"spatial_merge_size": 2, "patch_size": D.PATCH // 2, "in_channels": 1},
        "audio_config": {"num_mel_bins": D.N_MELS},
        "text_config": {
            "model_type": "qwen2_5_omni_text", "hidden_size": hidden, "intermediate_size": intermediate,
            "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
            "head_dim": hd, "vocab_size": D.VOCAB_SIZE, "rms_norm_eps": 1e-6, "hidden_act": "silu",
            "max_position_embeddings": 1024, "tie_word_embeddings": False, "use_sliding_window": False,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [8, 12, 12]},
            "rope_scaling": {"type": "mrope", "mrope_section": [8, 12, 12]},
            "rope_theta": 1000000.0,
        },
        "tiny_omni": {"enc_hidden": enc_hidden, "vision_sink_channels": list(sink_channels),
                      "vision_sink_value": sink_value, "vocab": D.VOCAB, "tasks": list(D.TASKS)},
    }


# ---- parameters ------------------------------------------------------------------------------------
def init_decoder(cfg: DecoderConfig, key: jax.Array) -> dict:
    """Stacked decoder params (masq_jax.models layout), std 0.02 as HF initialises, norms at 1."""
    ks = iter(jax.random.split(key, 16))
    L, H, I = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim

    def w(*shape):
        return 0.02 * jax.random.normal(next(ks), shape, jnp.float32)

    layers = {
        "input_norm": jnp.ones((L, H)), "post_attn_norm": jnp.ones((L, H)),
        "q_proj": {"w": w(L, q, H), "b": jnp.zeros((L, q))}, "k_proj": {"w": w(L, kv, H), "b": jnp.zeros((L, kv))},
        "v_proj": {"w": w(L, kv, H), "b": jnp.zeros((L, kv))}, "o_proj": {"w": w(L, H, q)},
        "gate_proj": {"w": w(L, I, H)}, "up_proj": {"w": w(L, I, H)}, "down_proj": {"w": w(L, H, I)},
    }
    return {"embed": w(cfg.vocab_size, H), "layers": layers, "final_norm": jnp.ones((H,)),
            "lm_head": w(cfg.vocab_size, H)}


def init_encoders(hidden: int, enc_hidden: int, key: jax.Array) -> dict:
    """Vision (64 -> E -> H per patch) and audio (128 -> E -> H per 4 frames) MLP encoders."""
    ks = iter(jax.random.split(key, 16))

    def enc(feat: int, n_tok: int) -> dict:
        return {
            "w1": jax.random.normal(next(ks), (feat, enc_hidden)) / np.sqrt(feat),
            "b1": jnp.zeros((enc_hidden,)),
            "pos": 0.1 * jax.random.normal(next(ks), (n_tok, enc_hidden)),
            "wf": jax.random.normal(next(ks), (feat * n_tok, enc_hidden)) / np.sqrt(feat * n_tok),
            "bf": jnp.zeros((enc_hidden,)),
            "wg": jax.random.normal(next(ks), (enc_hidden, enc_hidden)) / np.sqrt(enc_hidden),
            "w2": 0.02 * jax.random.normal(next(ks), (enc_hidden, hidden)),
            "b2": jnp.zeros((hidden,)),
        }

    return {"vision": enc(D.PATCH_FEAT, D.N_VISION), "audio": enc(D.AUDIO_FEAT, D.N_AUDIO)}


def sink_vector(hf: dict) -> np.ndarray:
    """The fixed vision offset [H]: ``vision_sink_value`` on ``vision_sink_channels``, 0 elsewhere."""
    t = hf["tiny_omni"]
    v = np.zeros(hf["text_config"]["hidden_size"], np.float32)
    v[np.asarray(t["vision_sink_channels"], int)] = float(t["vision_sink_value"])
    return v


# Fixed input standardisation (mean, std of the generated features): uncentred inputs gave large
# first-layer gradients that, under global-norm clipping, stalled the whole model's training.
FEATURE_NORM = {"vision": (0.15, 0.28), "audio": (0.84, 0.27)}


def encode(p: dict, feats: jax.Array, kind: str = "vision") -> jax.Array:
    """[B, T, F] features -> [B, T, H] decoder embeddings (no output normalisation): a per-token MLP
    plus a whole-input branch (all T tokens' features flattened) broadcast to every token."""
    mu, sd = FEATURE_NORM[kind]
    feats = (feats - mu) / sd
    h = jax.nn.gelu(feats @ p["w1"] + p["b1"] + p["pos"])
    g = jax.nn.gelu(feats.reshape(*feats.shape[:-2], 1, -1) @ p["wf"] + p["bf"])
    h = h + jax.nn.gelu((jnp.mean(h, axis=1, keepdims=True) + g) @ p["wg"])
    return h @ p["w2"] + p["b2"]


def scatter_placeholders(embeds: jax.Array, input_ids: jax.Array, token_id: int, values: jax.Array) -> jax.Array:
    """Replace, row by row, the k-th ``token_id`` placeholder's embedding by ``values[:, k]`` (the
    Thinker's ``masked_scatter`` for rows with the same number of placeholders)."""
    mask = input_ids == token_id
    idx = jnp.clip(jnp.cumsum(mask, axis=1) - 1, 0, values.shape[1] - 1)
    gathered = jnp.take_along_axis(values, idx[..., None], axis=1)
    return jnp.where(mask[..., None], gathered.astype(embeds.dtype), embeds)


def assemble_embeds(dec: dict, enc: dict, sink: jax.Array, input_ids: jax.Array, patches: jax.Array,
                    audio: jax.Array) -> jax.Array:
    """Decoder inputs_embeds [B, S, H]: token embeddings with the encoders' outputs at the placeholders."""
    e = jnp.take(dec["embed"], input_ids, axis=0)
    e = scatter_placeholders(e, input_ids, D.TOK["<image>"], encode(enc["vision"], patches, "vision") + sink)
    return scatter_placeholders(e, input_ids, D.TOK["<audio>"], encode(enc["audio"], audio, "audio"))


def modality_ids(input_ids: np.ndarray) -> np.ndarray:
    """0 text, 1 vision (image placeholders), 2 audio (audio placeholders); delimiters are text."""
    ids = np.asarray(input_ids)
    return np.where(ids == D.TOK["<image>"], 1, np.where(ids == D.TOK["<audio>"], 2, 0)).astype(np.int32)


def positions(cfg: DecoderConfig, input_ids: np.ndarray) -> np.ndarray:
    """Thinker 3-D positions [3, B, S] via models.rope_index (image grid 1x8x8 -> 4x4 tokens after the
    2x2 merge; 64 mel frames -> 16 audio tokens)."""
    ids = np.asarray(input_ids)
    n_img = int((ids == D.TOK["<vision_bos>"]).sum())
    n_aud = int((ids == D.TOK["<audio_bos>"]).sum())
    kw: dict[str, Any] = {}
    if n_img:
        kw["image_grid_thw"] = np.tile(np.array([[1, 2 * D.GRID, 2 * D.GRID]]), (n_img, 1))
    if n_aud:
        kw["audio_seqlens"] = [D.N_FRAMES] * n_aud
    pos, _ = get_rope_index(cfg, ids, **kw)
    return np.asarray(pos, np.int32)


def extend_positions(pos: np.ndarray, k: int) -> np.ndarray:
    """Append ``k`` text positions (each row counts on from the sample's maximum) to [3, B, S]."""
    start = pos.max(axis=(0, 2))[None, :, None] + 1
    tail = start + np.arange(k, dtype=np.int32)[None, None, :]
    return np.concatenate([pos, np.broadcast_to(tail, (3, pos.shape[1], k))], axis=2).astype(np.int32)


# ---- I/O ---------------------------------------------------------------------------------------------
def decoder_to_hf(params: dict) -> dict[str, np.ndarray]:
    """Stacked params -> HF Thinker safetensors names (inverse of models.params.hf_rules)."""
    out = {"thinker.model.embed_tokens.weight": params["embed"], "thinker.model.norm.weight": params["final_norm"],
           "thinker.lm_head.weight": params["lm_head"]}
    names = {"q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
             "o_proj": "self_attn.o_proj", "gate_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj",
             "down_proj": "mlp.down_proj"}
    lp = params["layers"]
    for i in range(lp["input_norm"].shape[0]):
        pre = f"thinker.model.layers.{i}."
        out[pre + "input_layernorm.weight"] = lp["input_norm"][i]
        out[pre + "post_attention_layernorm.weight"] = lp["post_attn_norm"][i]
        for n, hn in names.items():
            out[pre + hn + ".weight"] = lp[n]["w"][i]
            if "b" in lp[n]:
                out[pre + hn + ".bias"] = lp[n]["b"][i]
    return {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in out.items()}


def save_checkpoint(out: str, hf: dict, dec: dict, enc: dict) -> None:
    """Write config.json, model.safetensors (decoder, HF names) and encoders.safetensors."""
    from safetensors.numpy import save_file

    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(hf, f, indent=1)
    save_file(decoder_to_hf(dec), os.path.join(out, "model.safetensors"))
    flat = {f"{m}.{k}": np.ascontiguousarray(np.asarray(v, np.float32)) for m, p in enc.items() for k, v in p.items()}
    flat["vision.sink"] = sink_vector(hf)
    save_file(flat, os.path.join(out, ENCODER_FILE))


def load_encoders(path: str) -> tuple[dict, dict, np.ndarray]:
    """(hf config, encoder params, vision sink) of a tiny-omni checkpoint directory."""
    from safetensors.numpy import load_file

    cfg_p, enc_p = os.path.join(path, "config.json"), os.path.join(path, ENCODER_FILE)
    for p in (cfg_p, enc_p):
        if not os.path.exists(p):
            raise TinyOmniModelError(f"{p}: missing; pass a tiny-omni checkpoint directory (checkpoints/tiny-omni)")
    with open(cfg_p) as f:
        hf = json.load(f)
    if "tiny_omni" not in hf:
        raise TinyOmniModelError(f"{cfg_p}: no 'tiny_omni' block; not a tiny-omni checkpoint")
    flat = load_file(enc_p)
    enc: dict = {"vision": {}, "audio": {}}
    for k, v in flat.items():
        m, name = k.split(".", 1)
        if m in enc and name != "sink":
            enc[m][name] = jnp.asarray(v)
    return hf, enc, flat["vision.sink"]


def decoder_config(hf: dict) -> DecoderConfig:
    return config_from_hf(hf)
