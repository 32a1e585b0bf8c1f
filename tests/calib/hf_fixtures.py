"""Tiny random Qwen2.5-Omni Thinker / Qwen2.5-VL checkpoints with real processors, built offline.

A byte-level BPE tokenizer trained (``tokenizers``) on a few sentences carries the real special
tokens; the Omni tokenizer gets ``extra_special_tokens`` (docs/calib.md) and the standalone
Thinker config gets ``vision_start_token_id`` / ``vision_end_token_id``. Media files are written by
the helpers (Pillow PNGs, 16-bit PCM WAVs via the stdlib ``wave`` module).
"""

from __future__ import annotations

import json
import os
import wave
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

OMNI_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
                "<|vision_bos|>", "<|vision_eos|>", "<|IMAGE|>", "<|VIDEO|>"]
VL_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
              "<|image_pad|>", "<|video_pad|>"]
CORPUS = [
    "the cat sees a picture and the dog hears a sound",
    "what is in this picture? a cat and a dog.",
    "you are a helpful assistant. describe what you hear and see.",
    "system user assistant the quick brown fox jumps over the lazy dog",
]
HIDDEN = 64
# A Qwen-style chat template (what real Omni checkpoints ship, reduced): placeholders per content item.
OMNI_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif c['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif c['type'] == 'video' %}<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _bpe(special: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(CORPUS * 4, trainer)
    return tk


def _vision_processors():
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    kw = dict(min_pixels=56 * 56, max_pixels=112 * 112, patch_size=14, merge_size=2, temporal_patch_size=2)
    return Qwen2VLImageProcessor(**kw), Qwen2VLVideoProcessor(**kw)


def _vision_config() -> dict:
    return dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=HIDDEN,
                fullatt_block_indexes=[1], window_size=56)


def _text_config(vocab: int) -> dict:
    return dict(vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]})


def build_omni_thinker(out: Path, seed: int = 0, chat_template: bool = True) -> dict:
    """Save a tiny Qwen2.5-Omni Thinker + Qwen2_5OmniProcessor to ``out``; return the token ids."""
    import torch
    from transformers import (Qwen2_5OmniProcessor, Qwen2_5OmniThinkerConfig,
                              Qwen2_5OmniThinkerForConditionalGeneration, Qwen2TokenizerFast,
                              WhisperFeatureExtractor)

    tok = Qwen2TokenizerFast(
        tokenizer_object=_bpe(OMNI_SPECIAL), eos_token="<|im_end|>", pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|IMAGE|>", "audio_token": "<|AUDIO|>", "video_token": "<|VIDEO|>",
                              "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
                              "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"},
    )
    ids = {s: tok.convert_tokens_to_ids(s) for s in OMNI_SPECIAL}
    ip, vp = _vision_processors()
    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000)
    proc = Qwen2_5OmniProcessor(image_processor=ip, video_processor=vp, feature_extractor=fe, tokenizer=tok,
                                chat_template=OMNI_CHAT_TEMPLATE if chat_template else None)
    cfg = Qwen2_5OmniThinkerConfig(
        text_config=_text_config(len(tok) + 8),
        vision_config=_vision_config(),
        audio_config=dict(num_mel_bins=128, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                          d_model=32, output_dim=HIDDEN, n_window=50),
        audio_token_index=ids["<|AUDIO|>"], image_token_index=ids["<|IMAGE|>"], video_token_index=ids["<|VIDEO|>"],
        audio_start_token_id=ids["<|audio_bos|>"], audio_end_token_id=ids["<|audio_eos|>"],
    )
    cfg.vision_start_token_id = ids["<|vision_bos|>"]
    cfg.vision_end_token_id = ids["<|vision_eos|>"]
    torch.manual_seed(seed)
    model = Qwen2_5OmniThinkerForConditionalGeneration(cfg).eval()
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return ids


def build_omni_full(out: Path, seed: int = 0) -> dict:
    """Save a tiny *full* Qwen2.5-Omni (Thinker + Talker + Token2Wav; keys ``thinker.*``) + processor."""
    import torch
    from transformers import AutoProcessor, Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration

    thinker_dir = out.parent / (out.name + "_thinker_tmp")
    ids = build_omni_thinker(thinker_dir, seed=seed)
    proc = AutoProcessor.from_pretrained(thinker_dir)
    thinker_cfg = json.loads((thinker_dir / "config.json").read_text())
    mrope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    talker = dict(vocab_size=64, embedding_size=HIDDEN, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=1, head_dim=16, rope_parameters=mrope)
    dit = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, head_dim=16, emb_dim=16, enc_emb_dim=16,
               enc_dim=16, enc_channels=[16, 16, 16, 16, 48], enc_attention_channels=8, enc_se_channels=8,
               num_embeds=64, look_ahead_layers=[0], look_backward_layers=[0], mel_dim=8)
    big = dict(mel_dim=8, upsample_initial_channel=16, upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4])
    for k in ("architectures", "transformers_version", "dtype", "torch_dtype"):
        thinker_cfg.pop(k, None)
    cfg = Qwen2_5OmniConfig(thinker_config=thinker_cfg, talker_config=talker,
                            token2wav_config=dict(dit_config=dit, bigvgan_config=big))
    cfg.thinker_config.vision_start_token_id = ids["<|vision_bos|>"]
    cfg.thinker_config.vision_end_token_id = ids["<|vision_eos|>"]
    torch.manual_seed(seed + 1)
    model = Qwen2_5OmniForConditionalGeneration(cfg).eval()
    model.save_pretrained(out)
    proc.save_pretrained(out)
    torch.save({}, out / "spk_dict.pt")  # the full model's from_pretrained insists on speaker data
    return ids


def build_qwen2_5_vl(out: Path, seed: int = 0) -> dict:
    """Save a tiny Qwen2.5-VL + Qwen2_5_VLProcessor to ``out``; return the token ids."""
    import torch
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2TokenizerFast)

    tok = Qwen2TokenizerFast(tokenizer_object=_bpe(VL_SPECIAL), eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tc = _text_config(len(tok) + 8)
    tc.update(bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"))
    ids = {s: tok.convert_tokens_to_ids(s) for s in VL_SPECIAL}
    ip, vp = _vision_processors()
    proc = Qwen2_5_VLProcessor(image_processor=ip, tokenizer=tok, video_processor=vp)
    vc = _vision_config()
    vc.update(out_hidden_size=HIDDEN, tokens_per_second=2)
    cfg = Qwen2_5_VLConfig(text_config=tc, vision_config=vc,
                           image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                           vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return ids


def write_png(path: Path, h: int, w: int, seed: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def write_frames(folder: Path, n: int, h: int, w: int, seed: int) -> Path:
    """A 'video' as a folder of ``n`` PNG frames (how manifests give videos)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_png(folder / f"{i:03d}.png", h, w, seed + i)
    return folder


def corrupt_encoder_copy(src: Path, dst: Path, prefix: str = "visual.") -> Path:
    """Copy a saved checkpoint with one vision-encoder weight set to NaN (for NaN-output errors)."""
    import shutil

    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "model.safetensors"))
    name = sorted(k for k in tensors if k.startswith(prefix) and k.endswith("weight"))[0]
    tensors[name] = np.full_like(tensors[name], np.nan)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def write_wav(path: Path, seconds: float, rate: int = 16000, freq: float = 440.0, channels: int = 1) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * np.sin(2 * np.pi * 3.1 * freq * t)
    pcm = (np.repeat(x[:, None], channels, axis=1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path
