"""An artefact's metadata, read in one place: ``config.json``'s ``quantization_config`` as typed
fields (what the loader, the artefact model family and ``masq eval`` ask of an artefact)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from masq_jax.errors import ArtifactError

FORMAT = "masq-jax"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ArtifactInfo:
    """The ``quantization_config`` block of a masq-jax artefact, with typed accessors."""

    quantization_config: dict[str, Any]

    @property
    def method(self) -> str | None:
        return self.quantization_config.get("method")

    @property
    def source_model(self) -> str | None:
        """The full-precision model the artefact was calibrated from (its front end and reference)."""
        return self.quantization_config.get("source_model") or None

    @property
    def per_modality_weights(self) -> bool:
        """One stored weight per modality (the ``mas`` upper bound) instead of one weight plus branches."""
        return bool(self.quantization_config.get("per_modality_weights"))

    @property
    def tied_embeddings(self) -> bool:
        """The output head is the embedding matrix, stored once (``embed``) and re-tied on load."""
        return bool(self.quantization_config.get("tied_embeddings"))

    @property
    def tied_smoothing(self) -> bool:
        """Calibrated with ``--tie-smoothing``: q/k/v and gate/up share their smoothing vectors."""
        return bool((self.quantization_config.get("settings") or {}).get("tie_smoothing"))

    @property
    def calibration(self) -> dict | None:
        """How the calibration data was drawn (source, samples, eval_samples, seed, seq_len)."""
        return self.quantization_config.get("calibration")

    def wants_merge(self, merge: bool | None) -> bool:
        """The runtime layout: q/k/v and gate/up as merged GEMMs? ``merge`` if given (checked against
        the artefact), else when calibrated with tied smoothing and storing shared weights."""
        if merge not in (None, True, False):
            raise ArtifactError(f"merge must be None, True or False, got {merge!r}")
        if merge and self.per_modality_weights:
            raise ArtifactError("an artefact with per-modality weights cannot run merged GEMMs; load it with merge=False")
        return bool(merge) or (merge is None and self.tied_smoothing and not self.per_modality_weights)


def read_config(path: str | os.PathLike) -> dict | None:
    """An artefact directory's config.json (with its ``quantization_config``), or None when
    ``path`` is not a readable masq-jax artefact."""
    p = Path(path) / "config.json"
    if not p.is_file():
        return None
    try:
        cfg = json.loads(p.read_text())
        ok = cfg.get("quantization_config", {}).get("quant_method") == FORMAT
    except (OSError, ValueError, AttributeError):
        return None
    return cfg if ok else None


def is_artifact(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory whose config.json says it is a masq-jax artefact."""
    return read_config(path) is not None


def read_info(path: str | os.PathLike) -> ArtifactInfo:
    """The metadata of the artefact at ``path`` (``ArtifactError`` when it is not one)."""
    cfg = read_config(path)
    if cfg is None:
        raise ArtifactError(f"{path} is not a masq-jax artefact directory (made by masq quantize)")
    return ArtifactInfo(cfg["quantization_config"])


WEIGHT_FIELDS = ("qvalue", "scale", "zero_point")  # a quantized linear's stored weight
BRANCH_FIELDS = ("smooth", "lora_l", "lora_r")  # its smoothing vectors and low-rank branches
MODEL_FILE = "model.safetensors"
NOT_SUPPORT = (MODEL_FILE, "config.json", "report.json", "run.json")  # the rest (tokenizer, processor) travels with it


def safetensors_header(path: str | os.PathLike) -> dict[str, dict]:
    """The tensor entries (dtype, shape, data_offsets) of a safetensors file, read from its header only."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header


def artifact_bytes(path: str | os.PathLike) -> dict[str, Any]:
    """Where an artefact's bytes go, from its safetensors header (nothing loaded): the quantized
    weights (split by modality when it stores one weight per modality), smoothing vectors and
    low-rank branches, the embedding (and a separate head), the other unquantized tensors (norms,
    biases), the files generation needs (tokenizer, processor), and the totals."""
    path = Path(path)
    qc = (read_config(path) or {}).get("quantization_config", {})
    per_modality = bool(qc.get("per_modality_weights"))
    modalities = qc.get("modalities") or ["text", "vision", "audio"]
    out: dict[str, Any] = {"weights": 0, "branches": 0, "embeddings": 0, "lm_head": 0, "other": 0,
                           "tied_embeddings": bool(qc.get("tied_embeddings")), "store_dtype": qc.get("store_dtype"),
                           "per_modality_weights": per_modality}
    embed_dtype = None
    for key, entry in safetensors_header(path / MODEL_FILE).items():
        size = entry["data_offsets"][1] - entry["data_offsets"][0]
        field = key.rsplit(".", 1)[-1]
        if key.startswith("layers.") and key.count(".") == 2 and field in WEIGHT_FIELDS:
            out["weights"] += size
        elif key.startswith("layers.") and key.count(".") == 2 and field in BRANCH_FIELDS:
            out["branches"] += size
        elif key == "embed":
            out["embeddings"] += size
            embed_dtype = entry["dtype"]
        elif key == "lm_head":
            out["lm_head"] += size
        else:
            out["other"] += size
    if per_modality:  # [L, M, ...]: the modalities' weights are equal in size
        out["weights_per_modality"] = {m: out["weights"] // len(modalities) for m in modalities}
    out["embed_dtype"] = {"BF16": "bf16", "F32": "float32", "F16": "float16"}.get(embed_dtype, embed_dtype)
    out["model_file"] = (path / MODEL_FILE).stat().st_size
    out["support_files"] = sum(p.stat().st_size for p in path.iterdir() if p.is_file() and p.name not in NOT_SUPPORT)
    out["total"] = out["model_file"] + out["support_files"] + (path / "config.json").stat().st_size
    return out


def megabytes(n: int) -> str:
    """``n`` bytes as "12.3 MB" (10^6 bytes)."""
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def describe_bytes(b: dict[str, Any]) -> str:
    """One line of ``artifact_bytes``: "12.3 MB: weights text 3.1 MB, vision 3.1 MB, audio 3.1 MB
    (per-modality); embeddings 5.0 MB (tied, bf16); ..."."""
    if b.get("weights_per_modality"):
        weights = ", ".join(f"{m} {megabytes(v)}" for m, v in b["weights_per_modality"].items()) + " (per-modality)"
    else:
        weights = megabytes(b["weights"])
    emb = f"embeddings {megabytes(b['embeddings'])} ({'tied' if b['tied_embeddings'] else 'untied'}, {b['embed_dtype']})"
    parts = [f"weights {weights}", emb]
    if b["lm_head"]:
        parts.append(f"lm_head {megabytes(b['lm_head'])}")
    if b["branches"]:
        parts.append(f"smoothing/branches {megabytes(b['branches'])}")
    parts.append(f"norms/biases {megabytes(b['other'])}")
    if b["support_files"]:
        parts.append(f"tokenizer/processor files {megabytes(b['support_files'])}")
    return f"{megabytes(b['total'])}: " + "; ".join(parts)
