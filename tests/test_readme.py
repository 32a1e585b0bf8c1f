"""The README's quick start runs as written: its command lines (``masq ...``) through the CLI and its
Python block, in a fresh directory, with the small flags the README shows."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from masq_jax.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def quick_start() -> tuple[list[str], str]:
    """``(command lines, python code)`` of the README's "Quick start" section."""
    text = README.read_text()
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    commands = [ln for lang, body in blocks if lang == "bash" for ln in body.splitlines() if ln.startswith("masq ")]
    python = [body for lang, body in blocks if lang == "python"]
    assert commands and len(python) == 1, "the Quick start needs a bash block of masq commands and one python block"
    return commands, python[0]


@pytest.mark.filterwarnings("ignore")
def test_readme_quick_start_runs(tmp_path, monkeypatch, capsys):
    commands, code = quick_start()
    monkeypatch.chdir(tmp_path)
    for line in commands:
        assert main(shlex.split(line)[1:]) == 0, (line, capsys.readouterr().err)
    out = capsys.readouterr().out
    assert "mean SQNR" in out and "SQNR (dB) of runs/toy/masquant" in out
    assert (tmp_path / "runs/toy/rtn/report.json").is_file() and (tmp_path / "runs/toy/masquant/report.json").is_file()
    exec(compile(code, "README.md (Quick start)", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("(1, 16, 128) ") and "'vision'" in out[-2]
    assert (tmp_path / "runs/quickstart/report.json").is_file()
