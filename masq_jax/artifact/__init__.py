"""The quantized artefact: its on-disk format (``format``) and the model that runs it (``qmodel``)."""

from masq_jax.artifact.format import FORMAT, build_quantized_params, is_artifact, read_artifact, write_artifact
from masq_jax.artifact.qmodel import QuantizedLinears, QuantizedModel, quantized_hook

__all__ = ["FORMAT", "build_quantized_params", "is_artifact", "read_artifact", "write_artifact",
           "QuantizedLinears", "QuantizedModel", "quantized_hook"]
