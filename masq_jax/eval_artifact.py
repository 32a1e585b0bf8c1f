"""``masq eval``: load an artefact and its full-precision reference, measure SQNR and perplexity."""

from __future__ import annotations

from pathlib import Path

from masq_jax import artifact, evaluate
from masq_jax.errors import MasqError


def evaluate_artifact(model: str, *, reference: str | None = None, calib: str | None = None, samples: int = 8,
                      seq_len: int | None = None, seed: int = 1234, plot_dir: str | None = None) -> dict:
    """SQNR table + perplexity of artefact ``model`` against ``reference``.

    Without ``calib`` the data is the artefact's own held-out split (same source, seed and split as at
    calibration, so synthetic streams keep their channel layout); with it, ``samples`` samples drawn
    from ``calib`` with ``seed``.
    """
    from masq_jax.api import load_calibration, load_model, resolve_model
    from masq_jax.pipeline import prepare

    if not Path(model).is_dir() or not artifact.is_artifact(model):
        raise MasqError(f"--model {model} is not a masq-jax artefact directory (made by masq quantize)")
    qmodel = artifact.read_artifact(model)
    ref_path = resolve_model(reference or qmodel.quantization_config.get("source_model"))
    cfg, params = load_model(ref_path)
    if cfg.num_layers != qmodel.config.num_layers or cfg.hidden_size != qmodel.config.hidden_size:
        raise MasqError(f"--reference {ref_path} ({cfg.num_layers} layers, hidden {cfg.hidden_size}) does not "
                        f"match the artefact ({qmodel.config.num_layers} layers, hidden {qmodel.config.hidden_size})")
    rec = qmodel.quantization_config.get("calibration")
    if calib is None and rec and rec.get("eval_samples"):
        seq_len = rec.get("seq_len") if seq_len is None else seq_len
        _, data_set = load_calibration(rec["source"], ref_path, cfg, rec["samples"], rec["eval_samples"],
                                       rec["seed"], seq_len)
        res_source = f"held-out split of {rec['source']} (seed {rec['seed']})"
    else:
        data_set, _ = load_calibration(calib or "text", ref_path, cfg, samples, 0, seed, seq_len)
        res_source = f"{calib or 'text'} (seed {seed}, {samples} samples)"
    if data_set is None:
        raise MasqError(f"{model} was calibrated without held-out samples; pass --calib SOURCE to evaluate")
    data = prepare(cfg, params, data_set, seq_len)
    res = evaluate.evaluate(cfg, params, qmodel, data)
    res["reference"] = ref_path
    res["data"] = res_source
    res["artefact"] = str(model)
    res["settings"] = qmodel.quantization_config.get("settings")
    if plot_dir:
        from masq_jax.plots import plot_sqnr_per_layer

        res["plots"] = [plot_sqnr_per_layer(res["sqnr"], Path(plot_dir) / "sqnr_per_layer.png",
                                            title=f"{Path(model).name}: SQNR per layer")]
    return res
