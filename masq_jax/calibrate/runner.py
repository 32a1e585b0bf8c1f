"""``run_quantize``: the one place with I/O — model and data in, artefact and report out.

Order of work (docs/method.md §2-§6): prepare the calibration set, then per decoder layer the
full-precision pass with statistics, the method's vectors (learned when it trains), its compensation,
quantized propagation; then the artefact, the held-out evaluation and ``report.json``. Two
propagation strategies share resume, checkpoints and the per-layer report (``RunContext``):

* ``sequential`` (the reference): layer i trains on the output of the already-quantized layers < i;
* ``independent`` (learning methods only): every layer trains from full-precision inputs, training
  and compensation vmapped over chunks of layers — faster, but blind to earlier layers' error.

Everything is written into ``OUT.partial`` (an orbax checkpoint after every layer, so ``--resume``
continues an interrupted run bit for bit) and renamed to ``OUT`` only when complete.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from masq_jax import artifact, parallel
from masq_jax.artifact.support import copy_support_files
from masq_jax.calibrate.batch import PreparedData, prepare
from masq_jax.calibrate.fold_check import fold_check, fold_set, fold_warnings
from masq_jax.calibrate.layer import (LayerResult, calibrate_layer, fp_layer_pass, propagate, state_template)
from masq_jax.calibrate.loss_weights import resolve_loss_weights
from masq_jax.calibrate.preflight import check_settings
from masq_jax.calibrate.rundir import RunDir, fingerprint, write_json_atomic
from masq_jax.errors import CheckpointError, MasqWarning
from masq_jax.eval.sqnr import compare
from masq_jax.methods import registry
from masq_jax.methods.base import Method
from masq_jax.models import StreamedLayers, decoder, layer_params
from masq_jax.resources import StageTimer
from masq_jax.settings import QuantSettings

LayerCallback = Callable[[int, dict], None]
INDEPENDENT_CHUNK = 4  # layers trained together (vmapped) by the independent strategy


@dataclasses.dataclass
class RunContext:
    """What both strategies share: the run's inputs, its directory, timers and per-layer reports."""

    method: Method
    cfg: Any
    st: QuantSettings
    params: dict
    data: PreparedData
    modality_weights: jax.Array
    run: RunDir
    timer: StageTimer
    progress: bool
    on_layer: LayerCallback | None
    rows: dict[int, dict] = dataclasses.field(default_factory=dict)

    def layer_params(self, i: int) -> dict:
        return layer_params(self.params, i)

    def layers(self, start: int, stop: int) -> dict:
        if isinstance(self.params["layers"], StreamedLayers):
            return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *(self.layer_params(i) for i in range(start, stop)))
        return jax.tree_util.tree_map(lambda a: a[start:stop], self.params["layers"])

    def key(self, i: int) -> jax.Array:
        return jax.random.fold_in(jax.random.PRNGKey(self.st.seed), i)

    def restore(self, i: int) -> LayerResult:
        template = state_template(self.cfg, self.st, self.method)
        return LayerResult.from_state(self.run.load_layer(i, template), self.method.trains(self.st))

    def finish_layer(self, i: int, result: LayerResult, seconds: float, *, save: bool) -> None:
        """Checkpoint a newly calibrated layer, record its report row, call ``on_layer``."""
        if save:
            with self.timer("checkpoint"):
                self.run.save_layer(i, result.to_state(self.st))
        self.rows[i] = {"index": i, **result.report(), "seconds": round(seconds, 3)}
        if result.cmc is not None:
            self.rows[i]["cmc"] = self.method.compensation_report(result.cmc)
        if self.on_layer is not None:
            self.on_layer(i, self.rows[i])

    def progress_bar(self, iterable, unit: str):
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=f"{self.st.method} W{self.st.wbits}A{self.st.abits}", unit=unit,
                    disable=not self.progress, dynamic_ncols=True)


def sequential(ctx: RunContext) -> list[LayerResult]:
    """Layer by layer; the next layer trains on the quantized layers' output (docs/method.md §4).
    As in the reference, propagation runs the method's training linears (the MAS model; CMC is
    fitted on top, not trained through)."""
    cfg, st, method = ctx.cfg, ctx.st, ctx.method
    done = ctx.run.finished_layers()
    if done and done != list(range(len(done))):
        raise CheckpointError(f"checkpoints in {ctx.run.partial} are not a prefix of the layers ({done}); delete it")
    h_fp = h_q = ctx.data.h0
    results = []
    bar = ctx.progress_bar(range(cfg.num_layers), "layer")
    for i in bar:
        t0 = time.perf_counter()
        lp = ctx.layer_params(i)
        with ctx.timer("fp_pass"):
            fp = jax.block_until_ready(fp_layer_pass(cfg, lp, h_fp, ctx.data, with_gram=method.gram_statistics(st)))
        if i in done:
            result = ctx.restore(i)
        else:
            result = calibrate_layer(method, cfg, st, lp, fp, h_q, ctx.data, ctx.modality_weights, ctx.key(i),
                                     ctx.timer)
        results.append(result)
        if result.losses:
            bar.set_postfix(loss=f"{result.losses[-1]:.4g}")
        if method.trains(st) and i + 1 < cfg.num_layers:
            with ctx.timer("propagate"):
                h_q = jax.block_until_ready(propagate(cfg, method, st, lp, result.factors, h_q, ctx.data))
        h_fp = fp.outputs
        ctx.finish_layer(i, result, time.perf_counter() - t0, save=i not in done)
    bar.close()
    return results


def independent(ctx: RunContext, layer_chunk: int = INDEPENDENT_CHUNK) -> list[LayerResult]:
    """All layers from full-precision inputs; learning and compensation vmapped over chunks of
    ``layer_chunk`` layers."""
    cfg, st, method = ctx.cfg, ctx.st, ctx.method
    batch = ctx.data.layout.replicate(ctx.data.batch)  # batch-1 training indexes any sample
    n_layers = cfg.num_layers
    done = set(ctx.run.finished_layers())
    inputs, targets, stats, inits = [], [], [], []
    h = ctx.data.h0
    with ctx.timer("fp_pass"):
        for i in range(n_layers):
            lp = ctx.layer_params(i)
            fp = fp_layer_pass(cfg, lp, h, ctx.data, with_gram=method.gram_statistics(st))
            inputs.append(h)
            targets.append(fp.outputs)
            stats.append(fp.stats)
            inits.append(method.init_factors(cfg, lp, fp.stats, fp.sample, st, ctx.modality_weights)[0])
            h = fp.outputs
    learn = jax.vmap(lambda lp, f, x, y, k: method.learn(cfg, st, lp, f, x, y, batch, ctx.modality_weights, k))
    stack = lambda xs: jax.tree_util.tree_map(lambda *a: jnp.stack(a), *xs)  # noqa: E731
    results: list[LayerResult | None] = [None] * n_layers
    bar = ctx.progress_bar(range(0, n_layers, layer_chunk), "chunk")
    for start in bar:
        t0 = time.perf_counter()
        idx = list(range(start, min(start + layer_chunk, n_layers)))
        if all(i in done for i in idx):
            for i in idx:
                results[i] = ctx.restore(i)
                ctx.finish_layer(i, results[i], 0.0, save=False)
            continue
        lps = ctx.layers(start, start + len(idx))
        with ctx.timer("train"):
            xs, ys = ctx.data.layout.replicate((stack([inputs[i] for i in idx]), stack([targets[i] for i in idx])))
            f_chunk, losses = jax.block_until_ready(learn(
                lps, stack([inits[i] for i in idx]), xs, ys, jnp.stack([ctx.key(i) for i in idx])))
        pick = lambda tree, j: jax.tree_util.tree_map(lambda a: a[j], tree)  # noqa: E731
        compensated = {}
        if method.compensates:
            with ctx.timer("cmc"):
                for j, i in enumerate(idx):
                    if i not in done:
                        compensated[i] = jax.block_until_ready(
                            method.compensate_layer(cfg, pick(lps, j), pick(f_chunk, j), stats[i], st))
        seconds = (time.perf_counter() - t0) / len(idx)
        for j, i in enumerate(idx):
            trained = pick(f_chunk, j)
            factors, lora, info = compensated.get(i, (trained, {}, None))
            results[i] = ctx.restore(i) if i in done else LayerResult(
                factors, lora, [float(x) for x in losses[j]], {}, info, trained if i in compensated else None)
            ctx.finish_layer(i, results[i], seconds, save=i not in done)
        bar.set_postfix(loss=f"{float(losses[:, -1].mean()):.4g}")
    bar.close()
    return results


def run_quantize(model, calibset, out: str, st: QuantSettings, *, eval_set=None, seq_len: int | None = None,
                 resume: bool = False, overwrite: bool = False, progress: bool = True, dtype=jnp.float32,
                 source_name: str | None = None, calib_record: dict | None = None,
                 timer: StageTimer | None = None, on_layer: LayerCallback | None = None,
                 mesh=None, stream: bool = False, offload: str | None = None,
                 warned: Sequence[str] = ()) -> dict[str, Any]:
    """Calibrate, write the artefact into ``out`` and return the report (see module docstring).

    ``model``: a checkpoint path (HF directory or .gguf) or an in-memory ``(DecoderConfig, params)``.
    ``timer``: a ``StageTimer`` that already holds earlier stages (``masq_jax.quantize`` times the
    model and data loading in it). ``on_layer(index, row)`` is called after every layer is
    checkpointed (progress, notebooks); an exception raised from it interrupts the run and leaves
    ``OUT.partial`` for ``resume=True``. ``mesh``: ``"data=D,model=M"``, a ``parallel.MeshSpec`` or a
    ``jax.sharding.Mesh`` with axes (data, model): samples along data, the linears along model
    (``masq_jax.parallel``); the mesh is not part of the run's fingerprint, so a run may resume on another.
    ``stream`` (with a checkpoint path; in-memory params stream when their ``"layers"`` is a
    ``models.StreamedLayers``): decoder layers are read from disk when calibrated, exported and
    evaluated, and not kept (host memory: a few layers plus the stored artefact, not the model).
    ``offload`` ("host" / "disk"): the calibration activations live in host memory or temporary
    files and go to the devices a chunk at a time (``parallel.SampleLayout``). ``warned``: lines the
    caller has already shown the user (``masq_jax.quantize``'s calibration-data warnings), recorded
    first in ``report["warnings"]``. A run that stops before its first layer checkpoint removes
    ``OUT.partial``; a resumed one says where it resumes and records it (``resumed_from_layer``).
    """
    from masq_jax.loading import load_checkpoint

    method = registry.get(st.method)
    timer = timer or StageTimer()
    in_memory = isinstance(model, tuple)
    model_path = source_name or ("<in-memory>" if in_memory else str(model))
    report: dict[str, Any] = {"settings": st.to_json(), "model": model_path, "warnings": list(warned)}
    mesh = parallel.make_mesh(mesh)
    with timer("load_model"):
        cfg, params = model if in_memory else load_checkpoint(str(model), dtype, stream=stream)
        params = parallel.shard_params(params, mesh)
        if isinstance(params["layers"], StreamedLayers):
            params["layers"].placement = lambda lp: parallel.shard_params(lp, mesh)
    with timer("prepare_calibration"):
        data = prepare(cfg, params, calibset, seq_len, mesh, offload=offload)
        data_eval = prepare(cfg, params, eval_set, seq_len, mesh, offload=offload) if eval_set is not None else None
    report["calibration"] = {"samples": data.samples, "seq_len": int(data.h0.shape[1]),
                             "token_counts": data.token_counts,
                             "eval_samples": 0 if data_eval is None else data_eval.samples}
    report["mesh"] = {**parallel.mesh_record(mesh), "padded_samples": data.layout.padded - data.samples,
                      "offload_activations": offload,
                      "replicated_linears": parallel.rules.replicated_linears(params, mesh),
                      "device_bytes": {"params": parallel.device_bytes(params),
                                       "calibration": parallel.device_bytes((data.h0, data.batch))}}
    lacking = method.warnings(cfg, data.token_counts, st)
    for w in lacking:
        warnings.warn(w, MasqWarning, stacklevel=2)
    report["warnings"] += lacking
    check_settings(cfg, st)
    run = RunDir(out, fingerprint(st, cfg, params, calibset.fingerprint()), resume, overwrite)
    done = len(run.finished_layers()) if run.resumed else 0
    report["resumed_from_layer"] = done if run.resumed else None
    if run.resumed and parallel.is_writer():
        print(f"masq: resuming {run.partial}: {done} of {cfg.num_layers} layers done, continuing at layer "
              f"{done + 1} of {cfg.num_layers}", file=sys.stderr, flush=True)
    try:
        with timer("loss_weights"):
            weights, report["loss_weights"] = resolve_loss_weights(st, cfg, params, data)
        ctx = RunContext(method, cfg, st, params, data, weights, run, timer, progress, on_layer)
        strategy = independent if st.propagation == "independent" and method.trains(st) else sequential
        results = strategy(ctx)
    except BaseException:
        run.discard_if_empty()  # nothing checkpointed: nothing to resume, nothing to block the next run
        raise
    with timer("export"):
        qparams = artifact.build_quantized_params(method, params, [r.factors for r in results],
                                                  [r.lora for r in results], st)
        source = source_name or (model_path if in_memory else str(Path(model_path).absolute()))
        qconfig = artifact.format.quantization_config(method, st, cfg, {
            "source_model": source, "decoder_config": artifact.format.decoder_config_json(cfg),
            "calibration": calib_record})
        artifact.write_artifact(run.partial, cfg.hf_config, qparams, qconfig, st.store_dtype)
        del qparams  # on disk now; the evaluation reads it back
        if parallel.is_writer():  # tokenizer, chat template, processor: generation without the source
            report["support_files"] = copy_support_files(source, run.partial)
    report["layers"] = [ctx.rows[i] for i in range(cfg.num_layers)]
    guard = method.compensation_warnings([r.cmc for r in results])
    fold = fold_set(calibset) if method.compensates and method.gram_statistics(st) == "validation" else None
    if fold is not None:
        with timer("fold_check"):
            report["validation_fold"] = fold_check(cfg, params, method, st, results,
                                                   prepare(cfg, params, fold, seq_len, mesh, offload=offload))
        guard += fold_warnings(method.name, report["validation_fold"])
    for w in guard:
        warnings.warn(w, MasqWarning, stacklevel=2)
    report["warnings"] += guard
    with timer("evaluate"):
        report["evaluated_on"] = "held-out" if data_eval is not None else "calibration"
        qmodel = artifact.read_artifact(run.partial, mesh=mesh)
        report["mesh"]["device_bytes"]["quantized_params"] = parallel.device_bytes(qmodel.params)
        report.update(compare(cfg, params, qmodel, data if data_eval is None else data_eval))
    report["stages"] = timer.as_dict()
    if parallel.is_writer():
        report["artifact_bytes"] = artifact.info.artifact_bytes(run.partial)
    write_json_atomic(run.partial / "report.json", report)
    run.finish(overwrite)
    return report
