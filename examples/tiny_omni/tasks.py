"""The tiny omni test split as a tasks file for ``masq eval --tasks`` (task accuracy by generation).

    python -m examples.tiny_omni.tasks --out runs/tiny-omni-tasks [--split test] [--n 100]

writes ``tasks.jsonl`` (one line an example: task, prompt words, media, answer, metric "exact") and
the media it names (``media/*.npy``: the exact float images and waveforms the data generator made).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from examples.tiny_omni import data as D

PLACEHOLDERS = {"<bos>", "<vision_bos>", "<vision_eos>", "<audio_bos>", "<audio_eos>", "<image>", "<audio>"}


def items(split: str = "test", n_per_task: int = 100):
    """The split's examples as tasks-file items (``masq_jax.eval.tasks.write_tasks``)."""
    for task, b in D.make_split(split, n_per_task).items():
        for i in range(len(b.input_ids)):
            words = [D.VOCAB[t] for t in b.input_ids[i] if D.VOCAB[t] not in PLACEHOLDERS]
            yield {"task": task, "text": " ".join(words), "answer": D.VOCAB[int(b.answer[i, 0])], "metric": "exact",
                   "images": [b.images[i]] if task in ("vision", "match") else [],
                   "audios": [b.waves[i]] if task in ("audio", "match") else []}


def write_tasks(out: str | Path, split: str = "test", n_per_task: int = 100) -> Path:
    """Write the split's tasks file and media into ``out`` (atomically); its path."""
    from masq_jax.eval.tasks import write_tasks as write

    return write(out, items(split, n_per_task))


def accuracy(models: dict, ckpt: str | Path, n_per_task: int = 100, split: str = "test") -> dict[str, dict]:
    """``{name: {task: accuracy, "mean": ...}}`` of loaded models on the split's tasks, generated
    through ``masq_jax.eval.tasks`` with the checkpoint's front end (greedy, up to ``<eos>``)."""
    import tempfile

    from masq_jax.families.tiny_omni.frontend import TinyOmniFrontEnd
    from masq_jax.eval.tasks import evaluate_tasks

    with tempfile.TemporaryDirectory() as tmp:
        path = write_tasks(Path(tmp) / "tasks", split, n_per_task)
        res = evaluate_tasks(models, path, TinyOmniFrontEnd(ckpt), max_new_tokens=4, batch_size=100)
    out = {}
    for name, r in res["results"].items():
        acc = {t: r["per_task"][t]["score"] for t in D.TASKS}
        out[name] = {**acc, "mean": float(np.mean(list(acc.values())))}
    return out


def format_accuracy(res: dict) -> str:
    lines = [f"{'model':<14}" + "".join(f"{t:>9}" for t in (*D.TASKS, "mean"))]
    for name, a in res.items():
        lines.append(f"{name:<14}" + "".join(f"{100 * a[t]:>8.1f}%" for t in (*D.TASKS, "mean")))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m examples.tiny_omni.tasks", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output directory (replaced)")
    ap.add_argument("--split", default="test", choices=sorted(D.SPLIT_SEEDS))
    ap.add_argument("--n", type=int, default=100, help="examples per task")
    a = ap.parse_args(argv)
    print(write_tasks(a.out, a.split, a.n))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
