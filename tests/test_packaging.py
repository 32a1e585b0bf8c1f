"""The distribution carries every module: models/ and calib/ install as masq_jax.models and
masq_jax.calib (never as bare top-level packages), every subpackage of masq_jax is listed."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREES = {"masq_jax": "masq_jax", "models": "masq_jax/models", "calib": "masq_jax/calib"}


def test_wheel_holds_every_module(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("masq_jax-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    want = {f"{dest}/{p.relative_to(ROOT / src).as_posix()}" for src, dest in TREES.items()
            for p in (ROOT / src).rglob("*.py") if "__pycache__" not in p.parts
            and not (src == "masq_jax" and p.relative_to(ROOT / src).parts[0] in ("models", "calib"))}
    assert want - names == set()
    assert not any(n.startswith(("models/", "calib/")) for n in names)  # no bare top-level packages
    assert not any(n.startswith(("examples/", "masq_jax/demos/")) for n in names)  # the demo scripts stay out
