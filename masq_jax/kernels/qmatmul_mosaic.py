"""Mosaic GPU (``plgpu``, Hopper ``wgmma``) low-bit GEMM with the fused epilogue and per-token routing.

One kernel body computes ``C[P, Q] = A[P, K] · B[Q, K]ᵀ`` with both operands K-major in shared
memory (what Hopper's 8-bit ``wgmma`` needs) over a ``PreparedQLinear`` (layout: ``prepare.py``):

* prefill (``swap_ab=False``): A = activations ``[Mp, Kp]``, B = weight ``[Np, Kp]``;
* decode (``swap_ab=True``, M <= 16, no low-rank branch traced): A = weight, B = activations, so
  the weight fills the 64-row ``wgmma`` M side and the few tokens the N side (a multiple of 8);
  the K reduction stays inside the kernel (no split-K partials), each weight byte is read once.

Modes:

* ``INT`` (W8A8, W4A8, W4A6): int8 x int8 -> int32 ``wgmma``. 4-bit weights (half-split bytes) are
  read packed by TMA and unpacked to int8 INSIDE the kernel (two arithmetic shifts in registers,
  stored to a swizzled shared-memory tile that ``wgmma`` reads: B always comes from shared memory,
  and the interpreter runs no register-sourced operand). Epilogue: ``acc · s_a[t] · s_w[n]``.
* ``FLOAT`` (W4A16, group-wise asymmetric int4): bf16 activations; the weight tile is unpacked and
  dequantized in the kernel (``q · scale + shift`` of its group, one group per K step), stored as
  bf16, then bf16 ``wgmma`` with float32 accumulation.

Epilogue (all in the kernel): scales, bias, and the low-rank up-projection ``d · R`` as a second bf16
``wgmma`` (``d = (x/s_m)·L_m`` per token, zero outside the token's own modality, from the pre-pass:
so every row gets its own modality's factors and text rows none). A per-M-tile flag skips the
up-projection's loads and ``wgmma`` on tiles without a non-text token. ``modality_ids=None`` traces
no branch at all. ``halves=2`` (SwiGLU on a merged gate|up linear): each output tile accumulates
the gate tile ``j`` and the up tile ``j + N/2`` from the same activation loads and stores
``silu(g)·u``.

Structure follows jax's own Hopper kernels (``ragged_dot_mgpu.py`` / ``hopper_matmul_mgpu.py``):
``plgpu.kernel`` + ``plgpu.emit_pipeline`` over K (TMA loads, ``max_concurrent_steps`` stages),
``plgpu.ACC`` accumulators, warpgroup lowering semantics (shared-memory tilings and swizzles are
inferred), epilogue through a one-step pipeline whose output block goes back by TMA.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax

from masq_jax.kernels.merge import SWIGLU_ALIGN
from masq_jax.kernels.prepare import FLOAT, INT, KernelConfigError, PreparedQLinear, _round_up
from masq_jax.kernels.qmatmul_xla import _flatten, prepass

try:  # jax >= 0.11 (Python >= 3.11): Mosaic GPU and its CPU interpreter
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import mosaic_gpu as plgpu
except ImportError:  # pragma: no cover - depends on the jax build
    pl = plgpu = None

DECODE_MAX_TOKENS = 16  # swap-AB at or below this many tokens (when no low-rank branch is traced)


@dataclasses.dataclass(frozen=True)
class MosaicConfig:
    """Tile sizes of the Mosaic GEMM.

    ``tile_m``: token rows per program (a multiple of 64: one warpgroup's ``wgmma`` M) in prefill;
    ``None``: 128 from 256 tokens when the tile holds one accumulator (no low-rank branch, no SwiGLU),
    else 64 (register budget of one warpgroup: 64x128 int32 is 64 registers a thread per accumulator);
    ``tile_n``: accumulator columns per program (prefill) — shrunk to the largest power of two
    dividing the padded width; the SwiGLU epilogue splits it into a gate and an up half; ``tile_k``: K elements (8-bit) or packed bytes (4-bit) per pipeline step
    (``None``: 128 bytes, one 128-byte swizzle row); ``decode_tokens``: the ``wgmma`` N side in
    swap-AB mode (8 or 16); ``swap_ab``: ``None`` = automatic (M <= 16 and no low-rank branch);
    ``overlap_unpack``: register-staged weight tiles (int4 unpack, W4A16 dequantize) in two
    buffers, the unpack of step k+1 overlapping the MMA of step k (``False``: one buffer, each step
    waits for its own MMA — the layout measured on the H200 at commit 8f597ff).
    """

    tile_m: int | None = None
    tile_n: int = 128
    tile_k: int | None = None
    max_concurrent_steps: int = 3
    decode_tokens: int = 16
    swap_ab: bool | None = None
    overlap_unpack: bool = True

    def __post_init__(self):
        if self.tile_m is not None and (self.tile_m % 64 or self.tile_m > 256):
            raise KernelConfigError(f"MosaicConfig.tile_m={self.tile_m} must be 64, 128, 192 or 256")
        if self.tile_n < 16 or self.tile_n & (self.tile_n - 1) or self.tile_n > 256:
            raise KernelConfigError(f"MosaicConfig.tile_n={self.tile_n} must be a power of two in [16, 256]")
        if self.tile_k is not None and self.tile_k not in (32, 64, 128, 256):
            raise KernelConfigError(f"MosaicConfig.tile_k={self.tile_k} must be 32, 64, 128 or 256")
        if self.decode_tokens not in (8, 16):
            raise KernelConfigError(f"MosaicConfig.decode_tokens={self.decode_tokens} must be 8 or 16")
        if self.max_concurrent_steps < 1:
            raise KernelConfigError("MosaicConfig.max_concurrent_steps must be >= 1")


def available() -> bool:
    """Whether this jax ships Mosaic GPU Pallas (``jax.experimental.pallas.mosaic_gpu``)."""
    return plgpu is not None


def _largest_divisor(n: int, cap: int, floor: int) -> int:
    b = cap
    while b > floor and n % b:
        b //= 2
    if n % b:
        raise KernelConfigError(f"no power-of-two tile >= {floor} divides {n}")
    return b


def _tile_k(p: PreparedQLinear, cfg: MosaicConfig) -> int:
    """K step in stored units (int8 elements, or packed bytes): 128 bytes of one operand row by
    default (int8: 128 elements; bf16 activations: 64), one weight group at most (W4A16)."""
    kw = p.k_pad // 2 if p.packed else p.k_pad
    cap = cfg.tile_k or (128 if p.mode == INT else 64)
    if p.group_size is not None:
        cap = min(cap, p.group_size)
    tk = _largest_divisor(kw, cap, 32)
    if p.group_size is not None and p.group_size % tk:
        raise KernelConfigError(f"the Mosaic kernel needs a weight group size that is a multiple of its K step "
                                f"({tk}), got group_size={p.group_size}; use implementation='xla'")
    return tk


def _kernel(*refs, mode, packed, signed, halves, swap, has_bias, lora, nk, nkh, tk, tp, tq, wb, nb,
            group, n_pad, kh, has_shift, steps, overlap=True):
    """One ``[tp, tq]`` output tile; see the module docstring. ``wb``: weight-side tile rows;
    ``nb``: weight-side blocks per half (the up half of a SwiGLU tile is block ``j + nb``)."""
    it = iter(refs)
    a_gmem = next(it)
    w_gmem = next(it)
    sa_gmem = next(it) if mode == INT else None
    ws_gmem = next(it)
    wsh_gmem = next(it) if has_shift else None
    b_gmem = next(it) if has_bias else None
    if lora:
        flag_gmem, d_gmem, r_gmem = next(it), next(it), next(it)
    o_gmem = next(it)

    ti = lax.axis_index("t")  # token tile
    wi = lax.axis_index("w")  # weight (output-channel) tile
    acc_dtype = jnp.int32 if mode == INT else jnp.float32
    op_dtype = jnp.int8 if mode == INT else jnp.bfloat16
    half_blocks = [wi + h * nb for h in range(halves)]

    # ---- main loop: K pipeline ------------------------------------------------------------------
    in_specs, gmems = [], []
    tok_block = (tq, tk) if swap else (tp, tk)
    # Each step's wgmma stays in flight across the next step (delay_release=1 keeps its activation
    # buffers alive). 8-bit weights straight from TMA (no register stage): as jax's ragged_dot_mgpu,
    # no explicit wait. With a register stage (int4 unpack, W4A16 dequantize) the unpacked tiles
    # alternate between two shared-memory buffers and each step retires the previous step's wgmmas,
    # so unpacking step k+1 overlaps the MMA of step k.
    direct = mode == INT and not packed
    rel = 1 if (direct or overlap) else 0  # a step's wgmma may still read its tiles during the next step

    def tok_spec(off):
        return plgpu.BlockSpec(tok_block, lambda k, off=off: (ti, k + off), delay_release=rel)

    in_specs.append(tok_spec(0))
    gmems.append(a_gmem)
    if packed:  # the high nibbles multiply activation columns [Kp/2, Kp)
        in_specs.append(tok_spec(nkh))
        gmems.append(a_gmem)
    for hb in half_blocks:
        in_specs.append(plgpu.BlockSpec((wb, tk), lambda k, hb=hb: (hb, k), delay_release=rel if direct else 0))
        gmems.append(w_gmem)
    if mode == FLOAT:  # per-(group, channel) scale and shift, flattened [G * Np]: block (g, j)
        parts = (0, 1) if packed else (0,)
        cols = n_pad // wb

        def grp(k, part):
            k0 = k * tk + part * kh
            return k0 // group if group is not None else 0

        for hb in half_blocks:
            for part in parts:
                in_specs.append(plgpu.BlockSpec((wb,), lambda k, hb=hb, part=part: (grp(k, part) * cols + hb,)))
                gmems.append(ws_gmem)
                if has_shift:
                    in_specs.append(plgpu.BlockSpec((wb,), lambda k, hb=hb, part=part: (grp(k, part) * cols + hb,)))
                    gmems.append(wsh_gmem)
    n_parts = 2 if packed else 1

    def unpack(pw):
        """Packed bytes -> (low, high) nibbles as int16 (Mosaic GPU does no arithmetic, shifts
        included, on 8-bit registers: the bytes are widened first; int8 widens sign-extended, so an
        arithmetic shift by 4 is the signed high nibble)."""
        v = pw.astype(jnp.int16)
        if signed:
            lo = lax.shift_right_arithmetic(lax.shift_left(v, jnp.int16(12)), jnp.int16(12))
            return lo, lax.shift_right_arithmetic(v, jnp.int16(4))
        return lax.bitwise_and(v, jnp.int16(15)), lax.shift_right_logical(v, jnp.int16(4))

    def main_scope(scratch, *accs):  # scratch: [half * n_parts + part] weight tiles as wgmma reads them

        def step(idx, *smem):
            slot = lax.rem(idx[0], 2) if overlap else 0  # register-staged tiles alternate between two buffers
            s = iter(smem)
            a_parts = [next(s) for _ in range(n_parts)]
            w_tiles = [next(s) for _ in range(halves)]
            sc = [[(next(s), next(s) if has_shift else None) for _ in range(n_parts)] for _ in range(halves)] \
                if mode == FLOAT else None
            wrote = False
            w_ops = []
            for h in range(halves):
                if mode == INT and not packed:
                    w_ops.append([w_tiles[h]])
                    continue
                if packed:
                    vals = unpack(w_tiles[h][...])
                else:
                    vals = (w_tiles[h][...],)
                ops = []
                for part, v in enumerate(vals):
                    if mode == FLOAT:
                        s_ref, sh_ref = sc[h][part]
                        v = v.astype(jnp.float32) * lax.broadcast_in_dim(s_ref[...], (wb, tk), (0,))
                        if has_shift:
                            v = v + lax.broadcast_in_dim(sh_ref[...], (wb, tk), (0,))
                        v = v.astype(jnp.bfloat16)
                    else:
                        v = v.astype(jnp.int8)
                    dst = scratch[h * n_parts + part].at[slot]
                    dst[...] = v
                    ops.append(dst)
                w_ops.append(ops)
                wrote = True
            if wrote:
                plgpu.commit_smem()  # register -> shared stores visible to wgmma (async proxy)
            for h in range(halves):
                for part in range(n_parts):
                    a_t, w_t = a_parts[part], w_ops[h][part]
                    if swap:
                        plgpu.wgmma(accs[h], w_t, a_t.T)
                    else:
                        plgpu.wgmma(accs[h], a_t, w_t.T)
            if not direct:
                # Keep this step's wgmmas in flight, retire the previous step's: the next step then
                # rewrites the other buffer while these run (one commit group per wgmma call).
                plgpu.wgmma_wait(halves * n_parts if overlap else 0)

        plgpu.emit_pipeline(step, grid=(nk,), in_specs=in_specs,
                            max_concurrent_steps=max(steps, rel + 1))(*gmems)
        return tuple(acc[...] for acc in accs)

    scratch_types = []
    if mode == FLOAT or packed:
        scratch_types = [plgpu.SMEM((2 if overlap else 1, wb, tk), op_dtype) for _ in range(halves * n_parts)]
    acc_types = [plgpu.ACC((tp, tq), acc_dtype) for _ in range(halves)]
    if scratch_types:  # shared-memory and register allocations live in separate scopes
        accs = pl.run_scoped(lambda *sc: pl.run_scoped(functools.partial(main_scope, sc), *acc_types),
                             *scratch_types)
    else:
        accs = pl.run_scoped(functools.partial(main_scope, ()), *acc_types)

    # ---- low-rank up-projection: d [tp, 2rp] · R [2rp, tq] (bf16 wgmma), skipped on text-only tiles
    lrs = [None] * halves
    if lora:
        rr = d_gmem.shape[1]

        def lr_scope(*lr_accs):
            @pl.when(flag_gmem[ti] != 0)
            def _():
                specs = [plgpu.BlockSpec((tp, rr), lambda i: (ti, 0))]
                specs += [plgpu.BlockSpec((rr, tq), lambda i, hb=hb: (0, hb)) for hb in half_blocks]

                def body(_, d_smem, *r_smems):
                    for h in range(halves):
                        plgpu.wgmma(lr_accs[h], d_smem, r_smems[h])
                    plgpu.wgmma_wait(0)

                plgpu.emit_pipeline(body, grid=(1,), in_specs=specs)(d_gmem, *[r_gmem] * halves)

            return tuple(acc[...] for acc in lr_accs)

        lrs = pl.run_scoped(lr_scope, *[plgpu.ACC((tp, tq), jnp.float32) for _ in range(halves)])

    # ---- epilogue: scales, bias, low-rank, SwiGLU; the output block goes back by TMA ----------------
    tok_dim, ch_dim = (1, 0) if swap else (0, 1)
    tok_len = tq if swap else tp
    especs, egmems = [], []
    if mode == INT:
        especs.append(plgpu.BlockSpec((tok_len,), lambda i: (ti,)))
        egmems.append(sa_gmem)
        for hb in half_blocks:  # per-channel weight scale (INT mode: one group)
            especs.append(plgpu.BlockSpec((wb,), lambda i, hb=hb: (hb,)))
            egmems.append(ws_gmem)
    if has_bias:
        for hb in half_blocks:
            especs.append(plgpu.BlockSpec((wb,), lambda i, hb=hb: (hb,)))
            egmems.append(b_gmem)
    out_spec = plgpu.BlockSpec((tp, tq), lambda i: (wi, ti) if swap else (ti, wi))

    def epilogue(_, *smem):
        s = iter(smem)
        sa = next(s)[...] if mode == INT else None
        wss = [next(s)[...] for _ in range(halves)] if mode == INT else [None] * halves
        bs = [next(s)[...] for _ in range(halves)] if has_bias else [None] * halves
        o_smem = next(s)
        ys = []
        for h in range(halves):
            y = accs[h].astype(jnp.float32)
            if mode == INT:
                y = y * lax.broadcast_in_dim(sa, (tp, tq), (tok_dim,))
                y = y * lax.broadcast_in_dim(wss[h], (tp, tq), (ch_dim,))
            if has_bias:
                y = y + lax.broadcast_in_dim(bs[h], (tp, tq), (ch_dim,))
            if lora:
                y = y + lrs[h]
            ys.append(y)
        y = ys[0]
        if halves == 2:  # silu(g)·u with an explicit exp
            y = ys[0] / (1.0 + jnp.exp(-ys[0])) * ys[1]
        o_smem[...] = y.astype(o_smem.dtype)

    plgpu.emit_pipeline(epilogue, grid=(1,), in_specs=especs, out_specs=[out_spec])(*egmems, o_gmem)


def _plan(m: int, p: PreparedQLinear, cfg: MosaicConfig, has_lora: bool, halves: int):
    cols = p.n_pad // halves
    swap = cfg.swap_ab if cfg.swap_ab is not None else (
        m <= DECODE_MAX_TOKENS and not has_lora and cols % 64 == 0)
    if swap and has_lora:
        raise KernelConfigError("swap_ab=True runs without the low-rank branch (decode, modality_ids=None)")
    if swap:
        wb = 64  # the weight fills one warpgroup's wgmma M
        if cols % wb:
            raise KernelConfigError(f"swap-AB needs an output width that is a multiple of 64 per half, got {cols}")
        tt = cfg.decode_tokens
        mp = _round_up(max(m, 1), tt)
        return swap, mp, wb, tt, wb  # (swap, Mp, tp, tq, wb)
    tm = cfg.tile_m or (128 if m >= 256 and halves == 1 and not has_lora else 64)
    if m <= 64:
        tm = 64
    mp = _round_up(max(m, 1), tm)
    tn = _largest_divisor(cols, max(16, cfg.tile_n // halves), 16)
    return swap, mp, tm, tn, tn


def gemm_mosaic(a, sa, p: PreparedQLinear, cfg: MosaicConfig, *, m: int, flags=None, d=None,
                out_dtype=jnp.float32, halves: int = 1):
    """Run the kernel on padded operands: ``a`` ``[Mp, Kp]`` (int8 or bf16), ``sa`` ``[Mp]`` float32
    (INT mode), ``flags`` ``[Mp/tile_m]`` int32 (1 where the tile holds a non-text token) and ``d``
    ``[Mp, 2·rp]`` bf16 (low-rank branch, optional). Returns ``[Mp, Np/halves]`` in ``out_dtype``.
    """
    if plgpu is None:
        raise KernelConfigError("this jax has no Mosaic GPU Pallas (needs jax >= 0.11); use implementation='xla'")
    if p.mode not in (INT, FLOAT):
        raise KernelConfigError(
            f"the Mosaic qmatmul has no kernel for wbits={p.wbits} symmetric={p.w_symmetric} "
            f"group_size={p.group_size} abits={p.abits}; use implementation='xla'")
    swap, mp, tp_tok, tq_w, wb = _plan(m, p, cfg, d is not None, halves)
    if a.shape[0] != mp:
        raise KernelConfigError(f"a has {a.shape[0]} rows, the plan pads to {mp}")
    tk = _tile_k(p, cfg)
    kw = p.k_pad // 2 if p.packed else p.k_pad
    nk = kw // tk
    cols = p.n_pad // halves
    nb = cols // wb
    n_tok_tiles = mp // (tq_w if swap else tp_tok)
    tp, tq = (wb, cfg.decode_tokens) if swap else (tp_tok, tq_w)
    out_shape = (cols, mp) if swap else (mp, cols)
    args = [a, p.w, *([sa] if p.mode == INT else []), p.wscale.reshape(-1)]
    has_shift = p.mode == FLOAT and p.wshift is not None
    if has_shift:
        args.append(p.wshift.reshape(-1))
    has_bias = p.bias is not None
    if has_bias:
        args.append(p.bias.reshape(-1))
    lora = d is not None
    if lora:
        args += [flags, d, p.lora_r]
    kernel = functools.partial(
        _kernel, mode=p.mode, packed=p.packed, signed=p.w_symmetric, halves=halves, swap=swap,
        has_bias=has_bias, lora=lora, nk=nk, nkh=(p.k_pad // 2) // tk if p.packed else 0, tk=tk,
        tp=tp, tq=tq, wb=wb, nb=nb, group=p.group_size, n_pad=p.n_pad, kh=p.k_pad // 2,
        has_shift=has_shift, steps=max(1, min(cfg.max_concurrent_steps, nk)), overlap=cfg.overlap_unpack)
    f = plgpu.kernel(
        kernel,
        out_type=jax.ShapeDtypeStruct(out_shape, out_dtype),
        grid=(n_tok_tiles, nb),
        grid_names=("t", "w"),
        compiler_params=plgpu.CompilerParams(lowering_semantics=plgpu.LoweringSemantics.Warpgroup),
    )
    out = f(*args)
    return out.T if swap else out


def qmatmul_mosaic(x: jax.Array, modality_ids: jax.Array | None, p: PreparedQLinear, *,
                   config: MosaicConfig | None = None, swiglu: bool = False) -> jax.Array:
    """Spec §6 through the Mosaic GPU kernel (call under ``jax.jit``; ``qmatmul`` does). The
    activation pre-pass (``x/s_m``, per-token int8 quantization or bf16 cast, the folded low-rank
    down-projection) is one XLA fusion, as for the Triton path; ``producer.py`` is its kernel form."""
    cfg = config or MosaicConfig()
    lead = x.shape[:-1]
    x2, mid = _flatten(x, modality_ids)
    m = x2.shape[0]
    n = p.out_features
    halves = 2 if swiglu else 1
    if swiglu and (n != p.n_pad or n % (2 * SWIGLU_ALIGN)):
        raise KernelConfigError(f"the SwiGLU epilogue needs a merged gate|up linear whose width ({n}) "
                                f"is a multiple of {2 * SWIGLU_ALIGN}: build it with merge_qlinears(..., align=64)")
    has_lora = bool(p.rank) and mid is not None
    swap, mp, tp_tok, _, _ = _plan(m, p, cfg, has_lora, halves)
    a, sa, _, d = prepass(x2, mid, p, mp)
    sa = None if sa is None else sa[:, 0]
    flags = None
    if has_lora:
        nontext = jnp.pad((mid != 0).astype(jnp.int32), (0, mp - m))
        flags = jnp.max(nontext.reshape(mp // tp_tok, tp_tok), axis=1)
    out = gemm_mosaic(a, sa, p, cfg, m=m, flags=flags, d=d, out_dtype=x.dtype, halves=halves)
    if swiglu:
        n //= 2
    return out[:m, :n].reshape(*lead, n).astype(x.dtype)
