"""Model families, one unit per kind of model source behind one protocol (``base.ModelFamily``),
found through ``registry``: the embedded SmolLM2, ``toy:*``, masq-jax artefacts, omni-SmolLM2, the
tiny omni model, GGUF files and HF directories."""

from masq_jax.families.base import ModelFamily
from masq_jax.families.registry import FAMILIES, find, names

__all__ = ["FAMILIES", "ModelFamily", "find", "names"]
