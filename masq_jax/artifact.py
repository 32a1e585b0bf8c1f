"""The quantized artefact: build stacked QLinears, write them atomically, read them back.

Directory layout (``--out``):
  config.json          the original HF config plus ``quantization_config`` (documented in README)
  model.safetensors    unquantized params in their original dtype (``embed``, ``final_norm``,
                       ``lm_head``, ``layers.input_norm``, ``layers.post_attn_norm``) and, per linear
                       ``layers.<name>.{qvalue,scale,zero_point,smooth,lora_l,lora_r,bias}`` stacked
                       over layers (``[L, ...]``; ``[L, 3, ...]`` for the per-modality ``mas`` export)
  report.json          settings, per-stage time and peak memory, per-layer loss and SQNR
  checkpoints/         orbax checkpoints of the calibration state (one step per finished layer)
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.flax import load_file, save_file

from masq_jax.errors import MasqError
from masq_jax.qlinear import NUM_MODALITIES, QLinear, make_qlinear
from masq_jax.quant import QArray
from masq_jax.settings import QuantSettings

FORMAT = "masq-jax"
FORMAT_VERSION = 1
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _stack(trees):
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


@functools.partial(jax.jit, static_argnames=("st", "per_modality"))
def build_qlinear(p: dict, s: jax.Array, lora, st: QuantSettings, per_modality: bool):
    """One layer's QLinear for a linear (``p`` = {"w", "b"?}); per_modality -> stacked over m."""
    w = p["w"].astype(jnp.float32)
    kw = dict(wbits=st.wbits, abits=st.abits, w_symmetric=st.w_symmetric, group_size=st.group_size)
    bias = p.get("b")
    if per_modality:
        return _stack([make_qlinear(w, bias, smooth=jnp.broadcast_to(s[m], s.shape), **kw)
                       for m in range(NUM_MODALITIES)])
    l, r = lora if lora is not None else (None, None)
    return make_qlinear(w, bias, smooth=s, lora_l=l, lora_r=r, **kw)


def build_quantized_params(params: dict, factors: list[dict], loras: list[dict], st: QuantSettings) -> dict:
    """Replace the seven linears of every layer by stacked QLinears (other params untouched)."""
    per_modality = st.method == "mas"
    layers = dict(params["layers"])
    n_layers = len(factors)
    for name in LINEARS:
        per_layer = []
        for i in range(n_layers):
            p = jax.tree_util.tree_map(lambda a: a[i], params["layers"][name])
            lora = loras[i].get(name) if loras and loras[i] else None
            per_layer.append(build_qlinear(p, factors[i][name], lora, st, per_modality))
        layers[name] = _stack(per_layer)
    return {**params, "layers": layers}


def quantization_config(st: QuantSettings, ranks: dict[str, int], extra: dict | None = None) -> dict:
    """The ``quantization_config`` block written into config.json."""
    return {
        "quant_method": FORMAT,
        "format_version": FORMAT_VERSION,
        "method": st.method,
        "wbits": st.wbits,
        "abits": st.abits,
        "group_size": st.group_size,
        "w_symmetric": st.w_symmetric,
        "bound": "qmax",
        "modalities": ["text", "vision", "audio"],
        "base_modality": "text",
        "per_modality_weights": st.method == "mas",
        "ranks": ranks,
        "quantized_linears": list(LINEARS),
        "settings": st.to_json(),
        **(extra or {}),
    }


def _flatten(params: dict) -> dict[str, jax.Array]:
    flat = {}
    for key, value in params.items():
        if key != "layers":
            flat[key] = value
    for key, value in params["layers"].items():
        if isinstance(value, QLinear):
            flat[f"layers.{key}.qvalue"] = value.weight.qvalue
            flat[f"layers.{key}.scale"] = value.weight.scale
            if value.weight.zero_point is not None:
                flat[f"layers.{key}.zero_point"] = value.weight.zero_point
            flat[f"layers.{key}.smooth"] = value.smooth
            flat[f"layers.{key}.lora_l"] = value.lora_l
            flat[f"layers.{key}.lora_r"] = value.lora_r
            if value.bias is not None:
                flat[f"layers.{key}.bias"] = value.bias
        else:
            flat[f"layers.{key}"] = value
    return flat


def write_artifact(tmp_dir: Path, hf_config: dict, params: dict, qconfig: dict) -> None:
    """Write config.json and model.safetensors into ``tmp_dir`` (the caller renames it into place)."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    cfg = dict(hf_config)
    cfg["quantization_config"] = qconfig
    (tmp_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    flat = {k: jnp.asarray(v) for k, v in _flatten(params).items()}
    save_file(flat, str(tmp_dir / "model.safetensors"), metadata={"format": FORMAT})


def read_artifact(path: str | os.PathLike, dtype=None):
    """Load an artefact directory into a ``QuantizedModel``."""
    from masq_jax.models.config import config_from_hf
    from masq_jax.qmodel import QuantizedModel

    path = Path(path)
    try:
        hf = json.loads((path / "config.json").read_text())
        flat = load_file(str(path / "model.safetensors"))
    except FileNotFoundError as e:
        raise MasqError(f"{path} is not a complete masq-jax artefact ({e.filename} missing)") from None
    except Exception as e:  # corrupt file
        raise MasqError(f"{path}: the artefact cannot be read ({type(e).__name__}: {e}); re-run masq quantize") from None
    qc = hf.pop("quantization_config")
    if qc.get("quant_method") != FORMAT:
        raise MasqError(f"{path}: quantization_config.quant_method is {qc.get('quant_method')!r}, not {FORMAT!r}")
    cfg = _decoder_config(qc, hf) if "decoder_config" in qc else config_from_hf(hf)
    params: dict = {"layers": {}}
    for key, value in flat.items():
        if not key.startswith("layers."):
            params[key] = value if dtype is None else value.astype(dtype)
    for key, value in flat.items():
        if key.startswith("layers.") and key.count(".") == 1:
            params["layers"][key.split(".")[1]] = value if dtype is None else value.astype(dtype)
    n_layers = cfg.num_layers
    for name in LINEARS:
        g = lambda field: flat.get(f"layers.{name}.{field}")  # noqa: E731
        if g("qvalue") is None:
            raise MasqError(f"{path}: tensors of layers.{name} are missing; the artefact is incomplete")
        out_dim = g("scale").shape[-3]
        in_dim = g("smooth").shape[-1]
        weight = QArray(
            qvalue=g("qvalue"), scale=g("scale"), zero_point=g("zero_point"), bits=qc["wbits"],
            symmetric=qc["w_symmetric"], group_size=qc["group_size"], shape=(out_dim, in_dim),
            bound=qc.get("bound", "qmax"),
        )
        params["layers"][name] = QLinear(weight, g("smooth"), g("lora_l"), g("lora_r"), g("bias"),
                                         abits=qc["abits"], act_bound=qc.get("bound", "qmax"))
        if g("qvalue").shape[0] != n_layers:
            raise MasqError(f"{path}: layers.{name} holds {g('qvalue').shape[0]} layers, config says {n_layers}")
    hf["quantization_config"] = qc
    return QuantizedModel(config=cfg, params=params, quantization_config=qc)


def decoder_config_json(cfg) -> dict:
    """The DecoderConfig fields (without ``hf_config``), stored so the artefact reloads exactly."""
    import dataclasses

    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "hf_config"}


def _decoder_config(qc: dict, hf: dict):
    from masq_jax.models.config import DecoderConfig

    fields = dict(qc["decoder_config"])
    if fields.get("mrope_section") is not None:
        fields["mrope_section"] = tuple(fields["mrope_section"])
    return DecoderConfig(**fields, hf_config=hf)


def is_artifact(path: str | os.PathLike) -> bool:
    p = Path(path) / "config.json"
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text()).get("quantization_config", {}).get("quant_method") == FORMAT
    except (OSError, ValueError):
        return False


def as_numpy(tree):
    return jax.tree_util.tree_map(np.asarray, tree)
