"""The quantized artefact on disk: build the stacked QLinears, write them, read them back.

Directory layout (``--out``; README "The artefact"):
  config.json          the original HF config plus ``quantization_config``
  model.safetensors    unquantized params in ``store_dtype`` (bf16 by default): ``embed``,
                       ``final_norm``, ``lm_head`` unless it is the embedding itself (then stored
                       once and re-tied on load), ``layers.input_norm``, ``layers.post_attn_norm``;
                       per linear ``layers.<name>.{qvalue,scale,zero_point,smooth,lora_l,lora_r,bias}``
                       stacked over layers (``[L, ...]``; ``[L, 3, ...]`` for per-modality weights;
                       ``bias`` in ``store_dtype``, the rest as the method exports them)
  tokenizer*, ...      what generation needs from the source (``artifact.support``)
  report.json          settings, per-stage time and peak memory, per-layer loss and SQNR, ``artifact_bytes``
  checkpoints/         orbax checkpoints of the calibration state (one step per finished layer)

What a linear stores is the method's ``export_linear``; this module only lays it out.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.flax import load_file
from safetensors.numpy import save_file

from masq_jax.core.qlinear import QLinear
from masq_jax.core.quant import SPEC_BOUND, QArray
from masq_jax.artifact.info import FORMAT, FORMAT_VERSION, ArtifactInfo, is_artifact  # noqa: F401
from masq_jax.errors import ArtifactError
from masq_jax.methods.base import Method
from masq_jax.modality import BASE, NAMES
from masq_jax.models import LINEAR_NAMES, layer_params
from masq_jax.models.config import DecoderConfig, config_from_hf
from masq_jax.settings import QuantSettings

QLINEAR_FIELDS = ("qvalue", "scale", "zero_point", "smooth", "lora_l", "lora_r", "bias")


def build_quantized_params(method: Method, params: dict, factors: list[dict], loras: list[dict],
                           st: QuantSettings) -> dict:
    """Replace the seven linears of every layer by stacked QLinears (other params untouched). Layer
    by layer (``models.layer_params``): each exported layer goes to host memory, into arrays stacked
    over layers, and its device copies and (streamed) FP weights are released before the next."""
    from masq_jax import parallel

    stacked = None
    n = len(factors)
    for i in range(n):
        lp = layer_params(params, i)
        out = export_layer(method, lp, factors[i], loras[i] if loras else None, st)
        host = jax.tree_util.tree_map(parallel.to_host, out)
        if stacked is None:
            stacked = jax.tree_util.tree_map(lambda a: np.empty((n,) + a.shape, a.dtype), host)
        jax.tree_util.tree_map(lambda dst, src: dst.__setitem__(i, src), stacked, host)
        del lp, out, host
    return {**params, "layers": stacked}


def export_layer(method: Method, lp: dict, factors: dict, lora: dict | None, st: QuantSettings) -> dict:
    """One decoder layer's params with its seven linears replaced by the method's stored QLinears."""
    out = {name: v for name, v in lp.items() if name not in LINEAR_NAMES}
    for name in LINEAR_NAMES:
        out[name] = method.export_linear(lp[name], factors[name], lora.get(name) if lora else None, st)
    return out


def quantization_config(method: Method, st: QuantSettings, cfg: DecoderConfig, extra: dict | None = None) -> dict:
    """The ``quantization_config`` block written into config.json (``ranks``: the method's storage
    rank per linear, 0 without compensation)."""
    return {
        "quant_method": FORMAT,
        "format_version": FORMAT_VERSION,
        "method": st.method,
        "wbits": st.wbits,
        "abits": st.abits,
        "group_size": st.group_size,
        "w_symmetric": st.w_symmetric,
        "bound": st.bound,
        "modalities": list(NAMES),
        "base_modality": NAMES[BASE],
        "per_modality_weights": method.per_modality_weights,
        "ranks": method.ranks(cfg, st),
        "quantized_linears": list(LINEAR_NAMES),
        "settings": st.to_json(),
        **(extra or {}),
    }


def tied_head(params: dict, tie_word_embeddings: bool) -> bool:
    """Whether the output head is the embedding matrix (stored once): the config ties them, or the
    checkpoint carries an ``lm_head`` bit-identical to ``embed``."""
    head = params.get("lm_head")
    if tie_word_embeddings or head is None:
        return True
    embed = params["embed"]
    return head.shape == embed.shape and head.dtype == embed.dtype and bool(np.array_equal(head, embed))


def _flatten(params: dict) -> dict[str, jax.Array]:
    flat = {key: value for key, value in params.items() if key != "layers"}
    for key, value in params["layers"].items():
        if isinstance(value, QLinear):
            fields = {"qvalue": value.weight.qvalue, "scale": value.weight.scale,
                      "zero_point": value.weight.zero_point, "smooth": value.smooth, "lora_l": value.lora_l,
                      "lora_r": value.lora_r, "bias": value.bias}
            flat.update({f"layers.{key}.{f}": v for f, v in fields.items() if v is not None})
        else:
            flat[f"layers.{key}"] = value
    return flat


def store_cast(flat: dict[str, np.ndarray], store_dtype: str | None) -> dict[str, np.ndarray]:
    """The unquantized float tensors (embeddings, head, norms, biases) cast to ``store_dtype``; integer
    codes, scales, zero points, smoothing vectors and low-rank factors keep their dtypes."""
    if store_dtype is None:
        return flat
    dt = np.dtype(jnp.dtype(store_dtype))
    keep = tuple(f".{f}" for f in QLINEAR_FIELDS if f != "bias")
    return {k: v.astype(dt) if np.issubdtype(v.dtype, np.floating) and not k.endswith(keep) else v
            for k, v in flat.items()}


def write_artifact(tmp_dir: Path, hf_config: dict, params: dict, qconfig: dict, store_dtype: str | None = None) -> None:
    """Write config.json and model.safetensors into ``tmp_dir`` (the caller renames it into place).
    Sharded arrays are gathered whole first; in a multi-process run only process 0 writes.
    ``store_dtype`` ("bfloat16" / "float32"; None: as they are): the unquantized tensors' dtype on disk."""
    from masq_jax import parallel

    host = {k: parallel.to_host(v) for k, v in _flatten(params).items()}  # every process takes part
    tied = tied_head(host, bool(hf_config.get("tie_word_embeddings")))
    flat = store_cast({k: v for k, v in host.items() if not (tied and k == "lm_head")}, store_dtype)
    del host
    if parallel.is_writer():
        tmp_dir.mkdir(parents=True, exist_ok=True)
        cfg = dict(hf_config)
        if tied:  # the head is the embedding: one copy on disk, ``read_artifact`` re-ties it
            cfg["tie_word_embeddings"] = True
            qconfig = {**qconfig, "tied_embeddings": True}
            if "decoder_config" in qconfig:
                qconfig["decoder_config"] = {**qconfig["decoder_config"], "tie_word_embeddings": True}
        if store_dtype is not None:
            qconfig = {**qconfig, "store_dtype": store_dtype}
        cfg["quantization_config"] = qconfig
        (tmp_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
        save_file(flat, str(tmp_dir / "model.safetensors"), metadata={"format": FORMAT})
    parallel.sync("masq-artifact-written")


def read_artifact(path: str | os.PathLike, dtype=None, implementation: str | None = "xla", mesh=None,
                  merge: bool | None = None):
    """Load an artefact directory into a ``QuantizedModel``; ``dtype`` casts the unquantized tensors
    (embeddings, norms, head, biases; the integer weights, scales and factors keep theirs), default
    float32, the dtype it was calibrated in, whatever the dtype it is stored in (``store_dtype``). ``mesh`` places
    the params by calibration's rules (``masq_jax.parallel.rules``): integer weights, scales and
    low-rank factors split along ``model``. ``merge``: q/k/v and gate/up as merged GEMMs
    (``artifact.qmodel.merge_tied``); None = when calibrated with ``--tie-smoothing``."""
    from masq_jax.artifact.qmodel import QuantizedModel, merge_tied

    path = Path(path)
    try:
        hf = json.loads((path / "config.json").read_text())
        flat = load_file(str(path / "model.safetensors"))
    except FileNotFoundError as e:
        raise ArtifactError(f"{path} is not a complete masq-jax artefact ({e.filename} missing)") from None
    except Exception as e:  # corrupt file
        raise ArtifactError(f"{path}: the artefact cannot be read ({type(e).__name__}: {e}); re-run masq quantize") from None
    qc = hf.pop("quantization_config", None) or {}
    if qc.get("quant_method") != FORMAT:
        raise ArtifactError(f"{path}: quantization_config.quant_method is {qc.get('quant_method')!r}, not {FORMAT!r}")
    cfg = _decoder_config(qc, hf) if "decoder_config" in qc else config_from_hf(hf)
    if "lm_head" not in flat and not cfg.tie_word_embeddings:  # re-tie: the head is the embedding
        cfg = dataclasses.replace(cfg, tie_word_embeddings=True)
    cast = lambda v: v.astype(jnp.float32 if dtype is None else dtype)  # noqa: E731
    params: dict = {"layers": {}}
    for key, value in flat.items():
        if not key.startswith("layers."):
            params[key] = cast(value)
        elif key.count(".") == 1:
            params["layers"][key.split(".")[1]] = cast(value)
    bound = qc.get("bound", SPEC_BOUND)
    for name in LINEAR_NAMES:
        g = {f: flat.get(f"layers.{name}.{f}") for f in QLINEAR_FIELDS}
        if g["qvalue"] is None:
            raise ArtifactError(f"{path}: tensors of layers.{name} are missing; the artefact is incomplete")
        if g["qvalue"].shape[0] != cfg.num_layers:
            raise ArtifactError(f"{path}: layers.{name} holds {g['qvalue'].shape[0]} layers, config says {cfg.num_layers}")
        weight = QArray(qvalue=g["qvalue"], scale=g["scale"], zero_point=g["zero_point"], bits=qc["wbits"],
                        symmetric=qc["w_symmetric"], group_size=qc["group_size"],
                        shape=(g["scale"].shape[-3], g["smooth"].shape[-1]), bound=bound)
        bias = None if g["bias"] is None else g["bias"].astype(jnp.float32)  # stored in store_dtype
        params["layers"][name] = QLinear(weight, g["smooth"], g["lora_l"], g["lora_r"], bias, abits=qc["abits"],
                                         act_bound=bound)
    hf["quantization_config"] = qc  # cfg.hf_config is the artefact's whole config.json
    if ArtifactInfo(qc).wants_merge(merge):
        params["layers"] = merge_tied(params["layers"])
    if mesh is not None:
        from masq_jax import parallel

        params = parallel.shard_params(params, parallel.make_mesh(mesh))
    return QuantizedModel(cfg, params, qc, implementation=implementation)


def decoder_config_json(cfg: DecoderConfig) -> dict:
    """The DecoderConfig fields (without ``hf_config``), stored so the artefact reloads exactly."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "hf_config"}


def _decoder_config(qc: dict, hf: dict) -> DecoderConfig:
    fields = dict(qc["decoder_config"])
    if fields.get("mrope_section") is not None:
        fields["mrope_section"] = tuple(fields["mrope_section"])
    return DecoderConfig(**fields, hf_config=hf)
