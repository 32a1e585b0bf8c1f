"""Python entry points with the same options as the CLI: ``quantize`` (``quantize_many``: several
presets and methods, the model loaded once), ``evaluate``, ``evaluate_tasks``,
``generate_text`` and ``export``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from masq_jax.loading import load_calibration, load_checkpoint, model_config, source_of
from masq_jax.resources import StageTimer
from masq_jax.settings import DEFAULT_CALIB, DEFAULT_EVAL_SAMPLES, DEFAULT_EVAL_SEED, make_settings


def quantize(model: str | None = None, out: str = "runs/quantized", *, method: str | None = None,
             preset: str | None = None, calib: str = DEFAULT_CALIB, samples: int | None = None,
             eval_samples: int = DEFAULT_EVAL_SAMPLES, seq_len: int | None = None, resume: bool = False,
             overwrite: bool = False, progress: bool = True, mesh: Any = None, stream: bool = False,
             offload_activations: str | None = None, **options: Any) -> dict:
    """Quantize ``model`` with ``method`` and write the artefact to ``out``; returns the report dict.

    ``options`` are the remaining QuantSettings fields (wbits, abits, group_size, w_symmetric,
    loss_weights, epochs, seed, alpha, propagation, train_matmul, bound, tie_smoothing) and the methods'
    own options (``Method.options``: e.g. ``lr`` for mas, ``rank``, ``rank_floor``, ``cov_shrinkage``,
    ``rank_budget``, ``cmc_solver``, ``cmc_deploy`` for masquant); ``None`` or absent means the default. ``calib`` is a
    calibration source: ``text``, ``text:PATH``, ``synthetic[:...]``, a ``.jsonl`` manifest or a
    ``.npz`` CalibSet; ``eval_samples`` more samples are drawn from it and held out for the report.
    ``mesh``: ``"data=D,model=M"`` or a ``jax.sharding.Mesh`` (``masq_jax.parallel``); in a cluster
    environment (coordinator address, SLURM, Open MPI, TPU slice) ``jax.distributed`` starts first.
    ``stream``: read each decoder layer from the checkpoint when it is needed instead of loading the
    model (host memory bounded by a few layers plus the artefact; toy models are always in memory).
    ``offload_activations``: ``"host"`` or ``"disk"`` keeps the calibration activations off the devices.
    """
    return quantize_many(model, out, methods=[method], presets=[preset], calib=calib, samples=samples,
                         eval_samples=eval_samples, seq_len=seq_len, resume=resume, overwrite=overwrite,
                         progress=progress, mesh=mesh, stream=stream, offload_activations=offload_activations,
                         **options)[(preset, method)]


def quantize_many(model: str | None = None, out: str = "runs/quantized", *, methods: Sequence[str | None] = (None,),
                  presets: Sequence[str | None] = (None,), calib: str = DEFAULT_CALIB, samples: int | None = None,
                  eval_samples: int = DEFAULT_EVAL_SAMPLES, seq_len: int | None = None, resume: bool = False,
                  overwrite: bool = False, progress: bool = True, mesh: Any = None, stream: bool = False,
                  offload_activations: str | None = None, on_report: Callable[[str | None, str | None, str, dict],
                                                                              None] | None = None,
                  **options: Any) -> dict[tuple[str | None, str | None], dict]:
    """``quantize`` for every preset × method, with the model and the calibration data loaded once:
    ``{(preset, method): report}``. With one of each the artefact is ``out``; otherwise
    ``out/<method>`` (one preset) or ``out/<preset>/<method>``. Every run's settings and output path
    are checked (from the model's config headers) before anything loads. ``on_report(preset, method,
    out, report)`` is called as each run finishes (the CLI prints its summary there)."""
    import warnings

    from masq_jax import parallel
    from masq_jax.calibrate.preflight import check_out, check_settings
    from masq_jax.calibrate.runner import run_quantize
    from masq_jax.errors import MasqWarning

    parallel.initialize_distributed()
    mesh = parallel.make_mesh(mesh)  # a bad --mesh fails before anything loads
    runs = [(p, m, make_settings(method=m, preset_name=p, samples=samples, **options)) for p in presets for m in methods]
    check_eval_samples(eval_samples)
    model_path = source_of(model)  # an absolute path (toy:NAME as is): what the artefact records
    dests = [out if len(runs) == 1 else str(Path(out) / m) if len(presets) == 1 else str(Path(out) / p / m)
             for p, m, _ in runs]
    for dest in dests:  # every run's output checked before the first one starts
        check_out(dest, resume, overwrite)
    cfg = model_config(model_path)  # from the headers: the checks and the data need no weights
    for _, _, st in runs if cfg is not None else ():
        check_settings(cfg, st)
    shared = StageTimer()  # loading, once for every run; each report states what it cost
    params = None
    if cfg is None:  # a family that knows its config once loaded
        with shared("load_model"):
            cfg, params = load_checkpoint(model_path, stream=stream)
    data: dict[tuple[int, int], tuple] = {}
    for _, _, st in runs:
        key = (st.samples, st.seed)
        if key not in data:
            notes: list[str] = []
            with shared("load_calibration"):
                data[key] = (*load_calibration(calib, model_path, cfg, st.samples, eval_samples, st.seed, seq_len,
                                               notes), notes)
            for line in notes:  # before the weights load: the user can stop and fix the command
                warnings.warn(line, MasqWarning, stacklevel=2)
    if params is None:
        with shared("load_model"):
            cfg, params = load_checkpoint(model_path, stream=stream)
    results = {}
    for (p, m, st), dest in zip(runs, dests):
        timer = StageTimer()
        timer.stages = {k: dict(v) for k, v in shared.stages.items()}
        train, held, notes = data[st.samples, st.seed]
        record = {"source": calib, "samples": st.samples, "eval_samples": eval_samples, "seed": st.seed,
                  "seq_len": seq_len}
        results[p, m] = run_quantize((cfg, params), train, dest, st, source_name=model_path, calib_record=record,
                                     eval_set=held, seq_len=seq_len, resume=resume, overwrite=overwrite,
                                     progress=progress, timer=timer, mesh=mesh, offload=offload_activations,
                                     warned=list(notes))
        if on_report is not None:
            on_report(p, m, dest, results[p, m])
    return results


def check_eval_samples(eval_samples: int) -> None:
    """``SettingsError`` unless ``eval_samples`` is a whole number >= 0."""
    from masq_jax.errors import SettingsError

    if isinstance(eval_samples, bool) or not isinstance(eval_samples, int) or eval_samples < 0:
        raise SettingsError(f"--eval-samples must be a whole number >= 0, got {eval_samples!r}")


def evaluate(model: str, *, reference: str | None = None, calib: str | None = None,
             samples: int = DEFAULT_EVAL_SAMPLES, seq_len: int | None = None, seed: int = DEFAULT_EVAL_SEED,
             plot_dir: str | None = None, with_calibration: bool = False) -> dict:
    """SQNR per layer × modality and perplexity of artefact ``model`` against ``reference`` (default:
    the artefact's source); see ``masq_jax.calibrate.evaluate.evaluate_artifact``."""
    from masq_jax.calibrate.evaluate import evaluate_artifact

    return evaluate_artifact(model, reference=reference, calib=calib, samples=samples, seq_len=seq_len, seed=seed,
                             plot_dir=plot_dir, with_calibration=with_calibration)


def generate_text(model: str, prompt: str, *, images: Sequence[str] = (), audios: Sequence[str] = (),
                  videos: Sequence[str] = (), max_new_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
                  seed: int = 0, stream: Callable[[str], None] | None = None, mesh: Any = None) -> str:
    """The answer of ``model`` (a checkpoint, .gguf or artefact) to a prompt with media files: the
    checkpoint's own processor and chat template build the inputs, its tokenizer decodes the tokens.
    ``stream(text)`` receives each new piece of text as it is generated (``masq generate``); ``mesh``
    splits the weights along its ``model`` axis (``masq_jax.load``)."""
    from masq_jax.eval.tasks import batch_prompts
    from masq_jax.frontend import frontend_for
    from masq_jax.loading import load
    from masq_jax.models.generate import generate

    frontend = frontend_for(model)
    m = load(model, mesh=mesh)
    arrays = batch_prompts([frontend.encode(prompt, images, audios, videos)])
    on_tokens = None
    if stream is not None:
        seen: list[int] = []
        shown = [""]

        def on_tokens(step, tokens):
            seen.append(int(tokens[0]))
            text = frontend.decode(seen)
            if len(text) > len(shown[0]) and not text.endswith("\ufffd"):  # whole characters only
                stream(text[len(shown[0]):])
                shown[0] = text

    out = generate(m, **arrays, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                   eos_token_id=frontend.eos_ids or None, stream=on_tokens)
    return frontend.decode(out[0])


def evaluate_tasks(models: Sequence[str], tasks: str, *, reference: str | None = None, max_new_tokens: int = 32,
                   batch_size: int = 16) -> dict:
    """Task accuracy by generation of artefacts ``models`` beside their full-precision reference
    (default: the first artefact's source), on a tasks file (``masq_jax.eval.tasks``)."""
    from masq_jax.artifact.info import is_artifact
    from masq_jax.errors import MasqError
    from masq_jax.eval.tasks import evaluate_tasks as run
    from masq_jax.frontend import frontend_for
    from masq_jax.loading import load, reference_of

    if reference is None:
        if not models or not is_artifact(models[0]):
            raise MasqError("pass --reference FP (the full-precision model) or a masq-jax artefact as --model")
        reference = reference_of(models[0])
    loaded = {"fp": load(reference)}
    for path in models:
        loaded[Path(path).name or str(path)] = load(path)
    res = run(loaded, tasks, frontend_for(reference), max_new_tokens=max_new_tokens, batch_size=batch_size)
    res["reference"] = str(reference)
    res["models"] = {name: str(p) for name, p in zip(list(loaded)[1:], models)}
    return res


def export(model: str, out: str, *, format: str = "compressed-tensors", text_only: bool = False) -> dict:
    """Write artefact ``model`` as a checkpoint directory ``out`` that serving engines load (``masq
    export``; ``masq_jax.serving.checkpoint.export``); returns what was written and, for ``text_only``
    exports of a modality-routed artefact, the measured cost."""
    from masq_jax.serving.checkpoint import export as run

    return run(model, out, format=format, text_only=text_only)
