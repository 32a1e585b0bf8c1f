"""The tiny omni model (docs/tiny_omni.md) as a model family: a checkpoint directory whose
config.json has a ``tiny_omni`` block (an HF Thinker config; the decoder loads through
``masq_jax.models``), with its own word vocabulary and encoders as front end. What a user loads lives
here (``features``, ``model``, ``frontend``); training, data and task scripts are in ``examples/tiny_omni``."""

from __future__ import annotations

import jax.numpy as jnp

from masq_jax.families.base import ModelFamily, read_json

CONFIG_KEY = "tiny_omni"


class TinyOmni(ModelFamily):
    name = "tiny_omni"
    summary = "a tiny omni checkpoint directory (config.json with a 'tiny_omni' block; checkpoints/tiny-omni)"
    archs = ("qwen2_5_omni_thinker",)

    def recognise(self, spec):
        cfg = read_json(spec) if spec else None
        return cfg is not None and CONFIG_KEY in cfg

    def load(self, spec, dtype=jnp.float32, stream: bool = False):
        from masq_jax.models import load_params

        return load_params(spec, dtype, stream=stream)

    def frontend(self, spec):
        from masq_jax.families.tiny_omni.frontend import TinyOmniFrontEnd

        return TinyOmniFrontEnd(spec)
