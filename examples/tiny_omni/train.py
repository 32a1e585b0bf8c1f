"""Train the tiny omni model (decoder + encoders) on the tiny-omni tasks, seeded, on CPU; write the
checkpoint, its training log, FP test accuracy and the calibration / test CalibSets.

    nice -n 10 python -m examples.tiny_omni.train --out checkpoints/tiny-omni
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples.tiny_omni import data as D
from masq_jax.families.tiny_omni import model as M
from masq_jax.models import decoder



def encode_split(fp_dir: str, split: str, n_per_task: int, with_answer: bool = False) -> dict[str, dict]:
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


def _task_arrays(cfg, split: str, n: int) -> dict[str, dict[str, np.ndarray]]:
    """Teacher-forced inputs (prompt + answer token) and targets (answer, <eos>) per task."""
    out = {}
    for task, b in D.make_split(split, n).items():
        ids = np.concatenate([b.input_ids, b.answer[:, :1]], axis=1)
        pos = M.extend_positions(M.positions(cfg, b.input_ids), 1)
        out[task] = {"ids": ids, "pos": pos, "patches": b.patches, "audio": b.audio, "target": b.answer}
    return out


def make_step(cfg, opt, sink):
    def loss_fn(params, batches):
        total, accs = 0.0, []
        for b in batches:
            e = M.assemble_embeds(params["dec"], params["enc"], sink, b["ids"], b["patches"], b["audio"])
            logits = decoder.forward(cfg, params["dec"], inputs_embeds=e, position_ids=b["pos"])[:, -2:]
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, b["target"])
            total = total + ce.mean()
            accs.append((jnp.argmax(logits, -1) == b["target"]).all(-1).mean())
        return total / len(batches), jnp.stack(accs)

    @jax.jit
    def step(params, state, batches):
        (loss, accs), g = jax.value_and_grad(loss_fn, has_aux=True)(params, batches)
        upd, state = opt.update(g, state, params)
        return optax.apply_updates(params, upd), state, loss, accs

    return step


def write_calibsets(out: str, n_calib: int, n_test: int) -> dict:
    """calib.npz (calibration split) and test.npz (test split): teacher-forced full sequences with the
    encoders applied, 3-D positions and modality ids, tasks interleaved."""
    from masq_jax.calib import CalibSet
    from masq_jax.calib.sample import make_sample

    info = {}
    for name, split, n in (("calib", "calib", n_calib), ("test", "test", n_test)):
        data = encode_split(out, split, n, with_answer=True)
        samples = []
        for i in range(n):
            for t in D.TASKS:
                d = data[t]
                samples.append(make_sample(d["modality_ids"][i], d["position_ids"][:, i],
                                           inputs_embeds=d["inputs_embeds"][i], index=len(samples)))
        cs = CalibSet(samples, {"source": "tiny-omni", "split": split, "seed": D.SPLIT_SEEDS[split],
                                "tasks": list(D.TASKS), "per_task": n})
        cs.save(os.path.join(out, f"{name}.npz"), compress=True)
        info[name] = {"samples": len(cs), "tokens": cs.token_counts()}
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m examples.tiny_omni.train", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="checkpoints/tiny-omni")
    ap.add_argument("--steps", type=int, default=1400)
    ap.add_argument("--batch", type=int, default=12, help="examples per task per step")
    ap.add_argument("--max-minutes", type=float, default=17.0,
                    help="stop training early (and keep the parameters reached) after this many minutes")
    ap.add_argument("--stop-step", type=int, default=None,
                    help="stop after this step (the lr schedule still spans --steps); replays a --max-minutes stop")
    ap.add_argument("--save-every", type=int, default=200, help="write the checkpoint every N steps")
    ap.add_argument("--pool", type=int, default=3000, help="training examples per task (generated once)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test-n", type=int, default=200, help="test examples per task for the FP accuracy")
    ap.add_argument("--calib-n", type=int, default=32, help="calibration samples per task (calib.npz)")
    ap.add_argument("--test-calib-n", type=int, default=8, help="test samples per task (test.npz)")
    ap.add_argument("--init", default=None, help="start from this tiny-omni checkpoint (a second training stage)")
    ap.add_argument("--sink-value", type=float, default=None,
                    help="fixed offset on the vision sink channels (default: the config's, 1.0)")
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    log_path = os.path.join(a.out, "train_log.txt")
    logf = open(log_path, "w")

    def log(msg: str) -> None:
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    hf = M.hf_config()
    if a.sink_value is not None:
        hf["tiny_omni"]["vision_sink_value"] = a.sink_value
    cfg = M.decoder_config(hf)
    t0 = time.time()
    data = _task_arrays(cfg, "train", a.pool)
    log(f"data: {a.pool} train examples per task generated in {time.time() - t0:.1f} s")
    k1, k2 = jax.random.split(jax.random.PRNGKey(a.seed))
    params = {"dec": M.init_decoder(cfg, k1), "enc": M.init_encoders(cfg.hidden_size, hf["tiny_omni"]["enc_hidden"], k2)}
    if a.init:
        from masq_jax.models import load_params

        _, params["dec"] = load_params(a.init)
        _, params["enc"], _ = M.load_encoders(a.init)
        log(f"init: parameters from {a.init}; vision sink value {hf['tiny_omni']['vision_sink_value']}")
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    log(f"params: {n_params} ({sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params['dec']))} decoder)")
    sched = optax.warmup_cosine_decay_schedule(0.0, a.lr, min(100, a.steps // 10), a.steps, a.lr * 0.05)
    opt = optax.chain(optax.clip_by_global_norm(5.0), optax.adamw(sched, weight_decay=0.01))
    state = opt.init(params)
    sink = jnp.asarray(M.sink_vector(hf))
    step = make_step(cfg, opt, sink)
    rng = np.random.default_rng(a.seed + 100)
    t1 = time.time()
    ema = None
    for it in range(1, a.steps + 1):
        batches = []
        for t in D.TASKS:
            idx = rng.integers(0, a.pool, a.batch)
            d = data[t]
            batches.append({"ids": jnp.asarray(d["ids"][idx]), "pos": jnp.asarray(d["pos"][:, idx]),
                            "patches": jnp.asarray(d["patches"][idx]), "audio": jnp.asarray(d["audio"][idx]),
                            "target": jnp.asarray(d["target"][idx])})
        params, state, loss, accs = step(params, state, batches)
        accs = np.asarray(accs)
        ema = accs if ema is None else 0.95 * ema + 0.05 * accs
        if it % 25 == 0 or it == 1:
            log(f"step {it:5d} loss {float(loss):.4f} train-acc(ema) "
                + " ".join(f"{t}={v:.3f}" for t, v in zip(D.TASKS, ema)) + f"  {time.time() - t1:.0f} s")
        if it % a.save_every == 0:
            M.save_checkpoint(a.out, hf, params["dec"], params["enc"])
        if a.stop_step is not None and it >= a.stop_step:
            log(f"stopping at step {it} (--stop-step)")
            break
        if time.time() - t1 > 60 * a.max_minutes:
            log(f"stopping early at step {it}: --max-minutes {a.max_minutes} reached")
            break
    steps_done = it
    train_s = time.time() - t1
    log(f"training: {steps_done} steps in {train_s:.1f} s (including compilation)")
    M.save_checkpoint(a.out, hf, params["dec"], params["enc"])

    from examples.tiny_omni.tasks import accuracy, format_accuracy
    from masq_jax.loading import load

    res = accuracy({"fp": load(a.out)}, a.out, a.test_n)["fp"]
    log(format_accuracy({"fp": res}))
    info = write_calibsets(a.out, a.calib_n, a.test_calib_n)
    log(f"calibsets: {json.dumps(info)}")
    with open(os.path.join(a.out, "fp_accuracy.json"), "w") as f:
        json.dump({"split": "test", "n_per_task": a.test_n, "accuracy": res, "train_seconds": round(train_s, 1),
                   "steps": steps_done, "steps_planned": a.steps, "batch_per_task": a.batch, "pool_per_task": a.pool, "lr": a.lr,
                   "seed": a.seed, "params": n_params, "init": a.init,
                   "vision_sink_value": hf["tiny_omni"]["vision_sink_value"]}, f, indent=1)
    logf.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
