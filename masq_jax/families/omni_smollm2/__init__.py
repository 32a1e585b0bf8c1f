"""omni-SmolLM2 as a model family: a checkpoint directory whose config.json has an ``omni_smollm2``
entry and its trained encoders; the language model is the embedded SmolLM2-135M-Instruct GGUF in
the Qwen2.5-Omni Thinker layout. What a user loads lives here (``model``, ``checkpoint``, ``chat``,
``frontend``); data generators, training and table scripts are in ``examples/omni_smollm2``."""

from __future__ import annotations

import jax.numpy as jnp

from masq_jax.families.base import CheckpointDirFamily

CONFIG_KEY = "omni_smollm2"


class OmniSmolLM2(CheckpointDirFamily):
    name = "omni_smollm2"
    summary = "an omni-SmolLM2 checkpoint directory (config.json with an 'omni_smollm2' entry)"
    archs = ("qwen2_5_omni_thinker",)
    config_key = CONFIG_KEY

    def config(self, spec):
        return None  # the embedded GGUF's decoder in the Thinker layout: known once loaded

    def load(self, spec, dtype=jnp.float32, stream: bool = False):
        from masq_jax.families.omni_smollm2.checkpoint import load_checkpoint_dir

        return load_checkpoint_dir(spec, dtype, stream)

    def frontend(self, spec):
        from masq_jax.families.omni_smollm2.frontend import OmniSmolLM2FrontEnd

        return OmniSmolLM2FrontEnd(spec)
