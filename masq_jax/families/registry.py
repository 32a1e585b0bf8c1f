"""The one place that knows the model families: a ``--model`` spec -> the family that loads it.

Order matters (first match wins): the named sources (the embedded default, ``toy:``), then
directories that say what they are in their config.json (artefacts, the two trained demo models),
then the generic formats (a file: GGUF; a directory: HF).
"""

from __future__ import annotations

import os

from masq_jax.errors import MasqError
from masq_jax.families.artifact import Artifact
from masq_jax.families.base import ModelFamily
from masq_jax.families.hf import EmbeddedSmolLM2, GGUFFile, HFDirectory
from masq_jax.families.omni_smollm2 import OmniSmolLM2
from masq_jax.families.qwen25 import Qwen25
from masq_jax.families.tiny_omni import TinyOmni
from masq_jax.families.toy import Toy

FAMILIES: tuple[ModelFamily, ...] = (EmbeddedSmolLM2(), Qwen25(), Toy(), Artifact(), OmniSmolLM2(), TinyOmni(), GGUFFile(),
                                     HFDirectory())


def names() -> tuple[str, ...]:
    """Every family name, in the order specs are matched."""
    return tuple(f.name for f in FAMILIES)


def find(spec: str | os.PathLike | None) -> tuple[ModelFamily, str]:
    """``(family, resolved spec)`` of a ``--model`` spec (one clear line when nothing loads it)."""
    spec = None if spec is None else os.fspath(spec)
    for family in FAMILIES:
        if family.recognise(spec):
            return family, family.resolve(spec)
    raise MasqError(f"--model {spec}: no such file or directory (an HF model directory or a .gguf file)")
