"""Pallas (Triton backend) low-bit GEMM with the fused low-rank epilogue and per-token routing.

One kernel family over a ``PreparedQLinear`` (see ``prepare.py`` for the layout):

* ``INT`` mode (W8A8, W4A8, W4A6): int8 activations (quantized per token by the fused XLA pre-pass,
  which also computes the folded low-rank down-projection) times int8 weights — 4-bit weights are
  unpacked in registers from the half-split bytes by two shifts — accumulated in int32, scaled by
  ``s_a[t] · s_w[n]`` in the epilogue.
* ``FLOAT`` mode (W4A16 and other weight-only settings): bf16 smoothed activations times weights
  dequantized in the kernel (``q · scale + shift``, one group per K block), float32 accumulation.

The epilogue adds the bias and, per M tile, ``d_vision · R_vision`` only if the tile holds a vision
token and ``d_audio · R_audio`` only if it holds an audio token (``lax.cond``): in a modality-sorted
layout text tiles pay nothing for the branch, mixed tiles pay one small dot of rank ``rp``.

``split_k > 1`` (decode) splits the K loop over a third grid axis and writes partial accumulators;
the XLA epilogue then sums them (exactly, in int32) and applies scales, bias and the branch.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

try:  # jax 0.10 and 0.11 both ship it (deprecated in 0.11 in favour of Mosaic GPU, still present).
    from jax.experimental.pallas import triton as pltriton
except ImportError:  # pragma: no cover - depends on the jax build
    pltriton = None

from masq_jax.kernels import merge
from masq_jax.kernels.merge import SWIGLU_ALIGN
from masq_jax.kernels.prepare import (
    FLOAT,
    INT,
    KernelConfigError,
    PreparedQLinear,
    _round_up,
    unpack_half_split,
)
from masq_jax.kernels.qmatmul_xla import _flatten, epilogue_xla, prepass  # noqa: F401 (prepass: benchmarks)
from masq_jax.modality import AUDIO, VISION

_SQUEEZED = pl.Squeezed() if hasattr(pl, "Squeezed") else None


@dataclasses.dataclass(frozen=True)
class Config:
    """Block sizes and Triton launch parameters of the GEMM.

    ``block_k`` counts K rows of the weight per loop step: int8 elements for 8-bit weights, packed
    bytes (covering ``2 · block_k`` elements) for 4-bit ones. Every size is a power of two >= 16;
    the kernel shrinks ``block_n``/``block_k`` to the largest power of two dividing the padded dims.
    """

    block_m: int = 128
    block_n: int = 128
    block_k: int = 128
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 3
    # 4-bit weights with 8-bit activations: unpack the weight to int8 in an XLA pre-pass and run the
    # 8-bit kernel. Pays K·N bytes of transient memory traffic per call, which large M amortizes;
    # the in-kernel unpack (register shifts + a shared-memory round trip per K step) costs more there.
    weight_prepass: bool = False
    # Low-rank epilogue: skip a modality's up-projection on M tiles without a token of it
    # (lax.cond per tile); False adds one [bm, 2·rp] x [2·rp, bn] dot on every tile instead.
    lora_tile_skip: bool = True

    def __post_init__(self):
        for name in ("block_m", "block_n", "block_k"):
            v = getattr(self, name)
            if v < 16 or v & (v - 1):
                raise KernelConfigError(f"Config.{name}={v} must be a power of two >= 16")
        if self.split_k < 1:
            raise KernelConfigError(f"Config.split_k={self.split_k} must be >= 1")


NUM_SMS_HINT = 132  # H100 SXM; only used to size decode split-K


def _largest_pow2_divisor(n: int, cap: int) -> int:
    b = cap
    while b > 16 and n % b:
        b //= 2
    return b


def default_config(m: int, p: PreparedQLinear, swiglu: bool = False) -> Config:
    """Heuristic block sizes: decode (m <= 16) splits K to fill the GPU; prefill uses 128x128 tiles
    and smaller ones when the grid would leave SMs idle.

    ``swiglu`` (a merged gate|up linear with the SwiGLU epilogue): each program holds two
    accumulators (gate and up tile) and loads two weight tiles per K step, so ``block_n`` is halved
    (same registers as one ``[bm, bn]`` accumulator: no spills) and W4A16 keeps two pipeline stages
    (its dequantized bf16 tiles would otherwise overflow the 227 KiB of shared memory at bm = 128).
    """
    cfg = _default_config(m, p)
    if not swiglu or cfg.split_k > 1:  # split-K partials stay full width: no second accumulator
        return cfg
    bn = max(32, cfg.block_n // 2)
    stages = 2 if p.mode == FLOAT else cfg.num_stages
    return dataclasses.replace(cfg, block_n=bn, num_stages=stages)


def _default_config(m: int, p: PreparedQLinear) -> Config:
    np_ = p.n_pad
    kw = p.k_pad // 2 if p.packed else p.k_pad
    if m <= 16:
        bn = _largest_pow2_divisor(np_, 64)
        bk = _largest_pow2_divisor(kw, 256)
        nk = kw // bk
        tiles = np_ // bn
        split = max(1, min(nk, -(-2 * NUM_SMS_HINT // tiles)))
        return Config(block_m=16, block_n=bn, block_k=bk, split_k=split, num_warps=4, num_stages=3)
    prepass_w = p.mode == INT and p.packed and m >= 256
    wide = p.mode == FLOAT or (p.mode == INT and not p.packed) or prepass_w
    bm = 128 if m >= 128 else (64 if m > 32 else 32)
    bn = _largest_pow2_divisor(np_, 256 if p.mode == FLOAT else 128)
    while bm > 64 and (-(-m // bm)) * (np_ // bn) < NUM_SMS_HINT:
        bm //= 2
    while bn > 64 and (-(-m // bm)) * (np_ // bn) < NUM_SMS_HINT:
        bn //= 2
    if p.mode == INT and wide:  # 8-bit weights in the kernel (stored, or unpacked by the pre-pass)
        bk = _largest_pow2_divisor(p.k_pad, 128)
        return Config(block_m=bm, block_n=bn, block_k=bk, num_warps=4, num_stages=3,
                      weight_prepass=prepass_w)
    if p.mode == INT:
        bk = _largest_pow2_divisor(kw, 64)
        return Config(block_m=bm, block_n=bn, block_k=bk, num_warps=4, num_stages=4)
    bk = _largest_pow2_divisor(kw, 64)
    return Config(block_m=bm, block_n=bn, block_k=bk, num_warps=8 if bn >= 256 else 4, num_stages=3)


def _gemm_kernel(*refs, mode, packed, signed, nk, bk, kh, group, has_shift, has_bias, lora_rp,
                 n_split, lora_skip=True, halves=1):
    """One ``[bm, bn]`` output tile. ``halves=2`` (the SwiGLU epilogue of a merged gate|up linear):
    every per-column operand comes twice, for the gate tile and the up tile of the same columns; both
    accumulate from the same activation loads and the tile stores ``silu(g)·u``."""
    it = iter(refs)
    a_ref = next(it)
    sa_ref = next(it) if mode == INT else None
    w_refs = [next(it) for _ in range(halves)]
    ws_refs = [next(it) for _ in range(halves)]
    wsh_refs = [next(it) for _ in range(halves)] if has_shift else [None] * halves
    b_refs = [next(it) for _ in range(halves)] if has_bias else [None] * halves
    if lora_rp:
        mid_ref, d_ref = next(it), next(it)
        r_refs = [next(it) for _ in range(halves)]
    o_ref = next(it)

    bm = a_ref.shape[0]
    bn = w_refs[0].shape[0]
    acc_dtype = jnp.int32 if mode == INT else jnp.float32
    if n_split > 1:
        s = pl.program_id(2)
        k_lo = s * nk // n_split
        k_hi = (s + 1) * nk // n_split
    else:
        k_lo, k_hi = 0, nk

    def unpack(pw):
        if signed:  # sign-extending nibbles
            lo = jax.lax.shift_right_arithmetic(jax.lax.shift_left(pw, jnp.int8(4)), jnp.int8(4))
            hi = jax.lax.shift_right_arithmetic(pw, jnp.int8(4))
        else:
            lo = jax.lax.bitwise_and(pw, jnp.uint8(15))
            hi = jax.lax.shift_right_logical(pw, jnp.uint8(4))
        return lo, hi

    def deq(qv, k0, ws_ref, wsh_ref):  # [bn, bk] integers -> bf16 weights; the block lies inside one group
        g = 0 if group is None else jax.lax.div(k0, group)
        w = qv.astype(jnp.float32) * ws_ref[pl.ds(g, 1), :].T
        if has_shift:
            w = w + wsh_ref[pl.ds(g, 1), :].T
        return w.astype(jnp.bfloat16)

    def dot_nt(a, w, acc_t):  # a [bm, bk] . w [bn, bk]^T: both operands K-major
        return jax.lax.dot_general(a, w, (((1,), (1,)), ((), ())), preferred_element_type=acc_t)

    def step(acc, k0, a_lo, a_hi, w_ref, ws_ref, wsh_ref):
        if mode == INT:
            if packed:
                lo, hi = unpack(w_ref[:, pl.ds(k0, bk)])
                return acc + dot_nt(a_lo, lo, jnp.int32) + dot_nt(a_hi, hi, jnp.int32)
            return acc + dot_nt(a_lo, w_ref[:, pl.ds(k0, bk)], jnp.int32)
        if packed:
            lo, hi = unpack(w_ref[:, pl.ds(k0, bk)])
            acc = acc + dot_nt(a_lo, deq(lo, k0, ws_ref, wsh_ref), jnp.float32)
            return acc + dot_nt(a_hi, deq(hi, kh + k0, ws_ref, wsh_ref), jnp.float32)
        return acc + dot_nt(a_lo, deq(w_ref[:, pl.ds(k0, bk)], k0, ws_ref, wsh_ref), jnp.float32)

    def body(kb, accs):
        k0 = kb * bk
        a_lo = a_ref[:, pl.ds(k0, bk)]  # one activation load per K step, shared by both halves
        a_hi = a_ref[:, pl.ds(kh + k0, bk)] if packed else None
        return tuple(step(acc, k0, a_lo, a_hi, w_refs[h], ws_refs[h], wsh_refs[h]) for h, acc in enumerate(accs))

    accs = jax.lax.fori_loop(k_lo, k_hi, body, tuple(jnp.zeros((bm, bn), acc_dtype) for _ in range(halves)))
    if n_split > 1:
        o_ref[...] = accs[0]
        return
    ys = []
    for h, acc in enumerate(accs):
        y = acc.astype(jnp.float32)
        if mode == INT:
            y = y * sa_ref[...] * ws_refs[h][...]
        if has_bias:
            y = y + b_refs[h][...]
        if lora_rp and not lora_skip:
            y = y + jnp.dot(d_ref[...], r_refs[h][...], preferred_element_type=jnp.float32)
        elif lora_rp:
            mid = mid_ref[...]
            for j, m in enumerate((VISION, AUDIO)):
                present = jnp.max(jnp.where(mid == m, 1, 0)) > 0

                def add(y, j=j, r_ref=r_refs[h]):
                    d = d_ref[:, pl.ds(j * lora_rp, lora_rp)]
                    r = r_ref[pl.ds(j * lora_rp, lora_rp), :]
                    return y + jnp.dot(d, r, preferred_element_type=jnp.float32)

                y = jax.lax.cond(present, add, lambda y: y, y)
        ys.append(y)
    if halves == 2:  # silu(g)·u with an explicit exp (lowers on every backend)
        ys = [ys[0] / (1.0 + jnp.exp(-ys[0])) * ys[1]]
    o_ref[...] = ys[0].astype(o_ref.dtype)


def gemm(a, sa, p: PreparedQLinear, cfg: Config, *, mid=None, d=None, out_dtype=jnp.float32,
         interpret: bool = False, swiglu: bool = False):
    """Run the kernel on padded operands: ``a`` ``[Mp, Kp]`` (int8 or bf16), ``sa`` ``[Mp, 1]``
    (INT mode), ``mid`` ``[Mp]`` int32 and ``d`` ``[Mp, 2·rp]`` bf16 (low-rank branch, optional).

    Returns ``[Mp, Np]`` in ``out_dtype``, or with ``cfg.split_k > 1`` the raw partial accumulators
    ``[split, Mp, Np]`` (int32 in INT mode, float32 otherwise) for ``epilogue_xla``. ``swiglu``
    (a merged gate|up linear, ``Np`` = its unpadded width): ``[Mp, Np/2]`` = ``silu(g)·u``, in the
    kernel's epilogue (not with split-K, whose partials stay full width).
    """
    if p.mode not in (INT, FLOAT):
        raise KernelConfigError(
            f"the Pallas qmatmul has no kernel for wbits={p.wbits} symmetric={p.w_symmetric} "
            f"group_size={p.group_size} abits={p.abits}; use implementation='xla'"
        )
    mp, kp = a.shape
    np_ = p.n_pad
    bm = cfg.block_m
    if mp % bm:
        raise KernelConfigError(f"a has {mp} rows, not a multiple of block_m={bm}")
    kw = kp // 2 if p.packed else kp
    cap = cfg.block_k if p.group_size is None else min(cfg.block_k, p.group_size)
    bk = _largest_pow2_divisor(kw, cap)
    if p.group_size is not None and p.group_size % bk:
        raise KernelConfigError(f"group_size={p.group_size} is not a multiple of a power-of-two block")
    nk = kw // bk
    n_split = min(cfg.split_k, nk)
    halves = 2 if swiglu and n_split == 1 else 1
    if halves == 2 and (p.out_features != np_ or np_ % (2 * SWIGLU_ALIGN)):
        raise KernelConfigError(f"the SwiGLU epilogue needs a merged gate|up linear whose width ({p.out_features}) "
                                f"is a multiple of {2 * SWIGLU_ALIGN}: build it with merge_qlinears(..., align=64)")
    cols = np_ // halves  # output columns; with halves=2 the up tile of column block j is block j + nb
    bn = _largest_pow2_divisor(cols, cfg.block_n)
    nb = cols // bn
    grid = (mp // bm, nb, n_split)
    lora_rp = p.rank_pad if d is not None else 0
    half_maps = [lambda j, h=h: j + h * nb for h in range(halves)]

    args = [a]
    specs = [pl.BlockSpec((bm, kp), lambda i, j, s: (i, 0))]
    if p.mode == INT:
        args.append(sa)
        specs.append(pl.BlockSpec((bm, 1), lambda i, j, s: (i, 0)))

    def per_column(arr, rows):  # one block of ``bn`` columns per half (rows: the block's leading extent)
        for hm in half_maps:
            args.append(arr)
            specs.append(pl.BlockSpec((rows, bn), lambda i, j, s, hm=hm: (0, hm(j))))

    for hm in half_maps:
        args.append(p.w)
        specs.append(pl.BlockSpec((bn, p.w.shape[1]), lambda i, j, s, hm=hm: (hm(j), 0)))
    per_column(p.wscale, p.wscale.shape[0])
    if p.wshift is not None:
        per_column(p.wshift, p.wshift.shape[0])
    has_bias = p.bias is not None and n_split == 1
    if has_bias:
        per_column(p.bias, 1)
    if lora_rp and n_split == 1:
        args += [mid, d]
        specs += [pl.BlockSpec((bm,), lambda i, j, s: (i,)),
                  pl.BlockSpec((bm, 2 * lora_rp), lambda i, j, s: (i, 0))]
        per_column(p.lora_r, 2 * lora_rp)
    else:
        lora_rp = 0
    if n_split > 1:
        acc_dtype = jnp.int32 if p.mode == INT else jnp.float32
        out_shape = jax.ShapeDtypeStruct((n_split, mp, np_), acc_dtype)
        out_spec = pl.BlockSpec((_SQUEEZED, bm, bn), lambda i, j, s: (s, i, j))
    else:
        out_shape = jax.ShapeDtypeStruct((mp, cols), out_dtype)
        out_spec = pl.BlockSpec((bm, bn), lambda i, j, s: (i, j))
    kernel = functools.partial(
        _gemm_kernel, mode=p.mode, packed=p.packed, signed=p.w_symmetric, nk=nk, bk=bk,
        kh=kp // 2, group=p.group_size, has_shift=p.wshift is not None, has_bias=has_bias,
        lora_rp=lora_rp, n_split=n_split, lora_skip=cfg.lora_tile_skip, halves=halves,
    )
    compiler_params = None
    if not interpret:
        if pltriton is None:
            raise KernelConfigError("this jax has no Pallas Triton backend; use implementation='xla'")
        compiler_params = pltriton.CompilerParams(num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=grid,
        in_specs=specs,
        out_specs=out_spec,
        compiler_params=compiler_params,
        interpret=interpret,
        name=f"qmatmul_{p.mode}_w{p.wbits}a{p.abits}" + ("_swiglu" if halves == 2 else ""),
    )(*args)


def unpack_weight_int8(p: PreparedQLinear) -> PreparedQLinear:
    """The same linear with its 4-bit weight unpacked to int8 ``[Np, Kp]`` (one XLA pass)."""
    return dataclasses.replace(p, w=unpack_half_split(p.w, True).astype(jnp.int8), wbits=8)


def qmatmul_pallas(x: jax.Array, modality_ids: jax.Array | None, p: PreparedQLinear, *,
                   config: Config | None = None, interpret: bool = False, swiglu: bool = False) -> jax.Array:
    """Spec §6 through the Pallas kernel (call under ``jax.jit``; ``qmatmul`` does); ``swiglu``: a
    merged gate|up linear's ``silu(g)·u`` (``[..., out/2]``)."""
    lead = x.shape[:-1]
    x2, mid = _flatten(x, modality_ids)
    m = x2.shape[0]
    cfg = config or default_config(m, p, swiglu=swiglu)
    if cfg.weight_prepass and p.mode == INT and p.packed:
        p = unpack_weight_int8(p)
    mp = _round_up(max(m, 1), cfg.block_m)
    a, sa, mid_p, d = prepass(x2, mid, p, mp)
    out = gemm(a, sa, p, cfg, mid=mid_p, d=d, out_dtype=x.dtype, interpret=interpret, swiglu=swiglu)
    n = p.out_features
    if out.ndim == 3:  # split-K partials: exact int32 (or f32) sum, then the epilogue in XLA
        out = epilogue_xla(out.sum(axis=0), sa, p, d)
        if swiglu:
            out = merge.swiglu(out[:, :n])
    if swiglu:
        n //= 2
    return out[:m, :n].reshape(*lead, n).astype(x.dtype)
