"""Task accuracy by generation (``masq eval --tasks FILE.jsonl``): the quantized model beside its
full-precision reference, per task and per modality, scored on what each model generates.

A tasks file has one JSON object a line: ``{"task", "text", "images", "audios", "videos", "answer",
"metric"}`` (media paths relative to the file; ``metric`` one of ``exact``, ``contains``, ``wer``,
``cer``, or a list of them: one generation scored several ways, e.g. ``["exact", "cer"]`` for OCR). Prompts go through the reference checkpoint's front end (``masq_jax.frontend``) once and
feed every model (the encoders are never quantized); answers are greedy, up to the end of sequence.

Scoring, after normalisation (lower case, punctuation dropped, white space collapsed): ``exact`` and
``contains`` are accuracies (1 when the prediction equals / contains the answer); ``wer`` and ``cer``
are corpus error rates (word / character edits over reference length, lower is better).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from masq_jax.calib.manifest import read_manifest
from masq_jax.errors import MasqError

METRICS = ("exact", "contains", "wer", "cer")
ACCURACY_METRICS = ("exact", "contains")
TASK_KEYS = ("task", "metric")  # beside the manifest's own keys


@dataclasses.dataclass(frozen=True)
class TaskItem:
    """One example of a tasks file."""

    line: int
    task: str
    text: str
    answer: str
    metrics: tuple[str, ...]
    images: tuple[Path, ...] = ()
    audios: tuple[Path, ...] = ()
    videos: tuple[Path, ...] = ()

    @property
    def modality(self) -> str:
        """What the prompt holds besides text: ``text``, ``vision``, ``audio``, ``video`` or a ``+`` mix."""
        kinds = [k for k, v in (("vision", self.images), ("audio", self.audios), ("video", self.videos)) if v]
        return "+".join(kinds) or "text"


def read_tasks(path: str | Path) -> list[TaskItem]:
    """Validated items of a tasks file: a calibration manifest (``calib.read_manifest``: the same
    keys, paths and line-numbered errors) whose lines also carry ``task``, ``answer`` and ``metric``."""
    items = []
    for e in read_manifest(path, extra_keys=TASK_KEYS, kind="tasks file"):
        where = e.where(path)
        task, metric = e.extra.get("task"), e.extra.get("metric", "exact")
        if not isinstance(task, str) or not task:
            raise MasqError(f"{where}: 'task' must be a non-empty string (the name the table groups by)")
        if e.answer is None:
            raise MasqError(f"{where}: 'answer' must be a string (the reference the prediction is scored on)")
        metrics = tuple(metric) if isinstance(metric, list) else (metric,)
        bad = [m for m in metrics if m not in METRICS]
        if bad or not metrics or len(set(metrics)) != len(metrics):
            raise MasqError(f"{where}: metric {metric!r} must be one of {', '.join(METRICS)} or a list of "
                            "distinct ones")
        items.append(TaskItem(e.line, task, e.text, e.answer, metrics, e.images, e.audios, e.videos))
    return items


# ------------------------------------------------------------------------------------------------
# Scoring.


def write_tasks(out: str | Path, items: Iterable[dict]) -> Path:
    """Write a tasks file and the media it names into directory ``out`` (atomically: ``out.partial``,
    renamed over any old ``out``); returns the file's path. Each item is one line's keys with the media
    as arrays: ``{"task", "text", "answer", "metric", "images": [array], "audios": [array]}``; the k-th
    image of a task's i-th item is saved as ``media/{task}_{i:04d}_image.npy`` (``_image{k}`` for k > 0;
    audio alike), the exact floats a generator made."""
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "media").mkdir(parents=True)
    lines, count = [], {}
    for item in items:
        task = item["task"]
        i = count[task] = count.get(task, -1) + 1
        line = {"task": task, "text": item["text"], "images": [], "audios": [], "answer": item["answer"],
                "metric": item["metric"]}
        for key, kind in (("images", "image"), ("audios", "audio")):
            for k, array in enumerate(item.get(key, ())):
                name = f"media/{task}_{i:04d}_{kind}{k or ''}.npy"
                np.save(tmp / name, array)
                line[key].append(name)
        lines.append(json.dumps(line))
    (tmp / "tasks.jsonl").write_text("\n".join(lines) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out / "tasks.jsonl"


def normalize(text: str) -> str:
    """Lower case, punctuation dropped, white space collapsed."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance between two sequences (insertions, deletions, substitutions)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def score(metric: str, prediction: str, answer: str) -> tuple[float, int]:
    """``(value, weight)``: accuracies are 0/1 with weight 1; error rates are edits with the reference
    length as weight (summed over a task, their ratio is the corpus rate)."""
    p, a = normalize(prediction), normalize(answer)
    if metric == "exact":
        return float(p == a), 1
    if metric == "contains":
        return float(a in p), 1
    ref, hyp = (a.split(), p.split()) if metric == "wer" else (list(a.replace(" ", "")), list(p.replace(" ", "")))
    return float(edit_distance(ref, hyp)), max(len(ref), 1)


def summarize(items: Sequence[TaskItem], predictions: Sequence[str]) -> dict:
    """``{"per_task": {task: {...}}, "per_modality": {modality: {...}}}``, each ``{"metric", "score", "n"}``."""
    out: dict[str, dict] = {"per_task": {}, "per_modality": {}}
    for field, key in (("per_task", lambda it: it.task), ("per_modality", lambda it: it.modality)):
        groups: dict[tuple[str, str], list[tuple[float, int]]] = {}
        for it, pred in zip(items, predictions):
            for metric in it.metrics:
                groups.setdefault((key(it), metric), []).append(score(metric, pred, it.answer))
        metrics_of: dict[str, set[str]] = {}
        for name, metric in groups:
            metrics_of.setdefault(name, set()).add(metric)
        for (name, metric), vals in groups.items():
            label = name if len(metrics_of[name]) == 1 else f"{name} ({metric})"
            total, weight = sum(v for v, _ in vals), sum(w for _, w in vals)
            out[field][label] = {"metric": metric, "score": total / weight, "n": len(vals)}
    return out


# ------------------------------------------------------------------------------------------------
# Generation over a tasks file.


def encode_items(frontend, items: Sequence[TaskItem]) -> list:
    """Each item's prompt as model inputs (one ``CalibSample`` each), through the front end."""
    out = []
    for it in items:
        try:
            out.append(frontend.encode(it.text, it.images, it.audios, it.videos))
        except MasqError as e:
            raise MasqError(f"tasks line {it.line}: {e}") from None
    return out


def batch_prompts(samples: Sequence) -> dict[str, np.ndarray]:
    """Left-pad prompts (``CalibSample``s) to one length: the arrays ``generate`` takes."""
    p = max(s.length for s in samples)
    b = len(samples)
    embeds = samples[0].inputs_embeds is not None
    mask = np.zeros((b, p), bool)
    mid = np.zeros((b, p), np.int32)
    ndim = samples[0].position_ids.ndim
    pos = np.ones((3, b, p) if ndim == 2 else (b, p), np.int32)
    tok = np.zeros((b, p, samples[0].inputs_embeds.shape[-1]) if embeds else (b, p),
                   np.float32 if embeds else np.int32)
    for i, s in enumerate(samples):
        n = s.length
        mask[i, p - n:] = True
        mid[i, p - n:] = s.modality_ids
        tok[i, p - n:] = s.inputs_embeds if embeds else s.input_ids
        if ndim == 2:
            pos[:, i, p - n:] = s.position_ids
        else:
            pos[i, p - n:] = s.position_ids
    key = "inputs_embeds" if embeds else "input_ids"
    return {key: tok, "attention_mask": mask, "position_ids": pos, "modality_ids": mid}


def generate_answers(model, frontend, samples: Sequence, *, max_new_tokens: int = 32, batch_size: int = 16) -> list[str]:
    """Greedy answers of ``model`` to prepared prompts, decoded by the front end."""
    from masq_jax.models.generate import generate

    answers = []
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        out = generate(model, **batch_prompts(chunk), max_new_tokens=max_new_tokens, eos_token_id=frontend.eos_ids or None)
        answers += [frontend.decode(row) for row in out]
    return answers


def evaluate_tasks(models: dict[str, Any], tasks: str | Path, frontend, *, max_new_tokens: int = 32,
                   batch_size: int = 16) -> dict:
    """``{"tasks": path, "results": {name: summary}, "examples": [...]}`` for every model (name ->
    a loaded model); the first is the reference. Examples: the first item of each modality with every
    model's answer."""
    items = read_tasks(tasks)
    samples = encode_items(frontend, items)
    answers = {name: generate_answers(m, frontend, samples, max_new_tokens=max_new_tokens, batch_size=batch_size)
               for name, m in models.items()}
    examples, seen = [], set()
    for k, it in enumerate(items):
        if it.modality not in seen:
            seen.add(it.modality)
            examples.append({"task": it.task, "modality": it.modality, "text": it.text, "answer": it.answer,
                             "media": [str(p.name) for p in it.images + it.audios + it.videos],
                             "generated": {name: a[k] for name, a in answers.items()}})
    return {"tasks": str(tasks), "n": len(items), "max_new_tokens": max_new_tokens,
            "results": {name: summarize(items, a) for name, a in answers.items()}, "examples": examples}
