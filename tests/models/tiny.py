"""Tiny random HF models (built with transformers, saved with save_pretrained) and torch references."""

from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXT = dict(
    vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, rms_norm_eps=1e-6,
)
MROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
VISION = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, fullatt_block_indexes=[0])
AUDIO = dict(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64, output_dim=64,
             num_mel_bins=16, max_source_positions=100)
# Token ids inside the tiny vocab so get_rope_index tests can use them.
MM_IDS = dict(image_token_id=120, video_token_id=121, audio_token_id=122, vision_start_token_id=123,
              vision_end_token_id=124, audio_start_token_id=125, audio_end_token_id=126)


def _randomize(model, seed: int = 0):
    """Give norms and biases non-trivial values (HF init leaves norms at 1 and biases at 0)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name or "lm_head" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif name.endswith("proj.weight") and "language_model" in name or name.startswith("model.layers"):
                # Scaled so attention is peaked (positions matter) and activations stay O(1).
                gain = 2.0 if ("q_proj" in name or "k_proj" in name) else 1.0
                p.copy_(gain * torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
    return model.eval()


def build(kind: str, path: str, dtype=None):
    """Build, randomise and save a tiny model of ``kind``; return the torch model (eval mode)."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    if kind == "qwen2":
        m = tf.Qwen2ForCausalLM(tf.Qwen2Config(**TEXT, rope_theta=10000.0, tie_word_embeddings=False))
    elif kind == "llama":
        m = tf.LlamaForCausalLM(tf.LlamaConfig(**TEXT, rope_theta=10000.0, tie_word_embeddings=True, head_dim=16))
    elif kind == "omni_thinker":
        cfg = tf.Qwen2_5OmniThinkerConfig(
            text_config={**TEXT, "rope_parameters": MROPE}, audio_config=AUDIO, vision_config=VISION,
            image_token_index=MM_IDS["image_token_id"], video_token_index=MM_IDS["video_token_id"],
            audio_token_index=MM_IDS["audio_token_id"], audio_start_token_id=MM_IDS["audio_start_token_id"],
            audio_end_token_id=MM_IDS["audio_end_token_id"],
        )
        cfg.vision_start_token_id = MM_IDS["vision_start_token_id"]
        cfg.vision_end_token_id = MM_IDS["vision_end_token_id"]
        m = tf.Qwen2_5OmniThinkerForConditionalGeneration(cfg)
    elif kind == "vl":
        cfg = tf.Qwen2_5_VLConfig(
            text_config={**TEXT, "rope_parameters": MROPE}, vision_config=VISION,
            image_token_id=MM_IDS["image_token_id"], video_token_id=MM_IDS["video_token_id"],
            vision_start_token_id=MM_IDS["vision_start_token_id"], vision_end_token_id=MM_IDS["vision_end_token_id"],
        )
        m = tf.Qwen2_5_VLForConditionalGeneration(cfg)
    elif kind == "omni_full":
        talker = dict(vocab_size=64, embedding_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=16, rope_parameters=MROPE)
        dit = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, head_dim=16, emb_dim=16, enc_emb_dim=16,
                   enc_dim=16, enc_channels=[16, 16, 16, 16, 48], enc_attention_channels=8, enc_se_channels=8,
                   num_embeds=64, look_ahead_layers=[0], look_backward_layers=[0], mel_dim=8)
        big = dict(mel_dim=8, upsample_initial_channel=16, upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4])
        cfg = tf.Qwen2_5OmniConfig(
            thinker_config=dict(text_config={**TEXT, "rope_parameters": MROPE}, audio_config=AUDIO, vision_config=VISION),
            talker_config=talker, token2wav_config=dict(dit_config=dit, bigvgan_config=big),
        )
        m = tf.Qwen2_5OmniForConditionalGeneration(cfg)
    else:
        raise ValueError(kind)
    _randomize(m)
    if dtype is not None:
        m = m.to(dtype)
    m.save_pretrained(path)
    return m


def torch_logits(kind: str, model, inputs_embeds, position_ids=None, attention_mask=None):
    """Decoder logits of the torch model from inputs_embeds (+ positions, mask) as float64 NumPy."""
    import torch

    kw = dict(inputs_embeds=torch.tensor(np.array(inputs_embeds)), attention_mask=None if attention_mask is None
              else torch.tensor(np.array(attention_mask)))
    if position_ids is not None:
        kw["position_ids"] = torch.tensor(np.array(position_ids))
    with torch.no_grad():
        if kind == "omni_full":
            h = model.thinker.model.language_model(**kw).last_hidden_state
            out = model.thinker.lm_head(h)
        elif kind in ("omni_thinker", "vl"):
            h = model.model.language_model(**kw).last_hidden_state
            out = model.lm_head(h)
        else:
            out = model(**kw).logits
    return out.double().numpy()


