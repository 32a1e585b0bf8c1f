"""``load_calib``: the one front door from a calibration source string to a CalibSet.

Sources: ``PATH.npz`` (bring-your-own arrays), ``PATH.jsonl`` (multimodal manifest, needs
``model_dir``), ``text`` / ``text:PATH[,PATH...]`` (tokenized text; default corpus = standard-library
docstrings), ``synthetic[:key=value,...]`` (synthetic multimodal embeddings).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from masq_jax.models.config import is_multimodal_name

from .calibset import CalibSet
from .errors import CalibSourceError, TokenizerError
from .text import DEFAULT_TEXT_SEQ_LEN, read_text_files, text_calibset

SOURCE_FORMS = "PATH.npz, PATH.jsonl, 'text', 'text:PATH[,PATH...]' or 'synthetic[:key=value,...]'"


def config_get(config: Any, key: str, default: Any = None) -> Any:
    """Read ``key`` from a DecoderConfig-like object, an HF config object or a dict (incl. nested
    ``text_config`` / ``thinker_config``)."""
    if config is None:
        return default
    if isinstance(config, dict):
        if key in config:
            return config[key]
        for sub in ("text_config", "thinker_config"):
            if isinstance(config.get(sub), dict):
                v = config_get(config[sub], key, None)
                if v is not None:
                    return v
        return default
    v = getattr(config, key, None)
    if v is not None:
        return v
    for sub in ("text_config", "thinker_config"):
        s = getattr(config, sub, None)
        if s is not None:
            v = config_get(s, key, None)
            if v is not None:
                return v
    hf = getattr(config, "hf_config", None)
    if isinstance(hf, dict):
        return config_get(hf, key, default)
    return default


def rope_ndim_of(config: Any) -> int | None:
    """3 when the config uses multimodal RoPE (``mrope_section``), 1 for plain RoPE, None if unknown."""
    if config is None:
        return None
    if config_get(config, "mrope_section") is not None:
        return 3
    for key in ("rope_scaling", "rope_parameters"):
        rs = config_get(config, key)
        if isinstance(rs, dict) and rs.get("mrope_section") is not None:
            return 3
        if rs is not None and getattr(rs, "get", None) is None and getattr(rs, "mrope_section", None) is not None:
            return 3
    if is_multimodal_name(config_get(config, "arch") or config_get(config, "model_type")):
        return 3
    return 1


def _read_config(model_dir: str | os.PathLike | None) -> dict | None:
    if model_dir is None:
        return None
    p = Path(model_dir) / "config.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CalibSourceError(f"{p}: cannot read the model config ({e})") from None


def _default_tokenizer(model_dir: str | os.PathLike | None) -> Any:
    """The model directory's own tokenizer (HF files or a single .gguf) or None (package default)."""
    if model_dir is None:
        return None
    d = Path(model_dir)
    if d.is_file() and d.suffix == ".gguf":
        return d
    if any((d / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        return d
    ggufs = sorted(d.glob("*.gguf")) if d.is_dir() else []
    if len(ggufs) == 1:
        return ggufs[0]
    return None


def load_calib(
    source: str,
    *,
    model_dir: str | os.PathLike | None = None,
    tokenizer: Any = None,
    config: Any = None,
    samples: int = 128,
    seq_len: int | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    video_as_vision: bool = False,
    encoder_dtype: str = "float32",
    encoder_device: str = "cpu",
) -> CalibSet:
    """Build the calibration set named by ``source`` (see ``SOURCE_FORMS``).

    - ``samples``: number of samples (npz / manifest: a seeded subsample when there are more).
    - ``seq_len``: text window length (default 512); for npz / manifest / synthetic, a truncation
      length (default: none). Positions are explicit, so truncation keeps them exact.
    - ``config``: DecoderConfig / HF config / dict; decides [3, S] vs [S] positions (mrope or not)
      and the hidden size of synthetic data. Read from ``model_dir/config.json`` when not given.
    - ``cache_dir``: where processed manifests are cached (default ``~/.cache/masq_jax/calib``).
    - ``video_as_vision``: label video placeholder tokens vision (default: text, as the reference).
    - ``encoder_dtype``: dtype the PyTorch encoders run in for a manifest ("float32", "bfloat16",
      "float16"); the stored embeddings are float32 either way. ``encoder_device``: "cpu" (default),
      "cuda" or "auto" for the PyTorch encoders (part of the cache key: results differ slightly).
    """
    if not isinstance(source, (str, os.PathLike)):
        raise CalibSourceError(f"calibration source must be a string, got {type(source).__name__}; use {SOURCE_FORMS}")
    src = os.fspath(source)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise CalibSourceError(f"samples must be a positive integer, got {samples!r}")
    if seq_len is not None and (isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1):
        raise CalibSourceError(f"seq_len must be a positive integer or None, got {seq_len!r}")
    cfg = config if config is not None else _read_config(model_dir)
    rope_ndim = rope_ndim_of(cfg)

    if src.lower().endswith(".npz"):
        from .calibset import load_npz

        cs = load_npz(src)
        if len(cs) > samples:
            cs = cs.subsample(samples, seed)
        if seq_len is not None:
            cs = cs.truncate(seq_len)
        hidden = config_get(cfg, "hidden_size")
        if cs.hidden_size is not None and hidden is not None and cs.hidden_size != hidden:
            raise CalibSourceError(
                f"{src}: inputs_embeds have hidden size {cs.hidden_size} but the model's is {hidden}"
            )
        return _match_rope(cs, rope_ndim, src)

    if src.lower().endswith(".jsonl"):
        if model_dir is None:
            raise CalibSourceError(f"{src}: a multimodal manifest needs model_dir (the checkpoint with its processor)")
        from .multimodal import manifest_calibset

        cs = manifest_calibset(src, model_dir, samples=samples, seed=seed, cache_dir=cache_dir,
                               video_as_vision=video_as_vision, dtype=encoder_dtype, device=encoder_device)
        hidden = config_get(config, "hidden_size") if config is not None else None
        if hidden is not None and cs.hidden_size != hidden:
            raise CalibSourceError(
                f"{src}: the encoders of {model_dir} produce width {cs.hidden_size} but the model's hidden size "
                f"is {hidden}; model_dir must be the checkpoint being quantized"
            )
        if seq_len is not None:
            cs = cs.truncate(seq_len)
        return cs

    if src == "text" or src.startswith("text:"):
        paths = [p for p in src[5:].split(",") if p] if src.startswith("text:") else []
        texts = read_text_files(paths) if paths else None
        tok = tokenizer if tokenizer is not None else _default_tokenizer(model_dir)
        vocab = config_get(cfg, "vocab_size")
        if tok is None and vocab is not None:
            # Falling back to the package tokenizer (SmolLM2) is right only for a model with its vocab.
            from .text import load_tokenizer

            tok = load_tokenizer(None, cache_dir)
            if len(tok) != vocab:
                raise TokenizerError(
                    f"{model_dir or 'the model'} has no tokenizer files and the default tokenizer (SmolLM2, "
                    f"{len(tok)} tokens) does not match its vocab_size {vocab}; pass tokenizer=PATH"
                )
        cs = text_calibset(tok, texts, samples=samples, seq_len=seq_len or DEFAULT_TEXT_SEQ_LEN, seed=seed,
                           rope_ndim=rope_ndim or 1, source=src, cache_dir=cache_dir)
        if vocab is not None:
            top = max(int(s.input_ids.max()) for s in cs)
            if top >= vocab:
                raise CalibSourceError(
                    f"{src}: token id {top} >= the model's vocab_size {vocab}; the tokenizer does not "
                    "belong to this model (pass tokenizer= or model_dir=)"
                )
        return cs

    if src == "synthetic" or src.startswith("synthetic:"):
        from .synthetic import parse_synthetic_options, synthetic_calibset

        hidden = config_get(cfg, "hidden_size")
        spec = parse_synthetic_options(src[10:] if src.startswith("synthetic:") else "",
                                       hidden_size=hidden, samples=samples, seed=seed, rope_ndim=rope_ndim)
        if hidden is not None and spec.hidden_size != hidden:
            raise CalibSourceError(f"{src}: hidden={spec.hidden_size} differs from the model's hidden_size {hidden}")
        cs = synthetic_calibset(spec)
        if seq_len is not None:
            cs = cs.truncate(seq_len)
        return cs

    if src.endswith((".json", ".txt", ".npy")) or os.path.exists(src):
        raise CalibSourceError(f"{src}: unsupported calibration file type; use {SOURCE_FORMS}")
    raise CalibSourceError(f"unknown calibration source {src!r}; use {SOURCE_FORMS}")


def _match_rope(cs: CalibSet, rope_ndim: int | None, where: str) -> CalibSet:
    if rope_ndim is None or rope_ndim == cs.rope_ndim:
        return cs
    try:
        return cs.with_rope_ndim(rope_ndim)
    except CalibSourceError:
        raise
    except ValueError as e:
        raise CalibSourceError(f"{where}: {e}") from None
