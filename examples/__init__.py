"""Demo models and data, outside the quantizer: ``toy`` (random decoders of real or tiny sizes),
``one_linear`` (``masq demo``: the method on one synthetic linear), ``tiny_omni`` (our trained tiny
Qwen2.5-Omni-Thinker-shaped model with vision and audio encoders: data, model, training, task eval)."""
