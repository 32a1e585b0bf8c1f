"""Scripts around the two trained demo models, outside the installed package (run them from the
repository root: ``python -m examples.tiny_omni.train``): data generators, training, task writers,
tables and the eSpeak server. What a user loads of those models (their model, checkpoint and
front-end code) is their model family: ``masq_jax.families.tiny_omni`` / ``.omni_smollm2``."""
