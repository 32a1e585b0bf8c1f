"""Helpers for the export tests: tiny HF sources, artefacts, and the transformers + compressed-tensors
side of the parity check (the implementation the project did not write)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Hidden 128 so that W4A16 can use group 128; MHA (heads == KV heads) so that o_proj's vectors fold.
TEXT = dict(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, rms_norm_eps=1e-6)
PRESETS = {"w8a8": dict(wbits=8, abits=8, group_size=0),
           "w4a16": dict(wbits=4, abits=16, group_size=128, w_symmetric=False),
           "w4a8": dict(wbits=4, abits=8, group_size=0)}


def build_source(kind: str, path: str, **text) -> str:
    """A tiny random ``qwen2`` or ``omni_thinker`` checkpoint (transformers' save_pretrained)."""
    import torch
    import transformers as tf

    from tests.models.tiny import AUDIO, MM_IDS, VISION, _randomize

    torch.manual_seed(0)
    t = {**TEXT, **text}
    if kind == "qwen2":
        m = tf.Qwen2ForCausalLM(tf.Qwen2Config(**t, rope_theta=10000.0, tie_word_embeddings=False))
    else:
        d = t["hidden_size"] // t["num_attention_heads"]
        mrope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [d // 8, 3 * d // 16, 3 * d // 16]}
        cfg = tf.Qwen2_5OmniThinkerConfig(
            text_config={**t, "rope_parameters": mrope}, audio_config={**AUDIO, "output_dim": t["hidden_size"]},
            vision_config={**VISION, "out_hidden_size": t["hidden_size"]},
            image_token_index=MM_IDS["image_token_id"], video_token_index=MM_IDS["video_token_id"],
            audio_token_index=MM_IDS["audio_token_id"], audio_start_token_id=MM_IDS["audio_start_token_id"],
            audio_end_token_id=MM_IDS["audio_end_token_id"])
        cfg.vision_start_token_id = MM_IDS["vision_start_token_id"]
        cfg.vision_end_token_id = MM_IDS["vision_end_token_id"]
        m = tf.Qwen2_5OmniThinkerForConditionalGeneration(cfg)
    _randomize(m)
    with torch.no_grad():  # sharper logits than the HF init, so greedy decoding has clear winners
        m.get_output_embeddings().weight.mul_(4.0)
    m.save_pretrained(path)
    return path


def quantize(src: str, out: str, method: str, preset: str, **options) -> str:
    import masq_jax

    # float32 storage: the exact-token checks were set on these values (bf16-rounded embeddings move a
    # near-tie of the int8 end-to-end path; the export writes whatever the artefact stores)
    masq_jax.quantize(src, out, method=method, calib="synthetic", samples=4, eval_samples=2, progress=False,
                      epochs=1, **{"store_dtype": "float32", **PRESETS[preset], **options})
    return out


def masq_model(artefact: str, activations: bool = True):
    """The artefact as masq-jax runs it; ``activations=False``: its linears with unquantized inputs
    (what the dequantized checkpoint computes, for the weights-and-fold check)."""
    import masq_jax
    from masq_jax.artifact import QuantizedModel
    from masq_jax.core.qlinear import QLinear

    q = masq_jax.load(artefact, merge=False)
    if activations:
        return q
    layers = {k: dataclasses.replace(v, abits=16) if isinstance(v, QLinear) else v
              for k, v in q.params["layers"].items()}
    return QuantizedModel(q.config, {**q.params, "layers": layers}, q.quantization_config)


def hf_model(path: str, dequantize: bool):
    """The exported directory loaded by transformers + compressed-tensors on the CPU. ``dequantize``:
    weights dequantized at load (a dense model); otherwise compressed-tensors' quantized modules
    (weights decompressed, activations quantized per token at run time as the config says)."""
    import torch
    import transformers as tf

    arch = json.loads(open(os.path.join(path, "config.json")).read())["architectures"][0]
    kw = {"quantization_config": tf.CompressedTensorsConfig(dequantize=True)} if dequantize else {}
    return getattr(tf, arch).from_pretrained(path, dtype=torch.float32, **kw).eval()


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum((ref - got) ** 2), 1e-300)))


@contextlib.contextmanager
def vllm_int8_divisor():
    """compressed-tensors' dynamic per-token int8 scale with vLLM's divisor: ``absmax / 127``
    (vLLM ``csrc/quantization/compressed_tensors/int8_quant_kernels.cu``, ``dynamic_scaled_int8_quant``)
    instead of compressed-tensors' CPU emulation's ``absmax / 127.5``; rounding and clamping stay
    compressed-tensors' own. masq-jax's default bound ("qmax") is that grid."""
    import torch
    from compressed_tensors.quantization.lifecycle import forward

    original = forward.compute_dynamic_scales_and_zp

    def per_token(value, args, module, global_scale=None):
        if args.strategy != "token" or not args.symmetric or args.num_bits != 8:
            return original(value, args, module, global_scale)
        scale = value.abs().amax(dim=-1, keepdim=True) / 127.0
        scale = torch.where(scale == 0, torch.finfo(scale.dtype).eps, scale)
        return scale, torch.zeros_like(scale)

    forward.compute_dynamic_scales_and_zp = per_token
    try:
        yield
    finally:
        forward.compute_dynamic_scales_and_zp = original


def compare(artefact: str, exported: str, ids: np.ndarray, *, dequantize: bool, new_tokens: int = 16) -> dict:
    """Logit SQNR (dB) of the exported model against the artefact on ``ids`` [1, S], and both greedy
    continuations of ``new_tokens`` tokens. ``dequantize`` compares weights and fold alone (masq-jax
    with unquantized activations); otherwise both sides quantize activations their own way."""
    import torch

    from masq_jax.models.generate import generate

    mq = masq_model(artefact, activations=not dequantize)
    hm = hf_model(exported, dequantize)
    ref = np.asarray(mq(input_ids=ids), np.float64)
    with torch.no_grad():
        got = hm(input_ids=torch.tensor(ids)).logits.double().numpy()
        hf_tokens = hm.generate(torch.tensor(ids), attention_mask=torch.ones(ids.shape, dtype=torch.long),
                                max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                do_sample=False, pad_token_id=0)[0, ids.shape[1]:].numpy()
    jx_tokens = np.asarray(generate(mq, ids, max_new_tokens=new_tokens, eos_token_id=None))[0]
    return {"sqnr": sqnr_db(ref, got), "argmax": float((ref.argmax(-1) == got.argmax(-1)).mean()),
            "hf_tokens": hf_tokens.tolist(), "masq_tokens": jx_tokens.tolist()}


def linear_parity(artefact: str, exported: str, ids: np.ndarray) -> dict[str, float]:
    """Per decoder linear: SQNR (dB) of masq-jax's quantized linear (``kernels.qmatmul``, XLA) against
    compressed-tensors' module on the very inputs that module saw in a forward of ``ids``, with vLLM's
    per-token divisor (``vllm_int8_divisor``). Isolates the activation quantizer, weights and scales
    from the rounding flips that amplify through a W8A8 network."""
    import jax
    import jax.numpy as jnp
    import torch

    from masq_jax.kernels import qmatmul
    from masq_jax.models import LINEAR_NAMES

    mq = masq_model(artefact)
    seen: dict[tuple[int, str], tuple] = {}
    with vllm_int8_divisor():
        hm = hf_model(exported, dequantize=False)
        handles = []
        for name, mod in hm.named_modules():
            parts = name.split(".")
            if parts[-1] in LINEAR_NAMES and "layers" in parts:
                key = (int(parts[parts.index("layers") + 1]), parts[-1])
                handles.append(mod.register_forward_hook(
                    lambda m, i, o, key=key: seen.__setitem__(key, (i[0].numpy(), o.numpy()))))
        with torch.no_grad():
            hm(input_ids=torch.tensor(ids))
    out = {}
    for (layer, name), (x, y) in sorted(seen.items()):
        ql = jax.tree_util.tree_map(lambda a, i=layer: a[i], mq.params["layers"][name])
        ours = np.asarray(qmatmul(jnp.asarray(x), None, ql, implementation="xla"))
        out[f"{layer}.{name}"] = sqnr_db(ours, y)
    return out


def self_noise_sqnr(artefact: str, ids: np.ndarray, rel: float = 1e-7, seed: int = 0) -> float:
    """Logit SQNR (dB) of the artefact against itself when its input embeddings move by ``rel``
    (relative, float32 rounding size): how far float-rounding differences alone carry a W8A8 model."""
    mq = masq_model(artefact)
    e = np.asarray(mq.params["embed"])[ids]
    noisy = (e * (1 + rel * np.random.default_rng(seed).standard_normal(e.shape))).astype(e.dtype)
    return sqnr_db(np.asarray(mq(inputs_embeds=e)), np.asarray(mq(inputs_embeds=noisy)))
