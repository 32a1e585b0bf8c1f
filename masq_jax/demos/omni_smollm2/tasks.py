"""omni-SmolLM2's tasks as a tasks file for ``masq eval --tasks`` (task metrics by generation).

    python -m masq_jax.demos.omni_smollm2.tasks --out runs/omni-smollm2-tasks --split test --n 50 --seed 1

writes ``tasks.jsonl`` (per example: task, question, media, answer, metrics: OCR exact match and
CER, ASR WER, match accuracy, copy: the string somewhere in the answer) and the media it names (``media/*.npy``: the
exact float images and 16 kHz waveforms the generator made). ``--seed`` draws a fresh sample of the
split's generator, so a figure is not one memorised split.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np

from masq_jax.demos.omni_smollm2 import data
from masq_jax.demos.omni_smollm2 import prompts as P

METRICS = {"ocr": ["exact", "cer"], "asr": "wer", "match": "exact", "copy": "contains"}  # copy: SmolLM2 chats


def write_tasks(out: str | Path, split: str = "test", n_per_task: int = 50, seed: int = 0,
                tasks: tuple[str, ...] = data.EVAL_TASKS) -> Path:
    """Write the tasks file and media into ``out`` (atomically: ``out.partial`` renamed); its path."""
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "media").mkdir(parents=True)
    lines = []
    for task in tasks:
        for i, ex in enumerate(data.examples(task, split, n_per_task, seed)):
            item = {"task": task, "text": P.question(ex), "images": [], "audios": [], "answer": ex.answer,
                    "metric": METRICS[task]}
            if ex.image is not None:
                item["images"].append(f"media/{task}_{i:04d}_image.npy")
                np.save(tmp / item["images"][0], ex.image)
            if ex.audio is not None:
                item["audios"].append(f"media/{task}_{i:04d}_audio.npy")
                np.save(tmp / item["audios"][0], ex.audio)
            lines.append(json.dumps(item))
    (tmp / "tasks.jsonl").write_text("\n".join(lines) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out / "tasks.jsonl"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m masq_jax.demos.omni_smollm2.tasks", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output directory (replaced)")
    ap.add_argument("--split", default="test", choices=sorted(data.SPLITS))
    ap.add_argument("--n", type=int, default=50, help="examples per task")
    ap.add_argument("--seed", type=int, default=0, help="the generator's seed within the split")
    ap.add_argument("--tasks", default=",".join(data.EVAL_TASKS), help="comma-separated subset of the tasks")
    a = ap.parse_args(argv)
    tasks = tuple(t for t in a.tasks.split(",") if t)
    bad = [t for t in tasks if t not in data.EVAL_TASKS]
    if bad or not tasks:
        ap.error(f"--tasks: {bad[0] if bad else '(none)'} is not one of {', '.join(data.EVAL_TASKS)}")
    print(write_tasks(a.out, a.split, a.n, a.seed, tasks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
