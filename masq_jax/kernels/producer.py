"""Mosaic GPU producer kernel: one pass over a layer input that feeds a quantized GEMM group.

Per token ``t`` of modality ``m = modality_ids[t]`` (docs/method.md §1 and §6):

    xn[t]  = RMSNorm(x[t]) · γ                       (HF Qwen2 arithmetic: normalise in float32)
    xs[t]  = xn[t] / s_m                              (a division, as the reference)
    s_a[t] = clip(max|xs[t]| / divisor, SCALE_MIN, SCALE_MAX)
    q[t]   = clip(round(xs[t] / s_a[t]), qmin, qmax)   int8
    d[t]   = xn[t] · L'_m  (L'_m = diag(1/s_m)·L_m, ``prepare``'s folded factors), zero for text rows

``q``, ``s_a`` and ``d`` are what the Mosaic GEMM (``qmatmul_mosaic.gemm_mosaic``) reads, so a
group of linears that share one input (q|k|v, gate|up) quantizes it once.

Kernel: one program per 64-row tile (one warpgroup's ``wgmma`` M), pipelined sweeps over K:
(1) the sum of squares per row and, for float32 input, ``max|x·γ/s_m|`` (``max|xs| = rstd ·
max|x·γ/s_m|`` since ``rstd > 0``); for bf16 input, whose normalised row is rounded to bf16 before
γ (HF arithmetic, which does not commute with the max), a sweep (1b) takes ``max|xs|`` of the
rounded values; (2) normalise, divide, quantize, store int8 by TMA, and accumulate the
down-projection ``xn_bf16 · L'`` with a bf16 ``wgmma`` into a float32 accumulator. The row tile is
read from HBM two or three times (later sweeps partly from L2); for Qwen widths a 64-row tile does
not fit in shared memory (64 x 3584 x 2 B = 448 KiB > 227 KiB). The float32 absmax from sweep (1)
is rounded differently from the reference's ``max|xs|``: a scale may differ in its last bit, which
can move an int8 value by one step (the test measures and bounds that fraction).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from masq_jax.core.quant import SCALE_MAX, SCALE_MIN, symmetric_range
from masq_jax.kernels.prepare import KernelConfigError, _round_up
from masq_jax.modality import AUDIO, TEXT, VISION

try:
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import mosaic_gpu as plgpu
except ImportError:  # pragma: no cover - depends on the jax build
    pl = plgpu = None

TILE_M = 64


def _producer_kernel(x_gmem, g_gmem, s_gmem, mid_gmem, *rest, k_true, nk, tk, lora, rr, divisor, qmin, qmax,
                     eps, xdtype, steps):
    if lora:
        l_gmem, q_gmem, sc_gmem, d_gmem = rest
    else:
        q_gmem, sc_gmem = rest
        l_gmem = d_gmem = None
    ti = lax.axis_index("t")
    tm = TILE_M

    def load_rows(ref):
        """The row tile in the WGMMA register layout: per-row reductions and broadcasts then have
        one layout to agree on (without the low-rank wgmma nothing else pins it, and Mosaic's layout
        inference finds no solution)."""
        return plgpu.layout_cast(ref[...], plgpu.Layout.WGMMA)

    def smooth_rows(mid, s_refs):
        """Per-row smoothing ``[tm, tk]``: each row takes its own modality's vector."""
        s0, s1, s2 = (lax.broadcast_in_dim(r[...], (tm, tk), (1,)) for r in s_refs)
        mm = lax.broadcast_in_dim(mid, (tm, tk), (0,))
        return jnp.where(mm == VISION, s1, jnp.where(mm == AUDIO, s2, s0))

    def rounded(v):
        """float32 ``v`` rounded to the input dtype (bf16: round to nearest even on the bit
        pattern), returned as float32. Integer arithmetic, not ``astype(bf16).astype(f32)``: XLA's
        excess-precision simplification (on by default) drops that round trip when the interpreter's
        jaxpr is compiled, and the kernel must round exactly as the model's RMSNorm does."""
        if jnp.dtype(xdtype) != jnp.bfloat16:
            return v.astype(xdtype).astype(jnp.float32)
        bits = lax.bitcast_convert_type(v, jnp.uint32)
        lsb = lax.bitwise_and(lax.shift_right_logical(bits, jnp.uint32(16)), jnp.uint32(1))
        bits = lax.bitwise_and(bits + jnp.uint32(0x7FFF) + lsb, jnp.uint32(0xFFFF0000))
        return lax.bitcast_convert_type(bits, jnp.float32)

    def normed(x, rstd, g):
        """HF RMSNorm: float32 normalise, round to the input dtype, times γ (rounded likewise), the
        product rounded to the input dtype (a bf16 x bf16 product is exact in float32)."""
        xn = rounded(x.astype(jnp.float32) * lax.broadcast_in_dim(rstd, (tm, tk), (0,)))
        return rounded(lax.broadcast_in_dim(rounded(g), (tm, tk), (1,)) * xn)

    base_specs = [
        plgpu.BlockSpec((tm, tk), lambda k: (ti, k)),
        plgpu.BlockSpec((tk,), lambda k: (k,)),
        *[plgpu.BlockSpec((tk,), lambda k, j=j: (j * nk + k,)) for j in (TEXT, VISION, AUDIO)],
        plgpu.BlockSpec((tm,), lambda k: (ti,)),
    ]
    base_gmems = [x_gmem, g_gmem, s_gmem, s_gmem, s_gmem, mid_gmem]

    # Sweep 1: sum of squares per row, and for float32 input max|x·γ/s_m| (rstd > 0 factors out of
    # the max). A bf16 input rounds the normalised row to bf16 before γ (HF arithmetic), which does
    # not commute with the max: there a second sweep takes max|xs| of the rounded values.
    fused_absmax = jnp.dtype(xdtype) == jnp.float32

    def stats(_, x_s, g_s, s0, s1, s2, mid_s, carry):
        ss, am = carry
        x = load_rows(x_s).astype(jnp.float32)
        ss = ss + jnp.sum(x * x, axis=1)
        if fused_absmax:
            gx = lax.broadcast_in_dim(g_s[...], (tm, tk), (1,)) * x
            am = jnp.maximum(am, jnp.max(jnp.abs(gx / smooth_rows(mid_s[...], (s0, s1, s2))), axis=1))
        return ss, am

    zeros = jnp.zeros((tm,), jnp.float32)
    ss, am = plgpu.emit_pipeline(stats, grid=(nk,), in_specs=base_specs, max_concurrent_steps=steps,
                                 init_carry=(zeros, zeros))(*base_gmems)
    rstd = lax.rsqrt(ss / k_true + eps)
    if fused_absmax:
        am = am * rstd
    else:
        def absmax(_, x_s, g_s, s0, s1, s2, mid_s, am):
            xs = normed(load_rows(x_s), rstd, g_s[...]) / smooth_rows(mid_s[...], (s0, s1, s2))
            return jnp.maximum(am, jnp.max(jnp.abs(xs), axis=1))

        am = plgpu.emit_pipeline(absmax, grid=(nk,), in_specs=base_specs, max_concurrent_steps=steps,
                                 init_carry=zeros)(*base_gmems)
    scale = jnp.clip(am / divisor, SCALE_MIN, SCALE_MAX)

    # Sweep 2: normalise, divide, quantize, store int8; the down-projection accumulates by wgmma.
    def quant_step(idx, x_s, g_s, s0, s1, s2, mid_s, *refs, q_s, d_acc=None, xs_smem=None):
        l_s = refs[0] if lora else None
        xn = normed(load_rows(x_s), rstd, g_s[...])
        xs = xn / smooth_rows(mid_s[...], (s0, s1, s2))
        q = jnp.clip(jnp.round(xs / lax.broadcast_in_dim(scale, (tm, tk), (0,))), qmin, qmax)
        # The int8 tile goes back by an explicit TMA store (a pipelined output block would use a
        # predicated copy, which the interpreter does not run); wait for the previous one first.
        plgpu.wait_smem_to_gmem(0, wait_read_only=True)
        q_s[...] = q.astype(jnp.int8)
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(q_s, q_gmem.at[pl.ds(ti * tm, tm), pl.ds(idx[0] * tk, tk)])
        if lora:
            # d = xn · L' with L' = diag(1/s_m) L_m folded by ``prepare`` (the same product as the
            # XLA pre-pass ``lowrank_down``; masked to the token's own modality below).
            xs_smem[...] = xn.astype(jnp.bfloat16)
            plgpu.commit_smem()
            plgpu.wgmma(d_acc, xs_smem, l_s)
            plgpu.wgmma_wait(0)

    if lora:
        def lora_scope(q_s, xs_smem):
            def acc_scope(d_acc):
                plgpu.emit_pipeline(
                    functools.partial(quant_step, q_s=q_s, d_acc=d_acc, xs_smem=xs_smem), grid=(nk,),
                    in_specs=[*base_specs, plgpu.BlockSpec((tk, rr), lambda k: (k, 0))],
                    max_concurrent_steps=steps,
                )(*base_gmems, l_gmem)
                return d_acc[...]

            d = pl.run_scoped(acc_scope, plgpu.ACC((tm, rr), jnp.float32))
            plgpu.wait_smem_to_gmem(0, wait_read_only=True)
            return d

        d = pl.run_scoped(lora_scope, plgpu.SMEM((tm, tk), jnp.int8), plgpu.SMEM((tm, tk), jnp.bfloat16))
    else:
        def plain_scope(q_s):
            plgpu.emit_pipeline(functools.partial(quant_step, q_s=q_s), grid=(nk,), in_specs=base_specs,
                                max_concurrent_steps=steps)(*base_gmems)
            plgpu.wait_smem_to_gmem(0, wait_read_only=True)

        pl.run_scoped(plain_scope, plgpu.SMEM((tm, tk), jnp.int8))
        d = None

    # Scales and the modality-masked down-projection go back by TMA.
    out_specs = [plgpu.BlockSpec((tm,), lambda i: (ti,))]
    outs = [sc_gmem]
    if lora:
        out_specs.append(plgpu.BlockSpec((tm, rr), lambda i: (ti, 0)))
        outs.append(d_gmem)

    def write(_, mid_s, sc_s, *d_s):
        sc_s[...] = scale
        if lora:
            rp = rr // 2
            col_mod = jnp.where(lax.broadcasted_iota(jnp.int32, (tm, rr), 1) < rp, VISION, AUDIO)
            own = lax.broadcast_in_dim(mid_s[...], (tm, rr), (0,)) == col_mod
            d_s[0][...] = jnp.where(own, d, 0.0).astype(d_s[0].dtype)

    plgpu.emit_pipeline(write, grid=(1,), in_specs=[plgpu.BlockSpec((tm,), lambda i: (ti,))],
                        out_specs=out_specs)(mid_gmem, *outs)


def produce(x: jax.Array, gamma: jax.Array, eps: float, smooth: jax.Array, modality_ids: jax.Array | None,
            *, abits: int = 8, act_bound: str = "qmax", lora_l: jax.Array | None = None,
            tile_k: int = 128, max_concurrent_steps: int = 2):
    """RMSNorm·γ, ``/s_m``, per-token int8 quantization and the folded low-rank down-projection in one
    Mosaic GPU kernel (module docstring). ``x`` ``[T, K]`` (bf16 or float32), ``gamma`` ``[K]``,
    ``smooth`` ``[3, K]``, ``modality_ids`` ``[T]`` int (``None``: all text), ``lora_l`` ``[K, 2·rp]``
    (``PreparedQLinear.lora_l``; ``None``: no branch). Returns ``(q [T, K] int8, scale [T] float32,
    d [T, 2·rp] bfloat16 or None)``. Run it under ``plgpu.force_gpu_interpret_mode`` off a GPU."""
    if plgpu is None:
        raise KernelConfigError("this jax has no Mosaic GPU Pallas (needs jax >= 0.11)")
    if abits > 8:
        raise KernelConfigError(f"the producer quantizes to at most 8 bits, got abits={abits}")
    t, k = x.shape
    if gamma.shape != (k,) or smooth.shape != (3, k):
        raise KernelConfigError(f"gamma {gamma.shape} / smooth {smooth.shape} do not match x with {k} features")
    tk = tile_k
    while tk > 32 and k % tk:
        tk //= 2
    kp = _round_up(k, tk)
    tp = _round_up(max(t, 1), TILE_M)
    mid = jnp.zeros((t,), jnp.int32) if modality_ids is None else modality_ids.reshape(-1).astype(jnp.int32)
    xp = jnp.pad(x, ((0, tp - t), (0, kp - k)))
    gp = jnp.pad(gamma.astype(jnp.float32), (0, kp - k))
    sp = jnp.pad(smooth.astype(jnp.float32), ((0, 0), (0, kp - k)), constant_values=1.0).reshape(-1)
    midp = jnp.pad(mid, (0, tp - t))
    lora = lora_l is not None and modality_ids is not None
    divisor, qmin, qmax = symmetric_range(abits, act_bound)
    nk = kp // tk
    args = [xp, gp, sp, midp]
    out_type = [jax.ShapeDtypeStruct((tp, kp), jnp.int8), jax.ShapeDtypeStruct((tp,), jnp.float32)]
    rr = 0
    if lora:
        rr = lora_l.shape[1]
        args.append(jnp.pad(lora_l.astype(jnp.bfloat16), ((0, kp - k), (0, 0))))
        out_type.append(jax.ShapeDtypeStruct((tp, rr), jnp.bfloat16))
    kernel = functools.partial(
        _producer_kernel, k_true=float(k), nk=nk, tk=tk, lora=lora, rr=rr, divisor=float(divisor),
        qmin=float(qmin), qmax=float(qmax), eps=float(eps), xdtype=x.dtype,
        steps=max(1, min(max_concurrent_steps, nk)))
    f = plgpu.kernel(kernel, out_type=tuple(out_type), grid=(tp // TILE_M,), grid_names=("t",),
                     compiler_params=plgpu.CompilerParams(lowering_semantics=plgpu.LoweringSemantics.Warpgroup))
    outs = f(*args)
    q, sc = outs[0][:t, :k], outs[1][:t]
    d = outs[2][:t] if lora else None
    return q, sc, d
