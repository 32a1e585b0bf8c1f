"""Calibration (and evaluation) data as device arrays: ``prepare`` pads a CalibSet, lays it out on
the mesh's ``data`` axis (``parallel.SampleLayout``) and computes the decoder inputs; ``LayerBatch``
is what every decoder layer shares (RoPE tables, padding mask, modality ids), one pytree so
per-layer steps take it whole, take it in chunks and vmap over layers.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax.errors import MasqError
from masq_jax.modality import NAMES, TEXT
from masq_jax.models import decoder
from masq_jax.parallel.layout import SampleLayout


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LayerBatch:
    """Per-sample inputs shared by every decoder layer, stacked on a leading sample axis N.

    ``cos``/``sin`` [N, S, head_dim] float32 RoPE tables, ``valid`` [N, S] bool (False = padding),
    ``modality_ids`` [N, S] int32, ``logical`` [N] int32 the sample's index in the calibration set
    (rows at or past ``samples`` are the mesh's masked padding). ``active`` (static): the modalities
    with tokens, so text-only data pays one weight quantization per linear.
    """

    cos: jax.Array
    sin: jax.Array
    valid: jax.Array
    modality_ids: jax.Array
    logical: jax.Array
    active: tuple[int, ...] = dataclasses.field(default=(0, 1, 2), metadata=dict(static=True))
    samples: int = dataclasses.field(default=0, metadata=dict(static=True))  # real samples of the whole set

    def __getitem__(self, index: slice) -> LayerBatch:
        """The samples ``index`` (a slice) of the batch."""
        return jax.tree_util.tree_map(lambda a: a[index], self)

    def training_rows(self) -> jax.Array:
        """``[samples]`` the row of each real sample in calibration-set order (padding left out)."""
        return jnp.argsort(self.logical)[: self.samples]

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
    layout: SampleLayout  # where each sample lives (padded to the mesh's data axis)
    host_valid: np.ndarray  # [N, S] bool, ``batch.valid`` on the host (index building without transfers)
    host_modality_ids: np.ndarray  # [N, S] int32, ``batch.modality_ids`` on the host

    @property
    def samples(self) -> int:
        """Real calibration samples (without the mesh's padding)."""
        return self.layout.samples

    def chunks(self) -> range:
        """Chunk indices for ``take`` (the unit of a jitted pass)."""
        return range(self.layout.num_chunks)

    def take(self, tree, c: int):
        """Chunk ``c`` of arrays laid out like this data (samples on axis 0)."""
        return self.layout.take(tree, c)

    def put(self, parts):
        """Chunks back into arrays laid out like this data."""
        return self.layout.put(parts)


def active_modalities(token_counts: dict[str, int]) -> tuple[int, ...]:
    """Modality ids with tokens (text alone when there are none)."""
    return tuple(m for m, n in enumerate(NAMES) if token_counts[n] > 0) or (TEXT,)


def prepare(cfg, params, calibset, seq_len: int | None = None, mesh=None, chunk: int = 8,
            offload: str | None = None) -> PreparedData:
    """Pad a CalibSet to one length, lay its samples out along ``mesh``'s data axis (``chunk``
    samples per device per pass) and compute the decoder inputs and RoPE tables; ``offload``
    ("host" / "disk") keeps the decoder inputs, and every activation made from them, off the devices."""
    arrays = calibset.to_arrays(seq_len)
    n = len(next(iter(arrays.values())))
    layout = SampleLayout.for_mesh(n, mesh, chunk, offload)
    put = lambda a, axis=0: layout.place(layout.arrange(a, axis), axis)  # noqa: E731
    dtype = params["embed"].dtype
    if "input_ids" in arrays:
        host_ids = np.asarray(arrays["input_ids"])
        if int(host_ids.max()) >= cfg.vocab_size or int(host_ids.min()) < 0:
            raise MasqError(f"calibration token ids fall outside the model's vocabulary (0..{cfg.vocab_size - 1});"
                            " the calibration set was tokenized for another model")
        ids = put(host_ids)
        h0 = layout.place(decoder.embed(params, ids).astype(dtype))
    else:
        emb = arrays["inputs_embeds"]
        if emb.shape[-1] != cfg.hidden_size:
            raise MasqError(f"calibration inputs_embeds have width {emb.shape[-1]}, the model's hidden size is "
                            f"{cfg.hidden_size}; they were made for another model")
        ids = None
        h0 = put(np.asarray(emb)).astype(dtype)
    pos = np.asarray(arrays["position_ids"])
    if cfg.uses_mrope and pos.ndim == 2:
        pos = np.broadcast_to(pos[None], (3,) + pos.shape)
    if not cfg.uses_mrope and pos.ndim == 3:
        if not bool((pos == pos[0:1]).all()):
            raise MasqError("the calibration set has multimodal 3-D positions but the model uses 1-D RoPE")
        pos = pos[0]
    pos = put(pos, pos.ndim - 2)
    cos, sin = (layout.place(t) for t in decoder.rope(cfg, pos))
    valid_host = np.asarray(arrays["attention_mask"]).astype(bool)
    mid_host = np.asarray(arrays["modality_ids"], np.int32)
    counts = {name: int(((mid_host == m) & valid_host).sum()) for m, name in enumerate(NAMES)}
    valid_host, mid_host = layout.arrange(valid_host), layout.arrange(mid_host)
    batch = LayerBatch(cos, sin, layout.place(valid_host), layout.place(mid_host),
                       layout.place(layout.logical.astype(np.int32)), active_modalities(counts), n)
    return PreparedData(layout.store(h0), batch, pos, ids, counts, layout, valid_host, mid_host)
