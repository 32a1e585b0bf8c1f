"""One decoder layer's calibration step, as jitted pure functions plus the method's hooks (no I/O).

For layer i (docs/method.md §2-§5):
  1. ``fp_layer_pass``: the full-precision layer on full-precision inputs -> targets, statistics and
     a token sample for searches;
  2. ``calibrate_layer``: the method's vectors (init, then ``learn`` on the quantized inputs when it
     trains), then its compensation -> a ``LayerResult``;
  3. ``propagate``: the quantized layer on quantized inputs (what layer i+1 trains on).
The runner (``masq_jax.calibrate.runner``) strings these together and owns checkpoints and reports.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax.calibrate.batch import LayerBatch, PreparedData
from masq_jax.core import stats as core_stats
from masq_jax.methods.base import Method
from masq_jax.models import decoder
from masq_jax.modality import TEXT
from masq_jax.settings import QuantSettings

SEARCH_TOKENS = 2048  # tokens of the FP layer inputs kept for the AWQ / MBQ grid searches
VALIDATION_EVERY = 4  # CMC's validation fold: every 4th calibration sample (with at least 4 samples)
VALIDATION_TOKENS = 1024  # per modality: the fold's tokens kept (FP linear inputs) to score deployments on


def validation_rows(logical: np.ndarray, n_samples: int) -> np.ndarray:
    """Bool per row: whether the sample at that row (``logical`` its index in the calibration set)
    is in CMC's validation fold (split by sample; none below 4 samples; never the mesh's padding)."""
    logical = np.asarray(logical)
    rows = (logical % VALIDATION_EVERY == VALIDATION_EVERY - 1) & (logical < n_samples)
    return rows if n_samples >= VALIDATION_EVERY else np.zeros(logical.shape, bool)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FPLayer:
    """What the full-precision pass yields for one layer."""

    outputs: jax.Array  # [N, S, H]: the next layer's FP inputs and this layer's training target
    stats: dict  # per input group (core.stats)
    sample: dict  # up to SEARCH_TOKENS valid tokens' inputs per group, and their "modality_ids"


@dataclasses.dataclass
class LayerResult:
    """One calibrated layer: its vectors, low-rank factors, loss per epoch and searched α."""

    factors: dict[str, jax.Array]
    lora: dict[str, tuple[jax.Array, jax.Array]]
    losses: list[float]  # mean block loss per epoch ([] when the method does not train)
    alphas: dict[str, float]  # searched α per linear ({} when the method does not search)
    cmc: dict | None = None  # what the method's compensation chose (ranks, shrinkage, validated SQNR)
    trained: dict | None = None  # a compensating method's vectors before compensation (its MAS model; fold check)

    def to_state(self, st: QuantSettings) -> dict:
        """The orbax checkpoint of this layer (fixed shapes, see ``state_template``)."""
        n_loss = max(st.epochs, 1)
        losses = list(self.losses) + [np.nan] * (n_loss - len(self.losses))
        alphas = [self.alphas.get(n, np.nan) for n in decoder.LINEAR_NAMES]
        state = {"factors": self.factors, "info": {"loss": np.asarray(losses, np.float32),
                                                    "alpha": np.asarray(alphas, np.float32)}}
        if self.lora and any(v[0].shape[-1] for v in self.lora.values()):  # a storage rank above 0
            state["lora"] = {n: {"l": v[0], "r": v[1]} for n, v in self.lora.items()}
        if self.cmc is not None:
            state["cmc"] = {k: np.asarray(v, np.float32) for k, v in self.cmc.items()}
        if self.trained is not None:
            state["trained"] = self.trained
        return state

    @classmethod
    def from_state(cls, state: dict, trains: bool) -> LayerResult:
        lora = {n: (jnp.asarray(v["l"]), jnp.asarray(v["r"])) for n, v in state.get("lora", {}).items()}
        losses = [float(x) for x in np.asarray(state["info"]["loss"])] if trains else []
        alphas = {n: float(a) for n, a in zip(decoder.LINEAR_NAMES, np.asarray(state["info"]["alpha"]))
                  if not math.isnan(a)}
        cmc = {k: np.asarray(v) for k, v in state["cmc"].items()} if "cmc" in state else None
        return cls(state["factors"], lora, losses, alphas, cmc, state.get("trained"))

    def report(self) -> dict:
        """This layer's entry in report.json (loss per epoch and α where they exist)."""
        rep = {}
        if self.losses:
            rep["loss_per_epoch"] = [float(x) for x in self.losses]
        if self.alphas:
            rep["alpha"] = dict(self.alphas)
        return rep


def state_template(cfg, st: QuantSettings, method: Method) -> dict:
    """Zero arrays with the shapes of a layer's checkpoint (what orbax restores into)."""
    compensates = method.compensates
    ranks = method.ranks(cfg, st)  # the method's storage rank per linear
    shapes = decoder.linear_shapes(cfg)
    f = {n: np.zeros((3, shapes[n][1]), np.float32) for n in decoder.LINEAR_NAMES}
    info = {"loss": np.zeros((max(st.epochs, 1),), np.float32),
            "alpha": np.zeros((len(decoder.LINEAR_NAMES),), np.float32)}
    state = {"factors": f, "info": info}
    if compensates:
        state["trained"] = {n: np.zeros_like(v) for n, v in f.items()}
    if compensates and any(ranks.values()):
        state["lora"] = {n: {"l": np.zeros((3, shapes[n][1], ranks[n]), np.float32),
                             "r": np.zeros((3, ranks[n], shapes[n][0]), np.float32)} for n in decoder.LINEAR_NAMES}
    info = method.compensation_info_template()
    if info is not None:
        state["cmc"] = info
    return state


# ------------------------------------------------------------------------------------------------
# 1. Full-precision pass with statistics.


@functools.partial(jax.jit, static_argnames=("cfg", "shards"))
def _fp_chunk(cfg, lp, h, batch: LayerBatch, stats, gram_index, val_index, val_valid, shards):
    out, inputs = batch.layer(cfg, lp, h, capture=True)
    stats = core_stats.accumulate(stats, inputs, batch.modality_ids, batch.valid, gram_index, val_index, val_valid,
                                  shards)
    return out, stats, inputs


def fp_layer_pass(cfg, lp, h, data: PreparedData, *, with_gram: bool | str,
                  search_tokens: int = SEARCH_TOKENS) -> FPLayer:
    """Run the FP layer over all samples chunk by chunk (``data.layout``), accumulating statistics
    and a token sample (the linear inputs of the first valid tokens in calibration-set order, up to
    ``search_tokens``). ``with_gram="validation"`` (CMC's statistics) collects the Gram matrices of the
    non-text modalities only (text's stay zero: CMC never whitens text), also those of the validation
    fold (``validation_rows``) for CMC's selection, and the fold's first ``VALIDATION_TOKENS`` tokens
    of each modality (``val_x`` [T, in] per group, ordered text, vision, audio; ``val_mid`` [T]) on
    which compensation scores its deployments (``core.deploy``)."""
    layout = data.layout
    val_rows = validation_rows(layout.logical, layout.samples)
    if with_gram == "validation" and not val_rows.any():
        with_gram = True
    stats = core_stats.empty_stats(decoder.input_dims(cfg), with_gram)
    outs, samples, got = [], {g: [] for g in decoder.INPUT_GROUPS}, 0
    sample_mid = []
    val_x, val_mid = {g: [] for g in decoder.INPUT_GROUPS}, []
    val_got = np.zeros(3, np.int64)
    place = lambda index: tuple(layout.place(i) for i in index)  # noqa: E731
    for c in data.chunks():
        part = data.take(data.batch, c)
        valid, mid = layout.take_host(data.host_valid, c), layout.take_host(data.host_modality_ids, c)
        gram_index = val_index = val_valid = None
        gram_valid = valid & (mid != TEXT) if with_gram == "validation" else valid  # CMC never whitens text
        if with_gram:
            gram_index = place(core_stats.modality_token_index(mid, gram_valid, shards=layout.shards))
        if with_gram == "validation":
            val_valid = valid & layout.take_host(val_rows, c)[:, None]
            val_index = place(core_stats.modality_token_index(mid, gram_valid & val_valid, shards=layout.shards))
            idx = _fold_tokens(mid, val_valid, val_got)
            val_mid.append(mid.reshape(-1)[idx])
            val_valid = layout.place(val_valid)
        out, stats, inputs = _fp_chunk(cfg, lp, data.take(h, c), part, stats, gram_index, val_index, val_valid,
                                       layout.shards)
        outs.append(out)
        if with_gram == "validation":
            for g in decoder.INPUT_GROUPS:
                val_x[g].append(inputs[g].reshape(-1, inputs[g].shape[-1])[idx])
        if got < search_tokens:
            idx = np.nonzero(valid.reshape(-1))[0][: search_tokens - got]
            for g in decoder.INPUT_GROUPS:
                samples[g].append(inputs[g].reshape(-1, inputs[g].shape[-1])[idx])
            sample_mid.append(mid.reshape(-1)[idx])
            got += int(idx.shape[0])
    token_sample = {g: jnp.concatenate(v) for g, v in samples.items()}
    token_sample["modality_ids"] = jnp.asarray(np.concatenate(sample_mid))
    if with_gram == "validation":
        mids = np.concatenate(val_mid)
        order = np.argsort(mids, kind="stable")  # text, vision, audio
        for g in decoder.INPUT_GROUPS:
            stats[g] = {**stats[g], "val_x": jnp.concatenate(val_x[g])[order].astype(jnp.float32),
                        "val_mid": jnp.asarray(mids[order], jnp.int32)}
    return FPLayer(data.put(outs), stats, token_sample)


def _fold_tokens(mid: np.ndarray, fold: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Flat indices of this chunk's fold tokens that fit under ``VALIDATION_TOKENS`` per modality
    (``got`` counts what earlier chunks kept; updated in place)."""
    flat_mid, flat_fold = mid.reshape(-1), np.asarray(fold).reshape(-1)
    keep = []
    for m in range(len(got)):
        idx = np.nonzero(flat_fold & (flat_mid == m))[0][: max(VALIDATION_TOKENS - int(got[m]), 0)]
        got[m] += len(idx)
        keep.append(idx)
    return np.sort(np.concatenate(keep))


# ------------------------------------------------------------------------------------------------
# 2. The method's vectors and compensation for one layer.


def calibrate_layer(method: Method, cfg, st: QuantSettings, lp, fp: FPLayer, h_q, data: PreparedData,
                    modality_weights, key, timer) -> LayerResult:
    """Init, learn (on the quantized inputs ``h_q``, targets ``fp.outputs``) and compensate one layer.
    Training visits one sample per step (batch 1, as the paper), so its inputs are replicated along
    the mesh's data axis; the model axis still splits the weights."""
    with timer("init"):
        factors, alphas = method.init_factors(cfg, lp, fp.stats, fp.sample, st, modality_weights)
    losses = []
    if method.trains(st):
        with timer("train"):
            h, target, batch = data.layout.replicate((h_q, fp.outputs, data.batch))
            factors, per_epoch = method.learn(cfg, st, lp, factors, h, target, batch, modality_weights, key)
            factors = jax.block_until_ready(factors)
            losses = np.asarray(per_epoch).tolist()
    lora, info, trained = {}, None, None
    if method.compensates:
        trained = factors
        with timer("cmc"):
            factors, lora, info = jax.block_until_ready(method.compensate_layer(cfg, lp, factors, fp.stats, st))
    return LayerResult(factors, lora, losses, alphas, info, trained)


# ------------------------------------------------------------------------------------------------
# 3. Quantized propagation.


@functools.partial(jax.jit, static_argnames=("cfg", "method", "st"))
def _quantized_chunk(cfg, method: Method, st: QuantSettings, lp, factors, h, batch: LayerBatch):
    linear = method.training_linear(factors, batch.modality_ids, st, batch.active)
    return batch.layer(cfg, lp, h, linear=linear)


def propagate(cfg, method: Method, st: QuantSettings, lp, factors, h, data: PreparedData) -> jax.Array:
    """The layer's quantized outputs on quantized inputs ``h`` through the method's training linears."""
    return data.put([_quantized_chunk(cfg, method, st, lp, factors, data.take(h, c), data.take(data.batch, c))
                     for c in data.chunks()])
