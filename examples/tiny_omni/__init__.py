"""The tiny omni model (docs/tiny_omni.md): ``data`` (offline digit tasks), ``model`` (decoder +
encoders, checkpoint I/O), ``train`` (``python -m examples.tiny_omni.train``), ``frontend``
(its prompts for generation), ``tasks`` (the test split as a ``masq eval --tasks`` file: task
accuracy by generation), ``ranges`` (activation ranges per modality)."""
