"""What small flags change is said, not silent: a modality ``--seq-len`` cuts away, fewer samples than
asked, evaluation on the calibration samples; each one ``masq: warning:`` line, and the same line in
report.json's ``warnings``. The progress bar names the preset as written (W4A8)."""

from __future__ import annotations

import json

import numpy as np

from masq_jax.cli import main
from tests.cli.runner import run

TOY = ["quantize", "--model", "toy:tiny", "--method", "rtn", "--epochs", "0"]


def warning_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [ln[len("masq: warning: "):] for ln in err.splitlines() if ln.startswith("masq: warning: ")]


def test_seq_len_that_cuts_a_modality_away(capsys, tmp_path):
    out = tmp_path / "o"
    code, _, err = run(capsys, *TOY, "--calib", "synthetic", "--samples", "2", "--eval-samples", "0",
                       "--seq-len", "64", "--out", str(out), "--quiet")
    assert code == 0, err
    cut = [w for w in warning_lines(err) if w.startswith("audio: --seq-len 64 cuts all")]
    assert len(cut) == 1 and "pass a --seq-len above 110" in cut[0], err
    report = json.loads((out / "report.json").read_text())
    assert cut[0] in report["warnings"] and report["calibration"]["token_counts"]["audio"] == 0


def test_few_samples_and_evaluation_on_the_calibration_set(capsys, tmp_path):
    npz = tmp_path / "two.npz"
    rng = np.random.default_rng(0)
    np.savez(npz, inputs_embeds=rng.standard_normal((2, 8, 64)).astype(np.float32),
             position_ids=np.tile(np.arange(8), (3, 2, 1)), modality_ids=np.zeros((2, 8), np.int32))
    out = tmp_path / "o"
    code, stdout, err = run(capsys, *TOY, "--calib", str(npz), "--samples", "4", "--eval-samples", "2",
                            "--out", str(out))
    assert code == 0, err
    lines = warning_lines(err)
    fallback = [w for w in lines if w.startswith("evaluation: the calibration source gives 2 sample(s), too few "
                                                 "to hold out --eval-samples 2")]
    fewer = [w for w in lines if w.startswith("calibration: 2 sample(s), fewer than --samples 4")]
    assert len(fallback) == 1 and len(fewer) == 1, err
    report = json.loads((out / "report.json").read_text())
    assert fallback[0] in report["warnings"] and fewer[0] in report["warnings"]
    assert report["evaluated_on"] == "calibration" and report["calibration"]["samples"] == 2
    assert "mean SQNR (dB, calibration)" in stdout
    assert "rtn W4A8" in err and "4w8a" not in err  # the progress bar (not --quiet)
