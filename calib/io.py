"""One-file CalibSet storage (.npz, the bring-your-own layout of README "Quantize") with validation and
atomic writes, at the level of samples: ``CalibSet.save`` / ``CalibSet.load`` (``calibset``) build on it.

Layout: ``inputs_embeds [N, S, H]`` (float16/32/64) or ``input_ids [N, S]`` (integer),
``position_ids [3, N, S]`` or ``[N, S]`` (integer), ``modality_ids [N, S]`` (0 text, 1 vision,
2 audio) and optionally ``attention_mask [N, S]`` (1 = real token; absent = all real). Optional
``meta_json``: a JSON string with provenance. Masked tokens are dropped on load (positions are
explicit, so left, right or gapped padding all give the same decoder outputs for real tokens).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .sample import CalibSample
from .errors import CalibFormatError, NonFiniteError

if TYPE_CHECKING:
    from .calibset import CalibSet

KNOWN_KEYS = ("input_ids", "inputs_embeds", "position_ids", "modality_ids", "attention_mask", "meta_json")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp"):
    """Yield a temporary path next to ``path``; on success ``os.replace`` it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_npz_atomic(path: str | os.PathLike, arrays: dict[str, np.ndarray], compress: bool = False) -> None:
    """``np.savez`` into a temp file in the same directory, fsync, then ``os.replace``."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            (np.savez_compressed if compress else np.savez)(f, **arrays)
            f.flush()
            os.fsync(f.fileno())


def save_npz(calibset: "CalibSet", path: str | os.PathLike, *, compress: bool = False) -> None:
    """Save ``calibset`` in the bring-your-own layout (right padding + attention_mask) atomically."""
    arrays = calibset.to_arrays()
    arrays["meta_json"] = np.array(json.dumps(calibset.meta, sort_keys=True, default=str))
    write_npz_atomic(path, arrays, compress=compress)


def _err(path, msg: str) -> CalibFormatError:
    return CalibFormatError(f"{path}: {msg}")


def arrays_to_samples(arrays: dict[str, Any], where: str = "arrays") -> list[CalibSample]:
    """Validate bring-your-own-layout arrays (already in memory) and cut them into samples."""
    unknown = sorted(set(arrays) - set(KNOWN_KEYS))
    if unknown:
        warnings.warn(f"{where}: ignoring unknown keys {unknown}; known keys are {list(KNOWN_KEYS)}", stacklevel=2)
    has_ids, has_emb = "input_ids" in arrays, "inputs_embeds" in arrays
    if has_ids == has_emb:
        raise _err(where, "needs exactly one of 'input_ids' [N, S] or 'inputs_embeds' [N, S, H]"
                   + (" (found both)" if has_ids else " (found neither)"))
    for k in ("modality_ids", "position_ids"):
        if k not in arrays:
            raise _err(where, f"missing required key '{k}'")
    mod = np.asarray(arrays["modality_ids"])
    if mod.ndim != 2 or mod.shape[0] == 0 or mod.shape[1] == 0:
        raise _err(where, f"modality_ids must have shape [N, S] with N, S >= 1, got {mod.shape}")
    if mod.dtype.kind not in "iu":
        raise _err(where, f"modality_ids must be integer, got dtype {mod.dtype}")
    n, s = mod.shape
    bad = np.argwhere((mod < 0) | (mod > 2))
    if len(bad):
        i, t = bad[0]
        raise _err(where, f"modality_ids of sample {i} token {t} is {int(mod[i, t])}; allowed: 0 text, 1 vision, 2 audio")
    pos = np.asarray(arrays["position_ids"])
    if pos.dtype.kind not in "iu":
        raise _err(where, f"position_ids must be integer, got dtype {pos.dtype}")
    if pos.shape not in ((3, n, s), (n, s)):
        raise _err(where, f"position_ids must have shape [3, {n}, {s}] or [{n}, {s}] to match modality_ids, got {pos.shape}")
    if has_ids:
        data = np.asarray(arrays["input_ids"])
        if data.dtype.kind not in "iu":
            raise _err(where, f"input_ids must be integer, got dtype {data.dtype}")
        if data.shape != (n, s):
            raise _err(where, f"input_ids must have shape [{n}, {s}] to match modality_ids, got {data.shape}")
    else:
        data = np.asarray(arrays["inputs_embeds"])
        if data.dtype.kind != "f":
            raise _err(where, f"inputs_embeds must be float16/32/64, got dtype {data.dtype}")
        if data.ndim != 3 or data.shape[:2] != (n, s) or data.shape[2] == 0:
            raise _err(where, f"inputs_embeds must have shape [{n}, {s}, H] to match modality_ids, got {data.shape}")
    if "attention_mask" in arrays:
        mask = np.asarray(arrays["attention_mask"])
        if mask.shape != (n, s):
            raise _err(where, f"attention_mask must have shape [{n}, {s}], got {mask.shape}")
        if mask.dtype.kind not in "biu" or not np.isin(mask, (0, 1)).all():
            raise _err(where, f"attention_mask must hold only 0/1 (or bool), got dtype {mask.dtype}")
        mask = mask.astype(bool)
        empty = np.flatnonzero(~mask.any(axis=1))
        if len(empty):
            raise _err(where, f"sample {int(empty[0])} has no real token (attention_mask all 0)")
    else:
        mask = np.ones((n, s), dtype=bool)
    if has_ids and (data[mask] < 0).any():
        i = int(np.argwhere((data < 0) & mask)[0][0])
        raise _err(where, f"input_ids of sample {i} has a negative token id")
    samples = []
    for i in range(n):
        keep = mask[i]
        p = pos[:, i][:, keep] if pos.ndim == 3 else pos[i][keep]
        if has_ids:
            smp = CalibSample(modality_ids=mod[i][keep].astype(np.int32), position_ids=p.astype(np.int32),
                              input_ids=data[i][keep].astype(np.int32))
        else:
            e = data[i][keep]
            if not np.isfinite(e).all():
                raise NonFiniteError(f"{where}: inputs_embeds of sample {i} contains NaN or Inf; fix or drop this sample")
            if e.dtype == np.float64:
                e = e.astype(np.float32)
            smp = CalibSample(modality_ids=mod[i][keep].astype(np.int32), position_ids=p.astype(np.int32),
                              inputs_embeds=np.ascontiguousarray(e))
        samples.append(smp)
    return samples


def read_npz(path: str | os.PathLike) -> tuple[list[CalibSample], dict[str, Any]]:
    """The validated samples and provenance of a CalibSet ``.npz``; every problem is one
    ``CalibFormatError`` line."""
    path = Path(path)
    if not path.is_file():
        raise CalibFormatError(f"{path}: no such calibration file")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, io.UnsupportedOperation) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CalibFormatError(f"{path}: not a readable .npz file ({msg}); re-create it with CalibSet.save") from None
    meta: dict[str, Any] = {}
    if "meta_json" in arrays:
        try:
            meta = json.loads(str(arrays.pop("meta_json")))
        except json.JSONDecodeError:
            raise CalibFormatError(f"{path}: meta_json is not valid JSON") from None
    return arrays_to_samples(arrays, where=str(path)), meta
