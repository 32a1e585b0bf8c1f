"""Evaluation against the full-precision model: SQNR per layer × modality (``sqnr``), perplexity
(``perplexity``), the ``masq eval`` job (``report``) and its plots (``plots``)."""
