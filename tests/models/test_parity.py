"""Parity of the Flax decoder with transformers' PyTorch models on tiny random checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

from tests.models.tiny import torch_logits

KINDS = ["qwen2", "llama", "omni_thinker", "vl", "omni_full"]


def _rel_err(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("kind", KINDS)
def test_text_positions_parity(kind, tiny_models):
    import masq_jax.models as mm

    path, tm = tiny_models(kind)
    model = mm.load_pretrained(path)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 128, (2, 12))
    emb = model.params["embed"][ids]
    ref = torch_logits(kind, tm, np.asarray(emb))
    got = model(inputs_embeds=emb)
    assert got.shape == (2, 12, 128)
    assert _rel_err(got, ref) < 1e-4
    # input_ids path gives the same as its embeddings
    np.testing.assert_allclose(np.asarray(model(input_ids=ids)), np.asarray(got), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS[:4])
def test_left_padding_parity(kind, tiny_models):
    import masq_jax.models as mm

    path, tm = tiny_models(kind)
    model = mm.load_pretrained(path)
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 128, (2, 10))
    mask = np.ones((2, 10), np.int64)
    mask[1, :3] = 0
    pos = np.clip(np.cumsum(mask, -1) - 1, 0, None)
    if kind in ("omni_thinker", "vl", "omni_full"):
        pos = np.broadcast_to(pos[None], (3, 2, 10)).copy()
    emb = np.asarray(model.params["embed"][ids])
    ref = torch_logits(kind, tm, emb, pos, mask)
    got = np.asarray(model(inputs_embeds=emb, position_ids=pos, attention_mask=mask))
    keep = mask.astype(bool)
    assert _rel_err(got[keep], ref[keep]) < 1e-4


@pytest.mark.parametrize("kind", ["omni_thinker", "vl"])
def test_mrope_positions_parity(kind, tiny_models):
    """Distinct t/h/w position rows exercise the chunked multimodal RoPE."""
    import masq_jax.models as mm

    path, tm = tiny_models(kind)
    model = mm.load_pretrained(path)
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(2, 14, 64)).astype(np.float32)
    pos = np.sort(rng.integers(0, 60, (3, 2, 14)), axis=-1)
    ref = torch_logits(kind, tm, emb, pos)
    got = model(inputs_embeds=emb, position_ids=pos)
    assert _rel_err(got, ref) < 1e-4
    # collapsing the rows to one changes the result (the test can tell the rows apart)
    other = model(inputs_embeds=emb, position_ids=np.broadcast_to(pos[:1], pos.shape))
    assert _rel_err(other, ref) > 1e-3


def test_layer_forward_capture_and_linear_hook(tiny_models):
    """layer_forward's captured linear inputs equal the inputs torch's q/o/gate/down projections see,
    and a swapped-in linear is called for every projection."""
    import jax.numpy as jnp
    import torch

    import masq_jax.models as mm

    path, tm = tiny_models("omni_thinker")
    cfg, params = mm.load_params(path)
    rng = np.random.default_rng(3)
    h = rng.normal(size=(2, 9, 64)).astype(np.float32)
    pos = np.broadcast_to(np.arange(9)[None, None], (3, 2, 9))
    seen = {}
    layer = tm.model.language_model.layers[1]
    hooks = [
        getattr(layer.self_attn if n in ("q_proj", "o_proj") else layer.mlp, n).register_forward_hook(
            lambda mod, inp, out, n=n: seen.__setitem__(n, inp[0].double().numpy())
        )
        for n in ("q_proj", "o_proj", "gate_proj", "down_proj")
    ]
    with torch.no_grad():
        rot = tm.model.language_model.rotary_emb(torch.tensor(h), torch.tensor(np.array(pos)))
        ref = layer(torch.tensor(h), attention_mask=None, position_embeddings=rot)
        ref = (ref[0] if isinstance(ref, tuple) else ref).double().numpy()
    for hk in hooks:
        hk.remove()
    lp = {k: (v[1] if not isinstance(v, dict) else {a: b[1] for a, b in v.items()}) for k, v in params["layers"].items()}
    cs = mm.rope(cfg, pos)
    bias = mm.attention_bias(None, 9)
    calls = []

    def lin(name, x, p):
        calls.append(name)
        return mm.dense_linear(name, x, p)

    out, inputs = mm.layer_forward(cfg, lp, jnp.asarray(h), cs, bias, linear=lin, capture=True)
    assert sorted(calls) == sorted(mm.LINEAR_NAMES)
    assert _rel_err(out, ref) < 1e-5
    for key, name in [("qkv", "q_proj"), ("o", "o_proj"), ("gate_up", "gate_proj"), ("down", "down_proj")]:
        assert inputs[key].shape == seen[name].shape
        assert _rel_err(inputs[key], seen[name]) < 1e-5
    # layers_forward over [1, 2) equals the single layer
    h2 = mm.layers_forward(cfg, params["layers"], jnp.asarray(h), cs, bias, start=1, stop=2)
    # (scan vs a single call: XLA may fuse differently, a few float32 ulps)
    np.testing.assert_allclose(np.asarray(h2), np.asarray(out), rtol=1e-5, atol=1e-5)
