"""config_from_hf on real-world config layouts (old rope_scaling style, full Omni, VL) and sharded loading."""

from __future__ import annotations

import numpy as np
import pytest

# Abridged from the published Qwen2.5-VL-7B-Instruct config.json (transformers 4.x layout).
VL_OLD = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl", "hidden_act": "silu",
    "hidden_size": 3584, "intermediate_size": 18944, "num_attention_heads": 28, "num_hidden_layers": 28,
    "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "vocab_size": 152064,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}, "tie_word_embeddings": False,
    "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
    "vision_config": {"spatial_merge_size": 2, "tokens_per_second": 2},
}
# Abridged from the published Qwen2.5-Omni-7B config.json.
OMNI_OLD = {
    "architectures": ["Qwen2_5OmniModel"], "model_type": "qwen2_5_omni",
    "thinker_config": {
        "architectures": ["Qwen2_5OmniThinkerForConditionalGeneration"], "audio_token_index": 151646,
        "image_token_index": 151655, "video_token_index": 151656, "vision_start_token_id": 151652,
        "audio_start_token_id": 151647, "audio_end_token_id": 151648, "position_id_per_seconds": 25,
        "seconds_per_chunk": 2, "vision_config": {"spatial_merge_size": 2},
        "text_config": {
            "hidden_act": "silu", "hidden_size": 3584, "intermediate_size": 18944, "num_attention_heads": 28,
            "num_hidden_layers": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
            "rope_scaling": {"mrope_section": [16, 24, 24], "rope_type": "default", "type": "default"},
            "vocab_size": 152064, "tie_word_embeddings": False,
        },
    },
    "talker_config": {"hidden_size": 896},
}


def test_old_vl_config():
    from masq_jax.models import config_from_hf

    c = config_from_hf(VL_OLD)
    assert (c.arch, c.head_dim, c.num_kv_heads, c.rope_theta, c.mrope_section) == (
        "qwen2_5_vl", 128, 4, 1e6, (16, 24, 24))
    assert not c.tie_word_embeddings and c.attention_bias
    assert (c.image_token_id, c.vision_start_token_id, c.tokens_per_second) == (151655, 151652, 2)
    assert hash(c) == hash(config_from_hf(dict(VL_OLD)))  # hashable, hf_config not part of the hash


def test_old_omni_config_reads_thinker():
    from masq_jax.models import config_from_hf

    c = config_from_hf(OMNI_OLD)
    assert (c.arch, c.hidden_size, c.num_layers, c.mrope_section) == ("qwen2_5_omni_thinker", 3584, 28, (16, 24, 24))
    assert (c.audio_token_id, c.audio_start_token_id, c.image_token_id) == (151646, 151647, 151655)


def test_unsupported_rope_type():
    from masq_jax.models import ConfigError, config_from_hf

    bad = {**VL_OLD, "architectures": ["Qwen2ForCausalLM"], "rope_scaling": {"type": "yarn", "factor": 4.0}}
    with pytest.raises(ConfigError, match="yarn"):
        config_from_hf(bad)


def test_sharded_checkpoint(tiny_models, tmp_path):
    import masq_jax.models as mm

    _, tm = tiny_models("qwen2")
    d = str(tmp_path / "sharded")
    tm.save_pretrained(d, max_shard_size="40KB")
    import os

    assert os.path.exists(os.path.join(d, "model.safetensors.index.json"))
    a = mm.load_params(tiny_models("qwen2")[0])[1]
    b = mm.load_params(d)[1]
    import jax

    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
