"""Calibration (and evaluation) data as device arrays: ``prepare`` pads a CalibSet and computes the
decoder inputs; ``LayerBatch`` is what every decoder layer shares (RoPE tables, padding mask,
modality ids), one pytree so per-layer steps take it whole, slice it by sample and vmap over layers.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from masq_jax.errors import MasqError
from masq_jax.modality import NAMES, TEXT
from masq_jax.models import decoder


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LayerBatch:
    """Per-sample inputs shared by every decoder layer, stacked on a leading sample axis N.

    ``cos``/``sin`` [N, S, head_dim] float32 RoPE tables, ``valid`` [N, S] bool (False = padding),
    ``modality_ids`` [N, S] int32. ``active`` (static): the modalities with tokens, so text-only data
    pays one weight quantization per linear.
    """

    cos: jax.Array
    sin: jax.Array
    valid: jax.Array
    modality_ids: jax.Array
    active: tuple[int, ...] = dataclasses.field(default=(0, 1, 2), metadata=dict(static=True))

    def __getitem__(self, index: slice) -> LayerBatch:
        """The samples ``index`` (a slice) of the batch."""
        return jax.tree_util.tree_map(lambda a: a[index], self)

    def sample(self, j) -> LayerBatch:
        """Sample ``j`` (may be traced) as a batch of one."""
        return jax.tree_util.tree_map(lambda a: a[j][None], self)

    @property
    def size(self) -> int:
        return self.valid.shape[0]

    def layer(self, cfg, lp: dict, h: jax.Array, linear: decoder.LinearFn = decoder.dense_linear,
              capture: bool = False):
        """One decoder layer on hidden states ``h`` [N, S, H] of these samples (``decoder.layer_forward``)."""
        bias = decoder.attention_bias(self.valid, h.shape[1], h.dtype)
        return decoder.layer_forward(cfg, lp, h, (self.cos, self.sin), bias, linear=linear, capture=capture)


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """A padded calibration or evaluation set on device: decoder inputs and the shared ``batch``."""

    h0: jax.Array  # [N, S, H] decoder inputs (embeddings)
    batch: LayerBatch
    position_ids: jax.Array  # [N, S] or [3, N, S]
    input_ids: jax.Array | None  # [N, S] when the set holds token ids (perplexity)
    token_counts: dict[str, int]

    @property
    def samples(self) -> int:
        return int(self.h0.shape[0])

    def chunks(self, size: int) -> list[slice]:
        """Consecutive sample slices of at most ``size`` samples (the unit of a jitted pass)."""
        return [slice(i, i + size) for i in range(0, self.samples, size)]


def active_modalities(token_counts: dict[str, int]) -> tuple[int, ...]:
    """Modality ids with tokens (text alone when there are none)."""
    return tuple(m for m, n in enumerate(NAMES) if token_counts[n] > 0) or (TEXT,)


def prepare(cfg, params, calibset, seq_len: int | None = None) -> PreparedData:
    """Pad a CalibSet to one length and compute the decoder inputs and RoPE tables."""
    arrays = calibset.to_arrays(seq_len)
    dtype = params["embed"].dtype
    if "input_ids" in arrays:
        ids = jnp.asarray(arrays["input_ids"])
        if int(ids.max()) >= cfg.vocab_size or int(ids.min()) < 0:
            raise MasqError(f"calibration token ids fall outside the model's vocabulary (0..{cfg.vocab_size - 1});"
                            " the calibration set was tokenized for another model")
        h0 = decoder.embed(params, ids).astype(dtype)
    else:
        emb = arrays["inputs_embeds"]
        if emb.shape[-1] != cfg.hidden_size:
            raise MasqError(f"calibration inputs_embeds have width {emb.shape[-1]}, the model's hidden size is "
                            f"{cfg.hidden_size}; they were made for another model")
        ids = None
        h0 = jnp.asarray(emb, dtype=dtype)
    pos = jnp.asarray(arrays["position_ids"])
    if cfg.uses_mrope and pos.ndim == 2:
        pos = jnp.broadcast_to(pos[None], (3,) + pos.shape)
    if not cfg.uses_mrope and pos.ndim == 3:
        if not bool((pos == pos[0:1]).all()):
            raise MasqError("the calibration set has multimodal 3-D positions but the model uses 1-D RoPE")
        pos = pos[0]
    cos, sin = decoder.rope(cfg, pos)
    valid = jnp.asarray(arrays["attention_mask"]).astype(bool)
    mid = jnp.asarray(arrays["modality_ids"], jnp.int32)
    counts = {n: int(((mid == m) & valid).sum()) for m, n in enumerate(NAMES)}
    batch = LayerBatch(cos, sin, valid, mid, active_modalities(counts))
    return PreparedData(h0, batch, pos, ids, counts)
