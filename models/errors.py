"""Error classes of masq_jax.models: one clear line each, raised before any XLA work starts.

All derive from ``masq_jax.errors.MasqError``, the package's one root (the CLI prints them as one line).
"""

from __future__ import annotations

from masq_jax.errors import MasqError


class ModelLoadError(MasqError):
    """Base class: a checkpoint or config that cannot be turned into a decoder."""


class UnsupportedArchitectureError(ModelLoadError):
    """config.json (or a GGUF header) names an architecture this port does not implement."""


class MissingTensorsError(ModelLoadError):
    """The checkpoint lacks tensors the decoder needs (all of them are named in one message)."""


class ShapeMismatchError(ModelLoadError):
    """A checkpoint tensor has a shape other than the config implies (key and both shapes named)."""


class ConfigError(ModelLoadError):
    """A config value this port cannot honour (e.g. an unknown rope type or activation)."""


class InputError(MasqError):
    """Bad arguments to forward(): missing/duplicate inputs, position ids of the wrong rank."""


class CheckpointNotFoundError(ModelLoadError, FileNotFoundError):
    """The checkpoint path does not exist or lacks config.json / weight files."""
