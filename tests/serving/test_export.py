"""``masq export --format compressed-tensors`` end to end: transformers + the compressed-tensors package
load the exported directory on the CPU, and its logits and greedy tokens match the artefact's own
forward; bad input gets one line, exit status 2 and nothing written.

What is compared (docs/export.md "Parity"): ``dequantize=True`` loads dense dequantized weights, so it
checks integer weights, scales, zero points, packing and the smoothing fold against masq-jax with
unquantized activations (float rounding only). The default load runs compressed-tensors' quantized
modules (weights decompressed, activations fake-quantized per token at run time); its per-token
divisor is ``qmax + 0.5`` (127.5), so it is compared with artefacts made with ``bound="qmax+0.5"``,
whose grid differs from it only at the exact tie of a negative absmax element.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.serving import parity

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.timeout(1200)]
pytest.importorskip("compressed_tensors")
IDS = np.random.default_rng(0).integers(0, parity.TEXT["vocab_size"], (1, 24))


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen2")
    src = parity.build_source("qwen2", str(root / "src"))
    return root, src


def _export(artefact, out, **kw):
    from masq_jax.serving import export

    return export(str(artefact), str(out), **kw)


def test_w4a16_smoothquant_matches_artefact(qwen2):
    root, src = qwen2
    art = parity.quantize(src, str(root / "sq-w4a16"), "smoothquant", "w4a16")
    res = _export(art, root / "sq-w4a16-ct")
    assert res["scheme"] == "W4A16" and res["compression"] == "pack-quantized" and not res["routed"]
    cfg = json.loads((root / "sq-w4a16-ct" / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForCausalLM"]
    assert cfg["quantization_config"]["config_groups"]["group_0"]["weights"]["group_size"] == 128
    from safetensors.numpy import load_file

    st = load_file(str(root / "sq-w4a16-ct" / "model.safetensors"))
    assert st["model.layers.0.self_attn.q_proj.weight_packed"].dtype == np.int32
    assert st["model.layers.0.self_attn.q_proj.weight_zero_point"].shape == (128 // 8, 1)
    r = parity.compare(art, str(root / "sq-w4a16-ct"), IDS, dequantize=True)
    print(f"W4A16 SmoothQuant tiny Qwen2: logit SQNR {r['sqnr']:.1f} dB")
    assert r["sqnr"] > 80.0 and r["argmax"] == 1.0
    assert r["hf_tokens"] == r["masq_tokens"]


def test_w8a8_rtn_matches_artefact(qwen2):
    root, src = qwen2
    art = parity.quantize(src, str(root / "rtn-w8a8"), "rtn", "w8a8", bound="qmax+0.5")
    out = root / "rtn-w8a8-ct"
    res = _export(art, out)
    assert res["scheme"] == "W8A8" and res["compression"] == "int-quantized"
    from safetensors.numpy import load_file

    st = load_file(str(out / "model.safetensors"))
    assert st["model.layers.1.mlp.down_proj.weight"].dtype == np.int8
    assert st["model.layers.1.mlp.down_proj.weight_scale"].shape == (parity.TEXT["hidden_size"], 1)
    weights = parity.compare(art, str(out), IDS, dequantize=True)
    full = parity.compare(art, str(out), IDS, dequantize=False)
    print(f"W8A8 RTN tiny Qwen2: logit SQNR {weights['sqnr']:.1f} dB (weights + fold), "
          f"{full['sqnr']:.1f} dB (with per-token int8 activations), argmax agreement {full['argmax']:.3f}")
    assert weights["sqnr"] > 80.0 and weights["hf_tokens"] == weights["masq_tokens"]
    assert full["sqnr"] > 25.0 and full["argmax"] >= 0.9
    assert full["hf_tokens"] == full["masq_tokens"]


# ----------------------------------------------------------------------------------------------
# Bad input: one line on stderr, exit status 2, nothing written.


@pytest.fixture(scope="module")
def bad_artefacts(qwen2):
    root, src = qwen2
    return {"masquant": parity.quantize(src, str(root / "masquant"), "masquant", "w8a8", rank=8, rank_floor=0),
            "mas-untied": parity.quantize(src, str(root / "mas"), "mas", "w8a8"),
            "w4a8": parity.quantize(src, str(root / "rtn-w4a8"), "rtn", "w4a8")}


def _cli(capsys, *args):
    from masq_jax.cli import main

    rc = main(["export", *args])
    return rc, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("case, flags, message", [
    ("masquant", [], "pass --text-only"),
    ("mas-untied", ["--text-only"], r"layer 0 k_proj: its smoothing vector differs from q_proj's"),
    ("w4a8", [], "W4A8 per channel has no compressed-tensors export"),
])
def test_bad_input_is_one_line_and_writes_nothing(bad_artefacts, tmp_path, capsys, case, flags, message):
    import re

    out = tmp_path / "out"
    rc, err = _cli(capsys, "--model", bad_artefacts[case], "--out", str(out), *flags)
    assert rc == 2 and len(err) == 1 and re.search(message, err[0]), err
    assert err[0].startswith("masq: error: ")
    assert not out.exists() and os.listdir(tmp_path) == []


def test_existing_output_directory_is_refused(bad_artefacts, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc, err = _cli(capsys, "--model", bad_artefacts["masquant"], "--out", str(out), "--text-only")
    assert rc == 2 and len(err) == 1 and "already exists" in err[0]
    assert os.listdir(out) == ["keep.txt"] and sorted(os.listdir(tmp_path)) == ["taken"]
