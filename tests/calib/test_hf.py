"""The real multimodal path end to end on tiny random Qwen2.5-Omni Thinker and Qwen2.5-VL checkpoints.

Reference: the full PyTorch model (all decoder layers) called on the processor's outputs, with a
pre-hook on its language model capturing the inputs_embeds / position_ids it feeds its decoder, and
the model's own get_rope_index called directly.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("PIL")

import tests.calib.hf_fixtures as F  # noqa: E402

from masq_jax.calib import (  # noqa: E402
    AUDIO, TEXT, VISION, CalibSourceError, ManifestError, NonFiniteError, load_calib,
)
from masq_jax.calib import multimodal  # noqa: E402
from masq_jax.calib.multimodal import manifest_calibset  # noqa: E402


def _write_manifest(path: Path, lines: list) -> Path:
    path.write_text("\n".join(json.dumps(x) if not isinstance(x, str) else x for x in lines) + "\n")
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("hfcalib")
    omni, vl = root / "omni", root / "vl"
    omni_ids = F.build_omni_thinker(omni)
    vl_ids = F.build_qwen2_5_vl(vl)
    media = root / "media"
    media.mkdir()
    F.write_png(media / "i1.png", 60, 90, 0)
    F.write_png(media / "i2.png", 112, 56, 1)
    F.write_wav(media / "a1.wav", 1.3)
    F.write_wav(media / "a2.wav", 0.7, rate=22050, channels=2)  # resampled to 16 kHz, downmixed
    F.write_frames(media / "clip", 4, 56, 56, 10)
    omni_lines = [
        {"text": "the cat sees a picture", "images": ["media/i1.png"]},
        {"text": "what is in this picture? a cat and a dog.", "images": ["media/i1.png", "media/i2.png"],
         "audios": ["media/a1.wav"], "answer": "a cat"},
        {"text": "describe what you hear", "audios": ["media/a2.wav"]},
        {"text": "the <|vision_bos|><|IMAGE|><|vision_eos|> quick <|audio_bos|><|AUDIO|><|audio_eos|> fox",
         "images": ["media/i2.png"], "audios": ["media/a1.wav"]},  # verbatim placeholders
        {"text": "the quick brown fox"},
        {"text": "what happens in the clip?", "videos": ["media/clip"], "audios": ["media/a2.wav"]},
    ]
    vl_lines = [
        {"text": "the cat sees a picture", "images": ["media/i1.png"]},
        {"text": "what is in this picture?", "images": ["media/i1.png", "media/i2.png"]},
        {"text": "describe the clip", "videos": ["media/clip"]},
        {"text": "the quick brown fox"},
    ]
    return {
        "root": root, "omni": omni, "vl": vl, "omni_ids": omni_ids, "vl_ids": vl_ids,
        "omni_manifest": _write_manifest(root / "omni.jsonl", omni_lines),
        "vl_manifest": _write_manifest(root / "vl.jsonl", vl_lines),
        "omni_lines": omni_lines, "vl_lines": vl_lines,
    }


@pytest.fixture(scope="module")
def omni_set(env):
    return manifest_calibset(env["omni_manifest"], env["omni"], cache_dir=env["root"] / "cache")


@pytest.fixture(scope="module")
def vl_set(env):
    return manifest_calibset(env["vl_manifest"], env["vl"], cache_dir=env["root"] / "cache")


def _reference(model_dir, kind, manifest, entry_prompt, entry):
    """Processor outputs + the full PyTorch model's decoder inputs, captured by a hook."""
    from transformers import (AutoProcessor, Qwen2_5_VLForConditionalGeneration,
                              Qwen2_5OmniThinkerForConditionalGeneration)
    from PIL import Image

    proc = AutoProcessor.from_pretrained(model_dir)
    cls = Qwen2_5OmniThinkerForConditionalGeneration if kind == "omni" else Qwen2_5_VLForConditionalGeneration
    model = cls.from_pretrained(model_dir, dtype=torch.float32).eval()
    base = manifest.parent
    kw = {"text": [entry_prompt], "return_tensors": "pt"}
    if entry.get("images"):
        kw["images"] = [Image.open(base / p).convert("RGB") for p in entry["images"]]
    if entry.get("audios"):
        kw["audio"] = [_wav16k(base / p) for p in entry["audios"]]
    if entry.get("videos"):
        kw["videos"] = [np.stack([np.asarray(Image.open(f).convert("RGB")) for f in sorted((base / v).iterdir())])
                        for v in entry["videos"]]
    inputs = dict(proc(**kw))
    cap = {}
    h = model.model.language_model.register_forward_pre_hook(lambda m, a, k: cap.update(k), with_kwargs=True)
    with torch.no_grad():
        model(**inputs)
    h.remove()
    return model, proc, inputs, cap


def _wav16k(path):
    """Independent WAV reader + resampler (float64 scipy) for the reference."""
    import wave

    from scipy.signal import resample_poly

    with wave.open(str(path)) as w:
        ch, rate = w.getnchannels(), w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, ch).mean(axis=1) / 32768.0
    if rate != 16000:
        g = np.gcd(rate, 16000)
        x = resample_poly(x, 16000 // g, rate // g)
    return x.astype(np.float32)


def _omni_prompt(proc, entry):
    if "<|IMAGE|>" in entry["text"]:
        return entry["text"]
    content = ([{"type": "image"}] * len(entry.get("images", [])) + [{"type": "audio"}] * len(entry.get("audios", []))
               + [{"type": "video"}] * len(entry.get("videos", [])) + [{"type": "text", "text": entry["text"]}])
    conv = [{"role": "user", "content": content}]
    if "answer" in entry:
        conv.append({"role": "assistant", "content": [{"type": "text", "text": entry["answer"]}]})
    return proc.apply_chat_template(conv, tokenize=False, add_generation_prompt="answer" not in entry)


def _vl_prompt(entry):  # no chat template in the tiny VL processor: placeholders first, then text
    p = "<|vision_start|><|image_pad|><|vision_end|>" * len(entry.get("images", []))
    p += "<|vision_start|><|video_pad|><|vision_end|>" * len(entry.get("videos", []))
    return p + entry["text"]


def test_omni_decoder_inputs_match_pytorch_thinker(env, omni_set):
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(env["omni"])
    ids = env["omni_ids"]
    assert len(omni_set) == len(env["omni_lines"]) and omni_set.rope_ndim == 3
    counts = omni_set.token_counts()
    assert counts["vision"] > 0 and counts["audio"] > 0
    for s, entry in zip(omni_set, env["omni_lines"]):
        model, _, inputs, cap = _reference(env["omni"], "omni", env["omni_manifest"], _omni_prompt(proc, entry), entry)
        input_ids = inputs["input_ids"][0].numpy()
        # decoder inputs equal what the PyTorch Thinker feeds its own decoder
        np.testing.assert_allclose(s.inputs_embeds, cap["inputs_embeds"][0].numpy(), rtol=0, atol=1e-6)
        np.testing.assert_array_equal(s.position_ids, cap["position_ids"][:, 0].numpy())
        # positions equal transformers' get_rope_index called directly
        fam = inputs.get("feature_attention_mask")
        pos, _ = model.model.get_rope_index(
            inputs["input_ids"], inputs.get("image_grid_thw"), inputs.get("video_grid_thw"), inputs["attention_mask"],
            False, fam.sum(-1) if fam is not None else None, inputs.get("video_second_per_grid"))
        np.testing.assert_array_equal(s.position_ids, pos[:, 0].numpy())
        # modality ids: exactly the placeholder tokens; delimiters and template are text
        np.testing.assert_array_equal(s.modality_ids == VISION, input_ids == ids["<|IMAGE|>"])
        np.testing.assert_array_equal(s.modality_ids == AUDIO, input_ids == ids["<|AUDIO|>"])
        assert (s.modality_ids[input_ids == ids["<|VIDEO|>"]] == TEXT).all()  # video is text by default
        assert ((input_ids == ids["<|VIDEO|>"]).sum() > 0) == bool(entry.get("videos"))
        for d in ("<|vision_bos|>", "<|vision_eos|>", "<|audio_bos|>", "<|audio_eos|>", "<|im_start|>", "<|im_end|>"):
            assert (s.modality_ids[input_ids == ids[d]] == TEXT).all()
        # vision token count = sum over images of t*h*w / merge^2
        grid = inputs.get("image_grid_thw")
        n_vis = int((grid.prod(-1) // 4).sum()) if grid is not None else 0
        assert int((s.modality_ids == VISION).sum()) == n_vis == 6 * ("media/i1.png" in entry.get("images", [])) + 8 * ("media/i2.png" in entry.get("images", []))
        # audio token count from the waveform length: mel frames = samples // 160, then the two convs
        n_aud = 0
        for a in entry.get("audios", []):
            frames = len(_wav16k(env["omni_manifest"].parent / a)) // 160
            n_aud += ((frames - 1) // 2 + 1 - 2) // 2 + 1
        assert int((s.modality_ids == AUDIO).sum()) == n_aud


def test_vl_decoder_inputs_match_pytorch_model(env, vl_set):
    ids = env["vl_ids"]
    assert vl_set.token_counts()["audio"] == 0
    for s, entry in zip(vl_set, env["vl_lines"]):
        model, _, inputs, cap = _reference(env["vl"], "vl", env["vl_manifest"], _vl_prompt(entry), entry)
        input_ids = inputs["input_ids"][0].numpy()
        np.testing.assert_allclose(s.inputs_embeds, cap["inputs_embeds"][0].numpy(), rtol=0, atol=1e-6)
        ref_pos = cap["position_ids"]
        if ref_pos is None:  # text-only: the text model counts positions itself
            ref = np.broadcast_to(np.arange(len(input_ids)), (3, len(input_ids)))
        else:
            ref = ref_pos[:, 0].numpy()
            if inputs.get("image_grid_thw") is not None or inputs.get("video_grid_thw") is not None:
                pos, _ = model.model.get_rope_index(
                    inputs["input_ids"], inputs["mm_token_type_ids"], image_grid_thw=inputs.get("image_grid_thw"),
                    video_grid_thw=inputs.get("video_grid_thw"), second_per_grid_ts=inputs.get("second_per_grid_ts"),
                    attention_mask=inputs["attention_mask"])
                np.testing.assert_array_equal(s.position_ids, pos[:, 0].numpy())
        np.testing.assert_array_equal(s.position_ids, ref)
        np.testing.assert_array_equal(s.modality_ids == VISION, input_ids == ids["<|image_pad|>"])
        # video placeholders are text by default (reference behaviour, docs/method.md §0)
        if entry.get("videos"):
            assert (input_ids == ids["<|video_pad|>"]).sum() > 0
            assert (s.modality_ids[input_ids == ids["<|video_pad|>"]] == TEXT).all()


def test_video_as_vision_option(env, vl_set):
    cs = manifest_calibset(env["vl_manifest"], env["vl"], cache_dir=env["root"] / "cache", video_as_vision=True)
    base_counts, v_counts = vl_set.token_counts(), cs.token_counts()
    n_video = v_counts["vision"] - base_counts["vision"]
    assert n_video > 0 and v_counts["text"] == base_counts["text"] - n_video
    np.testing.assert_array_equal(cs[2].inputs_embeds, vl_set[2].inputs_embeds)


def test_cache_determinism_and_keys(env, omni_set, monkeypatch):
    cache = env["root"] / "cache"
    # same inputs, no cache -> bit-identical set
    fresh = manifest_calibset(env["omni_manifest"], env["omni"], use_cache=False)
    assert fresh.fingerprint() == omni_set.fingerprint()

    # a cache hit must not load the model
    def no_model(*a, **k):
        raise AssertionError("the front end was rebuilt on a cache hit")

    monkeypatch.setattr(multimodal, "HFFrontEnd", no_model)
    hit = manifest_calibset(env["omni_manifest"], env["omni"], cache_dir=cache)
    assert hit.fingerprint() == omni_set.fingerprint()
    monkeypatch.undo()

    # a different manifest (one line fewer) -> a different entry; a changed image -> a different entry
    entries_before = set(os.listdir(cache))
    m2 = _write_manifest(env["root"] / "omni2.jsonl", env["omni_lines"][:2])
    cs2 = manifest_calibset(m2, env["omni"], cache_dir=cache)
    new = set(os.listdir(cache)) - entries_before
    assert len(new) == 1 and len(cs2) == 2
    assert cs2[1].inputs_embeds.shape == omni_set[1].inputs_embeds.shape
    np.testing.assert_array_equal(cs2[0].inputs_embeds, omni_set[0].inputs_embeds)
    media2 = env["root"] / "m3"
    shutil.copytree(env["root"] / "media", media2 / "media")
    F.write_png(media2 / "media" / "i1.png", 60, 90, 99)
    m3 = _write_manifest(media2 / "omni.jsonl", env["omni_lines"][:2])
    before = set(os.listdir(cache))
    cs3 = manifest_calibset(m3, env["omni"], cache_dir=cache)
    assert len(set(os.listdir(cache)) - before) == 1
    assert not np.array_equal(cs3[0].inputs_embeds, cs2[0].inputs_embeds)

    # a corrupt entry is rebuilt with a warning, never used
    (cache / sorted(new)[0]).write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable.*rebuilding"):
        again = manifest_calibset(m2, env["omni"], cache_dir=cache)
    assert again.fingerprint() == cs2.fingerprint()
    assert manifest_calibset(m2, env["omni"], cache_dir=cache).fingerprint() == cs2.fingerprint()


def test_subsample_and_front_door(env, omni_set):
    cs = load_calib(str(env["omni_manifest"]), model_dir=env["omni"], samples=2, seed=5,
                    cache_dir=env["root"] / "cache")
    lines = cs.meta["manifest_lines"]
    assert len(cs) == 2 and lines == sorted(lines)
    for s, ln in zip(cs, lines):
        np.testing.assert_array_equal(s.inputs_embeds, omni_set[ln - 1].inputs_embeds)
    # vision statistics need vision tokens: a text-only manifest fails require_modalities clearly
    from masq_jax.calib import MissingModalityError, require_modalities

    with pytest.raises(CalibSourceError, match="produce width 64 but the model's hidden size is 128"):
        load_calib(str(env["omni_manifest"]), model_dir=env["omni"], config={"hidden_size": 128},
                   cache_dir=env["root"] / "cache")
    m = _write_manifest(env["root"] / "textonly.jsonl", [{"text": "the quick brown fox"}])
    t = load_calib(str(m), model_dir=env["omni"], cache_dir=env["root"] / "cache")
    with pytest.raises(MissingModalityError, match="needs vision tokens"):
        require_modalities(t, ["text", "vision"])


def test_manifest_errors(env):
    root, omni = env["root"], env["omni"]
    bad = root / "bad"
    bad.mkdir(exist_ok=True)
    (bad / "broken.png").write_bytes(b"\x89PNG not really")
    (bad / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    cases = [
        (['{"text": "ok"}', '{"text": "x", "images": ["nope.png"]}'], ManifestError, r"bad.jsonl:2: image file not found: .*nope.png"),
        (['{"text": "ok"}', '', '{"text": "x" "images": []}'], ManifestError, r"bad.jsonl:3: malformed JSON"),
        (['{"text": 3}'], ManifestError, r"bad.jsonl:1: 'text' must be a string"),
        (['{"text": "a", "imgs": []}'], ManifestError, r"bad.jsonl:1: unknown key"),
        (['{"text": "a", "audios": [1]}'], ManifestError, r"bad.jsonl:1: 'audios' must be a list of file paths"),
        (['{"text": "ok"}', '{"text": "x", "images": ["broken.png"]}'], ManifestError, r"bad.jsonl:2: cannot read image .*broken.png"),
        (['{"text": "x", "audios": ["broken.wav"]}'], ManifestError, r"bad.jsonl:1: cannot read audio .*broken.wav"),
        (['{"text": "a <|IMAGE|> <|IMAGE|>", "images": ["../media/i1.png"]}'], ManifestError, r"bad.jsonl:1: text has 2 <\|IMAGE\|> placeholder"),
        (['{"text": "x", "videos": ["../media/i1.png"]}'], ManifestError, r"bad.jsonl:1: cannot read video .*folder of frame"),
        (['# only a comment', ''], ManifestError, r"no samples"),
    ]
    for lines, exc, pattern in cases:
        m = _write_manifest(bad / "bad.jsonl", lines)
        with pytest.raises(exc, match=pattern) as ei:
            manifest_calibset(m, omni, use_cache=False)
        assert "\n" not in str(ei.value)
    with pytest.raises(ManifestError, match="manifest not found"):
        manifest_calibset(bad / "missing.jsonl", omni)
    m = _write_manifest(bad / "vlaudio.jsonl", ['{"text": "x", "audios": ["../media/a1.wav"]}'])
    with pytest.raises(ManifestError, match=r"vlaudio.jsonl:1: this model \(qwen2_5_vl\) takes no audio"):
        manifest_calibset(m, env["vl"], use_cache=False)
    with pytest.raises(CalibSourceError, match="model_type 'qwen2'"):
        d = root / "qwen2"
        d.mkdir(exist_ok=True)
        (d / "config.json").write_text('{"model_type": "qwen2"}')
        manifest_calibset(env["omni_manifest"], d, use_cache=False)


def test_nan_encoder_output_names_the_sample(env):
    nan_dir = F.corrupt_encoder_copy(env["omni"], env["root"] / "omni_nan")
    m = _write_manifest(env["root"] / "nan.jsonl", [{"text": "the quick brown fox"},
                                                     {"text": "a picture", "images": ["media/i1.png"]}])
    with pytest.raises(NonFiniteError, match=r"nan.jsonl:2: sample 1 has NaN/Inf .*vision"):
        manifest_calibset(m, nan_dir, use_cache=False)


def test_full_omni_checkpoint_uses_its_thinker(env):
    """A full Qwen2.5-Omni checkpoint (thinker.* keys beside talker/token2wav): the Thinker's inputs."""
    from safetensors import safe_open
    from transformers import AutoProcessor, Qwen2_5OmniForConditionalGeneration
    from PIL import Image

    full = env["root"] / "omni_full"
    F.build_omni_full(full)
    lines = env["omni_lines"][:2]
    m = _write_manifest(env["root"] / "full.jsonl", lines)
    cs = manifest_calibset(m, full, use_cache=False)
    fe = multimodal.HFFrontEnd(full)
    with safe_open(str(full / "model.safetensors"), "pt") as f:  # weights really come from thinker.*
        np.testing.assert_array_equal(fe.model.model.visual.patch_embed.proj.weight.detach().numpy(),
                                      f.get_tensor("thinker.visual.patch_embed.proj.weight").numpy())
        np.testing.assert_array_equal(fe.model.model.get_input_embeddings().weight.detach().numpy(),
                                      f.get_tensor("thinker.model.embed_tokens.weight").numpy())
    model = Qwen2_5OmniForConditionalGeneration.from_pretrained(full, dtype=torch.float32).eval()
    proc = AutoProcessor.from_pretrained(full)
    for s, entry in zip(cs, lines):
        kw = {"text": [_omni_prompt(proc, entry)], "return_tensors": "pt",
              "images": [Image.open(env["root"] / p).convert("RGB") for p in entry["images"]]}
        if entry.get("audios"):
            kw["audio"] = [_wav16k(env["root"] / p) for p in entry["audios"]]
        inputs = dict(proc(**kw))
        cap = {}
        h = model.thinker.model.language_model.register_forward_pre_hook(lambda mm, a, k: cap.update(k), with_kwargs=True)
        with torch.no_grad():
            model.thinker(**inputs)
        h.remove()
        np.testing.assert_allclose(s.inputs_embeds, cap["inputs_embeds"][0].numpy(), rtol=0, atol=1e-6)
        np.testing.assert_array_equal(s.position_ids, cap["position_ids"][:, 0].numpy())


def test_text_source_with_multimodal_checkpoint_tokenizer(env):
    cs = load_calib("text", model_dir=env["omni"], samples=3, seq_len=16)
    assert cs.rope_ndim == 3 and cs.kind == "ids" and len(cs) == 3
    vocab = json.loads((env["omni"] / "config.json").read_text())["text_config"]["vocab_size"]
    assert max(int(s.input_ids.max()) for s in cs) < vocab
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(env["omni"])
    assert cs.meta["tokenizer"].startswith(type(tok).__name__)


def test_positions_agree_with_models_numpy_rope_index(env, omni_set, vl_set):
    """The JAX side's NumPy get_rope_index (masq_jax.models) gives the positions calib stores."""
    rope = pytest.importorskip("masq_jax.models.rope_index")
    from masq_jax.models.config import config_from_hf
    from masq_jax.calib.manifest import read_manifest

    for kind, cs in (("omni", omni_set), ("vl", vl_set)):
        cfg = config_from_hf(json.loads((env[kind] / "config.json").read_text()))
        fe = multimodal.HFFrontEnd(env[kind])
        manifest = env[f"{kind}_manifest"]
        for s, e in zip(cs, read_manifest(manifest)):
            inp = fe.processor_inputs(e, e.where(manifest))
            if kind == "vl" and inp.get("image_grid_thw") is None and inp.get("video_grid_thw") is None:
                continue  # text only: the model counts positions itself (checked elsewhere)
            np_ = {k: v.numpy() for k, v in inp.items() if hasattr(v, "numpy")}
            kw = dict(image_grid_thw=np_.get("image_grid_thw"), video_grid_thw=np_.get("video_grid_thw"),
                      attention_mask=np_["attention_mask"])
            if kind == "omni":
                fam = np_.get("feature_attention_mask")
                kw.update(audio_seqlens=None if fam is None else fam.sum(-1).tolist(),
                          second_per_grids=inp.get("video_second_per_grid"))
            else:
                kw.update(mm_token_type_ids=np_.get("mm_token_type_ids"), second_per_grid_ts=inp.get("second_per_grid_ts"))
            pos, _ = rope.get_rope_index(cfg, np_["input_ids"], **kw)
            np.testing.assert_array_equal(s.position_ids, np.asarray(pos)[:, 0])


def test_audio_longer_than_processor_window_warns(env):
    F.write_wav(env["root"] / "media" / "long.wav", 30.5)
    m = _write_manifest(env["root"] / "long.jsonl", [{"text": "hear", "audios": ["media/long.wav"]}])
    with pytest.warns(UserWarning, match=r"long.jsonl:1: .*long.wav is 30.5 s long; the HF processor keeps only the first 30 s"):
        cs = manifest_calibset(m, env["omni"], use_cache=False)
    assert cs.token_counts()["audio"] == 750  # 30 s -> 3000 mel frames -> 750 tokens


def test_bad_encoder_options(env):
    with pytest.raises(CalibSourceError, match="not a torch device"):
        multimodal.HFFrontEnd(env["omni"], device="gpu0")
    with pytest.raises(CalibSourceError, match="dtype must be one of"):
        multimodal.HFFrontEnd(env["omni"], dtype="int8")
    if not torch.cuda.is_available():
        with pytest.raises(CalibSourceError, match="sees no CUDA GPU"):
            multimodal.HFFrontEnd(env["omni"], device="cuda")
