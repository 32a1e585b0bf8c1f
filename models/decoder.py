"""Functional core of the decoder (pure, jit-able functions on the params pytree; docs/models.md).

Layer parameters are stacked on a leading axis L; ``layer_forward`` works on one layer's slice and
takes a ``linear`` callable, the single swap-in point for quantized linears. RoPE follows
transformers exactly: cos/sin in float32, half-split ``rotate_half`` layout, and for the Omni Thinker
and Qwen2.5-VL the chunked multimodal variant (frequency index chunk i of ``mrope_section`` takes its
angle from position row i % 3 — both families share this layout in transformers 5).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax.models.config import DecoderConfig
from masq_jax.models.errors import InputError

Params = dict[str, Any]
LinearFn = Callable[[str, jax.Array, dict], jax.Array]

LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Which captured input feeds which linear (capture=True returns the four distinct inputs).
INPUT_OF = {
    "q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "o_proj": "o",
    "gate_proj": "gate_up", "up_proj": "gate_up", "down_proj": "down",
}
INPUT_GROUPS = ("qkv", "o", "gate_up", "down")
# Merged linears (kernels.merge_qlinears): one stored linear standing for the members that read one
# input. ``qkv_proj`` returns q|k|v side by side; ``gate_up_proj`` returns ``silu(g)·u`` (the hook
# applies the SwiGLU, so a kernel can fuse it into its epilogue), possibly padded past the
# intermediate size.
QKV, GATE_UP = "qkv_proj", "gate_up_proj"
MERGED_LINEARS = {QKV: ("q_proj", "k_proj", "v_proj"), GATE_UP: ("gate_proj", "up_proj")}


def input_dims(cfg: DecoderConfig) -> dict[str, int]:
    """Width of each of the four distinct linear inputs of a layer."""
    return {"qkv": cfg.hidden_size, "o": cfg.num_heads * cfg.head_dim,
            "gate_up": cfg.hidden_size, "down": cfg.intermediate_size}


def output_dims(cfg: DecoderConfig) -> dict[str, int]:
    """Output width of each of the seven linears of a layer."""
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    return {"q_proj": q, "k_proj": kv, "v_proj": kv, "o_proj": cfg.hidden_size,
            "gate_proj": cfg.intermediate_size, "up_proj": cfg.intermediate_size, "down_proj": cfg.hidden_size}


def linear_shapes(cfg: DecoderConfig) -> dict[str, tuple[int, int]]:
    """``{linear: (out, in)}``: the weight shape of each of the seven linears."""
    ins, outs = input_dims(cfg), output_dims(cfg)
    return {n: (outs[n], ins[INPUT_OF[n]]) for n in LINEAR_NAMES}


def swiglu(y: jax.Array) -> jax.Array:
    """``silu(g)·u`` of a merged gate|up output ``[..., 2n]`` (gate first), in float32."""
    y = y.astype(jnp.float32)
    n = y.shape[-1] // 2
    return jax.nn.silu(y[..., :n]) * y[..., n:]


def dense_linear(name: str, x: jax.Array, p: dict) -> jax.Array:
    """x @ w.T (+ b) in x's dtype with float32 accumulation; ``w`` is [out, in] (HF layout); for the
    merged ``gate_up_proj``, the SwiGLU of that."""
    w = p["w"].astype(x.dtype)
    y = jnp.einsum("...i,oi->...o", x, w, preferred_element_type=jnp.float32)
    if p.get("b") is not None:
        y = y + p["b"].astype(jnp.float32)
    return (swiglu(y) if name == GATE_UP else y).astype(x.dtype)


def rms_norm(x: jax.Array, w: jax.Array, eps: float) -> jax.Array:
    """HF Qwen2/Llama RMSNorm: normalise in float32, cast back, then scale by the weight."""
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return w.astype(x.dtype) * xf.astype(x.dtype)


def embed(params: Params, input_ids: jax.Array) -> jax.Array:
    """Token embeddings [B, S, H]."""
    return jnp.take(params["embed"], input_ids, axis=0)


def inv_freq(cfg: DecoderConfig) -> np.ndarray:
    """1 / theta^(2i/D) in float32, computed as transformers does (float32 pow)."""
    d = cfg.head_dim
    return (1.0 / (np.float32(cfg.rope_theta) ** (np.arange(0, d, 2, dtype=np.float32) / np.float32(d)))).astype(
        np.float32
    )


def mrope_rows(mrope_section: tuple[int, ...]) -> np.ndarray:
    """For each of the D/2 frequencies, the position row (0 t, 1 h, 2 w) it reads: chunk i -> i % 3."""
    return np.concatenate([np.full(n, i % 3, np.int32) for i, n in enumerate(mrope_section)])


def normalize_positions(cfg: DecoderConfig, position_ids: jax.Array) -> jax.Array:
    """[B,S] stays for 1-D RoPE archs; mrope archs get [3,B,S] ([B,S] broadcast, [4,B,S] drops the
    text-only row 0 as transformers does)."""
    if position_ids.ndim == 3:
        if not cfg.uses_mrope:
            raise InputError(f"{cfg.arch} uses 1-D RoPE: position_ids must be [B, S], got {position_ids.shape}")
        if position_ids.shape[0] == 4:
            position_ids = position_ids[1:]
        if position_ids.shape[0] != 3:
            raise InputError(f"multimodal position_ids must be [3, B, S], got {position_ids.shape}")
        return position_ids
    if position_ids.ndim != 2:
        raise InputError(f"position_ids must be [B, S] or [3, B, S], got shape {position_ids.shape}")
    if cfg.uses_mrope:
        return jnp.broadcast_to(position_ids[None], (3, *position_ids.shape))
    return position_ids


def rope(cfg: DecoderConfig, position_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(cos, sin), each [B, S, head_dim] float32, for [B,S] or [3,B,S] (or [4,B,S]) position ids."""
    pos = normalize_positions(cfg, jnp.asarray(position_ids))
    freqs = pos.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq(cfg))  # [(3,) B, S, D/2]
    if pos.ndim == 3:
        rows = mrope_rows(cfg.mrope_section)
        if rows.shape[0] != cfg.head_dim // 2:
            raise InputError(f"mrope_section {cfg.mrope_section} does not sum to head_dim/2={cfg.head_dim // 2}")
        freqs = jnp.take_along_axis(freqs, jnp.asarray(rows)[None, None, None, :], axis=0)[0]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def _rotate_half(x: jax.Array) -> jax.Array:
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [B, S, N, D]; cos/sin [B, S, D] float32. Result in x's dtype (as transformers: cos cast to x)."""
    c = cos[:, :, None, :].astype(x.dtype)
    s = sin[:, :, None, :].astype(x.dtype)
    return x * c + _rotate_half(x) * s


def attention_bias(attention_mask: jax.Array | None, seq_len: int, dtype: Any = jnp.float32) -> jax.Array:
    """Additive causal + padding bias [B|1, 1, S, S]: 0 where allowed, dtype's most negative value
    elsewhere (finite, so fully masked padding rows stay NaN-free)."""
    causal = jnp.tril(jnp.ones((seq_len, seq_len), bool))[None, None]
    if attention_mask is not None:
        causal = causal & (jnp.asarray(attention_mask) != 0)[:, None, None, :]
    return jnp.where(causal, jnp.zeros((), dtype), jnp.asarray(jnp.finfo(dtype).min, dtype))


ATTN_CHUNK = 128  # query rows per causal block (at most MAX_ATTN_CHUNKS blocks per sequence)
MAX_ATTN_CHUNKS = 16


def attend(q: jax.Array, kt: jax.Array, vt: jax.Array, bias: jax.Array) -> jax.Array:
    """GQA softmax attention of queries ``q`` [B,Sq,nH,D] over keys/values ``kt``/``vt`` [B,nKV,T,D]
    (heads-major) under the additive ``bias`` [B|1,1,Sq,T] -> [B,Sq,nH*D]; scores in float32.

    The query heads of one kv group are stacked into the GEMM's M dimension (one batched matmul per
    group). Used block by block by ``attention`` and over the KV cache by ``layer_decode``.
    """
    b, c, nh, d = q.shape
    nkv, t = kt.shape[1], kt.shape[2]
    g = nh // nkv
    qc = q.reshape(b, c, nkv, g, d).transpose(0, 2, 3, 1, 4).reshape(b, nkv, g * c, d)
    sc = jnp.einsum("bnqd,bntd->bnqt", qc, kt, preferred_element_type=jnp.float32) * (d**-0.5)
    sc = sc.reshape(b, nkv, g, c, t) + bias[:, :, None].astype(jnp.float32)
    probs = jax.nn.softmax(sc, axis=-1).astype(vt.dtype).reshape(b, nkv, g * c, t)
    o = jnp.einsum("bnqt,bntd->bnqd", probs, vt, preferred_element_type=jnp.float32)
    return o.astype(vt.dtype).reshape(b, nkv, g, c, d).transpose(0, 3, 1, 2, 4).reshape(b, c, nh * d)


def attention(cfg: DecoderConfig, q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array) -> jax.Array:
    """Causal GQA softmax attention. q [B,S,nH,D], k/v [B,S,nKV,D], bias [B|1,1,S,S] from
    attention_bias -> [B,S,nH*D]; scores and softmax in float32.

    Query rows go in blocks; a block only meets the keys up to its last row (the rest are masked by
    the causal bias anyway), which skips ~half the work: 2-3x faster than one dense [S,S] block on CPU.
    """
    del cfg
    s = q.shape[1]
    kt = k.transpose(0, 2, 1, 3)  # [B, nKV, S, D]
    vt = v.transpose(0, 2, 1, 3)
    chunk = max(ATTN_CHUNK, -(-s // MAX_ATTN_CHUNKS))
    outs = []
    for st in range(0, s, chunk):
        en = min(s, st + chunk)
        outs.append(attend(q[:, st:en], kt[:, :, :en], vt[:, :, :en], bias[:, :, st:en, :en]))
    return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=1)


def attention_inputs(cfg: DecoderConfig, lp: Params, h: jax.Array, rope_cs: tuple[jax.Array, jax.Array],
                     linear: LinearFn = dense_linear):
    """``(x, q, k, v)``: the normalised layer input and its RoPE-rotated queries and keys, and values
    (q [B,S,nH,D], k/v [B,S,nKV,D])."""
    b, s, _ = h.shape
    cos, sin = rope_cs
    x = rms_norm(h, lp["input_norm"], cfg.rms_norm_eps)
    nq, nkv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    if QKV in lp:  # one GEMM for the three (q|k|v side by side, unpadded)
        y = linear(QKV, x, lp[QKV])
        q, k, v = y[..., :nq], y[..., nq:nq + nkv], y[..., nq + nkv:nq + 2 * nkv]
    else:
        q, k, v = (linear(n, x, lp[n]) for n in MERGED_LINEARS[QKV])
    q = q.reshape(b, s, cfg.num_heads, cfg.head_dim)
    k = k.reshape(b, s, cfg.num_kv_heads, cfg.head_dim)
    v = v.reshape(b, s, cfg.num_kv_heads, cfg.head_dim)
    return x, apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


def layer_output(cfg: DecoderConfig, lp: Params, h: jax.Array, a: jax.Array, linear: LinearFn = dense_linear):
    """``(h_out, x2, m)`` after attention output ``a``: residual o_proj, then the SwiGLU MLP (x2 its
    normalised input, m the down_proj input)."""
    h = h + linear("o_proj", a, lp["o_proj"])
    x2 = rms_norm(h, lp["post_attn_norm"], cfg.rms_norm_eps)
    if GATE_UP in lp:  # one GEMM whose output is already silu(g)·u
        m = linear(GATE_UP, x2, lp[GATE_UP])[..., :cfg.intermediate_size]
    else:
        m = jax.nn.silu(linear("gate_proj", x2, lp["gate_proj"])) * linear("up_proj", x2, lp["up_proj"])
    return h + linear("down_proj", m, lp["down_proj"]), x2, m


def layer_forward(
    cfg: DecoderConfig,
    lp: Params,
    h: jax.Array,
    rope_cs: tuple[jax.Array, jax.Array],
    bias: jax.Array,
    linear: LinearFn = dense_linear,
    capture: bool = False,
    return_kv: bool = False,
):
    """One pre-norm decoder layer. ``lp`` is one layer's params (no L axis). With capture=True also
    returns the four distinct linear inputs {"qkv", "o", "gate_up", "down"}; with return_kv=True the
    layer's rotated keys and values ``(k, v)`` (what a KV cache holds)."""
    x, q, k, v = attention_inputs(cfg, lp, h, rope_cs, linear)
    a = attention(cfg, q, k, v, bias)
    h, x2, m = layer_output(cfg, lp, h, a, linear)
    if capture:
        return h, {"qkv": x, "o": a, "gate_up": x2, "down": m}
    if return_kv:
        return h, (k, v)
    return h


def layer_decode(cfg: DecoderConfig, lp: Params, h: jax.Array, rope_cs: tuple[jax.Array, jax.Array],
                 cache: tuple[jax.Array, jax.Array], layer, slot, bias: jax.Array, linear: LinearFn = dense_linear):
    """Layer ``layer`` for new tokens ``h`` [B,T,H]: writes their keys and values into the stacked KV
    cache ``(k, v)`` [L, B, S_max, nKV, D] at slots ``slot..slot+T-1`` (in place under jit), attends
    over the layer's whole cache under ``bias`` [B|1,1,T,S_max]; returns ``(h, cache)``."""
    cache_k, cache_v = cache
    _, q, k, v = attention_inputs(cfg, lp, h, rope_cs, linear)
    at = (layer, 0, slot, 0, 0)
    cache_k = jax.lax.dynamic_update_slice(cache_k, k[None].astype(cache_k.dtype), at)
    cache_v = jax.lax.dynamic_update_slice(cache_v, v[None].astype(cache_v.dtype), at)
    kt = jax.lax.dynamic_index_in_dim(cache_k, layer, keepdims=False).transpose(0, 2, 1, 3)
    vt = jax.lax.dynamic_index_in_dim(cache_v, layer, keepdims=False).transpose(0, 2, 1, 3)
    h, _, _ = layer_output(cfg, lp, h, attend(q, kt, vt, bias), linear)
    return h, (cache_k, cache_v)


def layers_forward(
    cfg: DecoderConfig,
    layers_params: Params,
    h: jax.Array,
    rope_cs: tuple[jax.Array, jax.Array],
    bias: jax.Array,
    start: int = 0,
    stop: int | None = None,
    linear: LinearFn = dense_linear,
) -> jax.Array:
    """Run layers [start, stop) of the stacked ``layers_params`` with a lax.scan."""
    n = jax.tree.leaves(layers_params)[0].shape[0]
    stop = n if stop is None else stop
    if not 0 <= start <= stop <= n:
        raise InputError(f"layer range [{start}, {stop}) is outside 0..{n}")
    if start == stop:
        return h
    sl = jax.tree.map(lambda a: a[start:stop], layers_params)

    def body(carry, lp):
        return layer_forward(cfg, lp, carry, rope_cs, bias, linear=linear), None

    h, _ = jax.lax.scan(body, h, sl)
    return h


def head(cfg: DecoderConfig, params: Params, h: jax.Array) -> jax.Array:
    """Final RMSNorm + lm_head (or the tied embedding). Logits are float32 [B, S, V]."""
    x = rms_norm(h, params["final_norm"], cfg.rms_norm_eps)
    w = params["embed"] if cfg.tie_word_embeddings or "lm_head" not in params else params["lm_head"]
    return jnp.einsum("bsh,vh->bsv", x, w.astype(x.dtype), preferred_element_type=jnp.float32)


def default_positions(cfg: DecoderConfig, batch: int, seq_len: int) -> jax.Array:
    """arange positions: [B, S], or [3, B, S] for mrope archs."""
    pos = jnp.broadcast_to(jnp.arange(seq_len, dtype=jnp.int32)[None], (batch, seq_len))
    return jnp.broadcast_to(pos[None], (3, batch, seq_len)) if cfg.uses_mrope else pos


def forward(
    cfg: DecoderConfig,
    params: Params,
    input_ids: jax.Array | None = None,
    inputs_embeds: jax.Array | None = None,
    position_ids: jax.Array | None = None,
    attention_mask: jax.Array | None = None,
    linear: LinearFn = dense_linear,
) -> jax.Array:
    """Full decoder: embeddings (or given inputs_embeds) -> layers -> logits [B, S, V] float32."""
    if (input_ids is None) == (inputs_embeds is None):
        raise InputError("pass exactly one of input_ids or inputs_embeds")
    h = embed(params, input_ids) if inputs_embeds is None else jnp.asarray(inputs_embeds)
    h = h.astype(params["embed"].dtype)
    b, s, _ = h.shape
    if position_ids is None:
        position_ids = default_positions(cfg, b, s)
    cs = rope(cfg, position_ids)
    bias = attention_bias(attention_mask, s, jnp.float32)
    h = layers_forward(cfg, params["layers"], h, cs, bias, linear=linear)
    return head(cfg, params, h)
