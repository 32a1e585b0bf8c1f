"""``masq_jax.quantize``: the one place with I/O — model and data in, artefact and report out.

Order of work (spec §2–§6): load the model and calibration set, then for each decoder layer the
full-precision pass with statistics, the method's smoothing vectors (learned for MAS), CMC for
``masquant``, quantized propagation; then the artefact, held-out evaluation and ``report.json``.
Everything is written into ``OUT.partial`` (orbax checkpoints after every layer, so ``--resume``
continues an interrupted run bit for bit) and renamed to ``OUT`` only when complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax import artifact, calibrate, evaluate
from masq_jax.errors import CheckpointError, MasqError, OutputDirError
from masq_jax.models import decoder
from masq_jax.resources import StageTimer
from masq_jax.settings import QuantSettings

MODALITY_NAMES = ("text", "vision", "audio")


# ------------------------------------------------------------------------------------------------
# Inputs.


@dataclasses.dataclass
class Prepared:
    """Padded device arrays of a calibration (or evaluation) set."""

    h0: jax.Array  # [N, S, H] decoder inputs (embeddings)
    cos: jax.Array
    sin: jax.Array
    position_ids: jax.Array
    valid: jax.Array  # [N, S] bool
    modality_ids: jax.Array  # [N, S] int32
    input_ids: jax.Array | None  # [N, S] for perplexity
    token_counts: dict[str, int]

    @property
    def active(self) -> tuple[int, ...]:
        """Modality ids with tokens (static, so text-only data pays one weight quantization)."""
        return tuple(m for m, n in enumerate(MODALITY_NAMES) if self.token_counts[n] > 0) or (0,)


def prepare(cfg, params, calibset, seq_len: int | None = None) -> Prepared:
    """Pad a CalibSet to one length and compute the decoder inputs and RoPE tables."""
    arrays = calibset.to_arrays(seq_len)
    dtype = params["embed"].dtype
    if "input_ids" in arrays:
        ids = jnp.asarray(arrays["input_ids"])
        if int(ids.max()) >= cfg.vocab_size or int(ids.min()) < 0:
            raise MasqError(f"calibration token ids fall outside the model's vocabulary (0..{cfg.vocab_size - 1});"
                            " the calibration set was tokenized for another model")
        h0 = decoder.embed(params, ids).astype(dtype)
    else:
        emb = arrays["inputs_embeds"]
        if emb.shape[-1] != cfg.hidden_size:
            raise MasqError(f"calibration inputs_embeds have width {emb.shape[-1]}, the model's hidden size is "
                            f"{cfg.hidden_size}; they were made for another model")
        ids = None
        h0 = jnp.asarray(emb, dtype=dtype)
    pos = jnp.asarray(arrays["position_ids"])
    if cfg.uses_mrope and pos.ndim == 2:
        pos = jnp.broadcast_to(pos[None], (3,) + pos.shape)
    if not cfg.uses_mrope and pos.ndim == 3:
        if not bool((pos == pos[0:1]).all()):
            raise MasqError("the calibration set has multimodal 3-D positions but the model uses 1-D RoPE")
        pos = pos[0]
    cos, sin = decoder.rope(cfg, pos)
    valid = jnp.asarray(arrays["attention_mask"]).astype(bool)
    mid = jnp.asarray(arrays["modality_ids"], jnp.int32)
    counts = {n: int(((mid == m) & valid).sum()) for m, n in enumerate(MODALITY_NAMES)}
    return Prepared(h0, cos, sin, pos, valid, mid, ids, counts)


# ------------------------------------------------------------------------------------------------
# Output directory and checkpoints.


def _fingerprint(st: QuantSettings, cfg, params, calib_fp: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(st.to_json(), sort_keys=True).encode())
    h.update(repr(cfg).encode())
    for leaf in jax.tree_util.tree_leaves(params):  # a cheap content probe of every tensor
        a = np.asarray(leaf).reshape(-1)
        h.update(a[:: max(1, a.size // 4096)].tobytes())
    h.update(calib_fp.encode())
    return h.hexdigest()


class RunDir:
    """``OUT.partial`` during a run (checkpoints + run.json), renamed to ``OUT`` at the end."""

    def __init__(self, out: str | os.PathLike, fingerprint: str, resume: bool, overwrite: bool):
        self.out = Path(out).absolute()
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.fingerprint = fingerprint
        if self.out.exists() and not overwrite:
            raise OutputDirError(f"--out {self.out} already exists; choose another directory or pass --overwrite")
        if self.partial.exists() and not resume:
            raise OutputDirError(f"{self.partial} holds an interrupted run; pass --resume to continue it or delete it")
        run_json = self.partial / "run.json"
        if self.partial.exists():
            try:
                saved = json.loads(run_json.read_text())["fingerprint"]
            except (OSError, ValueError, KeyError):
                raise CheckpointError(f"{run_json} is missing or corrupt; delete {self.partial} and start again") from None
            if saved != fingerprint:
                raise CheckpointError(
                    f"{self.partial} was made with a different model, calibration set or settings; "
                    "rerun with the same options, or delete it to start again"
                )
        else:
            self.partial.mkdir(parents=True)
            tmp = run_json.with_suffix(".tmp")
            tmp.write_text(json.dumps({"fingerprint": fingerprint}))
            os.replace(tmp, run_json)
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.manager = ocp.CheckpointManager(
            self.partial / "checkpoints",
            options=ocp.CheckpointManagerOptions(max_to_keep=None, create=True, enable_async_checkpointing=False),
        )

    def finished_layers(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save_layer(self, index: int, state: dict) -> None:
        self.manager.save(index, args=self._ocp.args.StandardSave(state))
        self.manager.wait_until_finished()

    def load_layer(self, index: int, template: dict) -> dict:
        try:
            return self.manager.restore(index, args=self._ocp.args.StandardRestore(template))
        except Exception as e:  # orbax raises many kinds on damaged files
            raise CheckpointError(
                f"checkpoint of layer {index} in {self.partial} cannot be read ({type(e).__name__}); "
                f"delete {self.partial} and start again"
            ) from None

    def finish(self, overwrite: bool) -> None:
        self.manager.close()
        (self.partial / "run.json").unlink(missing_ok=True)
        if self.out.exists() and overwrite:
            shutil.rmtree(self.out)
        os.replace(self.partial, self.out)


# ------------------------------------------------------------------------------------------------
# The run.


def _layer(params, i):
    return jax.tree_util.tree_map(lambda a: a[i], params["layers"])


def _loss_weights(st: QuantSettings, cfg, params, prep: Prepared, report: dict) -> jax.Array:
    if isinstance(st.loss_weights, str):  # "mbq": gradient-derived (spec §4)
        w = evaluate.gradient_modality_weights(cfg, params, prep)
        report["loss_weights"] = {"source": "mbq-gradient", **dict(zip(MODALITY_NAMES, map(float, w)))}
        return jnp.asarray(w, jnp.float32)
    report["loss_weights"] = {"source": "given", **dict(zip(MODALITY_NAMES, st.loss_weights))}
    return jnp.asarray(st.loss_weights, jnp.float32)


MULTIMODAL_ARCHS = ("qwen2_5_omni_thinker", "qwen2_5_vl")


def _check_group_size(cfg, st: QuantSettings) -> None:
    """Fail before calibrating when the weight group size does not divide every linear's input."""
    if st.group_size is None:
        return
    dims = sorted(set(calibrate.layer_input_dims(cfg).values()))
    bad = [d for d in dims if d % st.group_size]
    if bad:
        import math

        common = math.gcd(*dims)
        divisors = [g for g in (256, 128, 64, 32, 16) if common % g == 0]
        raise MasqError(f"--group-size {st.group_size} does not divide the linear input widths {bad} of this "
                        f"model; use one of {divisors or [common]} (or 0 for per-channel)")


def _modality_warnings(cfg, counts: dict[str, int], st: QuantSettings) -> list[str]:
    out = []
    if cfg.arch not in MULTIMODAL_ARCHS and counts["vision"] + counts["audio"] == 0:
        return out  # a text-only model: nothing to warn about
    for name in MODALITY_NAMES[1:]:
        n = counts[name]
        if n == 0:
            if st.method in ("mas", "masquant"):
                out.append(f"{name}: no calibration tokens; its smoothing vectors fall back to text's and no "
                           "compensation is built")
        elif st.method == "masquant" and n < cfg.intermediate_size:
            out.append(f"{name}: {n} calibration tokens for layers up to {cfg.intermediate_size} wide; its "
                       "whitening covariance is rank-deficient (damped), add samples for a better fit")
    return out


def run_quantize(model, calibset, out: str, st: QuantSettings, *, eval_set=None,
                 seq_len: int | None = None, resume: bool = False, overwrite: bool = False,
                 progress: bool = True, dtype=jnp.float32, stop_after_layer: int | None = None,
                 source_name: str | None = None, calib_record: dict | None = None) -> dict[str, Any]:
    """Calibrate, write the artefact into ``out`` and return the report (see module docstring).

    ``model`` is a checkpoint path (HF directory or .gguf) or an in-memory ``(DecoderConfig, params)``.

    ``stop_after_layer`` (tests) simulates an interruption after that layer: the run returns early
    leaving ``OUT.partial`` for ``--resume``.
    """
    from masq_jax.models import load_params

    timer = StageTimer()
    in_memory = isinstance(model, tuple)
    model_path = source_name or ("<in-memory>" if in_memory else str(model))
    report: dict[str, Any] = {"settings": st.to_json(), "model": model_path, "warnings": []}
    with timer("load_model"):
        cfg, params = model if in_memory else load_params(model, dtype)
    with timer("prepare_calibration"):
        prep = prepare(cfg, params, calibset, seq_len)
        prep_eval = prepare(cfg, params, eval_set, seq_len) if eval_set is not None else None
    report["calibration"] = {"samples": int(prep.h0.shape[0]), "seq_len": int(prep.h0.shape[1]),
                             "token_counts": prep.token_counts,
                             "eval_samples": 0 if prep_eval is None else int(prep_eval.h0.shape[0])}
    report["warnings"] += _modality_warnings(cfg, prep.token_counts, st)
    for w in report["warnings"]:
        warnings.warn(w, stacklevel=2)
    _check_group_size(cfg, st)
    fp = _fingerprint(st, cfg, params, calibset.fingerprint())
    run = RunDir(out, fp, resume, overwrite)

    with timer("loss_weights"):
        weights = _loss_weights(st, cfg, params, prep, report)
    ranks = calibrate.layer_ranks(cfg, st)
    if st.propagation == "independent" and st.learns:
        factors, loras, layer_reports = _calibrate_independent(cfg, params, prep, st, weights, ranks, run, timer,
                                                               progress)
    else:
        factors, loras, layer_reports = _calibrate_layers(cfg, params, prep, st, weights, ranks, run, timer,
                                                          progress, stop_after_layer, report)
    if factors is None:
        return report
    with timer("export"):
        qparams = artifact.build_quantized_params(params, factors, loras, st)
        qconfig = artifact.quantization_config(st, ranks, {"source_model": model_path if in_memory else str(Path(model_path).absolute()),
                                                    "decoder_config": artifact.decoder_config_json(cfg),
                                                    "calibration": calib_record})
        artifact.write_artifact(run.partial, cfg.hf_config, qparams, qconfig)
    report["layers"] = layer_reports
    with timer("evaluate"):
        data = prep_eval if prep_eval is not None else prep
        report["evaluated_on"] = "held-out" if prep_eval is not None else "calibration"
        qmodel = artifact.read_artifact(run.partial)
        report.update(evaluate.evaluate(cfg, params, qmodel, data))
    report["stages"] = timer.as_dict()
    tmp = run.partial / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, run.partial / "report.json")
    run.finish(overwrite)
    return report


def _calibrate_layers(cfg, params, prep, st, weights, ranks, run, timer, progress, stop_after_layer, report):
    from tqdm.auto import tqdm

    n_layers = cfg.num_layers
    need_gram = st.method == "masquant"
    done = run.finished_layers()
    if done and done != list(range(len(done))):
        raise CheckpointError(f"checkpoints in {run.partial} are not a prefix of the layers ({done}); delete it")
    h_fp, h_q = prep.h0, prep.h0
    factors, loras, reports = [], [], []
    key = jax.random.PRNGKey(st.seed)
    bar = tqdm(range(n_layers), desc=f"{st.method} {st.wbits}w{st.abits}a", unit="layer", disable=not progress,
               dynamic_ncols=True)
    for i in bar:
        t_layer = time.perf_counter()
        lp = _layer(params, i)
        with timer("fp_pass"):
            y_fp, stats, sample = jax.block_until_ready(calibrate.fp_layer_pass(
                cfg, lp, h_fp, prep.cos, prep.sin, prep.valid, prep.modality_ids, with_gram=need_gram))
        if i in done:
            template = _state_template(cfg, st, ranks)
            state = run.load_layer(i, template)
            f, lora, info = state["factors"], _lora_from_state(state), state["info"]
        else:
            with timer("init"):
                f, search = calibrate.init_layer_factors(cfg, lp, stats, sample, st, weights)
            losses = []
            if st.learns and st.epochs > 0:
                with timer("train"):
                    f, losses = calibrate.train_layer(cfg, st, lp, f, h_q, y_fp, prep.cos, prep.sin, prep.valid,
                                                      prep.modality_ids, weights, jax.random.fold_in(key, i),
                                                      prep.active)
                    f = jax.block_until_ready(f)
                    losses = np.asarray(losses).tolist()
            lora = {}
            if st.method == "masquant":
                with timer("cmc"):
                    lora = jax.block_until_ready(calibrate.cmc_layer(lp, f, stats, st, ranks))
            n_loss = max(st.epochs, 1)
            losses_padded = losses + [np.nan] * (n_loss - len(losses))
            alphas = [search.get(n, np.nan) for n in calibrate.LINEARS]
            state = _layer_state(f, lora, losses_padded, alphas, ranks)
            info = state["info"]
            with timer("checkpoint"):
                run.save_layer(i, state)
        rep = {"index": i}
        if st.learns and st.epochs > 0:
            rep["loss_per_epoch"] = [float(x) for x in np.asarray(info["loss"])]
            if rep["loss_per_epoch"]:
                bar.set_postfix(loss=f"{rep['loss_per_epoch'][-1]:.4g}")
        if st.method in ("awq", "mbq"):
            rep["alpha"] = dict(zip(calibrate.LINEARS, map(float, np.asarray(info["alpha"]))))
        reports.append(rep)
        factors.append(f)
        loras.append(lora)
        if st.learns and i + 1 < n_layers:
            # The next layer trains on inputs from the already-quantized layers (spec §4). As in the
            # reference, propagation uses the MAS model (CMC is fitted on top, not trained through).
            with timer("propagate"):
                h_q = jax.block_until_ready(calibrate.propagate(cfg, st, "mas", lp, f, lora, h_q, prep.cos, prep.sin,
                                                                prep.valid, prep.modality_ids, active=prep.active))
        h_fp = y_fp
        rep["seconds"] = round(time.perf_counter() - t_layer, 3)  # wall time of this layer, all stages
        if stop_after_layer is not None and i >= stop_after_layer:
            bar.close()
            return None, None, reports
    bar.close()
    return factors, loras, reports


def _layer_state(factors, lora, losses, alphas, ranks) -> dict:
    """The orbax checkpoint of one finished layer: factors, low-rank factors (if any), loss and α."""
    state = {"factors": factors, "info": {"loss": np.asarray(losses, np.float32),
                                          "alpha": np.asarray(alphas, np.float32)}}
    if lora and any(ranks.values()):
        state["lora"] = {n: {"l": v[0], "r": v[1]} for n, v in lora.items()}
    return state


def _state_template(cfg, st, ranks):
    dims = calibrate.layer_input_dims(cfg)
    outs = calibrate.layer_output_dims(cfg)
    f = {n: np.zeros((3, dims[calibrate.LINEAR_INPUT[n]]), np.float32) for n in calibrate.LINEARS}
    info = {"loss": np.zeros((max(st.epochs, 1),), np.float32),
            "alpha": np.zeros((len(calibrate.LINEARS),), np.float32)}
    state = {"factors": f, "info": info}
    if st.method == "masquant" and any(ranks.values()):
        state["lora"] = {n: {"l": np.zeros((3, dims[calibrate.LINEAR_INPUT[n]], ranks[n]), np.float32),
                             "r": np.zeros((3, ranks[n], outs[n]), np.float32)} for n in calibrate.LINEARS}
    return state


def _lora_from_state(state):
    return {n: (jnp.asarray(v["l"]), jnp.asarray(v["r"])) for n, v in state.get("lora", {}).items()}


def _calibrate_independent(cfg, params, prep, st, weights, ranks, run, timer, progress, layer_chunk: int = 4):
    """All layers trained from full-precision inputs (no quantized propagation), training and CMC
    vmapped over chunks of ``layer_chunk`` layers: faster, but layer i never sees the error of
    layers < i."""
    from tqdm.auto import tqdm

    n_layers = cfg.num_layers
    need_gram = st.method == "masquant"
    done = set(run.finished_layers())
    key = jax.random.PRNGKey(st.seed)
    inputs, targets, stats_all, inits = [], [], [], []
    h = prep.h0
    with timer("fp_pass"):
        for i in range(n_layers):
            lp = _layer(params, i)
            y, stats, sample = calibrate.fp_layer_pass(cfg, lp, h, prep.cos, prep.sin, prep.valid,
                                                       prep.modality_ids, with_gram=need_gram)
            inputs.append(h)
            targets.append(y)
            stats_all.append(stats)
            inits.append(calibrate.init_layer_factors(cfg, lp, stats, sample, st, weights)[0])
            h = y
    factors, loras, reports = [None] * n_layers, [None] * n_layers, []
    vtrain = jax.vmap(lambda *a: calibrate.train_layer(*a, active=prep.active),
                      in_axes=(None, None, 0, 0, 0, 0, None, None, None, None, None, 0))
    bar = tqdm(range(0, n_layers, layer_chunk), desc=f"{st.method} independent", unit="chunk",
               disable=not progress, dynamic_ncols=True)
    for start in bar:
        idx = [i for i in range(start, min(start + layer_chunk, n_layers))]
        if all(i in done for i in idx):
            for i in idx:
                state = run.load_layer(i, _state_template(cfg, st, ranks))
                factors[i], loras[i] = state["factors"], _lora_from_state(state)
                reports.append({"index": i, "loss_per_epoch": [float(x) for x in np.asarray(state["info"]["loss"])]})
            continue
        stack = lambda xs: jax.tree_util.tree_map(lambda *a: jnp.stack(a), *xs)  # noqa: E731
        lps = jax.tree_util.tree_map(lambda a: a[start:start + len(idx)], params["layers"])
        with timer("train"):
            f_chunk, losses = vtrain(cfg, st, lps, stack([inits[i] for i in idx]), stack([inputs[i] for i in idx]),
                                     stack([targets[i] for i in idx]), prep.cos, prep.sin, prep.valid,
                                     prep.modality_ids, weights, jnp.stack([jax.random.fold_in(key, i) for i in idx]))
        lora_chunk = {}
        if st.method == "masquant":  # the chunk's CMC, vmapped over its layers
            with timer("cmc"):
                lora_chunk = jax.block_until_ready(calibrate.cmc_layers(
                    lps, f_chunk, stack([stats_all[i] for i in idx]), st, ranks))
        for j, i in enumerate(idx):
            f = jax.tree_util.tree_map(lambda a: a[j], f_chunk)
            lora = jax.tree_util.tree_map(lambda a: a[j], lora_chunk)
            state = _layer_state(f, lora, losses[j], [np.nan] * len(calibrate.LINEARS), ranks)
            run.save_layer(i, state)
            factors[i], loras[i] = f, lora
            reports.append({"index": i, "loss_per_epoch": [float(x) for x in np.asarray(losses[j])]})
        bar.set_postfix(loss=f"{float(np.asarray(losses)[:, -1].mean()):.4g}")
    bar.close()
    return factors, loras, reports
