"""Synthetic source: determinism, Omni-Thinker position layout (checked against transformers'
get_rope_index), and the magnitude profile that must survive RMSNorm (docs/calib.md)."""

import types

import numpy as np
import pytest

from masq_jax.calib import AUDIO, TEXT, VISION, CalibSourceError, load_calib, synthetic_calibset
from masq_jax.calib.synthetic import parse_synthetic_options


def test_deterministic_by_seed():
    a = synthetic_calibset(samples=3, hidden_size=32, seed=1)
    b = synthetic_calibset(samples=3, hidden_size=32, seed=1)
    c = synthetic_calibset(samples=3, hidden_size=32, seed=2)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert len(set(a.lengths)) > 1  # variable lengths exercise bucketing


def _omni_rope_index_reference(sample, spec):
    """transformers' Qwen2.5-Omni get_rope_index on token ids built for the synthetic layout."""
    torch = pytest.importorskip("torch")
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import (
        Qwen2_5OmniPreTrainedModelForConditionalGeneration as M,
    )

    TXT, VBOS, VEOS, IMG, ABOS, AEOS, AUD, VID = 5, 10, 11, 12, 13, 14, 15, 16
    mod = sample.modality_ids
    ids = np.full(len(mod), TXT)
    ids[mod == VISION] = IMG
    ids[mod == AUDIO] = AUD
    v = np.flatnonzero(mod == VISION)
    a = np.flatnonzero(mod == AUDIO)
    ids[v[0] - 1], ids[v[-1] + 1], ids[a[0] - 1], ids[a[-1] + 1] = VBOS, VEOS, ABOS, AEOS
    cfg = types.SimpleNamespace(image_token_id=IMG, video_token_id=VID, audio_token_id=AUD,
                                vision_start_token_id=VBOS, audio_start_token_id=ABOS,
                                position_id_per_seconds=25, seconds_per_chunk=2)
    fake = types.SimpleNamespace(config=cfg, spatial_merge_size=2)
    fake.get_llm_pos_ids_for_vision = types.MethodType(M.get_llm_pos_ids_for_vision, fake)
    pos, _ = M.get_rope_index(
        fake,
        torch.tensor(ids[None]),
        image_grid_thw=torch.tensor([[1, 2 * spec["image_h"], 2 * spec["image_w"]]]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        audio_seqlens=torch.tensor([4 * spec["audio_len"]]),  # -> audio_len tokens after the two convs
    )
    return pos[:, 0].numpy()


def test_positions_match_transformers_omni_rope_index():
    cs = synthetic_calibset(samples=2, hidden_size=16, image_h=3, image_w=5, audio_len=7, text_len=6)
    for s in cs:
        np.testing.assert_array_equal(s.position_ids, _omni_rope_index_reference(s, cs.meta["spec"]))
        # delimiters are text: exactly image/audio block tokens are non-text
        assert (s.modality_ids == VISION).sum() == 15 and (s.modality_ids == AUDIO).sum() == 7


def test_magnitude_profile_survives_rmsnorm():
    cs = synthetic_calibset(samples=8, hidden_size=512, vision_scale=30.0, audio_scale=0.3)
    x = np.concatenate([s.inputs_embeds for s in cs]).astype(np.float64)
    m = np.concatenate([s.modality_ids for s in cs])
    absmax = {k: np.abs(x[m == k]).max(axis=0) for k in (TEXT, VISION, AUDIO)}
    hot = np.array(cs.meta["vision_hot_channels"])
    typical_text = np.median(absmax[TEXT])
    ratio = absmax[VISION][hot] / typical_text
    assert (ratio > 10).all() and (ratio < 100).all()
    assert np.median(absmax[AUDIO]) < 0.5 * typical_text  # audio below text
    t_out = np.array(cs.meta["text_outlier_channels"])
    assert absmax[TEXT][t_out].min() > 2 * typical_text  # a few text outlier channels
    # after a plain RMSNorm (gamma = 1) the vision/text gap in the hot channels is still large
    xn = x / np.sqrt((x**2).mean(axis=1, keepdims=True) + 1e-6)
    gap = np.abs(xn[m == VISION][:, hot]).max(axis=0) / np.abs(xn[m == TEXT][:, hot]).max(axis=0)
    assert (gap > 2.5).all(), gap


def test_options_and_errors():
    spec = parse_synthetic_options("hidden=64,image=4x6,audio=8,vision_scale=50,vary=0", samples=2)
    assert (spec.hidden_size, spec.image_h, spec.image_w, spec.audio_len, spec.vision_scale, spec.vary) == (64, 4, 6, 8, 50.0, False)
    cs = load_calib("synthetic:hidden=64,image=4x6,audio=8,vary=0", samples=2)
    assert cs.hidden_size == 64 and len(cs) == 2 and cs.token_counts()["vision"] == 48
    for bad, needle in [("hidden", "key=value"), ("foo=1", "unknown synthetic option"), ("image=4", "HxW"),
                        ("hidden=abc", "expected"), ("vision_scale=-1", "positive"), ("hidden=4", "hidden_size >= 8")]:
        with pytest.raises(CalibSourceError, match=needle):
            load_calib(f"synthetic:{bad}", samples=2)


def test_load_calib_synthetic_follows_config():
    cs = load_calib("synthetic", config={"hidden_size": 48, "mrope_section": [2, 3, 3]}, samples=3, seed=4)
    assert cs.hidden_size == 48 and cs.rope_ndim == 3 and len(cs) == 3
    cs1 = load_calib("synthetic", config={"hidden_size": 48, "model_type": "llama"}, samples=3, seed=4)
    assert cs1.rope_ndim == 1 and (cs1[0].position_ids == np.arange(cs1[0].length)).all()
    with pytest.raises(CalibSourceError, match="differs from the model's hidden_size 48"):
        load_calib("synthetic:hidden=32", config={"hidden_size": 48})
