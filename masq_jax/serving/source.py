"""Where an export's names and non-decoder files come from: the artefact's source checkpoint.

The decoder tensors keep the source checkpoint's own names (``model.layers.0.self_attn.q_proj`` for
Qwen2 / Llama / a standalone Omni Thinker, ``thinker.model.layers...`` for a full Omni model), found
through the loader's key map (``models.params.hf_rules``); the tensors the decoder does not use
(vision and audio towers, talker) are copied unchanged and listed in the quantization config's
``ignore``; tokenizer and processor files are copied. A GGUF source (or none) gets the Qwen2/Llama
names, and its tokenizer is converted by transformers when that is installed.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Callable

import numpy as np

from masq_jax.serving.fold import ExportError

# Parts of a checkpoint beside the text decoder, left in full precision (compressed-tensors ``ignore``).
FP_PARTS = {"visual": "re:.*visual.*", "audio_tower": "re:.*audio_tower.*", "talker": "re:.*talker.*",
            "token2wav": "re:.*token2wav.*"}
LEAVES = {"w": "weight", "b": "bias"}


@dataclasses.dataclass
class SourceLayout:
    """Names of the decoder tensors, loaders of the copied ones, and the ``ignore`` list."""

    names: dict[tuple, str]  # param path (models.params) -> checkpoint tensor name
    extra: dict[str, Callable[[], np.ndarray]]  # tensors copied as they are (towers, talker)
    ignore: list[str]
    directory: str | None  # the source directory (tokenizer files), None for GGUF / unknown
    gguf: str | None = None

    def module(self, layer: int, linear: str) -> str:
        """``model.layers.3.self_attn.q_proj``: the module name of a decoder linear."""
        return self.names[("layers", linear, "w", layer)].rsplit(".", 1)[0]


def default_names(num_layers: int, prefix: str = "model.") -> dict[tuple, str]:
    """Qwen2 / Llama checkpoint names of every param path."""
    from masq_jax.models.params import _LAYER_SUFFIX

    names = {("embed",): f"{prefix}embed_tokens.weight", ("final_norm",): f"{prefix}norm.weight",
             ("lm_head",): "lm_head.weight"}
    for suffix, (name, leaf) in _LAYER_SUFFIX.items():
        for i in range(num_layers):
            names[("layers", name, leaf, i)] = f"{prefix}layers.{i}." + suffix.replace("\\.", ".")
    return names


def _safetensors_keys(directory: Path) -> dict[str, Path]:
    from safetensors import safe_open

    keys: dict[str, Path] = {}
    for f in sorted(directory.glob("*.safetensors")):
        with safe_open(str(f), "np") as st:
            keys.update({k: f for k in st.keys()})
    return keys


def _loader(path: Path, key: str) -> Callable[[], np.ndarray]:
    def load():
        from safetensors import safe_open

        with safe_open(str(path), "np") as st:
            return st.get_tensor(key)
    return load


def source_layout(source: str | None, arch: str, num_layers: int, multimodal: bool) -> SourceLayout:
    """The layout of the checkpoint an artefact was made from (see the module docstring)."""
    from masq_jax.models.params import hf_rules, map_keys

    src = Path(source) if source else None
    if src is not None and src.is_dir() and any(src.glob("*.safetensors")):
        keys = _safetensors_keys(src)
        mapped, unmatched = map_keys(keys, hf_rules())
        names = {path: key for path, key in mapped.items()}
        if ("embed",) not in names:
            raise ExportError(f"{src}: no embedding tensor found in the source checkpoint")
        prefix = names[("embed",)][: -len("embed_tokens.weight")]
        names.setdefault(("lm_head",), ("thinker." if prefix.startswith("thinker.") else "") + "lm_head.weight")
        used = set(names.values())
        extra = {k: _loader(f, k) for k, f in keys.items() if k not in used and not k.endswith("rotary_emb.inv_freq")}
        parts = [p for p in FP_PARTS if any(re.search(rf"(^|\.){p}\.", k) for k in extra)]
        return SourceLayout(names, extra, ["re:.*lm_head"] + [FP_PARTS[p] for p in parts], str(src))
    if multimodal:
        raise ExportError(f"the source checkpoint {source} (its vision/audio towers go into the export unchanged) is "
                          "not a safetensors directory here; export on a machine that has it")
    gguf = str(src) if src is not None and src.is_file() and src.suffix == ".gguf" else None
    return SourceLayout(default_names(num_layers), {}, ["re:.*lm_head"], None, gguf)


def copy_source_files(layout: SourceLayout, out: Path) -> list[str]:
    """Tokenizer / processor files into ``out``: from the source directory every file beside its
    weights and config (tokenizer, processor, chat template, generation config, an Omni model's
    ``spk_dict.pt``), or converted from a GGUF by transformers; returns the names written
    (``artifact.support.copy_support_files``)."""
    from masq_jax.artifact.support import any_file, copy_support_files

    return copy_support_files(layout.directory or layout.gguf, out, keep=any_file)
