"""How ``masq`` talks: usage errors in one line with a pointer to ``--help``, ``masq`` alone prints the
help, ``--version``, every default in ``--help``, options grouped, warnings as one line each."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

import masq_jax.calibrate.preflight as preflight
from masq_jax.cli import build_parser, main
from masq_jax.errors import MasqWarning, SettingsError


def test_usage_error_is_one_line_with_a_pointer_to_help(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["quantize", "--wbits", "four", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith("masq: error: argument --wbits: invalid int value: 'four'")
    assert "(see 'masq quantize --help')" in err and "usage:" not in err
    with pytest.raises(SystemExit):
        main(["quantize"])  # --out missing
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err and "required" in err


def test_bare_masq_prints_help_and_version():
    cmd = [sys.executable, "-m", "masq_jax.cli"]
    bare = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert bare.returncode == 0 and bare.stderr == ""
    assert "usage: masq" in bare.stdout and "quantize" in bare.stdout and "generate" in bare.stdout
    from importlib import metadata

    v = subprocess.run(cmd + ["--version"], capture_output=True, text=True, timeout=120)
    assert v.returncode == 0 and v.stdout.strip() == f"masq {metadata.version('masq-jax')}"


def help_text(command: str) -> str:
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    return sub.format_help()


def test_help_shows_every_default_and_groups():
    text = " ".join(help_text("quantize").split())
    for default in ("(default: masquant)", "(default: text)", "(default: 8)", "(default: 128)", "(default: w4a8)",
                    "(default: the preset's; w4a8: 4)", "(default: the preset's; w4a8: 8)", "(default: 2)",
                    "512-token windows for text", "(default: sequential)", "(default 0.02)", "(default: one device)"):
        assert default in text, default
    for group in ("model and data:", "method:", "compensation (masquant options):", "scale-out:", "output:"):
        assert group in text, group
    assert "toy:{omni3b,omni7b,wide,small,tiny}" in text and "smollm2" in text and "qwen2.5-0.5b" in text
    gen = " ".join(help_text("generate").split())
    assert "--max-new-tokens MAX_NEW_TOKENS the longest answer, in tokens (default: 128)" in gen
    assert "toy:" in gen and "artefact" in gen
    ev = " ".join(help_text("eval").split())
    assert "(default: 8)" in ev and "(default: 1234)" in ev and "(default: 32)" in ev


def test_every_option_with_a_value_states_its_default():
    parser = build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    for name in ("quantize", "eval", "generate"):
        for action in subs[name]._actions:
            if action.option_strings and action.nargs != 0 and not action.required:
                rendered = subs[name].formatter_class("x")._get_help_string(action)
                assert "default" in rendered, (name, action.option_strings)


@pytest.fixture
def warns_then_stops(monkeypatch):
    """The settings check warns (one user warning, one library warning) and then stops the run."""
    def check(cfg, st):
        warnings.warn("a thing the user should know\nsecond line", MasqWarning)
        warnings.warn("a library's remark", UserWarning)
        raise SettingsError("stopped here")

    monkeypatch.setattr(preflight, "check_settings", check)


@pytest.mark.parametrize("quiet", [False, True])
def test_warnings_are_one_line_and_quiet_silences_the_rest(warns_then_stops, capsys, tmp_path, quiet):
    code = main(["quantize", "--model", "toy:tiny", "--out", str(tmp_path / "o")] + ["--quiet"] * quiet)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and "masq: error: stopped here" in lines
    assert "masq: warning: a thing the user should know" in lines and "second line" not in err
    assert ("UserWarning: a library's remark" in lines) is (not quiet)
    assert "warnings.warn" not in err and ".py:" not in err  # no file, line or source echo
    assert len(lines) == 2 + (not quiet), err
