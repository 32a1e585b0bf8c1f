"""Each method owns its options: a method added through ``methods/`` alone with an option of its own
gets a validated ``QuantSettings`` keyword, a ``--flag`` in its own ``masq quantize --help`` group and
its value in its hooks, with settings.py and cli.py untouched; the existing options keep their flags."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import masq_jax
from masq_jax import cli
from masq_jax.errors import SettingsError
from masq_jax.methods import registry
from masq_jax.methods.base import Method, ones_factors
from masq_jax.methods.options import Option
from masq_jax.settings import QuantSettings

PACKAGE = Path(masq_jax.__file__).parent


class ScaledRTN(Method):
    """A test method: RTN that records the value of its own option when its hooks run."""

    name = "scaled_rtn"
    summary = "RTN, with an option of its own"
    options = (Option("scale_pow", 0.5, "an exponent in [0, 1]", parse=float,
                      check=lambda v: None if 0 <= v <= 1 else f"--scale-pow must be in [0, 1], got {v}"),)
    seen: list = []

    def init_factors(self, cfg, lp, stats, sample, st, modality_weights):
        ScaledRTN.seen.append(st.scale_pow)
        return ones_factors(cfg), {}


@pytest.fixture
def scaled(monkeypatch):
    monkeypatch.setitem(registry.METHODS, ScaledRTN.name, ScaledRTN())
    ScaledRTN.seen.clear()
    return ScaledRTN


def test_a_methods_option_is_a_validated_setting_of_that_method_only(scaled):
    assert QuantSettings(method="scaled_rtn").scale_pow == 0.5
    st = QuantSettings(method="scaled_rtn", scale_pow=0.25)
    assert st.options == (("scale_pow", 0.25),) and st.to_json()["scale_pow"] == 0.25
    assert QuantSettings(method="scaled_rtn", scale_pow=0.25) != QuantSettings(method="scaled_rtn")  # fingerprinted
    with pytest.raises(SettingsError, match=r"--scale-pow must be in \[0, 1\], got 2"):
        QuantSettings(method="scaled_rtn", scale_pow=2.0)
    with pytest.raises(SettingsError, match="--scale-pow must be in"):  # checked whichever method is chosen
        QuantSettings(method="rtn", scale_pow=2.0)
    rtn = QuantSettings(method="rtn", scale_pow=0.25)
    assert rtn.options == () and rtn.to_json()["scale_pow"] == 0.5  # kept by its method only
    with pytest.raises(AttributeError, match="no setting 'scale_pow'"):
        rtn.scale_pow
    with pytest.raises(TypeError, match="unexpected option"):
        QuantSettings(method="rtn", scale_power=1.0)


def test_the_cli_generates_the_flag_in_the_methods_help_group(scaled, capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["quantize", "--help"])
    out = capsys.readouterr().out
    group = out[out.index("(scaled_rtn options):"):]
    assert "read by --method scaled_rtn" in group and "--scale-pow" in group and "(default 0.5)" in group
    mas = out[out.index("(mas options):"):out.index("(masquant options):")]
    assert "read by --method mas, masquant" in mas and "--lr" in mas
    masquant = out[out.index("(masquant options):"):]
    for flag in ("--rank", "--rank-floor", "--cov-shrinkage", "--rank-budget", "--cmc-solver"):
        assert flag in masquant


def test_the_runner_hands_the_method_its_option(scaled, tmp_path, capsys):
    code = cli.main(["quantize", "--model", "toy:tiny", "--calib", "synthetic", "--samples", "2", "--eval-samples",
                     "0", "--method", "scaled_rtn,rtn", "--scale-pow", "0.25", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    assert ScaledRTN.seen == [0.25, 0.25]  # one call per layer of toy:tiny
    rep = json.loads((tmp_path / "scaled_rtn" / "report.json").read_text())
    assert rep["settings"]["scale_pow"] == 0.25
    assert json.loads((tmp_path / "rtn" / "report.json").read_text())["settings"]["scale_pow"] == 0.5


def test_no_option_of_a_method_is_named_outside_methods():
    """settings.py, cli.py, api.py and the runner know no method option by name (only ``methods/``
    declares them), so a new option touches methods/ only."""
    names = set(registry.all_options())
    hits = []
    for rel in ("settings.py", "cli.py", "api.py", "calibrate/runner.py", "calibrate/layer.py", "artifact/format.py"):
        tree = ast.parse((PACKAGE / rel).read_text())
        for node in ast.walk(tree):
            used = (node.attr if isinstance(node, ast.Attribute) else node.arg if isinstance(node, ast.keyword)
                    else node.value if isinstance(node, ast.Constant) else None)
            if isinstance(used, str) and used in names:
                hits.append(f"{rel}:{node.lineno}: {used}")
    assert hits == []
