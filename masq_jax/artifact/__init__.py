"""The quantized artefact: its metadata (``info``), its on-disk format (``format``) and the model that
runs it (``qmodel``)."""

from masq_jax.artifact.format import build_quantized_params, read_artifact, write_artifact
from masq_jax.artifact.info import FORMAT, ArtifactInfo, is_artifact, read_info
from masq_jax.artifact.qmodel import QuantizedLinears, QuantizedModel, quantized_hook

__all__ = ["FORMAT", "ArtifactInfo", "build_quantized_params", "is_artifact", "read_artifact", "read_info",
           "write_artifact", "QuantizedLinears", "QuantizedModel", "quantized_hook"]
