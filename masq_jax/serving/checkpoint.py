"""``masq export``: a masq-jax artefact -> an HF-layout compressed-tensors checkpoint directory.

What goes out is one weight and one smoothing vector per linear (the text path), folded into the
model (``fold``) and stored under compressed-tensors' names (``ct_format``): what vLLM and
tpu-inference run. What cannot go out: per-token modality routing (per-modality vectors or weights)
and the CMC low-rank branches. Such artefacts export only with ``text_only=True``, which also
measures what that costs (``cost``). The directory appears whole or not at all (temporary
directory beside it, then a rename).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import jax
import numpy as np

from masq_jax.errors import OutputDirError
from masq_jax.serving import ct_format
from masq_jax.serving.fold import ExportError, fold_plan
from masq_jax.serving.source import SourceLayout, copy_source_files, source_layout
from masq_jax.modality import TEXT

FORMATS = ("compressed-tensors",)


@dataclasses.dataclass
class TextPath:
    """One linear over all layers, as the text path stores it: integer grid ``q`` ``[L, out, in]``,
    ``scale`` / ``zero_point`` ``[L, out, G]``, ``smooth`` ``[L, in]``, ``bias`` ``[L, out]``."""

    q: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray | None
    smooth: np.ndarray
    bias: np.ndarray | None


def _np(a) -> np.ndarray:
    return np.asarray(jax.device_get(a))


def text_paths(qmodel) -> dict[str, TextPath]:
    """The text path of every linear of a loaded artefact (``read_artifact(..., merge=False)``)."""
    from masq_jax.core.quant import int_values
    from masq_jax.models import LINEAR_NAMES

    out = {}
    for name in LINEAR_NAMES:
        ql = qmodel.params["layers"][name]
        if qmodel.per_modality:
            ql = jax.tree_util.tree_map(lambda a: a[:, TEXT], ql)
        w = ql.weight
        out[name] = TextPath(q=_np(int_values(w)).astype(np.int32), scale=_np(w.scale)[..., 0],
                             zero_point=None if w.zero_point is None else _np(w.zero_point)[..., 0],
                             smooth=_np(ql.smooth)[:, TEXT], bias=None if ql.bias is None else _np(ql.bias))
    return out


def routed_parts(qmodel) -> list[str]:
    """What of the artefact a serving engine cannot run: per-modality weights, vectors that differ
    between modalities, low-rank branches (empty when the text path is the whole model)."""
    from masq_jax.models import LINEAR_NAMES

    parts = []
    if qmodel.per_modality:
        parts.append("one weight per modality")
    layers = qmodel.params["layers"]
    smooth = {n: _np(layers[n].smooth) for n in LINEAR_NAMES}
    if any(not (s == s[..., :1, :]).all() for s in smooth.values()):
        parts.append("per-modality smoothing vectors")
    if any(layers[n].lora_l.shape[-1] and np.any(_np(layers[n].lora_r)) for n in LINEAR_NAMES):
        parts.append("low-rank compensation branches")
    return parts


def _linear_tensors(layout: SourceLayout, paths: dict[str, TextPath], cfg, scheme: str,
                    dtype) -> tuple[dict, dict]:
    """The seven linears of every layer, folded (v/up rows), under compressed-tensors' names; and the
    divisors of each RMSNorm weight ``{checkpoint name: [H]}``."""
    tensors: dict[str, np.ndarray] = {}
    norms: dict[str, np.ndarray] = {}
    for i in range(cfg.num_layers):
        plan = fold_plan({n: p.smooth[i] for n, p in paths.items()}, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                         layer=i)
        rows = {"v_proj": plan.v_rows, "up_proj": plan.up_rows}
        for name, p in paths.items():
            r = rows.get(name)
            scale = p.scale[i].astype(np.float64)
            bias = None if p.bias is None else p.bias[i].astype(np.float64)
            if r is not None:
                scale = scale / r[:, None]
                bias = None if bias is None else bias / r
            zp = None if p.zero_point is None else p.zero_point[i]
            if zp is not None and (zp.min() < 0 or zp.max() > 15):
                raise ExportError(f"layer {i} {name}: a zero point outside 0..15 (a weight group of one sign); "
                                  "compressed-tensors stores int4 zero points, so it cannot be exported")
            tensors.update(ct_format.linear_tensors(layout.module(i, name), scheme, p.q[i], scale, zp, bias, dtype))
        for norm, div in (("input_norm", plan.input_norm), ("post_attn_norm", plan.post_attn_norm)):
            norms[layout.names[("layers", norm, None, i)]] = div
    return tensors, norms


def _float_tensors(layout: SourceLayout, qmodel, norm_div: dict, dtype) -> dict:
    """Embedding, final norm, head and the folded RMSNorm weights, in the checkpoint's dtype."""
    cfg, params = qmodel.config, qmodel.params
    out = {layout.names[("embed",)]: _np(params["embed"]).astype(dtype),
           layout.names[("final_norm",)]: _np(params["final_norm"]).astype(dtype)}
    if not cfg.tie_word_embeddings and "lm_head" in params:
        out[layout.names[("lm_head",)]] = _np(params["lm_head"]).astype(dtype)
    for norm in ("input_norm", "post_attn_norm"):
        gamma = _np(params["layers"][norm]).astype(np.float64)
        for i in range(cfg.num_layers):
            key = layout.names[("layers", norm, None, i)]
            out[key] = (gamma[i] / norm_div[key]).astype(dtype)
    return out


def _checkpoint_dtype(hf: dict, fallback: np.dtype) -> np.dtype:
    """The float dtype the source checkpoint declares (``dtype`` / ``torch_dtype``; what engines load it
    in), else the artefact's: embeddings, norms, head, biases and scales are written in it."""
    from masq_jax.models.params import np_dtype

    name = hf.get("dtype") or hf.get("torch_dtype") or (hf.get("text_config") or {}).get("dtype")
    if name in ("float32", "bfloat16", "float16"):
        return np_dtype(name)
    return fallback


def export(model: str | os.PathLike, out: str | os.PathLike, *, format: str = "compressed-tensors",
           text_only: bool = False) -> dict:
    """Write artefact ``model`` as an HF-layout checkpoint directory ``out`` (see module docstring).

    Returns a summary: ``{"out", "format", "scheme", "tensors", "copied_files", "routed", "cost"}``;
    ``cost`` (``text_only`` exports of a routed artefact) holds the held-out SQNR of the artefact and of
    its text-only model (``masq_jax.serving.cost``). Raises ``MasqError`` (one line) and writes nothing
    for an existing ``out``, an unsupported format or scheme, a routed artefact without ``text_only``,
    or smoothing that cannot be folded.
    """
    from masq_jax import artifact
    from masq_jax.artifact.info import ArtifactInfo

    out = Path(out)
    if format not in FORMATS:
        raise ExportError(f"--format {format!r}: supported is {', '.join(FORMATS)}")
    if out.exists():
        raise OutputDirError(f"--out {out} already exists; choose a new directory (export never overwrites)")
    if not Path(model).is_dir() or not artifact.is_artifact(model):
        raise ExportError(f"--model {model} is not a masq-jax artefact directory (made by masq quantize)")
    qmodel = artifact.read_artifact(model, merge=False)
    qc = qmodel.quantization_config
    info = ArtifactInfo(qc)
    scheme = ct_format.scheme_of(qc["wbits"], qc["abits"], qc["w_symmetric"], qc["group_size"])
    routed = routed_parts(qmodel)
    if routed and not text_only:
        raise ExportError(f"{model} ({info.method}) has {' and '.join(routed)}, which no serving engine runs "
                          "(tokens are not routed by modality); pass --text-only to export its text path (its "
                          "vision/audio cost is measured and printed)")
    hf = {k: v for k, v in qmodel.config.hf_config.items() if k != "quantization_config"}
    if "model_type" not in hf:
        raise ExportError(f"{model}: its config.json is not a complete HF config (an in-memory or toy model); export "
                          "needs an artefact quantized from a checkpoint")
    cfg = qmodel.config
    layout = source_layout(info.source_model, cfg.arch, cfg.num_layers, cfg.is_multimodal)
    paths = text_paths(qmodel)
    dtype = _checkpoint_dtype(hf, _np(qmodel.params["embed"]).dtype)
    tensors, norm_div = _linear_tensors(layout, paths, cfg, scheme, dtype)
    tensors.update(_float_tensors(layout, qmodel, norm_div, dtype))
    for key, load in layout.extra.items():
        tensors[key] = load()
    hf["quantization_config"] = ct_format.quantization_config(scheme, qc["w_symmetric"], qc["group_size"],
                                                              layout.ignore)
    hf["masq_jax_export"] = {"artefact": str(Path(model).absolute()), "method": info.method,
                             "text_only": bool(routed), "dropped": routed}
    cost = None
    if routed:
        from masq_jax.serving.cost import text_only_cost

        cost = text_only_cost(model, qmodel)
    summary = _write(out, hf, tensors, layout)
    summary.update(format=format, scheme=scheme, routed=routed, cost=cost,
                   compression=hf["quantization_config"]["format"])
    return summary


def _write(out: Path, hf: dict, tensors: dict, layout: SourceLayout) -> dict:
    from safetensors.numpy import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        (tmp / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True))
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        tok = copy_source_files(layout, tmp)
        if out.exists():
            raise OutputDirError(f"--out {out} appeared while exporting; nothing was written")
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out": str(out), "tensors": len(tensors), "copied_files": tok}
