"""Task accuracy of the tiny omni model by greedy decoding, for the FP checkpoint and for masq-jax
quantized artefacts (``masq_jax.load(OUT)``), per task.

The encoders (never quantized, docs/method.md §1) and the embedding table come from the FP checkpoint; the
decoder is the model under test. Decode steps are text tokens (modality id 0). An answer is correct
when the two greedy tokens are exactly (answer, ``<eos>``).

    python -m masq_jax.demos.tiny_omni.eval --fp checkpoints/tiny-omni [--model runs/q/rtn ...] [--n 100]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax.demos.tiny_omni import data as D
from masq_jax.demos.tiny_omni import model as M
from masq_jax.errors import MasqError
from masq_jax.modality import NAMES

ModelFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]  # (embeds, positions, modality) -> logits


def prepare(fp_dir: str, split: str, n_per_task: int, with_answer: bool = False) -> dict[str, dict]:
    """Per task: inputs_embeds [N,S,H] (encoders applied), position_ids [3,N,S], modality_ids [N,S],
    answer [N,2]. ``with_answer`` appends the answer and ``<eos>`` (teacher-forced full sequences, for
    calibration sets)."""
    from masq_jax.models import load_params

    hf, enc, sink = M.load_encoders(fp_dir)
    cfg, params = load_params(fp_dir)
    out = {}
    for task, b in D.make_split(split, n_per_task).items():
        ids = np.concatenate([b.input_ids, b.answer], axis=1) if with_answer else b.input_ids
        pos = M.positions(cfg, b.input_ids)
        if with_answer:
            pos = M.extend_positions(pos, 2)
        emb = M.assemble_embeds(params, enc, jnp.asarray(sink), jnp.asarray(ids), jnp.asarray(b.patches),
                                jnp.asarray(b.audio))
        out[task] = {"inputs_embeds": np.asarray(emb, np.float32), "position_ids": pos,
                     "modality_ids": M.modality_ids(ids), "answer": b.answer}
    return out


def greedy_accuracy(model_fn: ModelFn, embed_table: jax.Array, batch: dict, steps: int = 2,
                    chunk: int = 100) -> tuple[float, np.ndarray]:
    """(accuracy, predicted tokens [N, steps]) of greedy decoding on one task's prepared batch."""
    n = batch["inputs_embeds"].shape[0]
    preds = []
    for st in range(0, n, chunk):
        e = jnp.asarray(batch["inputs_embeds"][st:st + chunk])
        pos = np.asarray(batch["position_ids"][:, st:st + chunk])
        mod = np.asarray(batch["modality_ids"][st:st + chunk])
        toks = []
        for _ in range(steps):
            logits = model_fn(e, jnp.asarray(pos), jnp.asarray(mod))
            t = jnp.argmax(logits[:, -1], axis=-1)
            toks.append(np.asarray(t))
            e = jnp.concatenate([e, jnp.take(embed_table, t, axis=0)[:, None].astype(e.dtype)], axis=1)
            pos = M.extend_positions(pos, 1)
            mod = np.concatenate([mod, np.zeros((mod.shape[0], 1), np.int32)], axis=1)
        preds.append(np.stack(toks, axis=1))
    pred = np.concatenate(preds)
    ok = (pred == batch["answer"][:, :steps]).all(axis=1)
    return float(ok.mean()), pred


def model_fn_of(path: str) -> tuple[ModelFn, jax.Array]:
    """(model_fn, embedding table) for an FP checkpoint or a quantized artefact directory."""
    from masq_jax.loading import load

    model = load(path)  # FP and quantized models take the same arguments
    return (lambda e, p, m: model(inputs_embeds=e, position_ids=p, modality_ids=m)), model.params["embed"]


def evaluate(fp_dir: str, models: dict[str, str], n_per_task: int = 100, split: str = "test") -> dict:
    """{name: {task: accuracy, "mean": ...}} for every model (name -> directory)."""
    data = prepare(fp_dir, split, n_per_task)
    res = {}
    for name, path in models.items():
        fn, table = model_fn_of(path)
        accs = {t: greedy_accuracy(fn, table, data[t])[0] for t in D.TASKS}
        accs["mean"] = float(np.mean([accs[t] for t in D.TASKS]))
        res[name] = accs
    return res


def activation_ranges(fp_dir: str, calib_npz: str) -> dict:
    """Per layer and linear input ("qkv", "o", "gate_up", "down") of the FP decoder on a CalibSet:
    per modality ``absmax`` (over tokens and channels) and the per-channel range ratios
    ``max_c(max_t|x_m| / max_t|x_text|)`` for m = vision, audio (channels where text's max > 1e-6)."""
    from masq_jax.calib import CalibSet
    from masq_jax.models import decoder, load_params

    cfg, params = load_params(fp_dir)
    cs = CalibSet.load(calib_npz)
    per = {}  # (layer, input) -> [3, H] running per-channel max
    for smp in cs:
        e = jnp.asarray(smp.inputs_embeds)[None]
        cs_ = decoder.rope(cfg, jnp.asarray(smp.position_ids)[:, None])
        bias = decoder.attention_bias(None, e.shape[1])
        h = e
        for i in range(cfg.num_layers):
            lp = jax.tree.map(lambda a: a[i], params["layers"])
            h, caps = decoder.layer_forward(cfg, lp, h, cs_, bias, capture=True)
            for name, x in caps.items():
                x = np.abs(np.asarray(x[0], np.float64))
                cur = per.setdefault((i, name), np.zeros((3, x.shape[1])))
                for m in range(3):
                    sel = smp.modality_ids == m
                    if sel.any():
                        cur[m] = np.maximum(cur[m], x[sel].max(0))
    out = {}
    for (i, name), mx in per.items():
        text = mx[0]
        ok = text > 1e-6
        row = {f"absmax_{n}": float(mx[m].max()) for m, n in enumerate(NAMES)}
        for m, n in ((1, "vision"), (2, "audio")):
            r = mx[m][ok] / text[ok]
            row[f"channel_ratio_{n}_max"] = float(r.max())
            row[f"channel_ratio_{n}_median"] = float(np.median(r))
        out.setdefault(name, []).append(row)
    return out


def format_ranges(r: dict) -> str:
    lines = [f"{'input':<8}{'layer':>6}{'|x|max text':>12}{'vision':>9}{'audio':>9}"
             f"{'ch-ratio v max':>15}{'v med':>7}{'a max':>7}{'a med':>7}"]
    for name in ("qkv", "gate_up", "o", "down"):
        for i, row in enumerate(r.get(name, [])):
            lines.append(f"{name:<8}{i:>6}{row['absmax_text']:>12.2f}{row['absmax_vision']:>9.2f}"
                         f"{row['absmax_audio']:>9.2f}{row['channel_ratio_vision_max']:>15.1f}"
                         f"{row['channel_ratio_vision_median']:>7.2f}{row['channel_ratio_audio_max']:>7.1f}"
                         f"{row['channel_ratio_audio_median']:>7.2f}")
    return "\n".join(lines)


def format_table(res: dict) -> str:
    lines = [f"{'model':<14}" + "".join(f"{t:>9}" for t in (*D.TASKS, "mean"))]
    for name, a in res.items():
        lines.append(f"{name:<14}" + "".join(f"{100 * a[t]:>8.1f}%" for t in (*D.TASKS, "mean")))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m masq_jax.demos.tiny_omni.eval", description=__doc__.split("\n")[0])
    ap.add_argument("--fp", default="checkpoints/tiny-omni", help="the FP tiny-omni checkpoint (encoders, embeds)")
    ap.add_argument("--model", action="append", default=[],
                    help="NAME=DIR or DIR of a quantized artefact (repeatable); the FP model is always included")
    ap.add_argument("--n", type=int, default=100, help="test examples per task")
    ap.add_argument("--split", default="test", choices=sorted(D.SPLIT_SEEDS))
    ap.add_argument("--json", default=None, help="write the accuracies as JSON here")
    ap.add_argument("--ranges", default=None, metavar="CALIB_NPZ",
                    help="instead: per-modality activation ranges at the FP decoder's linear inputs on this CalibSet")
    a = ap.parse_args(argv)
    if a.ranges:
        return _report(lambda: activation_ranges(a.fp, a.ranges), format_ranges, a.json,
                       lambda r: {"calib": a.ranges, "ranges": r})
    models = {"fp": a.fp}
    for m in a.model:
        name, _, path = m.rpartition("=")
        models[name or path.rstrip("/").split("/")[-1]] = path
    return _report(lambda: evaluate(a.fp, models, a.n, a.split), format_table, a.json,
                   lambda res: {"n_per_task": a.n, "split": a.split, "accuracy": res})


def _report(compute, fmt, json_path, payload) -> int:
    """Run ``compute``, print ``fmt(result)`` and write ``payload(result)`` as JSON; bad input is one
    line on stderr and exit status 2."""
    try:
        result = compute()
    except (MasqError, OSError) as e:  # bad input, or a file it cannot read
        print(f"tiny_omni_eval: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    print(fmt(result))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(payload(result), f, indent=1)
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
