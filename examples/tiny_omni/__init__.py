"""The tiny omni model's scripts (docs/tiny_omni.md): ``data`` (offline digit tasks), ``train``
(``python -m examples.tiny_omni.train``: training, FP accuracy, calib/test sets), ``tasks`` (the test
split as a ``masq eval --tasks`` file: task accuracy by generation), ``ranges`` (activation ranges
per modality). The model, its vocabulary and front end: ``masq_jax.families.tiny_omni``."""
