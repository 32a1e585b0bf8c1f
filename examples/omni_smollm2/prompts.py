"""Prompts of the omni-SmolLM2 tasks (the chat template itself: ``masq_jax.families.omni_smollm2.chat``);
teacher-forced batches carry the answer and ``<|im_end|>``."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from examples.omni_smollm2 import data
from masq_jax.families.omni_smollm2 import model as M
from masq_jax.families.omni_smollm2.chat import IM_END, PAD, chat_prompt_ids, token_ids as _ids, tokenizer  # noqa: F401

QUESTIONS = {
    "ocr": "What text is in the image?",
    "asr": "Transcribe the spoken digits.",
    "match": "Is the number spoken in the audio the number shown in the image? Answer yes or no.",
    "copy": 'Copy this text exactly: "{label}"',  # SmolLM2 FP: the string in its answer 67 % (12 probes)
}
MEDIA = {"ocr": (True, False), "asr": (False, True), "match": (True, True), "copy": (False, False)}
MAX_ANSWER = {"ocr": 12, "asr": 16, "match": 3}  # answer tokens + <|im_end|>, padded to this


def question(item: data.Example) -> str:
    """The user's question of one example (the copy task's names its string)."""
    return QUESTIONS[item.task].format(label=item.label)


@functools.lru_cache(maxsize=None)
def prompt_ids(task: str) -> tuple[int, ...]:
    """The prompt of ``task`` up to the assistant's turn (the same for every example of a task)."""
    img, aud = MEDIA[task]
    return tuple(chat_prompt_ids(QUESTIONS[task], int(img), int(aud)))


@dataclasses.dataclass(frozen=True)
class Batch:
    """Teacher-forced examples of one task: ``ids`` [B, P + A] (prompt, answer, ``<|im_end|>``, pads),
    ``targets`` [B, A] and ``mask`` [B, A] of the answer part, ``positions`` [3, B, P + A], media."""

    task: str
    ids: np.ndarray
    targets: np.ndarray
    mask: np.ndarray
    positions: np.ndarray
    patches: np.ndarray | None
    mel: np.ndarray | None

    @property
    def prompt_len(self) -> int:
        return self.ids.shape[1] - self.targets.shape[1]


def teacher_forced(cfg, items: list[data.Example]) -> Batch:
    """One task's examples as a training batch (answers longer than ``MAX_ANSWER`` are an error)."""
    task = items[0].task
    prompt, a = list(prompt_ids(task)), MAX_ANSWER[task]
    rows, targets, mask = [], [], []
    for it in items:
        ans = _ids(it.answer) + [IM_END]
        if len(ans) > a:
            raise data.TaskDataError(f"answer {it.answer!r} is {len(ans)} tokens, more than {a}")
        pad = [PAD] * (a - len(ans))
        rows.append(prompt + ans + pad)
        targets.append(ans + pad)
        mask.append([1] * len(ans) + [0] * len(pad))
    ids = np.asarray(rows, np.int32)
    img, aud = MEDIA[task]
    return Batch(task, ids, np.asarray(targets, np.int32), np.asarray(mask, np.float32), M.positions(cfg, ids),
                 np.stack([M.image_patches(it.image) for it in items]) if img else None,
                 np.stack([M.log_mel(it.audio) for it in items]) if aud else None)
