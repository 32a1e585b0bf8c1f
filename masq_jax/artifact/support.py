"""What generation needs besides the weights, carried by the artefact so it runs after its source
model moves or disappears: the tokenizer (files, or converted from a GGUF by transformers), chat
template, special-token ids, generation config and, for multimodal sources, the processor configs.

``copy_support_files(source, out)`` copies them from the source checkpoint (an HF directory: the
files whose names say they are one of these; a ``.gguf``: its tokenizer saved with
``save_pretrained``); ``has_tokenizer(path)`` says whether a directory carries one.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Callable

# Never copied: weights and the source's config (the artefact writes its own config.json).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pth", ".msgpack", ".h5", ".lock", ".npz")
NOT_COPIED = ("config.json", "model.safetensors.index.json", "report.json")
# What a front end reads: tokenizer, chat template, special ids, generation and processor configs.
GENERATION_FILES = re.compile(r"^(tokenizer.*|vocab\..*|merges\.txt|special_tokens_map\.json|added_tokens\.json|"
                              r"chat_template.*|generation_config\.json|.*preprocessor_config\.json|"
                              r"processor_config\.json|.*\.tiktoken|.*\.model)$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def generation_file(name: str) -> bool:
    """Whether a file of a source directory is one generation needs (``GENERATION_FILES``)."""
    return bool(GENERATION_FILES.match(name))


def any_file(name: str) -> bool:
    """Every file beside the weights and the config (what a serving export copies)."""
    return name not in NOT_COPIED and not name.endswith(WEIGHT_SUFFIXES)


def copy_support_files(source: str | None, out: str | Path, keep: Callable[[str], bool] = generation_file) -> list[str]:
    """Copy what generation needs from checkpoint ``source`` into directory ``out``: from a directory
    the files ``keep`` accepts (never weights or config.json), from a ``.gguf`` its tokenizer
    (``save_pretrained``); nothing from anything else (a toy, an in-memory model). Returns the names
    written."""
    out = Path(out)
    src = Path(source) if source else None
    if src is None or not src.exists():
        return []
    if src.is_dir():
        written = []
        for p in sorted(src.iterdir()):
            if p.is_file() and keep(p.name) and any_file(p.name):
                shutil.copy2(p, out / p.name)
                written.append(p.name)
        return written
    if src.suffix == ".gguf":
        from masq_jax.calib.text import load_tokenizer

        before = set(p.name for p in out.iterdir())
        load_tokenizer(src).save_pretrained(str(out))
        return sorted(set(p.name for p in out.iterdir()) - before)
    return []


def has_tokenizer(path: str | Path) -> bool:
    """Whether directory ``path`` carries tokenizer files (an artefact made with them)."""
    return any((Path(path) / n).is_file() for n in TOKENIZER_FILES)
