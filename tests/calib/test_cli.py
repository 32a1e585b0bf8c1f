"""python -m masq_jax.calib: build/info round trip, errors as one line with exit status 2."""

import json
import subprocess
import sys

from masq_jax.calib import CalibSet
from masq_jax.calib.__main__ import main


def test_build_and_info(tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert main(["build", "synthetic:hidden=32,image=2x2,audio=4", "--samples", "3", "--out", str(out)]) == 0
    built = json.loads(capsys.readouterr().out)
    cs = CalibSet.load(out)
    assert built["samples"] == 3 == len(cs) and built["tokens"] == cs.token_counts()
    assert main(["info", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["fingerprint"] == built["fingerprint"]


def test_errors_one_line_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "masq_jax.calib", "info", str(tmp_path / "none.npz")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "no such calibration file" in r.stderr
