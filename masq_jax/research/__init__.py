"""Research helpers behind the notebooks (outside the quantizer): ``analysis`` — range ratios, the
smoothing-mismatch noise model, SQNR versus CMC rank, effective rank of the cross-modal residual."""
