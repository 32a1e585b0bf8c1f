"""masq-jax: MASQuant (modality-aware smoothing + cross-modal compensation) in JAX/Flax."""

from __future__ import annotations

__version__ = "0.1.0"


def quantize(*args, **kwargs):
    """See :func:`masq_jax.api.quantize`."""
    from masq_jax.api import quantize as _quantize

    return _quantize(*args, **kwargs)


def _register_artifact_loader() -> None:
    from masq_jax.models import register_quantized_loader

    def load(path, dtype=None):
        from masq_jax.artifact import read_artifact

        return read_artifact(path, dtype=None)

    register_quantized_loader(load)


_register_artifact_loader()
