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
