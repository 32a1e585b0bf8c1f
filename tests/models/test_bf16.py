"""bfloat16 checkpoints load without torch and run within bf16 tolerance of float32."""

from __future__ import annotations

import numpy as np
import pytest

from tests.models.tiny import build, torch_logits


@pytest.fixture(scope="module")
def bf16_ckpt(tmp_path_factory):
    import torch

    d = str(tmp_path_factory.mktemp("qwen2_bf16"))
    tm = build("qwen2", d, dtype=torch.bfloat16)
    return d, tm


def test_bf16_checkpoint_is_bf16_on_disk(bf16_ckpt):
    from masq_jax.models.safetensors_io import read_header

    header, _ = read_header(bf16_ckpt[0] + "/model.safetensors")
    assert {v["dtype"] for v in header.values()} == {"BF16"}


def test_bf16_load_and_forward(bf16_ckpt):
    import jax.numpy as jnp
    import torch

    import masq_jax.models as mm

    d, tm = bf16_ckpt
    m16 = mm.load_pretrained(d, dtype=jnp.bfloat16)
    m32 = mm.load_pretrained(d, dtype=jnp.float32)
    assert all(x.dtype == jnp.bfloat16 for x in __import__("jax").tree.leaves(m16.params))
    ids = np.random.default_rng(0).integers(0, 128, (2, 16))
    l16 = np.asarray(m16(input_ids=ids), np.float64)
    l32 = np.asarray(m32(input_ids=ids), np.float64)
    assert np.isfinite(l16).all()
    scale = np.max(np.abs(l32))
    # bf16 has an 8-bit mantissa: ~0.4% per op; a 2-layer model stays within a few percent of the scale
    assert np.max(np.abs(l16 - l32)) / scale < 5e-2
    assert np.max(np.abs(l16 - l32)) / scale > 0  # really computed in bf16
    # float32 load of the bf16 weights equals torch's float32 model on the same (upcast) weights
    tm32 = tm.float()
    # .to(bfloat16) also rounded the rotary inv_freq buffer; rebuild it in float32 as a fresh model has it
    tm32.model.rotary_emb = type(tm32.model.rotary_emb)(tm32.config)
    emb = np.asarray(m32.params["embed"])[ids]
    ref = torch_logits("qwen2", tm32, emb)
    assert np.max(np.abs(l32 - ref)) / np.max(np.abs(ref)) < 1e-4
    # and torch's own bf16 forward is as close to float32 as ours
    with torch.no_grad():
        t16 = tm.to(torch.bfloat16)(input_ids=torch.tensor(ids)).logits.double().numpy()
    assert np.max(np.abs(l16 - t16)) / scale < 5e-2
