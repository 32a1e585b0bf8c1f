"""The blocked causal GQA attention equals a dense float64 NumPy reference, across block boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from tests.models.tiny import torch_logits


def _ref_attention(q, k, v, mask):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    b, s, nh, d = q.shape
    g = nh // k.shape[2]
    k, v = np.repeat(k, g, axis=2), np.repeat(v, g, axis=2)
    sc = np.einsum("bsnd,btnd->bnst", q, k) / np.sqrt(d)
    ok = np.tril(np.ones((s, s), bool))[None, None] & (mask[:, None, None, :] != 0)
    sc = np.where(ok, sc, -np.inf)
    with np.errstate(invalid="ignore"):  # fully masked (padding) rows become NaN; they are not compared
        sc = sc - sc.max(-1, keepdims=True)
        p = np.exp(sc)
        p /= p.sum(-1, keepdims=True)
    return np.einsum("bnst,btnd->bsnd", p, v).reshape(b, s, nh * d)


@pytest.mark.parametrize("seq", [7, 128, 300, 1100])
def test_attention_matches_dense_reference(seq):
    import masq_jax.models as mm
    from masq_jax.models import decoder

    rng = np.random.default_rng(seq)
    q = rng.normal(size=(2, seq, 6, 8)).astype(np.float32)
    k = rng.normal(size=(2, seq, 2, 8)).astype(np.float32)
    v = rng.normal(size=(2, seq, 2, 8)).astype(np.float32)
    mask = np.ones((2, seq), np.int32)
    mask[1, : seq // 3] = 0  # left padding
    import jax

    attn = jax.jit(decoder.attention, static_argnums=0)
    got = np.asarray(attn(None, q, k, v, mm.attention_bias(mask, seq)))
    ref = _ref_attention(q, k, v, mask)
    keep = mask.astype(bool)
    np.testing.assert_allclose(got[keep], ref[keep], rtol=1e-4, atol=1e-5)


def test_long_sequence_parity_with_torch(tiny_models):
    """A 300-token sequence (three attention blocks) through the whole tiny Qwen2 model."""
    import masq_jax.models as mm

    path, tm = tiny_models("qwen2")
    model = mm.load_pretrained(path)
    ids = np.random.default_rng(4).integers(0, 128, (1, 300))
    emb = np.asarray(model.params["embed"])[ids]
    ref = torch_logits("qwen2", tm, emb)
    got = np.asarray(model(inputs_embeds=emb))
    assert np.max(np.abs(got - ref)) / np.max(np.abs(ref)) < 1e-4
