"""The committed tiny-omni checkpoint: loads through masq_jax.models, its calibration files are valid
CalibSets, and generation on a fresh test subset (through the tasks harness) reaches the recorded FP
accuracy."""

import json
from pathlib import Path


CKPT = Path(__file__).resolve().parents[3] / "checkpoints" / "tiny-omni"



def test_tiny_omni_checkpoint_loads_with_load_pretrained():
    from masq_jax.models import load_pretrained
    from masq_jax.families.tiny_omni import model as M

    model = load_pretrained(str(CKPT))
    cfg = model.config
    assert cfg.arch == "qwen2_5_omni_thinker" and cfg.attention_bias and cfg.num_kv_heads < cfg.num_heads
    hf, enc, sink = M.load_encoders(str(CKPT))
    assert sink.shape == (cfg.hidden_size,) and (sink != 0).sum() == len(hf["tiny_omni"]["vision_sink_channels"])
    total = sum(f.stat().st_size for f in CKPT.iterdir() if f.is_file())
    assert total <= 20 * 2**20


def test_tiny_omni_calibration_files_are_calibsets_with_all_modalities():
    from masq_jax.calib import CalibSet
    from examples.tiny_omni import data as D

    for name in ("calib.npz", "test.npz"):
        cs = CalibSet.load(CKPT / name)
        counts = cs.token_counts()
        assert cs.kind == "embeds" and cs.rope_ndim == 3 and min(counts.values()) > 0
        assert cs.meta["seed"] == D.SPLIT_SEEDS[cs.meta["split"]]
        assert counts["vision"] == cs.meta["per_task"] * 2 * D.N_VISION  # vision + match tasks


def test_tiny_omni_checkpoint_reaches_recorded_fp_accuracy_on_a_test_subset():
    from examples.tiny_omni import data as D
    from examples.tiny_omni.tasks import accuracy
    from masq_jax.loading import load

    rec = json.loads((CKPT / "fp_accuracy.json").read_text())["accuracy"]
    got = accuracy({"fp": load(CKPT)}, CKPT, n_per_task=20)["fp"]
    for t in D.TASKS:
        assert got[t] >= rec[t] - 0.1, (t, got[t], rec[t])
