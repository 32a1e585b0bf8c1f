"""``qmatmul``: the one quantized-linear entry point (docs/method.md §6), with an ``implementation=`` switch.

    y[t] = b + Q_a(x[t] / s_m) · Wqᵀ + [m ≠ text] · (x[t] / s_m) · L_m · R_m,   m = modality_ids[t]

Implementations: ``"xla"`` (reference and fallback, runs everywhere), ``"pallas"`` (Triton kernel on
GPU; Pallas interpret mode elsewhere, slow, for tests), ``"mosaic"`` (Mosaic GPU ``wgmma`` kernel on a
Hopper GPU; Mosaic GPU interpret mode elsewhere, for tests). ``None`` picks ``DEFAULT_GPU_KERNEL`` on a
GPU when the setting has a kernel, XLA otherwise (and for weight-only settings above 64 tokens, where
a fused dequantize + cuBLAS bf16 GEMM wins; measured in docs/kernels.md).
"""

from __future__ import annotations

import functools

import jax

from masq_jax.kernels import merge
from masq_jax.kernels.merge import SWIGLU_ALIGN
from masq_jax.kernels.prepare import FLOAT, GENERIC, KernelConfigError, PreparedQLinear, mode_of, prepare
from masq_jax.kernels.qmatmul_mosaic import MosaicConfig, qmatmul_mosaic
from masq_jax.kernels.qmatmul_pallas import Config, qmatmul_pallas
from masq_jax.kernels.qmatmul_xla import qmatmul_xla_prepared, qmatmul_xla_qlinear
from masq_jax.core.qlinear import QLinear

IMPLEMENTATIONS = ("xla", "pallas", "mosaic")
# The kernel implementation=None uses on a GPU. Stays "pallas" (Triton, measured on an H100) until
# the Mosaic kernel is measured faster on hardware (benchmarks/gpu_run.sh linear / prefill).
DEFAULT_GPU_KERNEL = "pallas"
# implementation=None: W4A16 above this many tokens goes to XLA (at 2048 tokens XLA's dequantize +
# cuBLAS was 2.0-2.3x faster than the kernel on 3B q/gate/down; at 1 and 16 tokens the kernel beats
# it on large linears; 17..2047 not measured).
FLOAT_KERNEL_MAX_TOKENS = 64


def _on_gpu() -> bool:
    return jax.default_backend() == "gpu"


EPILOGUES = (None, "swiglu")


@functools.partial(jax.jit, static_argnames=("implementation", "config", "interpret", "epilogue"))
def _qmatmul_jit(x, modality_ids, qlinear, *, implementation, config, interpret, epilogue):
    if implementation == "xla":
        if isinstance(qlinear, QLinear):
            y = qmatmul_xla_qlinear(x, modality_ids, qlinear)
        else:
            y = qmatmul_xla_prepared(x, modality_ids, qlinear)
        return y if epilogue is None else merge.swiglu(y).astype(x.dtype)
    p = qlinear if isinstance(qlinear, PreparedQLinear) else prepare(qlinear)
    if implementation == "mosaic":
        if not interpret:
            return qmatmul_mosaic(x, modality_ids, p, config=config, swiglu=epilogue == "swiglu")
        from jax.experimental.pallas import mosaic_gpu as plgpu  # noqa: PLC0415 (jax >= 0.11 only)

        with plgpu.force_gpu_interpret_mode(plgpu.InterpretGPUParams()):
            return qmatmul_mosaic(x, modality_ids, p, config=config, swiglu=epilogue == "swiglu")
    return qmatmul_pallas(x, modality_ids, p, config=config, interpret=interpret, swiglu=epilogue == "swiglu")


def qmatmul(
    x: jax.Array,
    modality_ids: jax.Array | None,
    qlinear: QLinear | PreparedQLinear,
    *,
    implementation: str | None = None,
    config: Config | MosaicConfig | None = None,
    interpret: bool | None = None,
    epilogue: str | None = None,
) -> jax.Array:
    """Quantized linear ``[..., in] -> [..., out]`` with per-token modality routing (docs/method.md §6).

    ``modality_ids``: int ``[...]`` matching ``x.shape[:-1]`` (0 text, 1 vision, 2 audio), or ``None``
    when every token is text (decode): then the low-rank branch is not even traced.
    ``qlinear``: a ``QLinear``, or its ``prepare(qlinear)`` layout (prepare once and cache it: with a
    raw ``QLinear`` the Pallas path repacks the weight on every call).
    ``config``: Triton block sizes (``Config``) or Mosaic tiles (``MosaicConfig``); default from a
    shape heuristic.
    ``interpret``: Pallas interpret mode (Triton) / Mosaic GPU interpret mode; default True off GPU.
    ``epilogue="swiglu"``: ``qlinear`` is a merged gate|up linear (``kernels.merge_qlinears(...,
    align=64)``): returns ``silu(g)·u`` ``[..., out/2]`` (the Pallas kernel computes it in its epilogue).
    """
    if implementation is not None and implementation not in IMPLEMENTATIONS:
        raise KernelConfigError(f"implementation must be one of {IMPLEMENTATIONS} or None, got {implementation!r}")
    if not isinstance(qlinear, (QLinear, PreparedQLinear)):
        raise KernelConfigError(f"qlinear must be a QLinear or PreparedQLinear, got {type(qlinear).__name__}")
    k = qlinear.in_features
    if x.shape[-1] != k:
        raise KernelConfigError(f"x has {x.shape[-1]} input features, the linear expects {k}")
    if modality_ids is not None and tuple(modality_ids.shape) != tuple(x.shape[:-1]):
        raise KernelConfigError(
            f"modality_ids shape {tuple(modality_ids.shape)} must equal x.shape[:-1]={tuple(x.shape[:-1])}"
        )
    if epilogue not in EPILOGUES:
        raise KernelConfigError(f"epilogue must be one of {EPILOGUES}, got {epilogue!r}")
    if epilogue == "swiglu" and qlinear.out_features % (2 * SWIGLU_ALIGN):
        raise KernelConfigError(f"epilogue='swiglu' needs a merged gate|up linear (width a multiple of "
                                f"{2 * SWIGLU_ALIGN}, from merge_qlinears(..., align={SWIGLU_ALIGN})), got width "
                                f"{qlinear.out_features}")
    mode = qlinear.mode if isinstance(qlinear, PreparedQLinear) else mode_of(qlinear)
    if implementation is None:
        tokens = x.size // max(k, 1)
        # Weight-only settings are compute-bound above a few dozen tokens: there the bf16 GEMM of
        # XLA (cuBLAS) after a fused dequantize beats a kernel that dequantizes per tile.
        big_float = mode == FLOAT and tokens > FLOAT_KERNEL_MAX_TOKENS
        implementation = DEFAULT_GPU_KERNEL if (_on_gpu() and mode != GENERIC and not big_float) else "xla"
    if implementation in ("pallas", "mosaic") and mode == GENERIC:
        raise KernelConfigError(
            f"the {implementation} qmatmul covers symmetric per-channel weights with abits <= 8 (W8A8, W4A8, W4A6) "
            "and weight-only settings (W4A16); use implementation='xla' for this one"
        )
    want = MosaicConfig if implementation == "mosaic" else Config
    if config is not None and implementation != "xla" and not isinstance(config, want):
        raise KernelConfigError(f"implementation={implementation!r} takes config={want.__name__}(...), "
                                f"got {type(config).__name__}")
    if interpret is None:
        interpret = not _on_gpu()
    kernel = implementation in ("pallas", "mosaic")
    return _qmatmul_jit(x, modality_ids, qlinear, implementation=implementation,
                        config=config if kernel else None,
                        interpret=bool(interpret) if kernel else False, epilogue=epilogue)
