"""Fixtures of the models tests: float32 at highest matmul precision, tiny HF checkpoints."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax
import pytest

from tests.models.tiny import build


@pytest.fixture(autouse=True)
def _highest_precision():
    """float32 parity needs full-precision matmuls (scoped to this directory, not the whole session)."""
    with jax.default_matmul_precision("highest"):
        yield


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """kind -> (saved dir, torch model), built once per session."""
    cache = {}

    def get(kind):
        if kind not in cache:
            d = str(tmp_path_factory.mktemp(kind))
            cache[kind] = (d, build(kind, d))
        return cache[kind]

    return get
