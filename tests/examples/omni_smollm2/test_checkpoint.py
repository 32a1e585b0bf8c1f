"""The committed omni-SmolLM2 checkpoint reaches its recorded FP scores on a fresh sample of the test
generator (a seed the record never used, so the figure is not a memorised split), and stays small."""

from __future__ import annotations

import json
from pathlib import Path

from masq_jax.families.omni_smollm2.checkpoint import checkpoint_info
from examples.omni_smollm2.tasks import scores

CKPT = Path(__file__).resolve().parents[3] / "checkpoints" / "omni-smollm2"
ERROR_RATES = {"ocr (cer)", "asr"}  # lower is better; the rest are accuracies
SLACK = 0.2  # 12 examples a task: a binomial standard error of up to 0.14


def test_checkpoint_is_trained_and_small():
    info = checkpoint_info(CKPT)
    assert info["steps"] > 0
    assert sum(p.stat().st_size for p in CKPT.rglob("*") if p.is_file()) <= 10 * 2**20


def test_checkpoint_reaches_its_recorded_fp_scores_on_a_fresh_seed():
    rec = json.loads((CKPT / "fp_accuracy.json").read_text())
    assert rec["steps"] == checkpoint_info(CKPT)["steps"]  # the record is of this checkpoint
    from masq_jax.loading import load

    got = scores({"fp": load(CKPT)}, CKPT, n_per_task=12, seed=rec["seed"] + 1000)["fp"]
    assert set(got) == set(rec["scores"])
    for column, want in rec["scores"].items():
        if column in ERROR_RATES:
            assert got[column] <= want + SLACK, (column, got[column], want)
        else:
            assert got[column] >= want - SLACK, (column, got[column], want)
    assert got["asr"] < 0.5  # the headline modality works: most spoken words are transcribed

