"""Quantization methods, one unit each behind one protocol (``base.Method``), found by name through
``registry``: rtn, smoothquant, awq, mbq, mas, masquant, smoothquant_pm."""

from masq_jax.methods.base import Method
from masq_jax.methods.registry import get, names

__all__ = ["Method", "get", "names"]
