"""One calibration sample: ``make_sample`` validates and normalises its arrays into a ``CalibSample``.

A sample holds ``input_ids [S]`` *or* ``inputs_embeds [S, H]``, ``position_ids [3, S]`` or ``[S]``
and ``modality_ids [S]`` (0 text, 1 vision, 2 audio), unpadded.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .errors import CalibFormatError, NonFiniteError

_FLOAT_KINDS = ("f",)
_EMBED_DTYPES = (np.float16, np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class CalibSample:
    """One calibration sample, unpadded. Exactly one of ``input_ids`` / ``inputs_embeds`` is set."""

    modality_ids: np.ndarray  # [S] int32 in {0, 1, 2}
    position_ids: np.ndarray  # [3, S] or [S] int32
    input_ids: np.ndarray | None = None  # [S] int32
    inputs_embeds: np.ndarray | None = None  # [S, H] float32 (or float16)

    @property
    def length(self) -> int:
        return int(self.modality_ids.shape[0])


def _as_int32(a: Any, name: str, where: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int32)
    if arr.dtype.kind not in ("i", "u"):
        raise CalibFormatError(f"{where}: {name} must be integer, got dtype {arr.dtype}")
    if arr.size and (arr.max() > np.iinfo(np.int32).max or arr.min() < np.iinfo(np.int32).min):
        raise CalibFormatError(f"{where}: {name} has values outside the int32 range")
    return arr.astype(np.int32, copy=False)


def _as_embeds(a: Any, where: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in _FLOAT_KINDS and arr.dtype.name != "bfloat16":
        raise CalibFormatError(f"{where}: inputs_embeds must be floating point, got dtype {arr.dtype}")
    if arr.dtype not in _EMBED_DTYPES:  # float64, bfloat16 -> float32 (npz has no bfloat16)
        arr = arr.astype(np.float32)
    return arr


def make_sample(
    modality_ids: Any,
    position_ids: Any,
    input_ids: Any = None,
    inputs_embeds: Any = None,
    *,
    index: int | None = None,
) -> CalibSample:
    """Validate and normalise one sample's arrays (dtypes to int32/float32, shapes consistent)."""
    where = f"sample {index}" if index is not None else "sample"
    if (input_ids is None) == (inputs_embeds is None):
        raise CalibFormatError(f"{where}: give exactly one of input_ids or inputs_embeds")
    mod = _as_int32(modality_ids, "modality_ids", where)
    if mod.ndim != 1 or mod.shape[0] == 0:
        raise CalibFormatError(f"{where}: modality_ids must have shape [S] with S >= 1, got {mod.shape}")
    s = mod.shape[0]
    bad = (mod < 0) | (mod > 2)
    if bad.any():
        raise CalibFormatError(
            f"{where}: modality_ids must be 0 (text), 1 (vision) or 2 (audio), found {int(mod[bad][0])}"
        )
    pos = _as_int32(position_ids, "position_ids", where)
    if not (pos.shape == (s,) or pos.shape == (3, s)):
        raise CalibFormatError(f"{where}: position_ids must have shape [{s}] or [3, {s}], got {pos.shape}")
    ids = emb = None
    if input_ids is not None:
        ids = _as_int32(input_ids, "input_ids", where)
        if ids.shape != (s,):
            raise CalibFormatError(f"{where}: input_ids must have shape [{s}], got {ids.shape}")
        if s and ids.min() < 0:
            raise CalibFormatError(f"{where}: input_ids has a negative token id ({int(ids.min())})")
    else:
        emb = _as_embeds(inputs_embeds, where)
        if emb.ndim != 2 or emb.shape[0] != s or emb.shape[1] == 0:
            raise CalibFormatError(f"{where}: inputs_embeds must have shape [{s}, H], got {emb.shape}")
        if not np.isfinite(emb).all():
            raise NonFiniteError(f"{where}: inputs_embeds contains NaN or Inf; fix or drop this sample")
    return CalibSample(modality_ids=mod, position_ids=pos, input_ids=ids, inputs_embeds=emb)
