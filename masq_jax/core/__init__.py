"""Pure math of the method, float64-tested: arrays in, arrays out, no state, no files.

``quant`` (docs/method.md §1 quantizers, ``QArray``), ``qlinear`` (the one quantized-linear pytree,
§6), ``matmul`` (bf16 tensor-core products at float32 accuracy), ``stats`` (§2), ``smoothing``
(§3-§4: init formula, MAS linear, block loss), ``search`` (the AWQ / MBQ α grid), ``training`` (the
AdamW loop of the vectors), ``cmc`` (§5: whitened low-rank compensation), ``metrics`` (§7).
"""
