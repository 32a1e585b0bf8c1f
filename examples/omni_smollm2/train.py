"""Train omni-SmolLM2's encoders and projectors with SmolLM2 frozen (LLaVA's stage 1), resumable:

    python -m examples.omni_smollm2.train --out runs/omni-smollm2 --minutes 100   # one chunk

Each step takes ``--batch`` examples of every task, generated from the training split with the
step's own seed (so a resumed run sees the data an uninterrupted one would). An orbax checkpoint of
the encoders, the optimiser state and the step is written every ``--save-every`` steps and at the end
of the chunk, and ``encoders.safetensors`` (what inference loads) at the end of every chunk; run
the same command again to continue. ``train_log.jsonl`` gets one line per step.

A run directory does not outlive its machine, the committed checkpoint does: ``--publish DIR`` writes
the chunk's encoders into a checkpoint directory (``checkpoint.write_checkpoint``, with the steps
trained so far), and ``--init DIR`` starts a new run from one (a fresh optimiser and schedule; the
data seeds continue after the steps the checkpoint has seen):

    python -m examples.omni_smollm2.train --out runs/omni2 --init checkpoints/omni-smollm2 \
        --publish checkpoints/omni-smollm2 --steps 600 --minutes 100
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import optax

from examples.omni_smollm2 import data
from masq_jax.families.omni_smollm2 import model as M
from examples.omni_smollm2 import prompts as P
from masq_jax.families.omni_smollm2.checkpoint import save_encoders
from masq_jax.models import decoder


def answer_logits(cfg, llm: dict, enc: dict, b: dict, prompt_len: int) -> jax.Array:
    """Logits [B, A, V] that predict the answer tokens (the head runs on those positions only)."""
    e = M.assemble(llm, enc, b["ids"], b.get("patches"), b.get("mel"))
    h = decoder.layers_forward(cfg, llm["layers"], e, decoder.rope(cfg, b["positions"]),
                               decoder.attention_bias(None, e.shape[1]))
    a = b["targets"].shape[1]
    return decoder.head(cfg, llm, h[:, prompt_len - 1: prompt_len - 1 + a])


def loss_fn(enc, cfg, llm, batches: list[dict], prompt_lens: tuple[int, ...]):
    """Mean answer-token cross-entropy over the tasks, and each task's token accuracy."""
    total, accs = 0.0, []
    for b, p in zip(batches, prompt_lens):
        logits = answer_logits(cfg, llm, enc, b, p)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, b["targets"])
        total = total + (ce * b["mask"]).sum() / b["mask"].sum()
        accs.append(((jnp.argmax(logits, -1) == b["targets"]) * b["mask"]).sum() / b["mask"].sum())
    return total / len(batches), jnp.stack(accs)


PROJECTOR = ("ln", "proj1", "proj2")  # a tower's projector: what LLaVA's stage 1 trains


def optimizer(steps: int, lr: float, freeze_towers: bool = False) -> optax.GradientTransformation:
    """AdamW with warm-up and cosine decay; ``freeze_towers``: only the projectors learn (the towers
    stay as pre-trained, ``pretrain.py``)."""
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, min(200, steps // 10 + 1), steps, lr * 0.05)
    adamw = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, weight_decay=0.01))
    if not freeze_towers:
        return adamw

    def labels(enc):
        return {t: {k: jax.tree.map(lambda _: "train" if k in PROJECTOR else "frozen", v) for k, v in tower.items()}
                for t, tower in enc.items()}

    return optax.multi_transform({"train": adamw, "frozen": optax.set_to_zero()}, labels)


def make_step(cfg, opt, prompt_lens):
    heads = None

    @jax.jit
    def step(enc, state, llm, batches):
        grad_fn = jax.value_and_grad(lambda e: loss_fn({**e, "heads": heads}, cfg, llm, batches, prompt_lens),
                                     has_aux=True)
        (loss, accs), g = grad_fn(enc)
        upd, state = opt.update(g, state, enc)
        return optax.apply_updates(enc, upd), state, loss, accs

    def run(enc, state, llm, batches):
        nonlocal heads
        heads = enc["heads"]
        arrays = {k: v for k, v in enc.items() if k != "heads"}
        new, state, loss, accs = step(arrays, state, llm, batches)
        return {**new, "heads": heads}, state, loss, accs

    return run


def step_batches(cfg, step: int, batch: int) -> list[P.Batch]:
    """The training batches of ``step``: ``batch`` examples of every task, seeded by the step."""
    return [P.teacher_forced(cfg, data.examples(t, "train", batch, seed=step)) for t in data.TASKS]


def as_arrays(b: P.Batch) -> dict:
    out = {"ids": b.ids, "targets": b.targets, "mask": b.mask, "positions": b.positions}
    if b.patches is not None:
        out["patches"] = b.patches
    if b.mel is not None:
        out["mel"] = b.mel
    return {k: jnp.asarray(v) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=3000, help="total steps of the whole run (sets the schedule)")
    ap.add_argument("--batch", type=int, default=8, help="examples per task per step")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--minutes", type=float, default=100.0,
                    help="stop this chunk after this long (0: only export the latest checkpoint's encoders)")
    ap.add_argument("--save-every", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", default=None, help="start from this checkpoint directory's encoders")
    ap.add_argument("--publish", default=None, help="write each chunk's encoders into this checkpoint directory")
    ap.add_argument("--freeze-towers", action="store_true", help="train the projectors only (towers pre-trained)")
    a = ap.parse_args(argv)
    import orbax.checkpoint as ocp

    cfg, llm = M.load_llm()
    enc, seen, init_info = M.init_encoders(jax.random.PRNGKey(a.seed), cfg.hidden_size), 0, {}
    run_json = os.path.join(a.out, "run.json")  # what this run started from: read back on resume
    if os.path.exists(run_json):
        with open(run_json) as f:
            first = json.load(f)
        seen, init_info = first["init_steps"], first["init_info"]
    if a.init:
        from masq_jax.families.omni_smollm2.checkpoint import ENCODERS, checkpoint_info, load_encoders

        info = checkpoint_info(a.init)
        if info is None:
            ap.error(f"--init {a.init}: not an omni-SmolLM2 checkpoint directory")
        enc = load_encoders(os.path.join(a.init, ENCODERS), cfg.hidden_size)
        if not os.path.exists(run_json):  # a resumed run keeps its first start's count (--publish may rewrite --init)
            seen, init_info = int(info.get("steps", 0)), ({"pretrain": info["pretrain"]} if "pretrain" in info else {})
    heads = enc.pop("heads")
    opt = optimizer(a.steps, a.lr, a.freeze_towers)
    state = opt.init(enc)
    os.makedirs(a.out, exist_ok=True)
    if not os.path.exists(run_json):
        with open(run_json, "w") as f:
            json.dump({"init": a.init, "init_steps": seen, "init_info": init_info}, f)
    mgr = ocp.CheckpointManager(os.path.abspath(os.path.join(a.out, "checkpoints")),
                                options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True,
                                                                     enable_async_checkpointing=False))
    start = 0
    if mgr.latest_step() is not None:
        start = mgr.latest_step()
        restored = mgr.restore(start, args=ocp.args.StandardRestore({"enc": enc, "opt": state}))
        enc, state = restored["enc"], restored["opt"]
        print(f"resumed at step {start}", flush=True)

    def export(done: int) -> None:
        """The encoders after ``done`` steps of this run: to the run directory and ``--publish``."""
        save_encoders(os.path.join(a.out, "encoders.safetensors"), {**enc, "heads": heads})
        if a.publish:
            from masq_jax.families.omni_smollm2.checkpoint import write_checkpoint

            write_checkpoint(a.publish, {**enc, "heads": heads}, steps=seen + done, batch_per_task=a.batch,
                             lr=a.lr, run_steps=a.steps, freeze_towers=a.freeze_towers, **init_info)
            print(f"published the encoders of {seen + done} steps to {a.publish}", flush=True)

    if a.minutes <= 0:  # export the latest checkpoint's encoders, train nothing
        export(start)
        print(f"exported the encoders of step {start}", flush=True)
        return 0
    prompt_lens = tuple(len(P.prompt_ids(t)) for t in data.TASKS)
    run = make_step(cfg, opt, prompt_lens)
    t0, log = time.time(), open(os.path.join(a.out, "train_log.jsonl"), "a")
    s = start
    for s in range(start, a.steps):
        tb = time.time()
        batches = [as_arrays(b) for b in step_batches(cfg, seen + s, a.batch)]
        tg = time.time() - tb
        new, state, loss, accs = run({**enc, "heads": heads}, state, llm, batches)
        enc = {k: v for k, v in new.items() if k != "heads"}
        row = {"step": s + 1, "loss": float(loss), "token_acc": dict(zip(data.TASKS, map(float, accs))),
               "data_s": round(tg, 2), "step_s": round(time.time() - tb, 2)}
        log.write(json.dumps(row) + "\n")
        log.flush()
        print(json.dumps(row), flush=True)
        if (s + 1) % a.save_every == 0 or time.time() - t0 > 60 * a.minutes or s + 1 == a.steps:
            mgr.save(s + 1, args=ocp.args.StandardSave({"enc": enc, "opt": state}))
            mgr.wait_until_finished()
        if time.time() - t0 > 60 * a.minutes:
            break
    export(s + 1)
    print(f"stopped after step {s + 1} of {a.steps}; run the same command to continue", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
