"""The front ends that HF directories and GGUF files share: from a prompt (text + media files) to a
model's inputs, and from tokens back to text (``masq_jax.frontend`` describes the protocol).

* ``TextFrontEnd``: a tokenizer (HF directory or GGUF) and its chat template, text only.
* ``MultimodalFrontEnd``: a Qwen2.5-Omni / Qwen2.5-VL checkpoint's own processor and encoders (the
  calib multimodal path: ``calib.multimodal.HFFrontEnd``), chat template applied.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from masq_jax.calib.sample import CalibSample, make_sample
from masq_jax.errors import MasqError
from masq_jax.modality import TEXT

PathLike = str | os.PathLike


def _ids_of(tokenizer: Any, names: Sequence[str]) -> list[int]:
    """Token ids of the special tokens ``names`` the tokenizer knows (unknown ones left out)."""
    out = []
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    for n in names:
        if n in vocab:
            out.append(int(vocab[n]))
    return out


def _generation_eos(model_dir: Path | None) -> list[int]:
    """End-of-sequence ids of a checkpoint's generation_config.json (chat models list several)."""
    p = None if model_dir is None else model_dir / "generation_config.json"
    if p is None or not p.is_file():
        return []
    try:
        eos = json.loads(p.read_text()).get("eos_token_id")
    except (OSError, ValueError):
        return []
    return [int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None]


def _eos_ids(tokenizer: Any, model_dir: Path | None) -> tuple[int, ...]:
    ids = [tokenizer.eos_token_id] if getattr(tokenizer, "eos_token_id", None) is not None else []
    ids += _generation_eos(model_dir) + _ids_of(tokenizer, ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"))
    return tuple(dict.fromkeys(int(i) for i in ids))


class TextFrontEnd:
    """A tokenizer (HF directory or .gguf) and its chat template: text in, text out."""

    def __init__(self, tokenizer_path: PathLike, use_chat_template: bool = True):
        from masq_jax.calib.text import load_tokenizer

        self.tokenizer = load_tokenizer(tokenizer_path)
        path = Path(tokenizer_path)
        self.eos_ids = _eos_ids(self.tokenizer, path if path.is_dir() else None)
        self.use_chat_template = use_chat_template and bool(getattr(self.tokenizer, "chat_template", None))
        self.modalities = ("text",)

    def prompt(self, text: str) -> str:
        if not self.use_chat_template:
            return text
        return self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                  add_generation_prompt=True)

    def encode(self, text: str, images: Sequence[PathLike] = (), audios: Sequence[PathLike] = (),
               videos: Sequence[PathLike] = ()) -> CalibSample:
        if images or audios or videos:
            kinds = [k for k, v in (("images", images), ("audios", audios), ("videos", videos)) if v]
            raise MasqError(f"this model takes text only; drop the {' and '.join(kinds)} or use a multimodal model")
        ids = np.asarray(self.tokenizer(self.prompt(text), add_special_tokens=False)["input_ids"], np.int32)
        return make_sample(np.full(len(ids), TEXT, np.int32), np.arange(len(ids), dtype=np.int32), input_ids=ids)

    def decode(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(until_eos(tokens, self.eos_ids), skip_special_tokens=True)


class MultimodalFrontEnd:
    """A Qwen2.5-Omni / VL checkpoint's processor and encoders (``calib.multimodal.HFFrontEnd``)."""

    def __init__(self, model_dir: PathLike):
        from masq_jax.calib.multimodal import HFFrontEnd

        self.hf = HFFrontEnd(model_dir)
        self.tokenizer = self.hf.processor.tokenizer
        self.eos_ids = _eos_ids(self.tokenizer, Path(model_dir))
        self.modalities = ("text", "vision") + (("audio",) if self.hf.audio_token else ())

    def encode(self, text: str, images: Sequence[PathLike] = (), audios: Sequence[PathLike] = (),
               videos: Sequence[PathLike] = ()) -> CalibSample:
        from masq_jax.calib.manifest import ManifestEntry

        entry = ManifestEntry(0, text, tuple(Path(p) for p in images), tuple(Path(p) for p in audios),
                              tuple(Path(p) for p in videos))
        return self.hf(entry, "prompt", 0)

    def decode(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(until_eos(tokens, self.eos_ids), skip_special_tokens=True)


def until_eos(tokens: Sequence[int], eos_ids: Sequence[int]) -> list[int]:
    out = []
    for t in tokens:
        if int(t) in eos_ids:
            break
        out.append(int(t))
    return out
