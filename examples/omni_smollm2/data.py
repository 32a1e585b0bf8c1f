"""The omni-SmolLM2 tasks, generated offline and deterministically (issue 17).

- ``ocr``: a 4–8 character string of digits and upper-case letters (without I and O), rendered (``render``) ->
  the string; scored by exact match and character error rate.
- ``asr``: 3–6 digits spoken as words ("four two seven", ``speech``) -> the words; word error rate.
- ``match``: an image of a 3–6 digit number and a spoken 3–6 digit number -> "yes" if they are the
  same number, else "no"; the "no" pairs differ in one digit, so the margin is small (both numbers
  belong to the example's split).
- ``copy`` (text only, evaluation only: the LLM is frozen, nothing trains on it): an OCR-style string
  to copy; scored by whether the answer contains it (SmolLM2 wraps it in a sentence).

Splits are by label, not by seed: a label belongs to ``split_of(label)`` (a SHA-256 of it, 80 % train,
10 % calib, 10 % test), and each split's generator draws only its own labels, so no string or number
of the test split is ever seen in training or calibration, and ``split_hashes`` proves it. Within a
split, ``examples(task, split, n, seed)`` is a pure function of its arguments.
"""

from __future__ import annotations

import dataclasses
import hashlib
import string

import numpy as np

from masq_jax.errors import MasqError

TASKS = ("ocr", "asr", "match")  # the trained (media) tasks
EVAL_TASKS = TASKS + ("copy",)
SPLITS = {"train": range(0, 8), "calib": range(8, 9), "test": range(9, 10)}  # buckets of 10
OCR_CHARS = string.digits + "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I or O: DejaVu draws them like 1 and 0
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


class TaskDataError(MasqError):
    """Bad argument to the omni-SmolLM2 task generator."""


@dataclasses.dataclass(frozen=True)
class Example:
    """One task item: the media (``image`` [H, W] float32 and/or ``audio`` [T] float32 at 16 kHz),
    its ``label`` (what decides the split) and the reference ``answer``."""

    task: str
    label: str
    answer: str
    image: np.ndarray | None = None
    audio: np.ndarray | None = None


def split_of(label: str) -> str:
    """The split ``label`` belongs to: its SHA-256 modulo 10 picks a bucket."""
    bucket = int.from_bytes(hashlib.sha256(label.encode()).digest()[:8], "big") % 10
    return next(s for s, r in SPLITS.items() if bucket in r)


def digits_as_words(digits: str) -> str:
    return " ".join(DIGIT_WORDS[int(d)] for d in digits)


def _draw(rng: np.random.Generator, split: str, make) -> str:
    """A label of ``split`` from ``make(rng)`` (rejection: about 1 in 10 draws for calib/test)."""
    while True:
        label = make(rng)
        if split_of(label) == split:
            return label


def _ocr_label(rng):
    return "".join(OCR_CHARS[i] for i in rng.integers(len(OCR_CHARS), size=int(rng.integers(4, 9))))


def _number_label(rng):
    return "".join(str(d) for d in rng.integers(10, size=int(rng.integers(3, 7))))


def _near_misses(digits: str) -> list[str]:
    """Every string of ``digits`` with exactly one position changed to another digit."""
    return [digits[:i] + d + digits[i + 1:] for i in range(len(digits)) for d in string.digits if d != digits[i]]


def example(task: str, split: str, rng: np.random.Generator) -> Example:
    """One example of ``task`` from ``split``, drawn with ``rng``."""
    from examples.omni_smollm2.render import render_text
    from examples.omni_smollm2.speech import speak

    if task == "ocr":
        label = _draw(rng, split, _ocr_label)
        return Example(task, label, label, image=render_text(label, rng))
    if task == "asr":
        label = _draw(rng, split, _number_label)
        words = digits_as_words(label)
        return Example(task, label, words, audio=speak(words, rng))
    if task == "match":
        same = bool(rng.integers(2))
        while True:  # both numbers from the split: the spoken one and, for "no", a near miss of it
            label = _draw(rng, split, _number_label)
            misses = [m for m in _near_misses(label) if split_of(m) == split]
            if same or misses:
                break
        shown = label if same else misses[int(rng.integers(len(misses)))]
        return Example(task, f"{label}|{shown}", "yes" if same else "no",
                       image=render_text(shown, rng), audio=speak(digits_as_words(label), rng))
    if task == "copy":
        label = _draw(rng, split, _ocr_label)
        return Example(task, label, label)
    raise TaskDataError(f"task must be one of {EVAL_TASKS}, got {task!r}")


def examples(task: str, split: str, n: int, seed: int = 0) -> list[Example]:
    """``n`` examples of ``task`` from ``split`` (``train``, ``calib`` or ``test``); a pure function of
    its arguments (the generator is seeded by task, split and ``seed``)."""
    if split not in SPLITS:
        raise TaskDataError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
    if task not in EVAL_TASKS:
        raise TaskDataError(f"task must be one of {EVAL_TASKS}, got {task!r}")
    if n < 0:
        raise TaskDataError(f"n must be >= 0, got {n}")
    key = int.from_bytes(hashlib.sha256(f"{task}/{split}/{seed}".encode()).digest()[:8], "big")
    rng = np.random.default_rng(key)
    return [example(task, split, rng) for _ in range(n)]


def split_hashes(items: list[Example]) -> set[str]:
    """SHA-256 of every number or string the items show or speak (both of a ``match`` pair)."""
    return {hashlib.sha256(part.encode()).hexdigest() for it in items for part in it.label.split("|")}
