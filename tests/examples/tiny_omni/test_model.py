"""tiny-omni model: the encoders' outputs replace the placeholders (checked against torch's
masked_scatter, the Thinker's own operation), 3-D positions, the HF config and checkpoint round trip."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from examples.tiny_omni import data as D
from masq_jax.families.tiny_omni import model as M


@pytest.fixture(scope="module")
def small():
    hf = M.hf_config(hidden=128, intermediate=192, layers=2, heads=2, kv_heads=1, enc_hidden=32,
                     sink_channels=(3, 77))
    cfg = M.decoder_config(hf)
    dec = M.init_decoder(cfg, jax.random.PRNGKey(0))
    enc = M.init_encoders(cfg.hidden_size, 32, jax.random.PRNGKey(1))
    return hf, cfg, dec, enc


def test_tiny_omni_encoder_outputs_replace_placeholders_like_masked_scatter(small):
    torch = pytest.importorskip("torch")
    hf, cfg, dec, enc = small
    b = D.make_task("match", 3, seed=4)
    sink = jnp.asarray(M.sink_vector(hf))
    got = np.asarray(M.assemble_embeds(dec, enc, sink, jnp.asarray(b.input_ids), jnp.asarray(b.patches),
                                       jnp.asarray(b.audio)))
    # reference: HF Thinker order — embed ids, then masked_scatter image features, then audio features
    emb = torch.tensor(np.asarray(dec["embed"]))[torch.tensor(b.input_ids).long()]
    ids = torch.tensor(b.input_ids)
    vis = torch.tensor(np.asarray(M.encode(enc["vision"], jnp.asarray(b.patches), "vision") + sink)).reshape(-1, cfg.hidden_size)
    aud = torch.tensor(np.asarray(M.encode(enc["audio"], jnp.asarray(b.audio), "audio"))).reshape(-1, cfg.hidden_size)
    emb = emb.masked_scatter((ids == D.TOK["<image>"])[..., None].expand_as(emb), vis)
    emb = emb.masked_scatter((ids == D.TOK["<audio>"])[..., None].expand_as(emb), aud)
    np.testing.assert_allclose(got, emb.numpy(), rtol=1e-6, atol=1e-6)
    # text positions keep the token embeddings; vision tokens carry the sink channels
    txt = M.modality_ids(b.input_ids) == 0
    np.testing.assert_array_equal(got[txt], np.asarray(dec["embed"])[b.input_ids[txt]])
    vis_tok = got[M.modality_ids(b.input_ids) == 1]
    assert np.abs(vis_tok[:, [3, 77]]).min() > 0.5 * float(hf["tiny_omni"]["vision_sink_value"])


def test_tiny_omni_positions_are_thinker_3d_positions(small):
    _, cfg, _, _ = small
    b = D.make_task("match", 2, seed=0)
    pos = M.positions(cfg, b.input_ids)
    assert pos.shape == (3, 2, b.input_ids.shape[1])
    p = pos[:, 0]
    img = np.flatnonzero(b.input_ids[0] == D.TOK["<image>"])
    start = p[0, img[0] - 1] + 1  # after <vision_bos>
    rows, cols = np.divmod(np.arange(D.N_VISION), D.GRID)
    np.testing.assert_array_equal(p[:, img], np.stack([np.full(16, start), start + rows, start + cols]))
    aud = np.flatnonzero(b.input_ids[0] == D.TOK["<audio>"])
    assert (p[0, aud] == p[1, aud]).all() and (np.diff(p[0, aud]) == 1).all()
    ext = M.extend_positions(pos, 2)
    assert (ext[:, :, -2] == pos.max(axis=(0, 2))[None, :] + 1).all()


def test_tiny_omni_checkpoint_round_trip_through_load_pretrained(small, tmp_path):
    from masq_jax.models import load_pretrained

    hf, cfg, dec, enc = small
    M.save_checkpoint(str(tmp_path), hf, dec, enc)
    model = load_pretrained(str(tmp_path))
    assert model.config.arch == "qwen2_5_omni_thinker" and model.config.mrope_section == (8, 12, 12)
    assert model.config.image_token_id == D.TOK["<image>"] and model.config.num_kv_heads == 1
    for path in (("embed",), ("lm_head",)):
        np.testing.assert_array_equal(np.asarray(model.params[path[0]]), np.asarray(dec[path[0]]))
    np.testing.assert_array_equal(np.asarray(model.params["layers"]["k_proj"]["b"]), np.asarray(dec["layers"]["k_proj"]["b"]))
    hf2, enc2, sink = M.load_encoders(str(tmp_path))
    np.testing.assert_array_equal(sink, M.sink_vector(hf))
    np.testing.assert_array_equal(np.asarray(enc2["audio"]["w1"]), np.asarray(enc["audio"]["w1"]))


def test_tiny_omni_missing_encoder_file_is_a_clear_error(small, tmp_path):
    hf, _, dec, enc = small
    M.save_checkpoint(str(tmp_path), hf, dec, enc)
    os.remove(tmp_path / M.ENCODER_FILE)
    with pytest.raises(M.TinyOmniModelError, match="encoders.safetensors"):
        M.load_encoders(str(tmp_path))
