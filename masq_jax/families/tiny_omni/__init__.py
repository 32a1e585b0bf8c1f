"""The tiny omni model (docs/tiny_omni.md) as a model family: a checkpoint directory whose
config.json has a ``tiny_omni`` block (an HF Thinker config; the decoder loads through
``masq_jax.models``), with its own word vocabulary and encoders as front end. What a user loads lives
here (``features``, ``model``, ``frontend``); training, data and task scripts are in ``examples/tiny_omni``."""

from __future__ import annotations

from masq_jax.families.base import CheckpointDirFamily

CONFIG_KEY = "tiny_omni"


class TinyOmni(CheckpointDirFamily):
    name = "tiny_omni"
    summary = "a tiny omni checkpoint directory (config.json with a 'tiny_omni' block; checkpoints/tiny-omni)"
    archs = ("qwen2_5_omni_thinker",)
    config_key = CONFIG_KEY

    def frontend(self, spec):
        from masq_jax.families.tiny_omni.frontend import TinyOmniFrontEnd

        return TinyOmniFrontEnd(spec)
