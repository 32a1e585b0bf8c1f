"""``masq quantize`` checks its options against the output path and the model's headers before any
weights load: one ``masq: error:`` line on stderr, exit status 2, nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest

import masq_jax.api
from masq_jax.cli import main
from tests.cli.runner import run

TOY = ["quantize", "--model", "toy:tiny", "--calib", "synthetic:hidden=64", "--samples", "2", "--eval-samples", "0",
       "--epochs", "0", "--quiet"]


def error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("masq: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def no_weights(monkeypatch):
    """Fail the test if the model's weights are loaded: every check here must come first."""
    def refuse(*a, **k):
        raise AssertionError("weights loaded before the options were checked")

    monkeypatch.setattr(masq_jax.api, "load_checkpoint", refuse)


def test_out_that_is_a_file_is_refused_even_with_overwrite(capsys, tmp_path, no_weights):
    f = tmp_path / "out"
    f.write_text("keep me")
    for extra in ([], ["--overwrite"]):
        code, _, err = run(capsys, *TOY, "--out", str(f), *extra)
        assert code == 2 and "is a file, not a directory" in error_line(err)
    assert f.read_text() == "keep me" and not (tmp_path / "out.partial").exists()


def test_existing_directory_needs_overwrite(capsys, tmp_path, no_weights):
    d = tmp_path / "out"
    d.mkdir()
    (d / "old.txt").write_text("x")
    code, _, err = run(capsys, *TOY, "--out", str(d))
    assert code == 2 and "already exists; choose another directory or pass --overwrite" in error_line(err)
    assert (d / "old.txt").exists() and not (tmp_path / "out.partial").exists()


def test_stale_partial_names_resume_and_overwrite(capsys, tmp_path, no_weights):
    (tmp_path / "out.partial").mkdir()
    code, _, err = run(capsys, *TOY, "--out", str(tmp_path / "out"))
    line = error_line(err)
    assert code == 2 and "interrupted run" in line and "--resume" in line and "--overwrite" in line
    assert not (tmp_path / "out").exists()


def test_rank_wider_than_the_model_before_loading(capsys, tmp_path, no_weights):
    code, _, err = run(capsys, *TOY, "--method", "masquant", "--rank", "4096", "--out", str(tmp_path / "o"))
    line = error_line(err)
    assert code == 2 and "--rank 4096 does not fit this model" in line and "use a rank <= 64" in line, line
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_group_size_before_loading(capsys, tmp_path, no_weights):
    code, _, err = run(capsys, *TOY, "--group-size", "48", "--out", str(tmp_path / "o"))
    assert code == 2 and "--group-size 48 does not divide" in error_line(err)
    assert not (tmp_path / "o.partial").exists()


def test_npz_of_another_width_before_loading(capsys, tmp_path, no_weights):
    npz = tmp_path / "c.npz"
    np.savez(npz, inputs_embeds=np.ones((2, 8, 32), np.float32), position_ids=np.tile(np.arange(8), (3, 2, 1)),
             modality_ids=np.zeros((2, 8), np.int32))
    code, _, err = run(capsys, *TOY[:4], str(npz), "--out", str(tmp_path / "o"))
    line = error_line(err)
    assert code == 2 and "hidden size 32" in line and "64" in line, line
    assert not (tmp_path / "o.partial").exists()


def test_negative_eval_samples(capsys, tmp_path, no_weights):
    code, _, err = run(capsys, *TOY, "--eval-samples", "-1", "--out", str(tmp_path / "o"))
    assert code == 2 and "--eval-samples must be a whole number >= 0" in error_line(err)


def test_max_new_tokens_checked_from_the_headers(capsys, tmp_path, monkeypatch):
    import masq_jax.loading

    def refuse(*a, **k):
        raise AssertionError("model loaded before --max-new-tokens was checked")

    monkeypatch.setattr(masq_jax.loading, "load", refuse)
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 96,
        "max_position_embeddings": 256}))
    code, _, err = run(capsys, "generate", "--model", str(d), "--prompt", "hi", "--max-new-tokens", "300")
    assert code == 2 and "--max-new-tokens 300 exceeds the model's 256 positions" in error_line(err)
    code, _, err = run(capsys, "generate", "--model", str(d), "--prompt", "hi", "--max-new-tokens", "0")
    assert code == 2 and "--max-new-tokens must be at least 1" in error_line(err)
