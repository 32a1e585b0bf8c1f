"""A quantized artefact generates through its KV cache exactly what its own full forward predicts:
every generated token is the argmax of the artefact's logits over prompt + generated tokens (the
cache is consistent with the model), for W8A8, W4A8 and W4A16, with and without the low-rank branch
(and per-modality weights), on a multimodal prompt (routed prefill, text decode)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import masq_jax
from masq_jax.calib.synthetic import SyntheticSpec, synthetic_calibset
from masq_jax.calibrate.runner import run_quantize
from masq_jax.models import load_params
from masq_jax.settings import make_settings

pytestmark = pytest.mark.filterwarnings("ignore")
N = 8


def calib(hidden, samples, seed):
    return synthetic_calibset(SyntheticSpec(hidden_size=hidden, samples=samples, text_len=8, image_h=2, image_w=4,
                                            audio_len=6, vary=False, seed=seed))


@pytest.fixture(scope="module")
def thinker(tiny_models_dir):
    return load_params(tiny_models_dir("omni_thinker"))


@pytest.fixture(scope="module")
def tiny_models_dir(tmp_path_factory):
    from tests.models.tiny import build

    cache = {}

    def get(kind):
        if kind not in cache:
            d = str(tmp_path_factory.mktemp(kind))
            build(kind, d)
            cache[kind] = d
        return cache[kind]

    return get


@pytest.mark.parametrize("preset,method", [(p, m) for p in ("w8a8", "w4a8", "w4a16") for m in ("rtn", "masquant")]
                         + [("w4a8", "mas")])  # mas: one weight per modality, decode on the text weight
def test_generated_tokens_are_the_full_forward_argmax(thinker, tmp_path, preset, method):
    cfg, params = thinker
    st = make_settings(method=method, preset_name=preset, group_size=32 if preset == "w4a16" else None, epochs=0,
                       samples=4, rank=8, rank_floor=0)
    run_quantize((cfg, params), calib(cfg.hidden_size, 4, 0), str(tmp_path / "q"), st, progress=False)
    q = masq_jax.load(tmp_path / "q")
    assert (q.params["layers"]["q_proj"].rank > 0) == (method == "masquant")
    s = calib(cfg.hidden_size, 1, 9)[0]
    emb, pos, mid = s.inputs_embeds[None], s.position_ids[:, None], s.modality_ids[None]
    assert set(np.unique(mid)) == {0, 1, 2}
    out = q.generate(inputs_embeds=emb, position_ids=pos, modality_ids=mid, max_new_tokens=N, eos_token_id=None)
    p = emb.shape[1]
    full_emb = np.concatenate([emb, np.asarray(q.params["embed"])[out]], axis=1)
    cont = pos.max() + 1 + np.arange(N)
    full_pos = np.concatenate([pos, np.broadcast_to(cont, (3, 1, N))], axis=2)
    full_mid = np.concatenate([mid, np.zeros((1, N), np.int32)], axis=1)  # decode tokens are text
    logits = q(inputs_embeds=jnp.asarray(full_emb), position_ids=full_pos, modality_ids=full_mid)
    np.testing.assert_array_equal(np.argmax(np.asarray(logits)[0, p - 1:p + N - 1], -1), out[0])
    assert len(set(out[0].tolist())) > 1  # not a constant continuation
