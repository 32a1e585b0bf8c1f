"""Assemble the params pytree from named source tensors, bonsai-style: a regex key map turns
checkpoint names into param paths; shapes are checked against the config and every problem
(missing tensors, shape mismatches) is collected and reported in one error."""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Iterable

import jax.numpy as jnp
import ml_dtypes
import numpy as np

from masq_jax.models.config import DecoderConfig
from masq_jax.models.errors import MissingTensorsError, ShapeMismatchError

# A param path: (top,) for embed/final_norm/lm_head, ("layers", name, leaf|None, layer_index) for layers.
Path = tuple

_LAYER_SUFFIX = {
    r"self_attn\.q_proj\.weight": ("q_proj", "w"),
    r"self_attn\.q_proj\.bias": ("q_proj", "b"),
    r"self_attn\.k_proj\.weight": ("k_proj", "w"),
    r"self_attn\.k_proj\.bias": ("k_proj", "b"),
    r"self_attn\.v_proj\.weight": ("v_proj", "w"),
    r"self_attn\.v_proj\.bias": ("v_proj", "b"),
    r"self_attn\.o_proj\.weight": ("o_proj", "w"),
    r"mlp\.gate_proj\.weight": ("gate_proj", "w"),
    r"mlp\.up_proj\.weight": ("up_proj", "w"),
    r"mlp\.down_proj\.weight": ("down_proj", "w"),
    r"input_layernorm\.weight": ("input_norm", None),
    r"post_attention_layernorm\.weight": ("post_attn_norm", None),
}


def expected_shapes(cfg: DecoderConfig, has_lm_head: bool) -> dict[Path, tuple[int, ...]]:
    """Every param path the config implies (per layer), with its shape."""
    h, i, d = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    qd, kvd = cfg.num_heads * d, cfg.num_kv_heads * d
    per_layer = {
        ("input_norm", None): (h,), ("post_attn_norm", None): (h,),
        ("q_proj", "w"): (qd, h), ("k_proj", "w"): (kvd, h), ("v_proj", "w"): (kvd, h),
        ("o_proj", "w"): (h, qd), ("gate_proj", "w"): (i, h), ("up_proj", "w"): (i, h),
        ("down_proj", "w"): (h, i),
    }
    if cfg.attention_bias:
        per_layer.update({("q_proj", "b"): (qd,), ("k_proj", "b"): (kvd,), ("v_proj", "b"): (kvd,)})
    out: dict[Path, tuple[int, ...]] = {("embed",): (cfg.vocab_size, h), ("final_norm",): (h,)}
    if has_lm_head:
        out[("lm_head",)] = (cfg.vocab_size, h)
    for layer in range(cfg.num_layers):
        for (name, leaf), shape in per_layer.items():
            out[("layers", name, leaf, layer)] = shape
    return out


def np_dtype(dtype: Any) -> np.dtype:
    """NumPy dtype for a jnp dtype (bfloat16 through ml_dtypes)."""
    if jnp.dtype(dtype) == jnp.bfloat16:
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(jnp.dtype(dtype).name)


Sources = dict[Path, tuple[str, Callable[[], np.ndarray], tuple[int, ...]]]


class StreamedLayers:
    """The decoder layers of a checkpoint left on disk: ``layer(i)`` reads layer i's tensors (memory-
    mapped safetensors or GGUF) when asked and keeps nothing, so host memory holds the layers in use,
    not the model. Stands in for ``params["layers"]`` (``layer_params`` reads either)."""

    def __init__(self, cfg: DecoderConfig, sources: Sources, dtype: Any, fingerprint: str = ""):
        self.num_layers = cfg.num_layers
        self._by_layer: dict[int, list] = {}
        for p, (_, load, _) in sources.items():
            if p[0] == "layers":
                self._by_layer.setdefault(p[3], []).append((p[1], p[2], load))
        self._npd = np_dtype(dtype)
        self.fingerprint = fingerprint  # what identifies the files (names, sizes, times), for resume
        self.placement: Callable[[dict], dict] | None = None  # e.g. onto a device mesh, applied on read

    def layer(self, i: int) -> dict:
        """Layer ``i``'s params (the stacked layout without the layer axis), read now."""
        if not 0 <= i < self.num_layers:
            raise IndexError(f"layer {i} of {self.num_layers}")
        out: dict[str, Any] = {}
        for name, leaf, load in self._by_layer[i]:
            arr = jnp.asarray(np.asarray(load()).astype(self._npd, copy=False))
            if leaf is None:
                out[name] = arr
            else:
                out.setdefault(name, {})[leaf] = arr
        return out if self.placement is None else self.placement(out)


def files_fingerprint(path: str) -> str:
    """Names, sizes and modification times of a checkpoint's files (what resume compares when the
    weights are streamed rather than read)."""
    paths = [path] if os.path.isfile(path) else sorted(os.path.join(path, f) for f in os.listdir(path))
    return ";".join(f"{os.path.basename(p)}:{os.stat(p).st_size}:{os.stat(p).st_mtime_ns}" for p in paths
                    if os.path.isfile(p))


def layer_params(params: dict, i: int) -> dict:
    """Layer ``i``'s params from stacked ``params["layers"]`` or from ``StreamedLayers``."""
    layers = params["layers"]
    if isinstance(layers, StreamedLayers):
        return layers.layer(i)
    import jax

    return jax.tree_util.tree_map(lambda a: a[i], layers)


def assemble(
    cfg: DecoderConfig,
    sources: Sources,
    dtype: Any,
    has_lm_head: bool,
    stream: bool = False,
    source: str = "",
) -> dict:
    """Build the params pytree. ``sources`` maps param path -> (checkpoint key, loader, shape).
    Raises MissingTensorsError / ShapeMismatchError listing every problem at once, before reading.
    ``stream``: only the embeddings, final norm and head are read; ``params["layers"]`` is a
    ``StreamedLayers`` over the checkpoint at ``source`` (a directory or file)."""
    want = expected_shapes(cfg, has_lm_head)
    missing = [p for p in want if p not in sources]
    bad = [
        f"{sources[p][0]}: checkpoint {tuple(sources[p][2])} vs expected {want[p]}"
        for p in want
        if p in sources and tuple(sources[p][2]) != want[p]
    ]
    if missing:
        names = [_describe(p) for p in missing]
        raise MissingTensorsError(f"checkpoint lacks {len(names)} tensor(s): {', '.join(names)}")
    if bad:
        raise ShapeMismatchError(f"shape mismatch in {len(bad)} tensor(s): " + "; ".join(bad))
    npd = np_dtype(dtype)
    params: dict[str, Any] = {}
    stacked: dict[tuple, np.ndarray] = {}
    if stream:
        for p in want:
            if p[0] != "layers":
                params[p[0]] = jnp.asarray(np.asarray(sources[p][1]()).astype(npd, copy=False))
        params["layers"] = StreamedLayers(cfg, {p: sources[p] for p in want}, dtype, files_fingerprint(source))
        return params
    for p, shape in want.items():
        arr = np.asarray(sources[p][1]())
        if p[0] == "layers":
            key = (p[1], p[2])
            if key not in stacked:
                stacked[key] = np.empty((cfg.num_layers, *shape), npd)
            stacked[key][p[3]] = arr.astype(npd, copy=False)
        else:
            params[p[0]] = jnp.asarray(arr.astype(npd, copy=False))
    layers: dict[str, Any] = {}
    for (name, leaf), arr in stacked.items():
        if leaf is None:
            layers[name] = jnp.asarray(arr)
        else:
            layers.setdefault(name, {})[leaf] = jnp.asarray(arr)
    params["layers"] = layers
    return params


def _describe(p: Path) -> str:
    if p[0] == "layers":
        return f"layers.{p[3]}.{p[1]}" + (f".{p[2]}" if p[2] else "")
    return p[0]


def map_keys(
    keys: Iterable[str], rules: list[tuple[re.Pattern, Callable[[re.Match], Path | None]]]
) -> tuple[dict[Path, str], list[str]]:
    """Apply regex rules to checkpoint keys: (path -> key, unmatched keys). A rule returning None
    means 'known and ignored'."""
    mapped: dict[Path, str] = {}
    unmatched: list[str] = []
    for k in keys:
        for pat, fn in rules:
            m = pat.fullmatch(k)
            if m:
                p = fn(m)
                if p is not None:
                    mapped[p] = k
                break
        else:
            unmatched.append(k)
    return mapped, unmatched


def hf_rules() -> list[tuple[re.Pattern, Callable[[re.Match], Path | None]]]:
    """HF safetensors names of the five families -> param paths. Thinker/language-model prefixes are
    optional; vision/audio towers, talker and token2wav are ignored."""
    pre = r"(?:thinker\.)?(?:model\.)?(?:language_model\.)?(?:model\.)?"
    rules: list[tuple[re.Pattern, Callable[[re.Match], Path | None]]] = []
    for suffix, (name, leaf) in _LAYER_SUFFIX.items():
        rules.append(
            (re.compile(pre + r"layers\.(\d+)\." + suffix), lambda m, n=name, lf=leaf: ("layers", n, lf, int(m.group(1))))
        )
    rules += [
        (re.compile(pre + r"embed_tokens\.weight"), lambda m: ("embed",)),
        (re.compile(pre + r"norm\.weight"), lambda m: ("final_norm",)),
        (re.compile(r"(?:thinker\.)?(?:model\.)?lm_head\.weight"), lambda m: ("lm_head",)),
        (re.compile(r"(?:thinker\.)?(?:model\.)?(?:visual|audio_tower)\..*"), lambda m: None),
        (re.compile(r"(?:talker|token2wav)\..*"), lambda m: None),
        (re.compile(r".*rotary_emb\.inv_freq"), lambda m: None),
    ]
    return rules
