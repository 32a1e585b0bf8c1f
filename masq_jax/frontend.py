"""Front ends: from a prompt (text + media files) to a model's inputs, and from tokens back to text.

``encode(text, images, audios, videos)`` returns one unpadded ``CalibSample`` (token ids or input
embeddings, positions, modality ids) that ends with the generation prompt; ``decode(tokens)`` the
text up to the first end-of-sequence token; ``eos_ids`` the tokens that end an answer.

Each model family builds its own (``ModelFamily.frontend``): a tokenizer and its chat template
(``families.frontends.TextFrontEnd``), a Qwen2.5-Omni / VL checkpoint's processor and encoders
(``families.frontends.MultimodalFrontEnd``), the tiny omni model's and omni-SmolLM2's own.
``frontend_for(spec)`` dispatches; an artefact takes its source model's, or, when that has moved or
gone, one built from the tokenizer files it carries.
"""

from __future__ import annotations

import os

from masq_jax.families import find


def frontend_for(model: str | os.PathLike | None):
    """The front end of any model spec: a checkpoint directory, a .gguf or an artefact (its source model's)."""
    family, spec = find(model)
    own = family.frontend(spec)  # None: the reference model's (an artefact whose source is there)
    return own if own is not None else frontend_for(family.reference(spec))
