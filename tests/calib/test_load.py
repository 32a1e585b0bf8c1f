"""load_calib dispatch: npz (subsample, truncate, hidden/rope checks) and source-string errors."""

import numpy as np
import pytest

from masq_jax.calib import CalibFormatError, CalibSet, CalibSourceError, load_calib, synthetic_calibset


def _text_npz(tmp_path, n=10):
    cs = CalibSet.from_samples([dict(modality_ids=np.zeros(8, int), position_ids=np.arange(8), input_ids=np.arange(i, i + 8)) for i in range(n)])
    p = tmp_path / "t.npz"
    cs.save(p)
    return cs, p


def test_npz_subsample_truncate_and_rope(tmp_path):
    cs, p = _text_npz(tmp_path)
    full = load_calib(str(p))
    assert full.fingerprint() == cs.fingerprint()
    sub = load_calib(str(p), samples=4, seed=2)
    assert sub.fingerprint() == cs.subsample(4, seed=2).fingerprint()
    assert (load_calib(str(p), seq_len=5).lengths == 5).all()
    c3 = load_calib(str(p), config={"arch": "qwen2_5_omni_thinker", "mrope_section": [16, 24, 24]})
    assert c3.rope_ndim == 3
    syn = synthetic_calibset(hidden_size=16, samples=2)
    syn.save(tmp_path / "s.npz")
    with pytest.raises(CalibSourceError, match="hidden size 16 but the model's is 32"):
        load_calib(str(tmp_path / "s.npz"), config={"hidden_size": 32})
    with pytest.raises(CalibSourceError, match="1-D RoPE model cannot take them"):
        load_calib(str(tmp_path / "s.npz"), config={"hidden_size": 16, "model_type": "llama"})


def test_source_errors(tmp_path):
    with pytest.raises(CalibSourceError, match="needs model_dir"):
        load_calib(str(tmp_path / "m.jsonl"))
    with pytest.raises(CalibFormatError, match="no such calibration file"):
        load_calib(str(tmp_path / "x.npz"))
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(CalibSourceError, match="unsupported calibration file type"):
        load_calib(str(tmp_path / "x.json"))
    with pytest.raises(CalibSourceError, match="unknown calibration source 'pile'"):
        load_calib("pile")
    with pytest.raises(CalibSourceError, match="samples must be"):
        load_calib("synthetic", samples=0)
    with pytest.raises(CalibSourceError, match="seq_len must be"):
        load_calib("synthetic", seq_len=0)
    with pytest.raises(CalibSourceError, match="must be a string"):
        load_calib(3)


def test_rope_rank_from_decoder_config():
    """load_calib reads masq_jax.models' DecoderConfig (mrope -> [3, S] positions, else [S])."""
    cfgmod = pytest.importorskip("masq_jax.models.config")
    base = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1,
                head_dim=16, rope_theta=1e4, rms_norm_eps=1e-6, tie_word_embeddings=False, attention_bias=False)
    omni = cfgmod.DecoderConfig(arch="qwen2_5_omni_thinker", mrope_section=(2, 3, 3), **base)
    llama = cfgmod.DecoderConfig(arch="llama", mrope_section=None, **base)
    assert load_calib("synthetic", config=omni, samples=2).rope_ndim == 3
    cs = load_calib("synthetic", config=llama, samples=2)
    assert cs.rope_ndim == 1 and cs.hidden_size == 32
