"""The quantized decoder: a ``masq_jax.models.Model`` whose seven decoder linears run through
``kernels.qmatmul`` (docs/method.md §6), so the FP and quantized models share one call signature.

Layer parameters stay stacked on the leading layer axis; each quantized linear is a stacked
``QLinear`` (``[L, ...]`` leaves), or for per-modality weights (the ``mas`` upper bound) a stack of
one ``QLinear`` per modality (``[L, 3, ...]``). Tokens are routed by ``modality_ids``; without them
(decode) every token takes the text path and the low-rank branch is not even traced.

An artefact calibrated with ``--tie-smoothing`` (q/k/v and gate/up share their smoothing vectors)
loads merged (``merge_tied``): one ``qkv_proj`` and one ``gate_up_proj`` GEMM per layer, the latter
with the SwiGLU in the kernel's epilogue; the outputs are those of the seven linears.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from masq_jax.core.qlinear import QLinear
from masq_jax.errors import ArtifactError
from masq_jax.models import Model, decoder
from masq_jax.modality import NUM_MODALITIES, TEXT


def _qmatmul(x, mid, ql, implementation, epilogue=None):
    from masq_jax.kernels import qmatmul

    return qmatmul(x, mid, ql, implementation=implementation, epilogue=epilogue)


def merge_tied(layers: dict) -> dict:
    """``layers`` (stacked QLinears) with q/k/v replaced by one ``qkv_proj`` and gate/up by one
    ``gate_up_proj`` (halves aligned for the SwiGLU epilogue). Raises ``ArtifactError`` when a group's
    smoothing vectors differ."""
    from masq_jax.kernels import merge

    out = dict(layers)
    for name, members in decoder.MERGED_LINEARS.items():
        qls = [layers[n] for n in members]
        if not merge.tied(qls):
            raise ArtifactError(f"{', '.join(members)} do not share their smoothing vectors, so they cannot run "
                                f"as one GEMM; calibrate with --tie-smoothing or load with merge=False")
        align = merge.SWIGLU_ALIGN if name == decoder.GATE_UP else 1
        out[name] = jax.vmap(lambda *q, a=align: merge.merge_qlinears(q, align=a)[0])(*qls)
        for n in members:
            del out[n]
    return out


def quantized_hook(modality_ids: jax.Array | None, per_modality: bool,
                   implementation: str | None = "xla") -> decoder.LinearFn:
    """A ``layer_forward`` linear hook evaluating stored QLinears with per-token modality routing."""

    def linear(name, x, p):
        if not isinstance(p, QLinear):  # an unquantized linear (never happens for the seven)
            return decoder.dense_linear(name, x, p)
        if not per_modality:
            epilogue = "swiglu" if name == decoder.GATE_UP else None
            return _qmatmul(x, modality_ids, p, implementation, epilogue).astype(x.dtype)
        if modality_ids is None:  # every token is text: the text weight only
            return _qmatmul(x, None, jax.tree_util.tree_map(lambda a: a[TEXT], p), implementation).astype(x.dtype)
        text = jnp.zeros_like(modality_ids)
        y = None
        for m in range(NUM_MODALITIES):
            ym = _qmatmul(x, text, jax.tree_util.tree_map(lambda a: a[m], p), implementation)
            y = ym if y is None else jnp.where((modality_ids == m)[..., None], ym, y)
        return y.astype(x.dtype)

    return linear


@dataclasses.dataclass(frozen=True)
class QuantizedLinears:
    """How an artefact's linears run (hashable: a static argument under jit)."""

    per_modality: bool
    implementation: str | None = "xla"

    def __call__(self, modality_ids) -> decoder.LinearFn:
        return quantized_hook(modality_ids, self.per_modality, self.implementation)


class QuantizedModel(Model):
    """A loaded masq-jax artefact: ``model(input_ids=..., modality_ids=...) -> logits``, as ``Model``.

    ``implementation`` picks the ``kernels.qmatmul`` implementation ("xla", "pallas", "mosaic" or None = auto).
    ``params["layers"]`` holds the seven linears or, merged (``merge_tied``), ``qkv_proj``,
    ``o_proj``, ``gate_up_proj`` and ``down_proj``.
    """

    def __init__(self, config, params: dict, quantization_config: dict, implementation: str | None = "xla"):
        super().__init__(config, params,
                         QuantizedLinears(bool(quantization_config.get("per_modality_weights")), implementation))
        self.quantization_config = quantization_config

    @property
    def merged(self) -> bool:
        """Whether q/k/v and gate/up run as merged GEMMs."""
        return decoder.QKV in self.params["layers"]

    @property
    def per_modality(self) -> bool:
        return self.linears.per_modality

    @property
    def implementation(self) -> str | None:
        return self.linears.implementation
