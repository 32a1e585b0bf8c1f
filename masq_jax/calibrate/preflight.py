"""Checks before work: the output path, the settings against the model's widths (read from its
headers, ``loading.model_config``) and the weight group size, each failing with one line that says
what to do, so that a bad option costs seconds rather than a model load and a calibration."""

from __future__ import annotations

import math
import os
from pathlib import Path

from masq_jax.errors import CoreInputError, OutputDirError, SettingsError
from masq_jax.models import decoder
from masq_jax.settings import QuantSettings


def partial_of(out: str | os.PathLike) -> Path:
    """``OUT.partial``: where a run writes until its artefact is complete."""
    out = Path(out).absolute()
    return out.with_name(out.name + ".partial")


def check_out(out: str | os.PathLike, resume: bool, overwrite: bool) -> None:
    """``OutputDirError`` unless ``out`` can receive an artefact: not a file; an existing non-empty
    directory only with ``overwrite``; an interrupted run in ``OUT.partial`` only with ``resume``
    (continue it) or ``overwrite`` (start again); its parent creatable and writable."""
    out = Path(out).absolute()
    partial = partial_of(out)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--out {out} is a file, not a directory; choose another path or delete the file "
                             "(--overwrite replaces directories only)")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputDirError(f"--out {out} already exists; choose another directory or pass --overwrite")
    if partial.exists() and not partial.is_dir():
        raise OutputDirError(f"{partial} is a file; delete it or choose another --out")
    if partial.exists() and not (resume or overwrite):
        raise OutputDirError(f"{partial} holds an interrupted run; pass --resume to continue it or --overwrite to "
                             "start again")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputDirError(f"--out {out}: cannot create it ({parent} is a file); choose a writable directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputDirError(f"--out {out}: cannot create it ({parent} is not writable); choose a writable directory")


def check_group_size(cfg, st: QuantSettings) -> None:
    """Fail before calibrating when the weight group size does not divide every linear's input."""
    if st.group_size is None:
        return
    dims = sorted(set(decoder.input_dims(cfg).values()))
    bad = [d for d in dims if d % st.group_size]
    if bad:
        common = math.gcd(*dims)
        divisors = [g for g in (256, 128, 64, 32, 16) if common % g == 0]
        raise SettingsError(f"--group-size {st.group_size} does not divide the linear input widths {bad} of this "
                            f"model; use one of {divisors or [common]} (or 0 for per-channel)")


def check_settings(cfg, st: QuantSettings) -> None:
    """The settings against the model's layer widths: the group size, and the method's compensation
    ranks (``--rank``, ``--rank-budget``) against every linear's min(in, out)."""
    from masq_jax.methods import registry

    check_group_size(cfg, st)
    try:
        registry.get(st.method).ranks(cfg, st)
    except CoreInputError as e:
        rank = dict(st.options).get("rank")
        rank = f"{rank:g}" if isinstance(rank, (int, float)) else rank
        raise SettingsError(f"--rank {rank} does not fit this model: {e}") from None
