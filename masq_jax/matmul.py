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


@jax.custom_vjp
def grid_matmul(gx: jax.Array, gw: jax.Array) -> jax.Array:
    """``gx @ gwᵀ`` ([T, K] x [N, K] -> [T, N] float32) for integer-valued float operands."""
    return _dot_t(gx.astype(BF16), gw.astype(BF16))


def _grid_fwd(gx, gw):
    return grid_matmul(gx, gw), (gx.astype(BF16), gw.astype(BF16))


def _grid_bwd(res, ct):
    gx, gw = res
    ct = ct.astype(F32)
    return _exact_rhs_dot_t(ct, gw.T), _exact_rhs_dot_t(ct.T, gx.T)


grid_matmul.defvjp(_grid_fwd, _grid_bwd)


@jax.custom_vjp
def split_matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ bᵀ`` ([T, K] x [N, K] -> [T, N] float32) in three bf16 passes (float32-level accuracy)."""
    return _split_dot_t(a.astype(F32), b.astype(F32))


def _split_fwd(a, b):
    return split_matmul(a, b), (a.astype(F32), b.astype(F32))


def _split_bwd(res, ct):
    a, b = res
    ct = ct.astype(F32)
    return _split_dot_t(ct, b.T), _split_dot_t(ct.T, a.T)


split_matmul.defvjp(_split_fwd, _split_bwd)
