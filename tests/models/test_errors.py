"""Bad input gets one clear error: unsupported architecture, missing tensors, shape mismatch, bad path."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest


def _copy(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def _rewrite(path, fn):
    from safetensors.numpy import load_file, save_file

    f = os.path.join(path, "model.safetensors")
    tensors = load_file(f)
    save_file(fn(tensors), f)


def test_unsupported_architecture(tiny_models, tmp_path):
    import masq_jax.models as mm

    d = _copy(tiny_models("qwen2")[0], tmp_path / "gpt")
    cfg = json.load(open(os.path.join(d, "config.json")))
    cfg["architectures"] = ["GPT2LMHeadModel"]
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    with pytest.raises(mm.UnsupportedArchitectureError) as e:
        mm.load_pretrained(d)
    msg = str(e.value)
    assert "\n" not in msg and "GPT2LMHeadModel" in msg
    for arch in mm.SUPPORTED_HF_ARCHITECTURES:
        assert arch in msg
    assert isinstance(e.value, ValueError)


def test_missing_tensors_all_named(tiny_models, tmp_path):
    import masq_jax.models as mm

    d = _copy(tiny_models("qwen2")[0], tmp_path / "missing")
    drop = ["model.layers.1.mlp.up_proj.weight", "model.norm.weight", "model.layers.0.self_attn.k_proj.bias"]
    _rewrite(d, lambda t: {k: v for k, v in t.items() if k not in drop})
    with pytest.raises(mm.MissingTensorsError) as e:
        mm.load_pretrained(d)
    msg = str(e.value)
    assert "3 tensor" in msg and "\n" not in msg
    for name in ("layers.1.up_proj.w", "final_norm", "layers.0.k_proj.b"):
        assert name in msg


def test_shape_mismatch_names_key_and_shapes(tiny_models, tmp_path):
    import masq_jax.models as mm

    d = _copy(tiny_models("qwen2")[0], tmp_path / "shape")
    key = "model.layers.0.mlp.gate_proj.weight"
    _rewrite(d, lambda t: {**t, key: np.zeros((95, 64), np.float32)})
    with pytest.raises(mm.ShapeMismatchError) as e:
        mm.load_pretrained(d)
    msg = str(e.value)
    assert key in msg and "(95, 64)" in msg and "(96, 64)" in msg


def test_path_that_does_not_exist(tmp_path):
    import masq_jax.models as mm

    p = str(tmp_path / "nope")
    for fn in (mm.load_pretrained, mm.load_params):
        with pytest.raises(mm.CheckpointNotFoundError) as e:
            fn(p)
        assert p in str(e.value) and "no such file" in str(e.value)
        assert isinstance(e.value, FileNotFoundError)


def test_directory_without_config(tmp_path):
    import masq_jax.models as mm

    with pytest.raises(mm.CheckpointNotFoundError, match="config.json"):
        mm.load_pretrained(str(tmp_path))


def test_unsupported_gguf_architecture(tmp_path):
    import gguf

    import masq_jax.models as mm

    p = str(tmp_path / "x.gguf")
    w = gguf.GGUFWriter(p, "gpt2")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(mm.UnsupportedArchitectureError, match="gpt2.*llama"):
        mm.load_pretrained(p)


def test_forward_input_errors(tiny_models):
    import masq_jax.models as mm

    model = mm.load_pretrained(tiny_models("qwen2")[0])
    with pytest.raises(mm.InputError, match="exactly one"):
        model()
    with pytest.raises(mm.InputError, match="1-D RoPE"):
        model(input_ids=np.zeros((1, 4), np.int32), position_ids=np.zeros((3, 1, 4), np.int32))


def test_quantized_checkpoint_is_refused_with_a_pointer(tiny_models, tmp_path):
    """models/ loads full-precision weights only; it knows nothing of the quantizer and says where to go."""
    import masq_jax.models as mm

    d = _copy(tiny_models("qwen2")[0], tmp_path / "q")
    cfg = json.load(open(os.path.join(d, "config.json")))
    cfg["quantization_config"] = {"quant_method": "gptq"}
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    with pytest.raises(mm.ModelLoadError, match="quant_method='gptq'.*masq_jax.load"):
        mm.load_pretrained(d)
    assert not hasattr(mm, "register_quantized_loader")


def test_errors_share_the_package_root():
    import masq_jax.models as mm
    from masq_jax.errors import MasqError

    for cls in (mm.ModelLoadError, mm.InputError, mm.CheckpointNotFoundError, mm.ConfigError):
        assert issubclass(cls, MasqError)
    assert issubclass(mm.CheckpointNotFoundError, FileNotFoundError)
