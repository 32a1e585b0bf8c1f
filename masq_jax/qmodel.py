"""The quantized decoder: every decoder linear runs through ``kernels.qmatmul`` (spec §6).

Layer parameters stay stacked on the leading layer axis; each quantized linear is a stacked
``QLinear`` (``[L, ...]`` leaves), or for the ``mas`` upper bound a stack of one ``QLinear`` per
modality (``[L, 3, ...]``). Tokens are routed by ``modality_ids``; without them (decode) every token
takes the text path.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from masq_jax.models import decoder
from masq_jax.qlinear import NUM_MODALITIES, QLinear


def _qmatmul(x, mid, ql, implementation):
    from masq_jax.kernels import qmatmul

    return qmatmul(x, mid, ql, implementation=implementation)


def quantized_hook(modality_ids: jax.Array, per_modality: bool, implementation: str | None = "xla"):
    """A ``layer_forward`` linear hook evaluating stored QLinears with per-token modality routing."""

    def linear(name, x, p):
        if not isinstance(p, QLinear):  # an unquantized linear (never happens for the seven)
            return decoder.dense_linear(name, x, p)
        if not per_modality:
            return _qmatmul(x, modality_ids, p, implementation).astype(x.dtype)
        text = jnp.zeros_like(modality_ids)
        y = None
        for m in range(NUM_MODALITIES):
            ym = _qmatmul(x, text, jax.tree_util.tree_map(lambda a: a[m], p), implementation)
            y = ym if y is None else jnp.where((modality_ids == m)[..., None], ym, y)
        return y.astype(x.dtype)

    return linear


@functools.partial(jax.jit, static_argnames=("cfg", "per_modality", "implementation", "return_hidden"))
def quantized_forward(cfg, params, h, position_ids, attention_mask, modality_ids, *, per_modality: bool,
                      implementation: str | None = "xla", return_hidden: bool = False):
    """Logits of the quantized model from input embeddings ``h`` [B, S, H]."""
    cos_sin = decoder.rope(cfg, position_ids)
    bias = decoder.attention_bias(attention_mask, h.shape[1], h.dtype)
    hook = quantized_hook(modality_ids, per_modality, implementation)
    hidden = []

    def body(carry, lp):
        out = decoder.layer_forward(cfg, lp, carry, cos_sin, bias, linear=hook)
        return out, out if return_hidden else None

    h, stacked = jax.lax.scan(body, h, params["layers"])
    logits = decoder.head(cfg, params, h)
    return (logits, stacked) if return_hidden else logits


@dataclasses.dataclass
class QuantizedModel:
    """A loaded masq-jax artefact: ``model(input_ids=..., modality_ids=...) -> logits``."""

    config: object
    params: dict
    quantization_config: dict
    implementation: str | None = "xla"

    @property
    def per_modality(self) -> bool:
        return self.quantization_config.get("method") == "mas"

    def embed(self, input_ids):
        return decoder.embed(self.params, input_ids)

    def __call__(self, input_ids=None, inputs_embeds=None, position_ids=None, attention_mask=None,
                 modality_ids=None, return_hidden=False):
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids or inputs_embeds")
            inputs_embeds = self.embed(jnp.asarray(input_ids))
        b, s = inputs_embeds.shape[:2]
        if position_ids is None:
            position_ids = decoder.default_positions(self.config, b, s)
        if attention_mask is None:
            attention_mask = jnp.ones((b, s), bool)
        if modality_ids is None:
            modality_ids = jnp.zeros((b, s), jnp.int32)
        return quantized_forward(self.config, self.params, inputs_embeds, jnp.asarray(position_ids),
                                 jnp.asarray(attention_mask), jnp.asarray(modality_ids, jnp.int32),
                                 per_modality=self.per_modality, implementation=self.implementation,
                                 return_hidden=return_hidden)
