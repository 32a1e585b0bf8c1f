"""masq-jax: MASQuant (modality-aware smoothing + cross-modal compensation) in JAX/Flax.

The public API (docs/ARCHITECTURE.md has the picture):

* ``quantize(model, out, method=..., preset=..., calib=...)`` -> report dict (``masq quantize``);
  ``quantize_many(model, out, methods=[...], presets=[...])`` loads the model once for all of them
* ``evaluate(artefact, ...)`` -> SQNR per layer × modality and perplexity (``masq eval``)
* ``export(artefact, out, format="compressed-tensors")`` -> a checkpoint vLLM loads (``masq export``)
* ``load(path)`` -> a callable model: full precision (HF directory, GGUF) or a quantized artefact
* ``generate(model, input_ids | inputs_embeds=..., max_new_tokens=...)`` -> new tokens (KV cache);
  also ``model.generate(...)`` on every loaded model
* ``QuantSettings`` / ``QuantSpec``, ``QArray`` / ``QLinear``, ``qmatmul``, ``CalibSet``, ``MasqError``
* ``methods`` — the registry of quantization methods (``methods.get(name)``, ``methods.names()``)

Names resolve on first use, so ``import masq_jax.models`` or ``masq_jax.calib`` stays light.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "quantize": "masq_jax.api",
    "quantize_many": "masq_jax.api",
    "evaluate": "masq_jax.api",
    "export": "masq_jax.api",
    "load": "masq_jax.loading",
    "generate": "masq_jax.models.generate",
    "QuantSettings": "masq_jax.settings",
    "QuantSpec": "masq_jax.core.quant",
    "QArray": "masq_jax.core.quant",
    "QLinear": "masq_jax.core.qlinear",
    "qmatmul": "masq_jax.kernels",
    "CalibSet": "masq_jax.calib",
    "MasqError": "masq_jax.errors",
}

__all__ = [*_EXPORTS, "methods", "models", "calib", "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in ("methods", "models", "calib", "kernels", "core", "artifact", "calibrate", "eval", "families",
                "research", "serving"):  # ("export" is the function; its package is masq_jax.serving)
        return importlib.import_module(f"masq_jax.{name}")
    raise AttributeError(f"module 'masq_jax' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
