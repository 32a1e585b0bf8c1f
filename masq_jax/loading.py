"""Where models and calibration data come from: a model spec -> a full-precision checkpoint or a
quantized artefact; a calibration source -> calibration and held-out sets.

A spec is whatever a model family recognises (``masq_jax.families.registry``): an HF model
directory, a ``.gguf`` file, a masq-jax artefact directory, ``smollm2`` (or nothing: the embedded
SmolLM2-135M GGUF), an omni-SmolLM2 or tiny omni checkpoint directory, or ``toy:NAME`` (a random
decoder). This module only dispatches to the family; ``masq_jax.models`` loads full-precision
checkpoints and knows nothing of the quantizer.
"""

from __future__ import annotations

import os
from typing import Any

import jax.numpy as jnp

from masq_jax.families import find
from masq_jax.families.hf import embedded_model  # noqa: F401  (re-exported)
from masq_jax.families.toy import PREFIX as TOY_PREFIX  # noqa: F401  (re-exported)


def resolve_model(model: str | os.PathLike | None) -> str:
    """The spec checked and made canonical by its family (``None``/``smollm2``: the embedded GGUF's path)."""
    return find(model)[1]


def source_of(model: str | os.PathLike | None) -> str:
    """What an artefact calibrated from ``model`` records as its ``source_model`` (an absolute path;
    ``toy:NAME`` as is)."""
    family, spec = find(model)
    return family.source(spec)


def load_checkpoint(model_path: str, dtype: Any = jnp.float32, stream: bool = False):
    """``(DecoderConfig, params)`` of a full-precision spec (``toy:NAME``: seed 0, in memory);
    ``stream`` leaves a checkpoint's decoder layers on disk (``models.StreamedLayers``)."""
    family, spec = find(model_path)
    return family.load(spec, dtype, stream)


def reference_of(model: str | os.PathLike) -> str | None:
    """The spec whose front end and full-precision weights stand for ``model`` (an artefact's source
    model), or None when it is its own."""
    family, spec = find(model)
    return family.reference(spec)


def load(model: str | os.PathLike | None, dtype: Any = None, *, implementation: str | None = "xla", mesh=None,
         merge: bool | None = None):
    """A callable model — ``model(input_ids=..., inputs_embeds=..., position_ids=...,
    attention_mask=..., modality_ids=...) -> logits`` — for any spec: a ``QuantizedModel`` for a
    masq-jax artefact directory (``implementation`` picks its ``kernels.qmatmul``), else a
    full-precision ``masq_jax.models.Model``. ``dtype`` casts the unquantized tensors (default
    float32, also for an artefact whose unquantized tensors are stored in bf16). ``mesh`` (``"data=D,model=M"`` or a
    ``jax.sharding.Mesh``) places the params as calibration does: the linears split along ``model``;
    ``generate`` and ``__call__`` then run on the mesh. ``merge`` (artefacts only): q/k/v and gate/up
    as merged GEMMs; None = when the artefact was calibrated with ``--tie-smoothing``."""
    family, spec = find(model)
    return family.load_model(spec, dtype, implementation=implementation, mesh=mesh, merge=merge)


def load_calibration(source: str, model_path: str, cfg, samples: int, eval_samples: int, seed: int,
                     seq_len: int | None, notes: list[str] | None = None):
    """``(calibration set, held-out set or None)`` from a source string (``masq_jax.calib.load_calib``):
    ``samples + eval_samples`` samples drawn with ``seed``, the held-out ones split off by sample.

    ``notes`` (a list) receives one line for each thing the data changes silently: a modality that
    ``seq_len`` cuts away entirely, fewer samples than asked, no held-out split (evaluation on the
    calibration samples)."""
    from masq_jax.calib import load_calib

    text = source == "text" or str(source).startswith("text:")  # there seq_len is the window, not a cut
    cut = None if text else seq_len
    cs = load_calib(source, model_dir=model_path, config=cfg, samples=samples + eval_samples,
                    seq_len=seq_len if cut is None else None, seed=seed)
    if cut is not None:
        full = cs
        cs = cs.truncate(cut)
        if notes is not None:
            notes += cut_modalities(full, cs.token_counts(), cut)
    train, held = cs, None
    if eval_samples and len(cs) > eval_samples:
        train, held = cs.split(int(eval_samples), seed=seed)
    if notes is not None:
        if eval_samples and held is None:
            notes.append(f"evaluation: the calibration source gives {len(cs)} sample(s), too few to hold out "
                         f"--eval-samples {eval_samples}; the report is measured on the calibration samples "
                         "(give a larger source, or --eval-samples 0 to ask for that)")
        if len(train) < samples:
            notes.append(f"calibration: {len(train)} sample(s), fewer than --samples {samples} (the source gives "
                         f"{len(cs)}{f', {eval_samples} held out' if held is not None else ''})")
    return train, held


def cut_modalities(full, kept: dict[str, int], seq_len: int) -> list[str]:
    """One line per modality that ``full`` has but truncation to ``seq_len`` left without tokens
    (``kept``: the token counts after it), naming the ``--seq-len`` that keeps its first token."""
    import numpy as np

    lines = []
    for m, (name, n) in enumerate(full.token_counts().items()):
        if n and not kept[name]:
            first = min(int(np.argmax(s.modality_ids == m)) for s in full if (s.modality_ids == m).any())
            lines.append(f"{name}: --seq-len {seq_len} cuts all {n} {name} tokens of the calibration samples (they "
                         f"start at position {first} at the earliest); pass a --seq-len above {first} to keep them")
    return lines


def model_config(model: str | os.PathLike | None):
    """The ``DecoderConfig`` of a spec from its headers alone (config.json, GGUF metadata; no weights),
    or None when the family only knows it once loaded: what options are checked against before work."""
    family, spec = find(model)
    return family.config(spec)
