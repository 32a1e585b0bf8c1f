"""Kernel-friendly layout of a QLinear, built once and cached by the caller (``prepare``).

What changes relative to ``QLinear`` (whose layout follows the spec, ``[out, in]`` weights):

* weights stay K-major ``[N, K]`` (what Hopper's 8-bit tensor-core instructions need for the B
  operand) and are zero-padded to ``[Np, Kp]`` (``Kp`` a multiple of 256 for large K, ``Np`` a multiple
  of 64), so every in-kernel load has a power-of-two shape;
* 4-bit weights are repacked "half split": byte ``j`` of a row holds element ``j`` in its low nibble
  and element ``j + Kp/2`` in its high nibble. The kernel then multiplies the low nibbles with the
  activation columns ``[0, Kp/2)`` and the high nibbles with ``[Kp/2, Kp)`` — two contiguous slices,
  no interleaving in the kernel and no even/odd split of the activations;
* weight scales become ``[G, Np]`` rows (``G`` groups along K, 1 per output channel), and an
  asymmetric zero point is folded into ``wshift = -zp · scale`` so dequantization is one FMA;
* the low-rank factors are folded onto the raw input, ``L'_m = diag(1/s_m) · L_m`` (docs/method.md §6), and
  concatenated over the non-text modalities: ``lora_l [K, 2·rp]`` (vision | audio), ``lora_r
  [2·rp, Np]``, with the rank zero-padded to a power of two ``rp >= 16``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from masq_jax.core.qlinear import QLinear
from masq_jax.core.quant import int_values
from masq_jax.errors import KernelConfigError
from masq_jax.modality import AUDIO, NUM_MODALITIES, VISION


# Modes of the prepared layout.
INT = "int"  # abits <= 8, symmetric per-output-channel weights: int8 x int8 -> int32
FLOAT = "float"  # abits >= 16: weights dequantized in the kernel, bf16 activations
GENERIC = "generic"  # anything else (e.g. grouped weights with quantized activations): XLA only

MIN_BLOCK = 16  # smallest tile edge Triton's dot accepts


def _round_up(v: int, m: int) -> int:
    return -(-v // m) * m


def _next_pow2(v: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(v, 1))))


def padded_k(k: int, group_size: int | None) -> int:
    """Padded reduction length: a multiple of 256 (of 64 up to 128: a 4-bit row is then a multiple
    of 32 bytes, the smallest K step of an 8-bit ``wgmma``) and of the weight group size."""
    align = 256 if k > 128 else 64
    if group_size is not None:
        align = align * group_size // math.gcd(align, group_size)
    return _round_up(k, align)


def padded_n(n: int) -> int:
    """Padded output width: a multiple of 64 (of 16 up to 32)."""
    return _round_up(n, 64 if n > 32 else MIN_BLOCK)


def padded_rank(rank: int) -> int:
    """Low-rank width inside the kernel: 0, or a power of two >= 16."""
    return 0 if rank == 0 else max(MIN_BLOCK, _next_pow2(rank))


def mode_of(ql: QLinear) -> str:
    """Which kernel family serves this QLinear (see INT / FLOAT / GENERIC)."""
    w = ql.weight
    if ql.abits >= 16:
        return FLOAT
    if w.symmetric and w.group_size is None and w.bits <= 8 and ql.abits <= 8:
        return INT
    return GENERIC


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PreparedQLinear:
    """A QLinear in the layout the kernels read (see module docstring).

    ``w``: ``[Np, Kp]`` (8-bit) or ``[Np, Kp/2]`` (4-bit, half split), int8 when symmetric, uint8 when
    asymmetric. ``wscale``/``wshift``: float32 ``[G, Np]`` (``wshift`` only when asymmetric).
    ``smooth``: float32 ``[3, K]`` (unpadded; the activation pre-pass divides by it exactly like the
    reference). ``lora_l``: ``[K, 2·rp]``; ``lora_r``: ``[2·rp, Np]``. ``bias``: float32 ``[1, Np]``.
    """

    w: jax.Array
    wscale: jax.Array
    wshift: jax.Array | None
    smooth: jax.Array
    lora_l: jax.Array | None
    lora_r: jax.Array | None
    bias: jax.Array | None
    in_features: int = dataclasses.field(metadata=dict(static=True))
    out_features: int = dataclasses.field(metadata=dict(static=True))
    k_pad: int = dataclasses.field(metadata=dict(static=True))
    n_pad: int = dataclasses.field(metadata=dict(static=True))
    rank: int = dataclasses.field(metadata=dict(static=True))
    rank_pad: int = dataclasses.field(metadata=dict(static=True))
    wbits: int = dataclasses.field(metadata=dict(static=True))
    w_symmetric: bool = dataclasses.field(metadata=dict(static=True))
    group_size: int | None = dataclasses.field(metadata=dict(static=True))
    abits: int = dataclasses.field(metadata=dict(static=True))
    act_bound: str = dataclasses.field(metadata=dict(static=True))
    mode: str = dataclasses.field(metadata=dict(static=True))

    @property
    def packed(self) -> bool:
        return self.wbits <= 4


def pack_half_split(q: jax.Array, signed: bool) -> jax.Array:
    """Pack ``[..., Kp]`` integers (Kp even) as ``[..., Kp/2]`` bytes: low nibble j, high j + Kp/2."""
    kh = q.shape[-1] // 2
    q = q.astype(jnp.int32)
    byte = (q[..., :kh] & 0xF) | ((q[..., kh:] & 0xF) << 4)
    if signed:
        return jnp.where(byte >= 128, byte - 256, byte).astype(jnp.int8)
    return byte.astype(jnp.uint8)


def unpack_half_split(p: jax.Array, signed: bool) -> jax.Array:
    """Inverse of ``pack_half_split``: ``[..., Kp]`` int32 values."""
    p = p.astype(jnp.int32)
    if signed:
        p = jnp.where(p < 0, p + 256, p)
    lo, hi = p & 0xF, p >> 4
    if signed:
        lo = jnp.where(lo >= 8, lo - 16, lo)
        hi = jnp.where(hi >= 8, hi - 16, hi)
    return jnp.concatenate([lo, hi], axis=-1)


def weight_int_nk(p: PreparedQLinear) -> jax.Array:
    """The prepared weight's integer values as ``[Np, Kp]`` int32 (padding included)."""
    if p.packed:
        return unpack_half_split(p.w, p.w_symmetric)
    return p.w.astype(jnp.int32)


def prepare(ql: QLinear, *, lora_dtype=jnp.bfloat16) -> PreparedQLinear:
    """Build the kernel layout of ``ql`` (jit-able; do it once per linear and cache the result)."""
    if not isinstance(ql, QLinear):
        raise KernelConfigError(f"prepare expects a QLinear, got {type(ql).__name__}")
    qa = ql.weight
    n, k = qa.shape
    g = qa.group_size
    kp, np_ = padded_k(k, g), padded_n(n)
    q = int_values(qa).astype(jnp.int32)  # [N, K]
    q = jnp.pad(q, ((0, np_ - n), (0, kp - k)))
    if qa.bits <= 4:
        w = pack_half_split(q, qa.symmetric)
    else:
        w = q.astype(jnp.int8 if qa.symmetric else jnp.uint8)
    ngroups = 1 if g is None else kp // g
    scale = qa.scale[..., 0].astype(jnp.float32).T  # [G, N]
    scale = jnp.pad(scale, ((0, ngroups - scale.shape[0]), (0, np_ - n)))
    wshift = None
    if not qa.symmetric:
        zp = qa.zero_point[..., 0].astype(jnp.float32).T
        zp = jnp.pad(zp, ((0, ngroups - zp.shape[0]), (0, np_ - n)))
        wshift = -zp * scale
    r = ql.rank
    rp = padded_rank(r)
    lora_l = lora_r = None
    if r:
        smooth = ql.smooth.astype(jnp.float32)
        ls, rs = [], []
        for m in (VISION, AUDIO):
            lm = ql.lora_l[m].astype(jnp.float32) / smooth[m][:, None]  # diag(1/s_m) L_m
            ls.append(jnp.pad(lm, ((0, 0), (0, rp - r))))
            rs.append(jnp.pad(ql.lora_r[m].astype(jnp.float32), ((0, rp - r), (0, np_ - n))))
        lora_l = jnp.concatenate(ls, axis=1).astype(lora_dtype)
        lora_r = jnp.concatenate(rs, axis=0).astype(lora_dtype)
    bias = None
    if ql.bias is not None:
        bias = jnp.pad(ql.bias.astype(jnp.float32), (0, np_ - n))[None, :]
    assert ql.smooth.shape == (NUM_MODALITIES, k)
    return PreparedQLinear(
        w=w,
        wscale=scale,
        wshift=wshift,
        smooth=ql.smooth.astype(jnp.float32),
        lora_l=lora_l,
        lora_r=lora_r,
        bias=bias,
        in_features=k,
        out_features=n,
        k_pad=kp,
        n_pad=np_,
        rank=r,
        rank_pad=rp,
        wbits=qa.bits,
        w_symmetric=qa.symmetric,
        group_size=g,
        abits=ql.abits,
        act_bound=ql.act_bound,
        mode=mode_of(ql),
    )
