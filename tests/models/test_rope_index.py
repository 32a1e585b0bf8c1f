"""models.rope_index (NumPy) equals transformers' get_rope_index for the Omni Thinker and Qwen2.5-VL,
and the decoder given those positions matches the PyTorch decoder."""

from __future__ import annotations

import numpy as np
import pytest

from tests.models.tiny import MM_IDS, torch_logits

I, V, A = MM_IDS["image_token_id"], MM_IDS["video_token_id"], MM_IDS["audio_token_id"]
VS, VE = MM_IDS["vision_start_token_id"], MM_IDS["vision_end_token_id"]
AS, AE = MM_IDS["audio_start_token_id"], MM_IDS["audio_end_token_id"]


def _audio_len(n):
    return ((n - 1) // 2 + 1 - 2) // 2 + 1


def _text(rng, n):
    return list(rng.integers(0, 100, n))


def _left_pad(seqs, pad=0):
    s = max(len(x) for x in seqs)
    ids = np.full((len(seqs), s), pad, np.int64)
    mask = np.zeros((len(seqs), s), np.int64)
    for i, x in enumerate(seqs):
        ids[i, s - len(x):] = x
        mask[i, s - len(x):] = 1
    return ids, mask


def omni_cases():
    """(name, kwargs for get_rope_index) covering image, video, audio, audio-in-video, padding."""
    rng = np.random.default_rng(0)
    img = [VS] + [I] * 6 + [VE]  # grid (1, 4, 6) -> 6 tokens after 2x2 merge
    aud = [AS] + [A] * _audio_len(20) + [AE]
    vid = [VS] + [V] * 8 + [VE]  # grid (2, 4, 4) -> 8 tokens
    mixed1 = _text(rng, 3) + img + _text(rng, 2) + aud + _text(rng, 4)
    mixed2 = _text(rng, 1) + aud + _text(rng, 3) + img + _text(rng, 2) + vid + _text(rng, 1)
    ids, mask = _left_pad([mixed1, mixed2])
    # audio in video: 3 temporal patches (0, 25, 50) and 52 audio tokens -> two 2-second chunks
    aiv_audio = _audio_len(210)
    aiv = _text(rng, 2) + [VS, AS] + [V] * 12 + [A] * aiv_audio + [AE, VE] + _text(rng, 3)
    return [
        ("image_only", dict(input_ids=np.array([_text(rng, 2) + img + _text(rng, 3)]), image_grid_thw=np.array([[1, 4, 6]]))),
        ("mixed_left_padded", dict(
            input_ids=ids, attention_mask=mask, image_grid_thw=np.array([[1, 4, 6], [1, 4, 6]]),
            video_grid_thw=np.array([[2, 4, 4]]), second_per_grids=np.array([1.5], np.float32),
            audio_seqlens=np.array([20, 20]),
        )),
        ("audio_in_video", dict(
            input_ids=np.array([aiv]), video_grid_thw=np.array([[3, 4, 4]]), audio_seqlens=np.array([210]),
            second_per_grids=np.array([1.0], np.float32), use_audio_in_video=True,
        )),
        ("text_only_padded", dict(input_ids=_left_pad([_text(rng, 5), _text(rng, 8)])[0],
                                  attention_mask=_left_pad([_text(rng, 5), _text(rng, 8)])[1])),
    ]


def _torch_kwargs(kw):
    import torch

    return {k: (torch.tensor(np.array(v)) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}


@pytest.mark.parametrize("case", omni_cases(), ids=lambda c: c[0])
def test_omni_rope_index_matches_transformers(case, tiny_models):
    import masq_jax.models as mm
    from masq_jax.models.rope_index import get_rope_index

    _, kw = case
    path, tm = tiny_models("omni_thinker")
    cfg = mm.load_pretrained(path).config
    ref_pos, ref_delta = tm.model.get_rope_index(**_torch_kwargs(kw))
    pos, delta = get_rope_index(cfg, **kw)
    np.testing.assert_array_equal(pos, ref_pos.numpy())
    np.testing.assert_array_equal(delta, ref_delta.numpy().reshape(delta.shape))


def vl_cases():
    rng = np.random.default_rng(1)
    img = [VS] + [I] * 6 + [VE]
    vid = [VS] + [V] * 12 + [VE]  # grid (3, 4, 4)
    s1 = _text(rng, 3) + img + _text(rng, 2)
    s2 = _text(rng, 1) + vid + _text(rng, 2) + img + _text(rng, 1)
    ids, mask = _left_pad([s1, s2])
    return [
        ("image", dict(input_ids=np.array([s1]), image_grid_thw=np.array([[1, 4, 6]]))),
        ("video_image_left_padded", dict(
            input_ids=ids, attention_mask=mask, image_grid_thw=np.array([[1, 4, 6], [1, 4, 6]]),
            video_grid_thw=np.array([[3, 4, 4]]), second_per_grid_ts=np.array([0.5], np.float32),
        )),
    ]


@pytest.mark.parametrize("case", vl_cases(), ids=lambda c: c[0])
def test_vl_rope_index_matches_transformers(case, tiny_models):
    import masq_jax.models as mm
    from masq_jax.models.rope_index import get_rope_index

    _, kw = case
    path, tm = tiny_models("vl")
    cfg = mm.load_pretrained(path).config
    ids = kw["input_ids"]
    tt = np.where(ids == I, 1, np.where(ids == V, 2, 0))
    ref_pos, ref_delta = tm.model.get_rope_index(mm_token_type_ids=_torch_kwargs({"t": tt})["t"], **_torch_kwargs(kw))
    pos, delta = get_rope_index(cfg, **kw)
    np.testing.assert_array_equal(pos, ref_pos.numpy())
    np.testing.assert_array_equal(delta, ref_delta.numpy().reshape(delta.shape))


@pytest.mark.parametrize("kind", ["omni_thinker", "vl"])
def test_decoder_parity_with_multimodal_positions(kind, tiny_models):
    """Logits with image/audio position blocks from get_rope_index match the PyTorch decoder."""
    import masq_jax.models as mm
    from masq_jax.models.rope_index import get_rope_index

    path, tm = tiny_models(kind)
    model = mm.load_pretrained(path)
    kw = omni_cases()[1][1] if kind == "omni_thinker" else vl_cases()[1][1]
    pos, _ = get_rope_index(model.config, **kw)
    ids, mask = kw["input_ids"], kw["attention_mask"]
    emb = np.random.default_rng(5).normal(size=(*ids.shape, 64)).astype(np.float32)
    ref = torch_logits(kind, tm, emb, pos, mask)
    got = np.asarray(model(inputs_embeds=emb, position_ids=pos, attention_mask=mask))
    keep = mask.astype(bool)
    assert np.max(np.abs(got[keep] - ref[keep])) / np.max(np.abs(ref[keep])) < 1e-4
