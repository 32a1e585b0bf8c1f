"""Export a masq-jax artefact as a checkpoint serving engines load (``masq export``; docs/export.md).

``export(artefact, out, format="compressed-tensors", text_only=False)`` writes an HF-layout
directory: the source's config.json with a compressed-tensors ``quantization_config``, its tokenizer
files, and ``model.safetensors`` with the integer weights (smoothing folded into the model: ``fold``).
"""

from masq_jax.serving.checkpoint import FORMATS, export
from masq_jax.serving.fold import ExportError, FoldPlan, fold_fp_layer, fold_plan

__all__ = ["FORMATS", "export", "ExportError", "FoldPlan", "fold_fp_layer", "fold_plan"]
