"""Uniform affine quantization exactly as docs/method.md §1 (fake quant and real integer storage).

Every quantizer reduces over the *last* axis: per token for activations ``[tokens, in]``, per output
channel for weights ``[out, in]``, per contiguous group of ``group_size`` input channels when grouped.
``fake_quant`` (quantize-then-dequantize, differentiable) and ``dequantize(quantize(x))`` share the
same arithmetic, so the simulated model and the stored integer model agree bit for bit.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from masq_jax.errors import QuantConfigError

# Named clamps of docs/method.md §1.
SCALE_MIN = 1e-5
SCALE_MAX = 1e4
MIN_BITS = 2
IDENTITY_BITS = 16  # bits >= 16 means "not quantized"

# docs/method.md §1: the symmetric grid is the restricted one (±qmax, divisor qmax). Some JAX libraries (qwix)
# divide by qmax + 0.5 and use the full signed range [-(qmax+1), qmax]: a different quantizer.
Bound = Literal["qmax", "qmax+0.5"]
SPEC_BOUND: Bound = "qmax"


def validate_bits(bits: int, name: str = "bits") -> int:
    """Return ``bits`` if it is an integer in 2..16 (16 and above means 'not quantized')."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise QuantConfigError(f"{name} must be an integer in {MIN_BITS}..{IDENTITY_BITS}, got {bits!r}")
    if bits < MIN_BITS or bits > IDENTITY_BITS:
        raise QuantConfigError(
            f"{name}={bits} is outside {MIN_BITS}..{IDENTITY_BITS} (16 means not quantized)"
        )
    return int(bits)


def _validate_bound(bound: str) -> None:
    if bound not in ("qmax", "qmax+0.5"):
        raise QuantConfigError(f"bound must be 'qmax' (the reference's) or 'qmax+0.5', got {bound!r}")


def _validate_group(last_dim: int, group_size: int | None) -> None:
    if group_size is None:
        return
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size <= 0:
        raise QuantConfigError(f"group_size must be a positive integer or None, got {group_size!r}")
    if last_dim % group_size:
        raise QuantConfigError(
            f"group_size={group_size} does not divide the last axis ({last_dim}); "
            f"use a divisor of {last_dim} or None"
        )


def symmetric_range(bits: int, bound: Bound = SPEC_BOUND) -> tuple[float, int, int]:
    """(divisor, qmin, qmax) of the symmetric grid for ``bits`` under ``bound``."""
    qmax = 2 ** (bits - 1) - 1
    if bound == "qmax":
        return float(qmax), -qmax, qmax
    return qmax + 0.5, -qmax - 1, qmax


@jax.custom_jvp
def round_ste(x: jax.Array) -> jax.Array:
    """Round half to even in the forward pass; identity gradient (straight-through estimator)."""
    return jnp.round(x)


@round_ste.defjvp
def _round_ste_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return jnp.round(x), dx


def _grouped(x: jax.Array, group_size: int | None) -> jax.Array:
    if group_size is None:
        return x[..., None, :]
    return x.reshape(*x.shape[:-1], x.shape[-1] // group_size, group_size)


def _params(xg: jax.Array, bits: int, symmetric: bool, bound: Bound):
    """Scale and zero point per group (the last axis of ``xg`` is reduced), differentiable in x."""
    if symmetric:
        divisor, qmin, qmax = symmetric_range(bits, bound)
        absmax = jnp.max(jnp.abs(xg), axis=-1, keepdims=True)
        scale = jnp.clip(absmax / divisor, SCALE_MIN, SCALE_MAX)
        return scale, None, qmin, qmax
    levels = 2**bits - 1
    xmax = jnp.max(xg, axis=-1, keepdims=True)
    xmin = jnp.min(xg, axis=-1, keepdims=True)
    scale = jnp.clip((xmax - xmin) / levels, SCALE_MIN, SCALE_MAX)
    zero_point = jax.lax.stop_gradient(jnp.round(-xmin / scale))
    return scale, zero_point, 0, levels


def _clip_ste(q, qmin, qmax):
    """``clip(q, qmin, qmax)`` whose gradient is 1 on the closed range and 0 outside it.

    ``jnp.clip`` splits the gradient 0.5/0.5 where ``q`` equals a bound, and rounded values sit on
    the bound exactly (the absmax element, the asymmetric minimum): PyTorch's clamp (the reference)
    passes the full gradient there.
    """
    outside = (q < qmin) | (q > qmax)
    return jnp.where(outside, jax.lax.stop_gradient(jnp.clip(q, qmin, qmax)), q)


def _integer_grid(xg, scale, zero_point, qmin, qmax):
    q = round_ste(xg / scale)
    if zero_point is not None:
        q = q + zero_point
    return _clip_ste(q, qmin, qmax)


def _dequant_grid(q, scale, zero_point):
    if zero_point is not None:
        q = q - zero_point
    return q * scale


def fake_quant(
    x: jax.Array,
    bits: int,
    *,
    symmetric: bool = True,
    group_size: int | None = None,
    bound: Bound = SPEC_BOUND,
) -> jax.Array:
    """Quantize then dequantize ``x`` over its last axis (docs/method.md §1); identity for ``bits >= 16``.

    Rounding is straight-through; the dynamic scale is not stopped, so gradients also reach the
    absmax (or min/max) elements. The zero point carries no gradient.
    """
    bits = validate_bits(bits)
    _validate_bound(bound)
    if bits >= IDENTITY_BITS:
        return x
    _validate_group(x.shape[-1], group_size)
    grid, scale = _centred_grid(_grouped(x, group_size), bits, symmetric, bound)
    return (grid * scale).reshape(x.shape).astype(x.dtype)


def _centred_grid(xg: jax.Array, bits: int, symmetric: bool, bound: Bound) -> tuple[jax.Array, jax.Array]:
    """``(q - zp, scale)`` per group of ``xg``'s last axis: ``grid * scale`` is the fake-quant value."""
    scale, zp, qmin, qmax = _params(xg, bits, symmetric, bound)
    q = _integer_grid(xg, scale, zp, qmin, qmax)
    return (q if zp is None else q - zp), scale


def fake_quant_grid(
    x: jax.Array,
    bits: int,
    *,
    symmetric: bool = True,
    bound: Bound = SPEC_BOUND,
) -> tuple[jax.Array, jax.Array]:
    """``(grid, scale)`` with ``grid * scale == fake_quant(x, bits)`` (one group per row, last axis).

    ``grid`` holds the centred integer values ``q - zp`` as float32 (|grid| <= 2^bits - 1, exact in
    bfloat16 for bits <= 8) and ``scale`` is ``[..., 1]``; both carry fake_quant's gradients (STE
    rounding, differentiable scale). Lets a matmul of two fake-quantized operands run on the integer
    grid in bfloat16 with float32 accumulation, then scale: exact products, tensor-core speed.
    """
    bits = validate_bits(bits)
    _validate_bound(bound)
    if bits >= IDENTITY_BITS:
        raise QuantConfigError("fake_quant_grid needs bits < 16 (16 means not quantized)")
    return _centred_grid(x.astype(jnp.float32), bits, symmetric, bound)


# ----------------------------------------------------------------------------------------------
# Real integer storage.


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class QArray:
    """Integer values + per-group scale (+ zero point) of an array quantized over its last axis.

    ``qvalue``: int8 ``[..., K]``, or for ``bits <= 4`` two values packed per byte along the last
    axis, ``[..., ceil(K/2)]`` (element ``2j`` in the low nibble, ``2j+1`` in the high nibble; int8 with
    sign-extending nibbles when symmetric, uint8 when asymmetric). ``scale``/``zero_point``:
    float32 ``[..., G, 1]`` with ``G = K // group_size`` (``G = 1`` without groups).
    """

    qvalue: jax.Array
    scale: jax.Array
    zero_point: jax.Array | None
    bits: int = dataclasses.field(metadata=dict(static=True))
    symmetric: bool = dataclasses.field(metadata=dict(static=True))
    group_size: int | None = dataclasses.field(metadata=dict(static=True))
    shape: tuple[int, ...] = dataclasses.field(metadata=dict(static=True))
    bound: str = dataclasses.field(default=SPEC_BOUND, metadata=dict(static=True))

    @property
    def packed(self) -> bool:
        return self.bits <= 4

    @property
    def dtype(self):
        return self.scale.dtype


def pack_int4(q: jax.Array, signed: bool) -> jax.Array:
    """Pack integer values in [-8, 7] (signed) or [0, 15] along the last axis, two per byte."""
    if q.shape[-1] % 2:
        q = jnp.concatenate([q, jnp.zeros(q.shape[:-1] + (1,), q.dtype)], axis=-1)
    q = q.astype(jnp.int32)
    lo, hi = q[..., 0::2], q[..., 1::2]
    byte = (lo & 0xF) | ((hi & 0xF) << 4)
    if signed:
        return jnp.where(byte >= 128, byte - 256, byte).astype(jnp.int8)
    return byte.astype(jnp.uint8)


def unpack_int4(packed: jax.Array, length: int, signed: bool) -> jax.Array:
    """Inverse of ``pack_int4``: int8 values ``[..., length]``."""
    if signed:
        p = packed.astype(jnp.int8)
        lo = jnp.left_shift(p, 4) >> 4  # arithmetic shift sign-extends the low nibble
        hi = p >> 4
    else:
        p = packed.astype(jnp.uint8)
        lo, hi = p & 0xF, p >> 4
    out = jnp.stack([lo, hi], axis=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)
    return out[..., :length].astype(jnp.int8)


def quantize(
    x: jax.Array,
    bits: int,
    *,
    symmetric: bool = True,
    group_size: int | None = None,
    bound: Bound = SPEC_BOUND,
) -> QArray:
    """Quantize ``x`` over its last axis to a ``QArray`` (2 <= bits <= 8)."""
    bits = validate_bits(bits)
    _validate_bound(bound)
    if bits > 8:
        raise QuantConfigError(f"quantize stores at most 8 bits, got bits={bits}; use fake_quant above 8")
    _validate_group(x.shape[-1], group_size)
    xg = _grouped(x, group_size)
    scale, zp, qmin, qmax = _params(xg, bits, symmetric, bound)
    q = _integer_grid(xg, scale, zp, qmin, qmax).reshape(x.shape)
    if bits <= 4:
        qvalue = pack_int4(q.astype(jnp.int32), signed=symmetric)
    else:
        qvalue = q.astype(jnp.int8 if symmetric else jnp.uint8)
    return QArray(
        qvalue=qvalue,
        scale=scale.astype(jnp.promote_types(scale.dtype, jnp.float32)),
        zero_point=None if zp is None else zp.astype(jnp.promote_types(scale.dtype, jnp.float32)),
        bits=bits,
        symmetric=symmetric,
        group_size=group_size,
        shape=tuple(x.shape),
        bound=bound,
    )


def int_values(qa: QArray) -> jax.Array:
    """The unpacked integer grid values, int8 for signed and int16 for unsigned ``[*shape]``."""
    if qa.packed:
        q = unpack_int4(qa.qvalue, qa.shape[-1], qa.symmetric)
        return q if qa.symmetric else q.astype(jnp.int16)
    return qa.qvalue if qa.symmetric else qa.qvalue.astype(jnp.int16)


def dequantize(qa: QArray, dtype=None) -> jax.Array:
    """Float values of a ``QArray``; equals ``fake_quant`` of the original array bit for bit."""
    q = int_values(qa).astype(qa.scale.dtype)
    qg = _grouped(q, qa.group_size)
    out = _dequant_grid(qg, qa.scale, qa.zero_point).reshape(qa.shape)
    return out if dtype is None else out.astype(dtype)


# ----------------------------------------------------------------------------------------------
# One quantizer as a value.


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    """One uniform quantizer (docs/method.md §1): ``bits`` (>= 16: identity), symmetric or affine,
    per row or per ``group_size`` contiguous inputs, and the symmetric ``bound``."""

    bits: int
    symmetric: bool = True
    group_size: int | None = None
    bound: str = SPEC_BOUND

    @property
    def quantizes(self) -> bool:
        return self.bits < IDENTITY_BITS

    def fake_quant(self, x):
        """Quantize-then-dequantize ``x`` over its last axis (``core.quant.fake_quant``)."""
        return fake_quant(x, self.bits, symmetric=self.symmetric, group_size=self.group_size, bound=self.bound)

    def quantize(self, x):
        """Integer storage of ``x`` (``core.quant.quantize`` -> ``QArray``)."""
        return quantize(x, self.bits, symmetric=self.symmetric, group_size=self.group_size, bound=self.bound)
