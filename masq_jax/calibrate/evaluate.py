"""``masq eval``: load an artefact and its full-precision reference, prepare the data as calibration
does (``batch.prepare``) and measure SQNR and perplexity (``eval.sqnr``), as the runner does after
calibrating."""

from __future__ import annotations

from pathlib import Path

from masq_jax import artifact
from masq_jax.errors import ArtifactError, MasqError
from masq_jax.settings import DEFAULT_CALIB, DEFAULT_EVAL_SAMPLES, DEFAULT_EVAL_SEED


def reference_and_data(model: str, qmodel, *, reference: str | None = None, calib: str | None = None,
                       samples: int = DEFAULT_EVAL_SAMPLES, seq_len: int | None = None, seed: int = DEFAULT_EVAL_SEED):
    """``(reference path, cfg, FP params, evaluation set, calibration set or None, description,
    seq_len)`` for artefact ``model`` (loaded as ``qmodel``): its full-precision reference (default
    its source) and, without ``calib``, its own held-out split (see ``evaluate_artifact``)."""
    from masq_jax.artifact.info import ArtifactInfo
    from masq_jax.loading import load_calibration, load_checkpoint, resolve_model

    info = ArtifactInfo(qmodel.quantization_config)
    ref_path = resolve_model(reference or info.source_model)
    cfg, params = load_checkpoint(ref_path)
    if cfg.num_layers != qmodel.config.num_layers or cfg.hidden_size != qmodel.config.hidden_size:
        raise MasqError(f"--reference {ref_path} ({cfg.num_layers} layers, hidden {cfg.hidden_size}) does not "
                        f"match the artefact ({qmodel.config.num_layers} layers, hidden {qmodel.config.hidden_size})")
    rec = info.calibration
    calib_set = None
    if calib is None and rec and rec.get("eval_samples"):
        seq_len = rec.get("seq_len") if seq_len is None else seq_len
        calib_set, data_set = load_calibration(rec["source"], ref_path, cfg, rec["samples"], rec["eval_samples"],
                                               rec["seed"], seq_len)
        source = f"held-out split of {rec['source']} (seed {rec['seed']})"
    else:
        data_set, _ = load_calibration(calib or DEFAULT_CALIB, ref_path, cfg, samples, 0, seed, seq_len)
        source = f"{calib or DEFAULT_CALIB} (seed {seed}, {samples} samples)"
    if data_set is None:
        raise MasqError(f"{model} was calibrated without held-out samples; pass --calib SOURCE to evaluate")
    return ref_path, cfg, params, data_set, calib_set, source, seq_len


def evaluate_artifact(model: str, *, reference: str | None = None, calib: str | None = None,
                      samples: int = DEFAULT_EVAL_SAMPLES, seq_len: int | None = None,
                      seed: int = DEFAULT_EVAL_SEED, plot_dir: str | None = None,
                      with_calibration: bool = False) -> dict:
    """SQNR table + perplexity of artefact ``model`` against ``reference``.

    Without ``calib`` the data is the artefact's own held-out split (same source, seed and split as at
    calibration, so synthetic streams keep their channel layout); with it, ``samples`` samples drawn
    from ``calib`` with ``seed``. ``with_calibration``: also the SQNR table on the artefact's own
    calibration samples (``res["calibration_sqnr"]``), so a fit that does not generalise shows.
    """
    from masq_jax.calibrate.batch import prepare
    from masq_jax.eval.sqnr import compare
    from masq_jax.loading import load_calibration

    if not Path(model).is_dir() or not artifact.is_artifact(model):
        raise ArtifactError(f"--model {model} is not a masq-jax artefact directory (made by masq quantize)")
    qmodel = artifact.read_artifact(model)
    qc = qmodel.quantization_config
    ref_path, cfg, params, data_set, calib_set, source, seq_len = reference_and_data(
        model, qmodel, reference=reference, calib=calib, samples=samples, seq_len=seq_len, seed=seed)
    from masq_jax.artifact.info import ArtifactInfo

    rec = ArtifactInfo(qc).calibration
    res = compare(cfg, params, qmodel, prepare(cfg, params, data_set, seq_len))
    if with_calibration:
        if calib is not None or not rec:
            raise MasqError("--with-calibration compares with the artefact's own held-out split; drop --calib")
        if calib_set is None:  # calibrated without a held-out split: the calibration samples alone
            calib_set, _ = load_calibration(rec["source"], ref_path, cfg, rec["samples"], 0, rec["seed"], seq_len)
        res["calibration_sqnr"] = compare(cfg, params, qmodel, prepare(cfg, params, calib_set, seq_len))["sqnr"]
    res.update(reference=ref_path, data=source, artefact=str(model), settings=qc.get("settings"))
    if plot_dir:
        from masq_jax.eval.plots import plot_sqnr_per_layer

        res["plots"] = [plot_sqnr_per_layer(res["sqnr"], Path(plot_dir) / "sqnr_per_layer.png",
                                            title=f"{Path(model).name}: SQNR per layer")]
    return res
