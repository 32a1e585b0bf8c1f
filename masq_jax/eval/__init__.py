"""Evaluation against the full-precision model: SQNR per layer × modality (``sqnr``), perplexity
(``perplexity``), task accuracy by generation (``tasks``), activation ranges (``ranges``) and plots
(``plots``). The ``masq eval`` job that loads an artefact is ``calibrate.evaluate``."""
