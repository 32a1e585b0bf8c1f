"""``a @ bᵀ`` on bfloat16 tensor cores with float32-level accuracy, forward and backward.

MAS learns smoothing vectors whose gradient is a small difference of large terms (without
quantization the output does not depend on ``s`` at all), so plain bf16 products — what the
reference trains with — moved it by 1–14 % on a test linear. Two exact-enough forms instead:

* ``grid_matmul``: both operands hold small integers (fake-quant grids, |v| <= 255) — exact in bf16,
  so the forward is one bf16 pass with float32 accumulation; the backward splits the float32
  cotangent into bf16 high and low parts (two passes per product).
* ``split_matmul``: general float32 operands, three bf16 passes (``hi·hi + hi·lo + lo·hi``) in both
  directions (W4A16, group-wise weights or unquantized activations).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

BF16 = jnp.bfloat16
F32 = jnp.float32


def _dot_t(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ bᵀ`` of bf16 operands, accumulated in float32."""
    return jnp.dot(a, b.T, preferred_element_type=F32)


def _split(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """bf16 high and low parts with ``hi + lo`` equal to ``a`` to about 2^-16 relative."""
    hi = a.astype(BF16)
    return hi, (a - hi.astype(F32)).astype(BF16)


def _split_dot_t(a: jax.Array, b: jax.Array) -> jax.Array:
    a_hi, a_lo = _split(a)
    b_hi, b_lo = _split(b)
    return _dot_t(a_hi, b_hi) + (_dot_t(a_hi, b_lo) + _dot_t(a_lo, b_hi))


def _exact_rhs_dot_t(a: jax.Array, b_exact: jax.Array) -> jax.Array:
    """``a @ bᵀ`` where ``b`` is exactly representable in bf16: two passes."""
    a_hi, a_lo = _split(a)
    return _dot_t(a_hi, b_exact) + _dot_t(a_lo, b_exact)


def _custom_matmul(forward, backward, keep_dtype):
    """``a @ bᵀ`` computed by ``forward``, with a custom VJP whose two cotangent products use
    ``backward`` (operands saved in ``keep_dtype``)."""

    @jax.custom_vjp
    def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
        return forward(a, b)

    def fwd(a, b):
        return forward(a, b), (a.astype(keep_dtype), b.astype(keep_dtype))

    def bwd(res, ct):
        a, b = res
        ct = ct.astype(F32)
        return backward(ct, b.T), backward(ct.T, a.T)

    matmul.defvjp(fwd, bwd)
    return matmul


# ``gx @ gwᵀ`` ([T, K] x [N, K] -> [T, N] float32) for integer-valued float operands: one exact pass.
grid_matmul = _custom_matmul(lambda a, b: _dot_t(a.astype(BF16), b.astype(BF16)), _exact_rhs_dot_t, BF16)
# ``a @ bᵀ`` ([T, K] x [N, K] -> [T, N] float32) in three bf16 passes (float32-level accuracy).
split_matmul = _custom_matmul(lambda a, b: _split_dot_t(a.astype(F32), b.astype(F32)), _split_dot_t, F32)
