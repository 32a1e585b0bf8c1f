"""omni-SmolLM2 (issue 17): SmolLM2-135M-Instruct as the Thinker's language model with small trained
vision and audio front-ends, on offline tasks whose metrics move with small errors. Built so far:
``render`` (OCR strings drawn with matplotlib's DejaVu fonts), ``speech`` (eSpeak NG through
``espeakng-loader``), ``data`` (the OCR, ASR and match tasks, split by a hash of each label so the
splits are disjoint by construction)."""
