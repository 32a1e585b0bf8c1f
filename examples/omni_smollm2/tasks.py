"""omni-SmolLM2's tasks as a tasks file for ``masq eval --tasks`` (task metrics by generation).

    python -m examples.omni_smollm2.tasks --out runs/omni-smollm2-tasks --split test --n 50 --seed 1

    python -m examples.omni_smollm2.tasks --record-fp checkpoints/omni-smollm2 --n 50 --seed 1

The first writes ``tasks.jsonl`` (per example: task, question, media, answer, metrics: OCR exact match and
CER, ASR WER, match accuracy, copy: the string somewhere in the answer) and the media it names (``media/*.npy``: the
exact float images and 16 kHz waveforms the generator made). ``--seed`` draws a fresh sample of the
split's generator, so a figure is not one memorised split. The second measures a checkpoint's
full-precision scores into its ``fp_accuracy.json`` (what the checkpoint test holds it to).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from examples.omni_smollm2 import data
from examples.omni_smollm2 import prompts as P

METRICS = {"ocr": ["exact", "cer"], "asr": "wer", "match": "exact", "copy": "contains"}  # copy: SmolLM2 chats


def write_tasks(out: str | Path, split: str = "test", n_per_task: int = 50, seed: int = 0,
                tasks: tuple[str, ...] = data.EVAL_TASKS) -> Path:
    """Write the tasks file and media into ``out`` (atomically: ``out.partial`` renamed); its path."""
    from masq_jax.eval.tasks import write_tasks as write

    return write(out, ({"task": task, "text": P.question(ex), "answer": ex.answer, "metric": METRICS[task],
                        "images": [] if ex.image is None else [ex.image],
                        "audios": [] if ex.audio is None else [ex.audio]}
                       for task in tasks for ex in data.examples(task, split, n_per_task, seed)))


def scores(models: dict, ckpt: str | Path, n_per_task: int, seed: int, split: str = "test",
           max_new_tokens: int = 16) -> dict[str, dict[str, float]]:
    """``{name: {column: score}}`` of loaded models on a fresh sample of the split (``write_tasks``),
    generated through ``masq_jax.eval.tasks`` with the checkpoint's front end."""
    import tempfile

    from masq_jax.families.omni_smollm2.frontend import OmniSmolLM2FrontEnd
    from masq_jax.eval.tasks import evaluate_tasks

    with tempfile.TemporaryDirectory() as tmp:
        path = write_tasks(Path(tmp) / "tasks", split, n_per_task, seed)
        res = evaluate_tasks(models, path, OmniSmolLM2FrontEnd(ckpt), max_new_tokens=max_new_tokens, batch_size=32)
    return {name: {k: v["score"] for k, v in r["per_task"].items()} for name, r in res["results"].items()}


def record_fp(ckpt: str | Path, n_per_task: int, seed: int) -> dict:
    """Measure the checkpoint's full-precision scores and write them to ``fp_accuracy.json`` beside it."""
    from masq_jax.calibrate.rundir import write_json_atomic
    from masq_jax.families.omni_smollm2.checkpoint import checkpoint_info
    from masq_jax.loading import load

    rec = {"split": "test", "seed": seed, "n_per_task": n_per_task, "steps": checkpoint_info(ckpt).get("steps"),
           "scores": scores({"fp": load(ckpt)}, ckpt, n_per_task, seed)["fp"],
           "note": "accuracies (ocr (exact), match, copy) and error rates (ocr (cer), asr = WER) as fractions"}
    write_json_atomic(Path(ckpt) / "fp_accuracy.json", rec)
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m examples.omni_smollm2.tasks", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="output directory (replaced)")
    ap.add_argument("--split", default="test", choices=sorted(data.SPLITS))
    ap.add_argument("--n", type=int, default=50, help="examples per task")
    ap.add_argument("--seed", type=int, default=0, help="the generator's seed within the split")
    ap.add_argument("--tasks", default=",".join(data.EVAL_TASKS), help="comma-separated subset of the tasks")
    ap.add_argument("--record-fp", metavar="CKPT", default=None,
                    help="instead: measure checkpoint CKPT's FP scores on --n examples (seed --seed) into its fp_accuracy.json")
    a = ap.parse_args(argv)
    if a.record_fp:
        print(json.dumps(record_fp(a.record_fp, a.n, a.seed), indent=1))
        return 0
    if not a.out:
        ap.error("--out DIR is required (or --record-fp CKPT)")
    tasks = tuple(t for t in a.tasks.split(",") if t)
    bad = [t for t in tasks if t not in data.EVAL_TASKS]
    if bad or not tasks:
        ap.error(f"--tasks: {bad[0] if bad else '(none)'} is not one of {', '.join(data.EVAL_TASKS)}")
    print(write_tasks(a.out, a.split, a.n, a.seed, tasks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
