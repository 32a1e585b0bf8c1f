"""Research helpers (outside the quantizer): ``analysis`` — behind the notebooks: range ratios, the
smoothing-mismatch noise model, SQNR versus CMC rank, effective rank of the cross-modal residual;
``one_linear`` — ``masq demo``: the method on one synthetic two-modality linear."""
