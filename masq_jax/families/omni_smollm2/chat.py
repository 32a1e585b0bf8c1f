"""omni-SmolLM2's prompts in SmolLM2's own chat template: the media placeholders open the user turn,
the question follows; the answer ends with ``<|im_end|>``."""

from __future__ import annotations

import functools

from masq_jax.families.omni_smollm2 import model as M

IM_END, PAD = 2, 0


@functools.lru_cache(maxsize=1)
def tokenizer():
    """SmolLM2's tokenizer (the embedded GGUF's)."""
    from masq_jax.families.frontends import TextFrontEnd
    from masq_jax.families.hf import embedded_model

    return TextFrontEnd(embedded_model()).tokenizer


def token_ids(text: str) -> list[int]:
    """``text``'s token ids, no special tokens added."""
    return tokenizer()(text, add_special_tokens=False)["input_ids"]


@functools.lru_cache(maxsize=1)
def _chat_around() -> tuple[list[int], str]:
    """SmolLM2's chat template around one user message: the head's ids and the tail's text."""
    chat = tokenizer().apply_chat_template([{"role": "user", "content": "\x00"}], tokenize=False,
                                           add_generation_prompt=True)
    head, tail = chat.split("\x00")
    return token_ids(head), tail


def chat_prompt_ids(question: str, n_images: int = 0, n_audios: int = 0) -> list[int]:
    """A user turn of the media placeholders (images, then clips) and ``question``, up to the
    assistant's turn, in SmolLM2's chat template."""
    head, tail = _chat_around()
    return (head + M.media_tokens(True, False) * n_images + M.media_tokens(False, True) * n_audios
            + token_ids(question + tail))
