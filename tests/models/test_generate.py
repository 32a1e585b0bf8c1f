"""Generation with the KV cache against transformers' own ``generate(do_sample=False)``: tiny random
Llama and Qwen2 (a batch with a left-padded row); sampling settings; bad input. (SmolLM2-135M's real
weights: tests/models/test_gguf.py; multimodal: test_generate_multimodal.py.)"""

from __future__ import annotations

import numpy as np
import pytest

import masq_jax.models as mm


def _hf_generate(tm, ids, mask, n, eos, pad):
    import torch

    with torch.no_grad():
        out = tm.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=n, do_sample=False,
                          eos_token_id=eos, pad_token_id=pad)
    return out[:, ids.shape[1]:].numpy()


def _padded_to(ref: np.ndarray, n: int, pad: int) -> np.ndarray:
    """transformers stops once every row ended; our output always has n columns (pad after EOS)."""
    return np.pad(ref, ((0, 0), (0, n - ref.shape[1])), constant_values=pad)


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_greedy_equals_transformers_with_a_left_padded_row(tiny_models, kind):
    path, tm = tiny_models(kind)
    model = mm.load_pretrained(path)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 120, (2, 9))
    mask = np.ones((2, 9), np.int64)
    mask[1, :3] = 0
    ids[1, :3] = 0
    ours = model.generate(ids, attention_mask=mask, max_new_tokens=20, eos_token_id=None, pad_token_id=0)
    assert ours.shape == (2, 20) and ours.dtype == np.int32
    np.testing.assert_array_equal(ours, _hf_generate(tm, ids, mask, 20, None, 0))
    # the padded row alone, unpadded, gives the same continuation (rows do not see each other)
    alone = mm.generate(model, ids[1:, 3:], max_new_tokens=20, eos_token_id=None)
    np.testing.assert_array_equal(alone[0], ours[1])


def test_eos_stops_a_row_and_pads_after_it(tiny_models):
    path, tm = tiny_models("qwen2")
    model = mm.load_pretrained(path)
    ids = np.random.default_rng(1).integers(3, 120, (2, 6))
    free = model.generate(ids, max_new_tokens=12, eos_token_id=None)
    eos = int(free[0, 3])  # a token row 0 emits at step 3
    out = model.generate(ids, max_new_tokens=12, eos_token_id=eos, pad_token_id=1)
    stop = int(np.argmax(free[0] == eos))
    np.testing.assert_array_equal(out[0, :stop + 1], free[0, :stop + 1])
    assert (out[0, stop + 1:] == 1).all()
    ref = _hf_generate(tm, ids, np.ones_like(ids), 12, eos, 1)
    np.testing.assert_array_equal(out, _padded_to(ref, 12, 1))


def test_sampling_is_seeded_and_changes_with_temperature(tiny_models):
    model = mm.load_pretrained(tiny_models("qwen2")[0])
    ids = np.random.default_rng(2).integers(3, 120, (2, 5))
    a = model.generate(ids, max_new_tokens=16, temperature=1.5, seed=7, eos_token_id=None)
    b = model.generate(ids, max_new_tokens=16, temperature=1.5, seed=7, eos_token_id=None)
    c = model.generate(ids, max_new_tokens=16, temperature=1.5, seed=8, eos_token_id=None)
    greedy = model.generate(ids, max_new_tokens=16, eos_token_id=None)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, greedy)
    tiny_p = model.generate(ids, max_new_tokens=16, temperature=1.5, top_p=1e-6, seed=7, eos_token_id=None)
    np.testing.assert_array_equal(tiny_p, greedy)  # a nucleus of one token is greedy decoding


def test_prompt_lengths_share_a_compiled_program(tiny_models):
    from masq_jax.models.generate import _generate, bucket_length

    assert [bucket_length(n) for n in (1, 16, 17, 100, 256, 257, 600)] == [16, 16, 32, 128, 256, 512, 768]
    model = mm.load_pretrained(tiny_models("llama")[0])
    rng = np.random.default_rng(3)
    model.generate(rng.integers(3, 120, (1, 20)), max_new_tokens=4)
    before = _generate._cache_size()
    for p in (21, 25, 31):  # same bucket (32): no new compilation
        model.generate(rng.integers(3, 120, (1, p)), max_new_tokens=4)
    assert _generate._cache_size() == before


def test_bad_input_is_one_clear_error(tiny_models):
    model = mm.load_pretrained(tiny_models("qwen2")[0])
    ids = np.ones((1, 4), np.int64)
    with pytest.raises(mm.InputError, match="max_new_tokens must be"):
        model.generate(ids, max_new_tokens=0)
    with pytest.raises(mm.InputError, match="exactly one"):
        model.generate()
    with pytest.raises(mm.InputError, match="left-padded"):
        model.generate(ids, attention_mask=np.array([[1, 1, 1, 0]]))
    with pytest.raises(mm.InputError, match="positions"):
        model.generate(ids, max_new_tokens=model.config.max_position_embeddings)
    with pytest.raises(mm.InputError, match="top_p"):
        model.generate(ids, temperature=1.0, top_p=0.0)
    with pytest.raises(mm.InputError, match="temperature"):
        model.generate(ids, temperature=-1.0)
