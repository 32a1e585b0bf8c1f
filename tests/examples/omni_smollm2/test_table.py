"""The omni-SmolLM2 table driver: one artefact per preset x method (MASQuant once per rank), every
artefact measured on the test tasks, test-prompt SQNR and text perplexity, and the Markdown table.
The pipeline calls are recorded stand-ins (the pipeline has its own tests; this is the driver)."""

from __future__ import annotations

import json

import pytest

from examples.omni_smollm2 import table as T


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    from masq_jax import api
    from examples.omni_smollm2 import tasks

    calls = {"quantize": [], "evaluate": []}
    monkeypatch.setattr(T, "write_calib", lambda model, out, split, n, seed: out / f"{split}-{n}-{seed}.npz")
    monkeypatch.setattr(tasks, "write_tasks", lambda out, split, n, seed: out / f"{split}-{n}-{seed}.jsonl")

    def quantize(model, out, **kw):
        calls["quantize"].append((out, kw))

    def evaluate_tasks(paths, tasks_path, reference, **kw):
        per = {k: {"score": 0.5, "metric": "exact", "n": 2} for _, k in T.TASK_COLUMNS}
        names = ["fp"] + [p.rsplit("/", 1)[-1] for p in paths]
        return {"results": {n: {"per_task": per} for n in names}, "examples": [], "tasks": str(tasks_path)}

    def evaluate(path, calib, samples, seq_len=None):
        calls["evaluate"].append((path, calib, samples))
        return {"sqnr": {"mean": {"text": 20.0, "vision": 10.0, "audio": None}},
                "perplexity": {"fp": 20.0, "quantized": 25.0, "tokens": 100}}

    monkeypatch.setattr(api, "quantize", quantize)
    monkeypatch.setattr(api, "evaluate_tasks", evaluate_tasks)
    monkeypatch.setattr(api, "evaluate", evaluate)
    return calls


def test_one_artefact_per_preset_method_and_rank(recorded, tmp_path):
    t = T.run_table("ckpt", tmp_path, ["w4a8", "w8a8"], ["rtn", "masquant"], [0.02, 0.25], calib_n=3, test_n=2,
                    seed=7, sqnr_n=1)
    names = [r["path"].rsplit("/", 1)[-1] for r in t["rows"]]
    assert names == ["w4a8-rtn", "w4a8-masquant-r0.02", "w4a8-masquant-r0.25",
                     "w8a8-rtn", "w8a8-masquant-r0.02", "w8a8-masquant-r0.25"]
    kws = [kw for _, kw in recorded["quantize"]]
    assert [kw.get("rank") for kw in kws] == [None, 0.02, 0.25] * 2
    assert all(kw["samples"] == 9 and kw["eval_samples"] == 0 and kw["calib"].endswith("calib-3-0.npz") for kw in kws)
    sqnr_sources = {c for _, c, _ in recorded["evaluate"] if c != "text"}
    assert sqnr_sources == {str(tmp_path / "test-1-7.npz")}  # SQNR on test prompts, not calibration's
    assert json.loads((tmp_path / "table.json").read_text())["rows"][1]["sqnr"]["audio"] is None
    md = (tmp_path / "table.md").read_text().splitlines()
    assert md[0].startswith("| model | OCR EM") and md[2].startswith("| FP | 50.0")
    assert md[4] == "| w4a8 masquant r=0.02 | 50.0 | 50.0 | 50.0 | 50.0 | 50.0 | 25.00 | 20.00 | 10.00 | — |"
