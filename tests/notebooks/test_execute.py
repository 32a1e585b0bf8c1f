"""Execute every notebook in notebooks/ with nbclient: a cell that raises (its `assert`s included) fails.

Each notebook runs its small configuration (`toy:small` + synthetic data) and asserts the claims it
plots, so a notebook that stops running or stops showing what it says fails CI. The kernel is this
interpreter (a kernelspec written to a temporary JUPYTER_PATH), so it sees the same venv.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL = "masq-jax-test"
CELL_TIMEOUT = 400  # seconds per cell (the slowest cell, quantize in 01, takes ~110 s on a shared 2-core CPU)


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A kernelspec pointing at sys.executable in a private JUPYTER_PATH, plus the kernel's env."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "masq-jax tests", "language": "python"}))
    return {"JUPYTER_PATH": str(root), "HF_HUB_OFFLINE": "1"}


def test_notebooks_found():
    names = [p.name for p in NOTEBOOKS]
    assert names == ["01_quickstart.ipynb", "02_modality_dominance.ipynb", "03_sqnr_vs_rank.ipynb",
                     "04_effective_rank.ipynb"], names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean(path):
    """Outputs are cleared (CI executes them) and the model is chosen by one variable at the top."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), \
        f"{path.name}: clear the outputs before committing (Jupyter: Edit > Clear Outputs of All Cells)"
    assert 'MODEL = "toy:small"' in code[0].source, f"{path.name}: the first code cell must set MODEL"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, kernel_env, monkeypatch):
    for k, v in kernel_env.items():
        monkeypatch.setenv(k, v)
    nb = nbformat.read(path, as_version=4)
    before = sorted(os.listdir(NOTEBOOK_DIR))
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=KERNEL,
                                     resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{path.name}: a cell raised\n{str(e)[-4000:]}", pytrace=False)
    assert sorted(os.listdir(NOTEBOOK_DIR)) == before, "notebooks must write under the system temp dir"
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "all checks passed" in printed, f"{path.name}: the assertion cell did not run its checks"
