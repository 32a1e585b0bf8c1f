"""Quantized-linear kernels: ``qmatmul`` (docs/method.md §6) with XLA, Pallas (Triton) and Mosaic GPU implementations."""

from masq_jax.kernels.api import DEFAULT_GPU_KERNEL, IMPLEMENTATIONS, qmatmul
from masq_jax.kernels.merge import merge_qlinears, split_outputs, tied
from masq_jax.kernels.prepare import KernelConfigError, PreparedQLinear, prepare
from masq_jax.kernels.qmatmul_mosaic import MosaicConfig
from masq_jax.kernels.qmatmul_pallas import Config, default_config

__all__ = ["qmatmul", "prepare", "PreparedQLinear", "Config", "default_config", "KernelConfigError",
           "IMPLEMENTATIONS", "DEFAULT_GPU_KERNEL", "MosaicConfig", "merge_qlinears", "split_outputs", "tied"]
