"""Quantized-linear kernels: ``qmatmul`` (docs/method.md §6) with XLA and Pallas (Triton) implementations."""

from masq_jax.kernels.api import IMPLEMENTATIONS, qmatmul
from masq_jax.kernels.merge import merge_qlinears, split_outputs, tied
from masq_jax.kernels.prepare import KernelConfigError, PreparedQLinear, prepare
from masq_jax.kernels.qmatmul_pallas import Config, default_config

__all__ = ["qmatmul", "prepare", "PreparedQLinear", "Config", "default_config", "KernelConfigError",
           "IMPLEMENTATIONS", "merge_qlinears", "split_outputs", "tied"]
