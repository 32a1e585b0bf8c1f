"""Autoregressive generation with a preallocated KV cache, for every ``Model`` (FP or quantized).

One jitted program per (prompt-length bucket, batch, ``max_new_tokens``, sampling setting): a prefill
pass over the left-padded prompt fills the cache ``[L, B, S_max, kv_heads, head_dim]`` (the model's
dtype), then one decode step per token inside ``lax.while_loop``, which stops as soon as every row
has produced an end-of-sequence token. The prefill routes tokens by ``modality_ids`` through the
model's linears exactly as a full forward does; decode tokens are text (``linears(None)``).

Positions: 1-D models and text-only prompts count valid tokens (``cumsum(mask) − 1``, as
transformers' ``generate``); multimodal prompts take the 3-D positions given (``get_rope_index``).
Decode token t then sits at ``max(prompt positions) + 1 + t`` on every axis: transformers'
``cache_position + rope_deltas`` for an unpadded row. (For a left-padded row Qwen2.5-Omni's
transformers code adds the padding length too; we do not: a row's positions do not depend on its
neighbours' lengths.)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from masq_jax.models import decoder
from masq_jax.models.errors import InputError
from masq_jax.models.sampling import check_sampling, next_token

CONFIG_DEFAULT: Any = "config"  # eos/pad: take the model config's
StreamFn = Callable[[np.ndarray, np.ndarray], None]  # (step, tokens [B]) after every generated token


def bucket_length(n: int) -> int:
    """The padded prompt length: a power of two from 16 up to 256, then a multiple of 256."""
    if n <= 256:
        return max(16, 1 << max(0, (n - 1).bit_length()))
    return -(-n // 256) * 256


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """Static settings of one compiled generation program."""

    max_new_tokens: int
    temperature: float
    top_p: float
    eos: tuple[int, ...]
    pad: int


def _left_padded(mask: np.ndarray) -> bool:
    return not np.any(mask[:, 1:] < mask[:, :-1])


def text_positions(mask: np.ndarray) -> np.ndarray:
    """transformers' positions for (left-padded) text: ``cumsum(mask) − 1``, padding at 1."""
    pos = np.cumsum(mask, axis=-1) - 1
    return np.where(mask, pos, 1).astype(np.int32)


def _eos_ids(eos, cfg) -> tuple[int, ...]:
    if eos is CONFIG_DEFAULT:
        eos = cfg.eos_token_id
    if eos is None:
        return ()
    return tuple(int(e) for e in (eos if isinstance(eos, (list, tuple, np.ndarray)) else [eos]))


def _pad_id(pad, cfg, eos: tuple[int, ...]) -> int:
    if pad is CONFIG_DEFAULT:
        pad = cfg.pad_token_id if cfg.pad_token_id is not None else (eos[0] if eos else 0)
    return int(pad)


def generate(model, input_ids=None, *, inputs_embeds=None, position_ids=None, attention_mask=None,
             modality_ids=None, max_new_tokens: int = 32, temperature: float = 0.0, top_p: float = 1.0,
             seed: int = 0, eos_token_id: int | Sequence[int] | None = CONFIG_DEFAULT,
             pad_token_id: int | None = CONFIG_DEFAULT, stream: StreamFn | None = None) -> np.ndarray:
    """The new tokens, int32 ``[B, max_new_tokens]``; after a row's end-of-sequence token, ``pad_token_id``.

    Prompt: ``input_ids`` [B, P] or ``inputs_embeds`` [B, P, H]; rows shorter than P are left-padded
    and marked by ``attention_mask`` [B, P]. ``position_ids`` [B, P] or [3, B, P] (default: counted
    from the mask); ``modality_ids`` [B, P] route prompt tokens (default: text). ``temperature`` 0 is
    greedy; otherwise temperature and ``top_p`` (nucleus) sampling with ``jax.random.PRNGKey(seed)``.
    ``eos_token_id``: one id or several (default: the config's; ``None`` never stops early).
    ``stream(step, tokens)`` is called with each step's tokens as they are produced.
    """
    cfg = model.config
    if (input_ids is None) == (inputs_embeds is None):
        raise InputError("pass exactly one of input_ids or inputs_embeds")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    check_sampling(temperature, top_p)
    tokens = np.asarray(input_ids if inputs_embeds is None else inputs_embeds)
    if inputs_embeds is None and tokens.ndim != 2 or inputs_embeds is not None and tokens.ndim != 3:
        raise InputError(f"input_ids must be [B, P] (inputs_embeds [B, P, H]), got shape {tokens.shape}")
    b, p = tokens.shape[:2]
    mask = np.ones((b, p), bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    if mask.shape != (b, p):
        raise InputError(f"attention_mask must be [B, P]={(b, p)}, got {mask.shape}")
    if not _left_padded(mask) or not mask[:, -1].all():
        raise InputError("attention_mask must be left-padded (padding first, then the prompt) for generation")
    mid = np.zeros((b, p), np.int32) if modality_ids is None else np.asarray(modality_ids, np.int32)
    if mid.shape != (b, p):
        raise InputError(f"modality_ids must be [B, P]={(b, p)}, got {mid.shape}")
    pos = _prompt_positions(cfg, position_ids, mask)
    start = np.where(mask, pos, -1).reshape(-1, b, p).max(axis=(0, 2)) + 1  # [B] first decode position
    limit = cfg.max_position_embeddings
    if limit is not None and int(start.max()) + max_new_tokens > limit:
        raise InputError(f"the prompt ({int(start.max())} positions) plus max_new_tokens ({max_new_tokens}) exceeds the "
                         f"model's {limit} positions; shorten the prompt or ask for fewer tokens")
    eos = _eos_ids(eos_token_id, cfg)
    settings = GenerationSettings(int(max_new_tokens), float(temperature), float(top_p), eos,
                                  _pad_id(pad_token_id, cfg, eos))
    extra = bucket_length(p) - p  # left-pad to the bucket: a new prompt length does not recompile
    tokens = np.pad(tokens, ((0, 0), (extra, 0)) + ((0, 0),) * (tokens.ndim - 2),
                    constant_values=settings.pad if inputs_embeds is None else 0)
    mask = np.pad(mask, ((0, 0), (extra, 0)))
    mid = np.pad(mid, ((0, 0), (extra, 0)))
    pos = np.pad(pos, ((0, 0),) * (pos.ndim - 2) + ((0, 0), (extra, 0)), constant_values=1)
    ids, embeds = (tokens, None) if inputs_embeds is None else (None, tokens)
    out = _generate(cfg, model.linears, settings, stream, model.params, ids, embeds, jnp.asarray(pos),
                    jnp.asarray(mask), jnp.asarray(mid), jnp.asarray(start, jnp.int32), jax.random.PRNGKey(seed))
    return np.asarray(out)


def _prompt_positions(cfg, position_ids, mask: np.ndarray) -> np.ndarray:
    """[B, P] (1-D RoPE) or [3, B, P] (mRoPE) int32 prompt positions."""
    b, p = mask.shape
    if position_ids is None:
        pos = text_positions(mask)
        return np.broadcast_to(pos[None], (3, b, p)).copy() if cfg.uses_mrope else pos
    pos = np.asarray(position_ids).astype(np.int32)
    if pos.ndim == 3 and pos.shape[0] == 4:
        pos = pos[1:]
    if cfg.uses_mrope and pos.ndim == 2:
        pos = np.broadcast_to(pos[None], (3, *pos.shape)).copy()
    want = (3, b, p) if cfg.uses_mrope else (b, p)
    if pos.shape != want:
        raise InputError(f"position_ids must be {'[3, B, P]' if cfg.uses_mrope else '[B, P]'}={want}, got {pos.shape}")
    return pos


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _generate(cfg, linears, settings: GenerationSettings, stream, params, ids, embeds, pos, mask, mid, start, key):
    dtype = params["embed"].dtype
    h = decoder.embed(params, ids) if embeds is None else embeds
    h = h.astype(dtype)
    b, p = mask.shape
    n = settings.max_new_tokens
    s_max = p + n
    dense = decoder.dense_linear
    prefill_linear = dense if linears is None else linears(mid)
    cs = decoder.rope(cfg, pos)
    bias = decoder.attention_bias(mask, p, jnp.float32)

    def prefill_layer(carry, lp):
        out, kv = decoder.layer_forward(cfg, lp, carry, cs, bias, linear=prefill_linear, return_kv=True)
        return out, kv

    h, (ks, vs) = jax.lax.scan(prefill_layer, h, params["layers"])
    shape = (ks.shape[0], b, s_max) + ks.shape[3:]
    cache = tuple(jnp.zeros(shape, dtype).at[:, :, :p].set(c.astype(dtype)) for c in (ks, vs))
    key, sub = jax.random.split(key)
    tok = next_token(decoder.head(cfg, params, h[:, -1:])[:, 0], sub, settings.temperature, settings.top_p)
    eos = jnp.asarray(settings.eos or (-1,), jnp.int32)
    out = jnp.full((b, n), settings.pad, jnp.int32).at[:, 0].set(tok)
    done = jnp.isin(tok, eos)
    if stream is not None:
        io_callback(stream, None, jnp.int32(0), tok, ordered=True)
    valid = jnp.concatenate([mask, jnp.zeros((b, n), bool)], axis=1)
    decode_linear = dense if linears is None else linears(None)
    layer_ids = jnp.arange(cfg.num_layers)

    def cond(state):
        t, _, _, _, done, _ = state
        return (t < n) & ~jnp.all(done)

    def step(state):
        t, out, cache, valid, done, key = state
        slot = p + t - 1  # the previous token goes into this cache slot
        prev = jax.lax.dynamic_index_in_dim(out, t - 1, axis=1, keepdims=True)  # [B, 1]
        x = decoder.embed(params, prev).astype(dtype)
        tpos = (start + t - 1)[:, None]
        cs_t = decoder.rope(cfg, jnp.broadcast_to(tpos[None], (3, b, 1)) if cfg.uses_mrope else tpos)
        valid = jax.lax.dynamic_update_slice(valid, jnp.ones((b, 1), bool), (0, slot))
        bias_t = jnp.where(valid, 0.0, jnp.finfo(jnp.float32).min)[:, None, None, :]

        def decode_layer(carry, xs):
            hh, cc = carry
            lp, layer = xs
            return decoder.layer_decode(cfg, lp, hh, cs_t, cc, layer, slot, bias_t, linear=decode_linear), None

        (x, cache), _ = jax.lax.scan(decode_layer, (x, cache), (params["layers"], layer_ids))
        key, sub = jax.random.split(key)
        new = next_token(decoder.head(cfg, params, x)[:, 0], sub, settings.temperature, settings.top_p)
        new = jnp.where(done, settings.pad, new)
        out = jax.lax.dynamic_update_slice(out, new[:, None], (0, t))
        if stream is not None:
            io_callback(stream, None, t, new, ordered=True)
        return t + 1, out, cache, valid, done | jnp.isin(new, eos), key

    _, out, _, _, _, _ = jax.lax.while_loop(cond, step, (jnp.int32(1), out, cache, valid, done, key))
    return out
