"""The calibration algorithms, layer by layer, as jitted pure functions (no I/O here).

One decoder layer at a time (spec §2–§5):
  1. ``fp_layer_pass``: the full-precision layer on full-precision inputs -> targets + statistics.
  2. ``init_layer_factors``: the method's smoothing vectors (RTN / SmoothQuant / AWQ / MBQ / MAS init).
  3. ``train_layer``: MAS, AdamW on the modality-weighted block L1 loss, the whole 2-epoch schedule
     in one ``lax.scan`` (one compile for every layer of the same shape).
  4. ``propagate``: the quantized layer on quantized inputs (what layer i+1 trains on).
  5. ``cmc_layer``: whitened low-rank compensation with text as the base (``masquant``).
The pipeline (``masq_jax.pipeline``) strings these together and owns checkpoints and reports.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from masq_jax import layer_stats, smooth
from masq_jax.layer_stats import INPUT_GROUPS, LINEAR_INPUT
from masq_jax.models import decoder
from masq_jax.quant import SPEC_BOUND, fake_quant
from masq_jax.settings import QuantSettings

LINEARS = tuple(LINEAR_INPUT)
# Reference (spec §3): init q, o, up; copy q -> k, v and up -> gate; down_proj is never smoothed.
INIT_SOURCE = {"q_proj": "q_proj", "k_proj": "q_proj", "v_proj": "q_proj", "o_proj": "o_proj",
               "gate_proj": "up_proj", "up_proj": "up_proj"}
SMOOTHED = tuple(INIT_SOURCE)
CLAMP = smooth.SMOOTH_CLAMP  # spec §4: before every step |s| < 1e-2 -> sign(s)·1e-2
AWQ_GRID = 20
SEARCH_TOKENS = 2048


# ------------------------------------------------------------------------------------------------
# Linear hooks: how a decoder layer's linears are evaluated under each regime.


def dense_hook(name: str, x: jax.Array, p: dict) -> jax.Array:
    return decoder.dense_linear(name, x, p)


def mas_hook(factors: dict, modality_ids: jax.Array, st: QuantSettings, active=(0, 1, 2)) -> Callable:
    """Fake-quant MAS linear (spec §4): one smoothed, quantized weight per (present) modality."""

    def linear(name, x, p):
        s = factors[name]
        return smooth.mas_linear(
            x, modality_ids, p["w"], p.get("b"), s, wbits=st.wbits, abits=st.abits,
            w_symmetric=st.w_symmetric, group_size=st.group_size, bound=SPEC_BOUND, modalities=active,
            matmul_dtype=st.train_matmul,
        ).astype(x.dtype)

    return linear


def cmc_hook(factors: dict, lora: dict, modality_ids: jax.Array, st: QuantSettings) -> Callable:
    """Fake-quant single-weight CMC linear (spec §6), the simulated twin of the exported model."""

    def linear(name, x, p):
        s = factors[name]
        w = p["w"].astype(jnp.float32)
        xs = x.astype(jnp.float32) / s[modality_ids]
        xq = fake_quant(xs, st.abits, symmetric=True)
        wq = fake_quant(w * s[0][None, :], st.wbits, symmetric=st.w_symmetric, group_size=st.group_size)
        y = jnp.einsum("...i,oi->...o", xq, wq, precision="highest")
        if name in lora:
            l, r = lora[name]
            for m in (1, 2):
                up = jnp.einsum("...i,ir,ro->...o", xs, l[m], r[m], precision="highest")
                y = y + jnp.where((modality_ids == m)[..., None], up, 0.0)
        if p.get("b") is not None:
            y = y + p["b"].astype(jnp.float32)
        return y.astype(x.dtype)

    return linear


# ------------------------------------------------------------------------------------------------
# 1. Full-precision pass with statistics.


def layer_input_dims(cfg) -> dict[str, int]:
    return {"qkv": cfg.hidden_size, "o": cfg.num_heads * cfg.head_dim,
            "gate_up": cfg.hidden_size, "down": cfg.intermediate_size}


@functools.partial(jax.jit, static_argnames=("cfg",))
def _fp_chunk(cfg, lp, h, cos, sin, valid, modality_ids, stats, gram_index):
    bias = decoder.attention_bias(valid, h.shape[1], h.dtype)
    out, inputs = decoder.layer_forward(cfg, lp, h, (cos, sin), bias, capture=True)
    return out, layer_stats.accumulate(stats, inputs, modality_ids, valid, gram_index), inputs


def fp_layer_pass(cfg, lp, h, cos, sin, valid, modality_ids, *, with_gram: bool, chunk: int = 8,
                  search_tokens: int = SEARCH_TOKENS):
    """Run the FP layer over all samples in chunks: (outputs [N,S,H], stats, token sample for searches).

    The token sample holds the linear inputs of the first valid tokens (up to ``search_tokens``), used by
    the AWQ / MBQ grid searches.
    """
    stats = layer_stats.empty_stats(layer_input_dims(cfg), with_gram)
    outs, samples, got = [], {g: [] for g in INPUT_GROUPS}, 0
    sample_mid = []
    for i in range(0, h.shape[0], chunk):
        sl = slice(i, i + chunk)
        gram_index = layer_stats.modality_token_index(modality_ids[sl], valid[sl]) if with_gram else None
        out, stats, inputs = _fp_chunk(cfg, lp, h[sl], cos[sl], sin[sl], valid[sl], modality_ids[sl], stats,
                                       gram_index)
        outs.append(out)
        if got < search_tokens:
            v = valid[sl].reshape(-1)
            idx = jnp.nonzero(v)[0][: search_tokens - got]
            for g in INPUT_GROUPS:
                samples[g].append(inputs[g].reshape(-1, inputs[g].shape[-1])[idx])
            sample_mid.append(modality_ids[sl].reshape(-1)[idx])
            got += int(idx.shape[0])
    token_sample = {g: jnp.concatenate(v) for g, v in samples.items()}
    token_sample["modality_ids"] = jnp.concatenate(sample_mid)
    return jnp.concatenate(outs), stats, token_sample


# ------------------------------------------------------------------------------------------------
# 2. Smoothing vectors per method.


def _ones_like_layer(cfg) -> dict[str, jax.Array]:
    dims = layer_input_dims(cfg)
    return {n: jnp.ones((3, dims[LINEAR_INPUT[n]]), jnp.float32) for n in LINEARS}


def _fill_absent(s: jax.Array, count: jax.Array) -> jax.Array:
    """A modality without calibration tokens takes text's vector (reported by the pipeline)."""
    present = (count > 0)[:, None]
    return jnp.where(present, s, s[0][None, :])


def _weight(lp, name):
    return lp[name]["w"].astype(jnp.float32)


def init_layer_factors(cfg, lp, stats, token_sample, st: QuantSettings, modality_weights) -> tuple[dict, dict]:
    """Smoothing vectors ``{linear: [3, in]}`` of a method before any learning, plus search info."""
    factors = _ones_like_layer(cfg)
    info: dict = {}
    if st.method == "rtn":
        return factors, info
    for name in ("q_proj", "o_proj", "up_proj"):
        g = stats[LINEAR_INPUT[name]]
        w = _weight(lp, name)
        if st.method == "smoothquant":
            s = smooth.init_factors(g["absmax_all"], w, alpha=st.alpha)
            s = jnp.broadcast_to(s, (3, s.shape[-1]))
        elif st.method in ("mas", "masquant"):
            s = smooth.init_factors(g["absmax"], w, alpha=st.alpha)
            s = _fill_absent(s, g["count"])
        elif st.method in ("awq", "mbq"):
            continue
        factors[name] = s
    if st.method in ("awq", "mbq"):
        for name in SMOOTHED:
            group = LINEAR_INPUT[name]
            x = token_sample[group]
            mid = token_sample["modality_ids"]
            s, alpha = search_factor(lp[name], x, mid, stats[group], st, modality_weights)
            factors[name] = jnp.broadcast_to(s, (3, s.shape[-1]))
            info[name] = float(alpha)
        return factors, info
    for name, src in INIT_SOURCE.items():
        factors[name] = factors[src]
    return factors, info


def search_factor(p, x, mid, group_stats, st: QuantSettings, modality_weights):
    """AWQ (``s = mean|x|^α``, weight-only error) or MBQ-like (SmoothQuant family, modality-weighted
    output error with activation quantization) α grid search, vmapped over the grid."""
    w = p["w"].astype(jnp.float32)
    x = x.astype(jnp.float32)
    ref = x @ w.T
    alphas = jnp.arange(AWQ_GRID, dtype=jnp.float32) / AWQ_GRID
    lam = jnp.asarray(modality_weights, jnp.float32)[mid]  # [T]
    if st.method == "awq":
        mean = layer_stats.mean_abs_all(group_stats)

        def cand(a):
            s = jnp.maximum(mean, 1e-4) ** a
            return s / jnp.sqrt(jnp.max(s) * jnp.min(s))
    else:
        wmax = jnp.max(jnp.abs(w), axis=0)

        def cand(a):
            return jnp.maximum(group_stats["absmax_all"] ** a / jnp.maximum(wmax, 1e-5) ** (1 - a), 1e-5)

    def loss(a):
        s = cand(a)
        xq = fake_quant(x / s, st.abits, symmetric=True)
        wq = fake_quant(w * s[None], st.wbits, symmetric=st.w_symmetric, group_size=st.group_size)
        err = jnp.mean((xq @ wq.T - ref) ** 2, axis=-1)
        return jnp.sum(lam * err) / jnp.maximum(jnp.sum(lam), 1e-12)

    losses = jax.lax.map(loss, alphas)  # sequential over the grid keeps memory flat
    best = jnp.argmin(losses)
    return cand(alphas[best]), alphas[best]


# ------------------------------------------------------------------------------------------------
# 3. MAS training (spec §4).


def clamp_factors(factors: dict) -> dict:
    return jax.tree_util.tree_map(lambda s: smooth.clamp_smooth(s, CLAMP), factors)


def _block_loss(cfg, st, active, lp, trainable, frozen, h, cos, sin, valid, mid, target, weights):
    factors = {**frozen, **trainable}
    bias = decoder.attention_bias(valid, h.shape[1], h.dtype)
    pred = decoder.layer_forward(cfg, lp, h, (cos, sin), bias, linear=mas_hook(factors, mid, st, active))
    return smooth.block_loss(pred, target, mid, valid, lambda_text=weights[0], lambda_vision=weights[1],
                             lambda_audio=weights[2])


def make_optimizer(st: QuantSettings) -> optax.GradientTransformation:
    return optax.adamw(st.lr, weight_decay=0.0)


@functools.partial(jax.jit, static_argnames=("cfg", "st", "active"))
def train_layer(cfg, st: QuantSettings, lp, factors, h_q, target, cos, sin, valid, mid, weights, key,
                active=(0, 1, 2)):
    """AdamW over the smoothing vectors of one layer, batch 1, ``st.epochs`` epochs, as one scan.

    Returns (trained factors, per-epoch mean loss [epochs]). Float32 master factors.
    """
    trainable = {n: factors[n] for n in SMOOTHED}
    frozen = {n: factors[n] for n in LINEARS if n not in SMOOTHED}
    opt = make_optimizer(st)
    n = h_q.shape[0]
    keys = jax.random.split(key, st.epochs)
    order = jnp.concatenate([jax.random.permutation(k, n) for k in keys])
    loss_grad = jax.value_and_grad(
        lambda tr, j: _block_loss(cfg, st, active, lp, tr, frozen, h_q[j][None], cos[j][None], sin[j][None],
                                  valid[j][None], mid[j][None], target[j][None], weights)
    )

    def step(carry, j):
        tr, opt_state = carry
        tr = clamp_factors(tr)
        loss, grads = loss_grad(tr, j)
        updates, opt_state = opt.update(grads, opt_state, tr)
        return (optax.apply_updates(tr, updates), opt_state), loss

    (trained, _), losses = jax.lax.scan(step, (trainable, opt.init(trainable)), order)
    trained = clamp_factors(trained)
    return {**frozen, **trained}, losses.reshape(st.epochs, n).mean(axis=1)


# ------------------------------------------------------------------------------------------------
# 4. Propagation and evaluation of one layer.


@functools.partial(jax.jit, static_argnames=("cfg", "st", "regime", "active"))
def quant_layer_chunk(cfg, st, regime, lp, factors, lora, h, cos, sin, valid, mid, active=(0, 1, 2)):
    """One layer on a chunk of samples: ``regime`` 'mas' (one weight per modality) or 'cmc'."""
    bias = decoder.attention_bias(valid, h.shape[1], h.dtype)
    hook = mas_hook(factors, mid, st, active) if regime == "mas" else cmc_hook(factors, lora, mid, st)
    return decoder.layer_forward(cfg, lp, h, (cos, sin), bias, linear=hook)


def propagate(cfg, st, regime, lp, factors, lora, h, cos, sin, valid, mid, chunk: int = 8, active=(0, 1, 2)):
    outs = [quant_layer_chunk(cfg, st, regime, lp, factors, lora, h[i:i + chunk], cos[i:i + chunk],
                              sin[i:i + chunk], valid[i:i + chunk], mid[i:i + chunk], active)
            for i in range(0, h.shape[0], chunk)]
    return jnp.concatenate(outs)


# ------------------------------------------------------------------------------------------------
# 5. Cross-modal compensation (spec §5), text as the base modality.


def cmc_layer(lp, factors, stats, st: QuantSettings, ranks: dict[str, int]) -> dict:
    """Jitted ``_cmc_layer`` (ranks are static)."""
    return _cmc_layer_jit(lp, factors, stats, st, tuple(sorted(ranks.items())))


def cmc_layers(lps, factors, stats, st: QuantSettings, ranks: dict[str, int]) -> dict:
    """``cmc_layer`` over a stack of layers (leading axis on every leaf) in one program: vmapped on
    accelerators, a ``lax.map`` on CPU."""
    return _cmc_layers_jit(lps, factors, stats, st, tuple(sorted(ranks.items())))


@functools.partial(jax.jit, static_argnames=("st", "ranks"))
def _cmc_layer_jit(lp, factors, stats, st, ranks):
    return _cmc_layer(lp, factors, stats, st, dict(ranks))


@functools.partial(jax.jit, static_argnames=("st", "ranks"))
def _cmc_layers_jit(lps, factors, stats, st, ranks):
    one = lambda args: _cmc_layer(*args, st, dict(ranks))  # noqa: E731
    if jax.default_backend() == "cpu":
        # XLA:CPU can wedge its Eigen thread pool on this batched graph (14 batched eighs; reproduced
        # with jax 0.10.2 on the tiny test model): a loop over the layers inside one program instead.
        return jax.lax.map(one, (lps, factors, stats))
    return jax.vmap(lambda lp, f, s: one((lp, f, s)))(lps, factors, stats)


def _cmc_layer(lp, factors, stats, st: QuantSettings, ranks: dict[str, int]) -> dict:
    """Low-rank factors ``{linear: (L [3,in,r], R [3,r,out])}`` for one layer (text slot zero).

    The whitening covariance of modality m is ``diag(1/s_m) · XᵀX_m · diag(1/s_m)`` from the FP
    layer's Gram statistics, so each linear uses its own trained vectors.
    """
    from masq_jax import cmc

    lora = {}
    for name in LINEARS:
        s = factors[name]
        inv = 1.0 / s  # [3, in]
        covs = stats[LINEAR_INPUT[name]]["gram"] * inv[:, :, None] * inv[:, None, :]
        # (Gram statistics are passed whole; only the three matrices of this input are used.)
        lora[name] = cmc.cmc_factors(lp[name]["w"], s, covs, ranks[name], wbits=st.wbits,
                                     w_symmetric=st.w_symmetric, group_size=st.group_size,
                                     damping=st.cov_damping, svd=st.cmc_solver)
    return lora


def layer_output_dims(cfg) -> dict[str, int]:
    return {"q_proj": cfg.num_heads * cfg.head_dim, "k_proj": cfg.num_kv_heads * cfg.head_dim,
            "v_proj": cfg.num_kv_heads * cfg.head_dim, "o_proj": cfg.hidden_size,
            "gate_proj": cfg.intermediate_size, "up_proj": cfg.intermediate_size,
            "down_proj": cfg.hidden_size}


def layer_ranks(cfg, st: QuantSettings) -> dict[str, int]:
    """The CMC rank of each linear (0 unless ``masquant``)."""
    dims, outs = layer_input_dims(cfg), layer_output_dims(cfg)
    if st.method != "masquant":
        return {n: 0 for n in LINEARS}
    from masq_jax import cmc

    return {n: cmc.resolve_rank(st.rank, dims[LINEAR_INPUT[n]], outs[n], floor=st.rank_floor)
            for n in LINEARS}
