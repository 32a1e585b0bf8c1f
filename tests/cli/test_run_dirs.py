"""``OUT.partial`` and ``--overwrite`` as a user meets them: a run that fails before its first layer
checkpoint leaves nothing behind; an interrupted one resumes where it stopped (said on stderr and
recorded in report.json); ``--overwrite`` starts a stale ``.partial`` again or replaces a directory."""

from __future__ import annotations

import json

import pytest

import masq_jax.calibrate.runner as runner
from masq_jax.cli import main
from tests.cli.runner import run
from masq_jax.errors import SettingsError

TOY = ["quantize", "--model", "toy:tiny", "--calib", "synthetic:hidden=64", "--method", "rtn", "--samples", "2",
       "--eval-samples", "0", "--quiet"]


def masq_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [ln for ln in err.strip().splitlines() if ln.startswith("masq:")]


def test_failure_before_the_first_checkpoint_removes_the_partial(capsys, tmp_path, monkeypatch):
    def fail(*a, **k):
        raise SettingsError("the first layer failed")

    monkeypatch.setattr(runner, "calibrate_layer", fail)
    out = tmp_path / "o"
    code, _, err = run(capsys, *TOY, "--out", str(out))
    assert code == 2 and masq_lines(err) == ["masq: error: the first layer failed"]
    assert not out.exists() and not (tmp_path / "o.partial").exists()  # the corrected command just runs
    monkeypatch.undo()
    code, _, err = run(capsys, *TOY, "--out", str(out))
    assert code == 0, err


def interrupt_after_first_layer(monkeypatch):
    real = runner.RunContext.finish_layer

    def finish(self, i, result, seconds, *, save):
        real(self, i, result, seconds, save=save)
        if i == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(runner.RunContext, "finish_layer", finish)


def test_resume_says_where_and_report_records_it(capsys, tmp_path, monkeypatch):
    out = tmp_path / "o"
    with monkeypatch.context() as m:
        interrupt_after_first_layer(m)
        code, _, err = run(capsys, *TOY, "--out", str(out))
    assert code == 130 and masq_lines(err) == ["masq: interrupted; rerun the same command with --resume to continue"]
    assert (tmp_path / "o.partial").is_dir() and not out.exists()
    code, _, err = run(capsys, *TOY, "--out", str(out), "--resume")
    assert code == 0, err
    assert masq_lines(err) == [f"masq: resuming {out}.partial: 1 of 2 layers done, continuing at layer 2 of 2"]
    assert json.loads((out / "report.json").read_text())["resumed_from_layer"] == 1
    assert not (tmp_path / "o.partial").exists()


def test_overwrite_starts_a_stale_partial_again_and_replaces_a_directory(capsys, tmp_path, monkeypatch):
    out = tmp_path / "o"
    with monkeypatch.context() as m:
        interrupt_after_first_layer(m)
        assert run(capsys, *TOY, "--out", str(out))[0] == 130
    # other settings: --resume alone is refused, --overwrite starts again
    code, _, err = run(capsys, *TOY, "--out", str(out), "--seed", "3", "--resume")
    assert code == 2 and "different model, calibration set or settings" in masq_lines(err)[0]
    assert "--overwrite" in masq_lines(err)[0]
    code, _, err = run(capsys, *TOY, "--out", str(out), "--seed", "3", "--overwrite")
    assert code == 0 and masq_lines(err) == [], err
    report = json.loads((out / "report.json").read_text())
    assert report["resumed_from_layer"] is None and report["settings"]["seed"] == 3
    (out / "stale.txt").write_text("from before")
    code, _, err = run(capsys, *TOY, "--out", str(out), "--overwrite")
    assert code == 0, err
    assert not (out / "stale.txt").exists() and json.loads((out / "report.json").read_text())["settings"]["seed"] == 0


def test_an_empty_out_directory_is_used(capsys, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    code, _, err = run(capsys, *TOY, "--out", str(out))
    assert code == 0, err
    assert (out / "report.json").is_file()
