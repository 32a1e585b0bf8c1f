"""The tiny omni model (docs/tiny_omni.md): ``data`` (offline digit tasks), ``model`` (decoder +
encoders, checkpoint I/O), ``train`` (``python -m masq_jax.demos.tiny_omni.train``), ``eval``
(``python -m masq_jax.demos.tiny_omni.eval``: task accuracy by greedy decoding)."""
