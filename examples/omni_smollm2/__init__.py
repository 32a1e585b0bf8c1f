"""omni-SmolLM2's scripts (issue 17): SmolLM2-135M-Instruct as the Thinker's language model with small
trained vision and audio front-ends, on offline tasks whose metrics move with small errors:
``render`` (OCR strings drawn with matplotlib's DejaVu fonts), ``speech`` (eSpeak NG through
``espeakng-loader``, served by ``_espeak_server``), ``data`` (the OCR, ASR and match tasks, split by a
hash of each label so the splits are disjoint by construction), ``prompts``, ``calibset``,
``pretrain`` / ``train``, ``tasks``, ``table``, ``gap``. The model, checkpoint format and front end:
``masq_jax.families.omni_smollm2``."""
