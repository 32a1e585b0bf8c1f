"""Load a llama/qwen2-architecture GGUF file: dequantize with the `gguf` package (NumPy, no torch)
and undo llama.cpp's q/k row permutation for llama (as transformers' GGUF loader does). A GGUF whose
tensors are already quantized (Q4_0, Q5_0, Q8_0, K-quants...) loads, with one ``MasqWarning``
naming its tensor types: its "full-precision" weights carry that rounding before masq's."""

from __future__ import annotations

import collections
import re
import warnings
from typing import Any

import jax.numpy as jnp
import numpy as np

from masq_jax.errors import MasqWarning
from masq_jax.models.config import DecoderConfig, config_from_hf
from masq_jax.models.errors import ModelLoadError, UnsupportedArchitectureError
from masq_jax.models.params import assemble, map_keys

GGUF_ARCHITECTURES = ("llama", "qwen2")
FLOAT_TYPES = ("F32", "F16", "BF16", "F64")  # tensor types that are not a quantization
_WARNED: set[str] = set()  # GGUF paths already warned about in this process (one line each)

_LAYER = {
    "attn_q.weight": ("q_proj", "w"), "attn_q.bias": ("q_proj", "b"),
    "attn_k.weight": ("k_proj", "w"), "attn_k.bias": ("k_proj", "b"),
    "attn_v.weight": ("v_proj", "w"), "attn_v.bias": ("v_proj", "b"),
    "attn_output.weight": ("o_proj", "w"), "ffn_gate.weight": ("gate_proj", "w"),
    "ffn_up.weight": ("up_proj", "w"), "ffn_down.weight": ("down_proj", "w"),
    "attn_norm.weight": ("input_norm", None), "ffn_norm.weight": ("post_attn_norm", None),
}


def _rules():
    rules = [
        (re.compile(r"blk\.(\d+)\." + re.escape(s)), lambda m, n=n, lf=lf: ("layers", n, lf, int(m.group(1))))
        for s, (n, lf) in _LAYER.items()
    ]
    rules += [
        (re.compile(r"token_embd\.weight"), lambda m: ("embed",)),
        (re.compile(r"output_norm\.weight"), lambda m: ("final_norm",)),
        (re.compile(r"output\.weight"), lambda m: ("lm_head",)),
        (re.compile(r"rope_freqs\.weight"), lambda m: None),
    ]
    return rules


def reverse_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's convert permutation of q/k rows (per head: interleaved -> half-split)."""
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def _field(reader, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def gguf_hf_config(reader) -> dict:
    """A config.json-like dict (LlamaForCausalLM / Qwen2ForCausalLM) from the GGUF header."""
    arch = _field(reader, "general.architecture")
    if arch not in GGUF_ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"GGUF architecture {arch!r} is not supported; supported GGUF architectures: {', '.join(GGUF_ARCHITECTURES)}"
        )
    names = {t.name for t in reader.tensors}
    emb = next(t for t in reader.tensors if t.name == "token_embd.weight")
    nh = int(_field(reader, f"{arch}.attention.head_count"))
    hidden = int(_field(reader, f"{arch}.embedding_length"))
    hd = _field(reader, f"{arch}.rope.dimension_count") or hidden // nh
    if _field(reader, f"{arch}.rope.scaling.type") not in (None, "none"):
        raise ModelLoadError("GGUF rope scaling is not supported")
    return {
        "architectures": ["LlamaForCausalLM" if arch == "llama" else "Qwen2ForCausalLM"],
        "model_type": arch,
        "vocab_size": int(_field(reader, f"{arch}.vocab_size") or emb.shape[1]),
        "hidden_size": hidden,
        "intermediate_size": int(_field(reader, f"{arch}.feed_forward_length")),
        "num_hidden_layers": int(_field(reader, f"{arch}.block_count")),
        "num_attention_heads": nh,
        "num_key_value_heads": int(_field(reader, f"{arch}.attention.head_count_kv", nh)),
        "head_dim": int(hd),
        "rope_theta": float(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
        "rms_norm_eps": float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
        "max_position_embeddings": int(_field(reader, f"{arch}.context_length", 2048)),
        "tie_word_embeddings": "output.weight" not in names,
        "attention_bias": "blk.0.attn_q.bias" in names,
        "hidden_act": "silu",
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
    }


def quantized_types(reader) -> dict[str, int]:
    """The quantized tensor types of a GGUF and how many tensors have each (most first); {} when
    every tensor is F32 / F16 / BF16."""
    counts = collections.Counter(t.tensor_type.name for t in reader.tensors)
    return {k: n for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if k not in FLOAT_TYPES}


def warn_if_quantized(path: str, reader) -> None:
    """One ``MasqWarning`` (once per path and process) when the GGUF's weights are already quantized."""
    types = quantized_types(reader)
    if types and path not in _WARNED:
        _WARNED.add(path)
        listed = ", ".join(f"{k} x{n}" for k, n in types.items())
        warnings.warn(f"source GGUF {path} is already quantized ({listed}): its weights carry one rounding before "
                      "masq's", MasqWarning, stacklevel=3)


def load_gguf(path: str, dtype: Any = jnp.float32, stream: bool = False) -> tuple[DecoderConfig, dict]:
    """(config, params) from a .gguf file, weights dequantized to float32 then cast to ``dtype``;
    ``stream`` dequantizes a layer only when it is asked for (``params.StreamedLayers``)."""
    import gguf  # local: only GGUF users pay the import

    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError) as e:
        raise ModelLoadError(f"{path}: not a readable GGUF file ({e})") from None
    hf = gguf_hf_config(reader)
    warn_if_quantized(path, reader)
    cfg = config_from_hf(hf)
    tensors = {t.name: t for t in reader.tensors}
    mapped, _ = map_keys(tensors, _rules())
    permute = hf["model_type"] == "llama"

    def loader(t, p):
        def load():
            w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
            w = w.reshape(tuple(int(x) for x in reversed(t.shape)))
            if permute and p[0] == "layers" and p[1] in ("q_proj", "k_proj"):
                w = reverse_permute(w, cfg.num_heads if p[1] == "q_proj" else cfg.num_kv_heads)
            return w

        return load

    sources = {
        p: (k, loader(tensors[k], p), tuple(int(x) for x in reversed(tensors[k].shape))) for p, k in mapped.items()
    }
    params = assemble(cfg, sources, dtype, not cfg.tie_word_embeddings, stream=stream, source=path)
    return cfg, params
