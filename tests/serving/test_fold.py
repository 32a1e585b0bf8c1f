"""Folding is exact: a decoder layer with explicit smoothing (``x / s`` before each linear, weights
``W · diag(s)``) equals the folded layer (norms and v/up rows absorb ``1/s``) and the original, in
float64 with an independent NumPy forward; the packing and config match compressed-tensors' own code."""

from __future__ import annotations

import numpy as np
import pytest

from masq_jax.serving import ExportError, fold_fp_layer
from masq_jax.serving import ct_format

H, I, NH, D, EPS = 16, 24, 4, 4, 1e-6


def rms(x, g):
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + EPS) * g


def rope(x, pos):
    inv = 1.0 / 10000.0 ** (np.arange(0, D, 2) / D)
    ang = pos[:, None] * inv[None]
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return x * cos[:, None] + np.concatenate([-x2, x1], -1) * sin[:, None]


def layer(lp, h, nkv, smooth=None):
    """One Qwen2 layer in float64; ``smooth``: divide each linear's input by its vector first."""
    s = smooth or {}

    def lin(name, x):
        y = (x / s.get(name, 1.0)) @ lp[name]["w"].T
        return y + lp[name]["b"] if lp[name].get("b") is not None else y

    S = h.shape[0]
    x = rms(h, lp["input_norm"])
    q = rope(lin("q_proj", x).reshape(S, NH, D), np.arange(S))
    k = rope(lin("k_proj", x).reshape(S, nkv, D), np.arange(S))
    v = lin("v_proj", x).reshape(S, nkv, D)
    k, v = np.repeat(k, NH // nkv, 1), np.repeat(v, NH // nkv, 1)
    sc = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(D) + np.triu(np.full((S, S), -np.inf), 1)
    p = np.exp(sc - sc.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    a = np.einsum("hqk,khd->qhd", p, v).reshape(S, NH * D)
    h = h + lin("o_proj", a)
    x2 = rms(h, lp["post_attn_norm"])
    g, u = lin("gate_proj", x2), lin("up_proj", x2)
    return h + lin("down_proj", g / (1 + np.exp(-g)) * u)


def random_layer(rng, nkv):
    kv = nkv * D
    w = lambda o, i: rng.standard_normal((o, i)) / np.sqrt(i)  # noqa: E731
    return {"input_norm": 1 + 0.2 * rng.standard_normal(H), "post_attn_norm": 1 + 0.2 * rng.standard_normal(H),
            "q_proj": {"w": w(NH * D, H), "b": rng.standard_normal(NH * D)},
            "k_proj": {"w": w(kv, H), "b": rng.standard_normal(kv)},
            "v_proj": {"w": w(kv, H), "b": rng.standard_normal(kv)}, "o_proj": {"w": w(H, NH * D)},
            "gate_proj": {"w": w(I, H)}, "up_proj": {"w": w(I, H)}, "down_proj": {"w": w(H, I)}}


def vectors(rng, nkv):
    pos = lambda n: np.exp(rng.standard_normal(n))  # noqa: E731
    qkv, gu = pos(H), pos(H)
    o = np.repeat(pos(nkv * D).reshape(nkv, 1, D), NH // nkv, 1).reshape(-1)  # shared by a KV group's heads
    return {"q_proj": qkv, "k_proj": qkv, "v_proj": qkv, "o_proj": o, "gate_proj": gu, "up_proj": gu,
            "down_proj": pos(I)}


@pytest.mark.parametrize("nkv", [4, 2, 1])
def test_folded_layer_equals_smoothed_and_original_in_float64(nkv):
    rng = np.random.default_rng(nkv)
    lp, s, h = random_layer(rng, nkv), vectors(rng, nkv), rng.standard_normal((7, H))
    smoothed = {**lp, **{n: {**lp[n], "w": lp[n]["w"] * s[n][None]} for n in s}}
    folded = fold_fp_layer(lp, s, NH, nkv, D)
    ref = layer(lp, h, nkv)
    np.testing.assert_allclose(layer(smoothed, h, nkv, smooth=s), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer(folded, h, nkv), ref, rtol=1e-12, atol=1e-12)
    assert not np.allclose(folded["input_norm"], lp["input_norm"])  # the fold did move something


@pytest.mark.parametrize("broken, linear", [("k_proj", "k_proj"), ("gate_proj", "up_proj"), ("o_proj", "o_proj")])
def test_unfoldable_vectors_are_refused_naming_the_linear(broken, linear):
    rng = np.random.default_rng(0)
    s = vectors(rng, 2)
    s[broken] = s[broken] * np.linspace(0.5, 2.0, s[broken].size)  # untied / differs across a GQA group
    with pytest.raises(ExportError, match=f"layer 0 {linear}:"):
        fold_fp_layer(random_layer(rng, 2), s, NH, 2, D)


@pytest.mark.parametrize("shape", [(8, 256), (5, 24), (3, 7)])
def test_int4_packing_matches_compressed_tensors(shape):
    torch = pytest.importorskip("torch")
    helpers = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")
    v = np.random.default_rng(0).integers(-8, 8, shape).astype(np.int8)
    for axis in (1, 0):
        ours = ct_format.pack_int4(v, axis=axis)
        theirs = helpers.pack_to_int32(torch.tensor(v), 4, packed_dim=axis).numpy()
        np.testing.assert_array_equal(ours, theirs)
        back = helpers.unpack_from_int32(torch.tensor(ours), 4, torch.Size(shape), packed_dim=axis).numpy()
        np.testing.assert_array_equal(back, v)


@pytest.mark.parametrize("scheme, sym, group, preset", [("W8A8", True, None, "W8A8"), ("W4A16", True, 128, "W4A16"),
                                                        ("W4A16", False, 128, "W4A16_ASYM")])
def test_quantization_config_is_compressed_tensors_preset(scheme, sym, group, preset):
    ct = pytest.importorskip("compressed_tensors.quantization")
    qc = ct_format.quantization_config(scheme, sym, group, ["re:.*lm_head"])
    parsed = ct.QuantizationConfig.model_validate(qc)
    ours = parsed.config_groups["group_0"]
    want = ct.preset_name_to_scheme(preset, ["Linear"])
    assert ours.weights == want.weights and ours.input_activations == want.input_activations
    assert parsed.format == ct_format.INT_QUANTIZED if scheme == "W8A8" else ct_format.PACK_QUANTIZED
