"""Multimodal generation against transformers: a tiny random Qwen2.5-Omni Thinker with a real image
and audio through its encoders (``pixel_values``, ``input_features``), and a tiny Qwen2.5-VL with an
image. Our prompt side is the calib HF front end (the checkpoint's processor and encoders) giving
``inputs_embeds``, 3-D positions and modality ids; decoding continues the positions as transformers."""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("PIL")

import tests.calib.hf_fixtures as F  # noqa: E402
from masq_jax.calib.manifest import ManifestEntry  # noqa: E402
from masq_jax.calib.multimodal import HFFrontEnd  # noqa: E402
import masq_jax.models as mm  # noqa: E402

os.environ["HF_HUB_OFFLINE"] = "1"
N = 12


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("genmm")
    return {"root": root, "png": F.write_png(root / "i.png", 60, 90, 0), "wav": F.write_wav(root / "a.wav", 1.1)}


def _randomised(cls, d):
    """Reload with non-trivial norms and projections (HF init gives near-flat logits: greedy ties)."""
    from tests.models.tiny import _randomize

    m = _randomize(cls.from_pretrained(d, dtype=torch.float32), seed=3)
    m.save_pretrained(d)
    return m


def _ours(model_dir, entry):
    sample = HFFrontEnd(model_dir)(entry, "test", 0)
    model = mm.load_pretrained(model_dir)
    out = model.generate(inputs_embeds=sample.inputs_embeds[None], position_ids=sample.position_ids[:, None],
                         modality_ids=sample.modality_ids[None], max_new_tokens=N, eos_token_id=None)
    return out, sample


def _theirs(model, proc, prompt, **media):
    inputs = proc(text=[prompt], return_tensors="pt", **media)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=N, do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[:, inputs["input_ids"].shape[1]:].numpy()


def test_omni_thinker_image_and_audio_greedy_equals_transformers(media, tmp_path):
    from PIL import Image
    from transformers import AutoProcessor, Qwen2_5OmniThinkerForConditionalGeneration

    from tests.calib.test_hf import _wav16k

    d = tmp_path / "omni"
    F.build_omni_thinker(d)
    tm = _randomised(Qwen2_5OmniThinkerForConditionalGeneration, d)
    entry = ManifestEntry(1, text="what do you see and hear?", images=[media["png"]], audios=[media["wav"]])
    ours, sample = _ours(d, entry)
    assert (sample.modality_ids == 1).sum() > 0 and (sample.modality_ids == 2).sum() > 0
    proc = AutoProcessor.from_pretrained(d)
    prompt = proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "audio"},
                                                                    {"type": "text", "text": entry.text}]}],
                                      tokenize=False, add_generation_prompt=True)
    ref = _theirs(tm, proc, prompt, images=[Image.open(media["png"]).convert("RGB")],
                  audio=[_wav16k(media["wav"])])
    np.testing.assert_array_equal(ours, ref)
    assert len(set(ours[0].tolist())) > 1  # not a constant continuation


def test_qwen2_5_vl_image_greedy_equals_transformers(media, tmp_path):
    from PIL import Image
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    d = tmp_path / "vl"
    F.build_qwen2_5_vl(d)
    tm = _randomised(Qwen2_5_VLForConditionalGeneration, d)
    entry = ManifestEntry(1, text="describe the picture", images=[media["png"]])
    ours, sample = _ours(d, entry)
    assert (sample.modality_ids == 1).sum() > 0
    prompt = "<|vision_start|><|image_pad|><|vision_end|>" + entry.text  # the tiny VL processor has no template
    ref = _theirs(tm, AutoProcessor.from_pretrained(d), prompt, images=[Image.open(media["png"]).convert("RGB")])
    np.testing.assert_array_equal(ours, ref)
    assert len(set(ours[0].tolist())) > 1  # not a constant continuation
