"""Python entry points with the same options as the CLI: ``quantize`` and ``evaluate``."""

from __future__ import annotations

import os
from typing import Any

from masq_jax.loading import TOY_PREFIX, load_calibration, load_checkpoint, resolve_model
from masq_jax.resources import StageTimer
from masq_jax.settings import DEFAULT_CALIB, DEFAULT_EVAL_SAMPLES, DEFAULT_EVAL_SEED, make_settings


def quantize(model: str | None = None, out: str = "runs/quantized", *, method: str | None = None,
             preset: str | None = None, calib: str = DEFAULT_CALIB, samples: int | None = None,
             eval_samples: int = DEFAULT_EVAL_SAMPLES, seq_len: int | None = None, resume: bool = False,
             overwrite: bool = False, progress: bool = True, **options: Any) -> dict:
    """Quantize ``model`` with ``method`` and write the artefact to ``out``; returns the report dict.

    ``options`` are the remaining QuantSettings fields (wbits, abits, group_size, w_symmetric, rank,
    rank_floor, loss_weights, epochs, lr, seed, alpha, propagation, cov_damping, train_matmul,
    cmc_solver, bound); ``None`` or absent means the default in ``masq_jax.settings``. ``calib`` is a
    calibration source: ``text``, ``text:PATH``, ``synthetic[:...]``, a ``.jsonl`` manifest or a
    ``.npz`` CalibSet; ``eval_samples`` more samples are drawn from it and held out for the report.
    """
    from masq_jax.calibrate.runner import run_quantize

    st = make_settings(method=method, preset_name=preset, samples=samples, **options)
    model_path = resolve_model(model)
    if not model_path.startswith(TOY_PREFIX):
        model_path = os.path.abspath(model_path)
    timer = StageTimer()
    with timer("load_model"):  # once: its config also shapes the calibration data
        cfg, params = load_checkpoint(model_path)
    with timer("load_calibration"):
        train, held = load_calibration(calib, model_path, cfg, st.samples, eval_samples, st.seed, seq_len)
    record = {"source": calib, "samples": st.samples, "eval_samples": eval_samples, "seed": st.seed,
              "seq_len": seq_len}
    return run_quantize((cfg, params), train, out, st, source_name=model_path, calib_record=record, eval_set=held,
                        seq_len=seq_len, resume=resume, overwrite=overwrite, progress=progress, timer=timer)


def evaluate(model: str, *, reference: str | None = None, calib: str | None = None,
             samples: int = DEFAULT_EVAL_SAMPLES, seq_len: int | None = None, seed: int = DEFAULT_EVAL_SEED,
             plot_dir: str | None = None) -> dict:
    """SQNR per layer × modality and perplexity of artefact ``model`` against ``reference`` (default:
    the artefact's source); see ``masq_jax.eval.report.evaluate_artifact``."""
    from masq_jax.eval.report import evaluate_artifact

    return evaluate_artifact(model, reference=reference, calib=calib, samples=samples, seq_len=seq_len, seed=seed,
                             plot_dir=plot_dir)

