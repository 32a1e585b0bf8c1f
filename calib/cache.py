"""Content-addressed cache of processed calibration sets (one ``.npz`` per key, atomic writes).

The key hashes everything the result depends on: the model's config, processor and tokenizer files
(by content), its weight files (name, size and a hash of their first and last MiB), the manifest's
bytes, every media file's bytes, the selected lines, sample count, seed and front-end options. So
two models or two manifests never share an entry. An entry that fails to load, or whose stored key
differs, is rebuilt with a warning, never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

from .calibset import CalibSet

FORMAT_VERSION = 1
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack")
_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """``$MASQ_JAX_CACHE/calib`` if set, else ``~/.cache/masq_jax/calib``."""
    root = os.environ.get("MASQ_JAX_CACHE")
    return Path(root) / "calib" if root else Path.home() / ".cache" / "masq_jax" / "calib"


def hash_file(path: Path, h: "hashlib._Hash | None" = None) -> str:
    """SHA-256 of a file's bytes (streamed)."""
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _weight_identity(path: Path) -> str:
    """Name, size and hash of the first and last MiB: cheap, and differs between checkpoints."""
    size = path.stat().st_size
    h = hashlib.sha256(f"{path.name}:{size}".encode())
    with open(path, "rb") as f:
        h.update(f.read(_CHUNK))
        if size > 2 * _CHUNK:
            f.seek(size - _CHUNK)
            h.update(f.read(_CHUNK))
        elif size > _CHUNK:
            h.update(f.read())
    return h.hexdigest()


def fingerprint_model_dir(model_dir: str | os.PathLike) -> str:
    """Identity of a checkpoint folder: small files by content, weight files by ``_weight_identity``."""
    d = Path(model_dir)
    h = hashlib.sha256()
    for p in sorted(x for x in d.rglob("*") if x.is_file()):
        rel = p.relative_to(d).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue
        h.update(rel.encode())
        h.update((_weight_identity(p) if p.suffix in WEIGHT_SUFFIXES else hash_file(p)).encode())
    return h.hexdigest()


def cache_key(parts: dict[str, Any]) -> str:
    """SHA-256 of the JSON of ``parts`` (sorted keys) plus the cache format version."""
    blob = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_path(cache_dir: str | os.PathLike | None, key: str) -> Path:
    return Path(cache_dir or default_cache_dir()) / f"{key}.npz"


def load_cached(path: Path, key: str) -> CalibSet | None:
    """The cached set at ``path`` if it loads and carries ``key``; else None (with a warning if broken)."""
    if not path.exists():
        return None
    from .calibset import load_npz

    try:
        cs = load_npz(path)
    except Exception as e:  # any failure -> rebuild, never use a half-read entry
        warnings.warn(f"calibration cache entry {path} is unreadable ({e}); rebuilding it", stacklevel=3)
        return None
    if cs.meta.get("cache_key") != key:
        warnings.warn(f"calibration cache entry {path} does not carry its key; rebuilding it", stacklevel=3)
        return None
    return cs


def store(path: Path, cs: CalibSet, key: str) -> None:
    """Write ``cs`` (with ``meta['cache_key']``) atomically; a failed write only warns."""
    from .io import save_npz

    cs.meta["cache_key"] = key
    try:
        save_npz(cs, path)
    except OSError as e:
        warnings.warn(f"could not write the calibration cache entry {path} ({e}); continuing without it", stacklevel=3)
