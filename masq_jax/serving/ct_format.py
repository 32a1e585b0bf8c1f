"""The compressed-tensors checkpoint layout (pure NumPy; no torch, no compressed-tensors import).

Names, packing and the ``quantization_config`` schema follow the ``compressed-tensors`` package
(0.20, ``compressors/naive_quantized``, ``compressors/pack_quantized``, ``quantization/quant_scheme``):

* ``int-quantized`` (W8A8, preset ``INT8_W8A8``): ``<linear>.weight`` int8 ``[out, in]`` and
  ``<linear>.weight_scale`` ``[out, 1]``; activations are quantized per token at run time
  (``dynamic: true``, ``strategy: token``, symmetric int8), so no activation tensor is stored.
* ``pack-quantized`` (W4A16, presets ``W4A16`` / ``W4A16_ASYM``): ``<linear>.weight_packed`` int32
  ``[out, ceil(in/8)]`` (element ``i`` of a row in bits ``4·(i mod 8)`` of word ``i // 8``, stored
  offset by +8: ``pack_to_int32``), ``<linear>.weight_scale`` ``[out, groups]``, ``<linear>.weight_shape``
  int64 ``[2]`` and, when asymmetric, ``<linear>.weight_zero_point`` packed the same way along the
  *output* axis: int32 ``[ceil(out/8), groups]``. Dequantization is ``(q - zp) · scale`` with ``q`` and
  ``zp`` in ``[-8, 7]``.
"""

from __future__ import annotations

import numpy as np

from masq_jax.serving.fold import ExportError

INT_QUANTIZED = "int-quantized"
PACK_QUANTIZED = "pack-quantized"
W4_GROUP_SIZES = (32, 64, 128)  # and per channel: what vLLM's W4A16 kernels take


def scheme_of(wbits: int, abits: int, w_symmetric: bool, group_size: int | None) -> str:
    """``"W8A8"`` or ``"W4A16"`` for an artefact's quantizers, or ``ExportError`` in one line."""
    if wbits == 8 and abits == 8 and w_symmetric and group_size is None:
        return "W8A8"
    if wbits == 4 and abits >= 16 and group_size in (None, *W4_GROUP_SIZES):
        return "W4A16"
    kind = f"W{wbits}A{abits if abits < 16 else 16}" + ("" if w_symmetric else " asymmetric") + \
        (f" group {group_size}" if group_size else " per channel")
    raise ExportError(f"{kind} has no compressed-tensors export: supported are W8A8 (int8 per-channel symmetric "
                      "weights, dynamic per-token int8 activations) and W4A16 (int4 weights, group 32/64/128 or per "
                      "channel, zero points when asymmetric)")


def _args(bits: int, strategy: str, symmetric: bool, dynamic: bool, group_size: int | None = None) -> dict:
    return {"num_bits": bits, "type": "int", "symmetric": symmetric, "group_size": group_size,
            "strategy": strategy, "block_structure": None, "dynamic": dynamic, "actorder": None,
            "observer": None, "observer_kwargs": {}}


def quantization_config(scheme: str, w_symmetric: bool, group_size: int | None, ignore: list[str]) -> dict:
    """The config.json ``quantization_config`` block (``compressed_tensors.QuantizationConfig``)."""
    if scheme == "W8A8":
        group = {"targets": ["Linear"], "weights": _args(8, "channel", True, False),
                 "input_activations": _args(8, "token", True, True), "output_activations": None,
                 "format": INT_QUANTIZED}
        fmt = INT_QUANTIZED
    else:
        strategy = "channel" if group_size is None else "group"
        group = {"targets": ["Linear"], "weights": _args(4, strategy, w_symmetric, False, group_size),
                 "input_activations": None, "output_activations": None, "format": PACK_QUANTIZED}
        fmt = PACK_QUANTIZED
    return {"quant_method": "compressed-tensors", "format": fmt, "quantization_status": "compressed",
            "config_groups": {"group_0": group}, "ignore": list(ignore), "kv_cache_scheme": None,
            "global_compression_ratio": None}


def pack_int4(values: np.ndarray, axis: int = 1) -> np.ndarray:
    """``[rows, cols]`` integers in ``[-8, 7]`` -> int32 words, eight per word along ``axis``
    (``compressed_tensors.compressors.pack_quantized.helpers.pack_to_int32`` with 4 bits)."""
    v = np.asarray(values)
    if v.min(initial=0) < -8 or v.max(initial=0) > 7:
        raise ExportError(f"int4 values outside [-8, 7] (found {v.min()}..{v.max()})")
    u = (v.astype(np.int64) + 8)
    if axis == 0:
        u = u.T
    rows, cols = u.shape
    words = -(-cols // 8)
    u = np.pad(u, ((0, 0), (0, words * 8 - cols))).reshape(rows, words, 8)
    packed = (u << (4 * np.arange(8, dtype=np.int64))).sum(-1)
    packed = packed.astype(np.uint32).view(np.int32)
    return np.ascontiguousarray(packed.T if axis == 0 else packed)


def linear_tensors(prefix: str, scheme: str, q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None,
                   bias: np.ndarray | None, dtype) -> dict[str, np.ndarray]:
    """One linear's tensors under compressed-tensors' names. ``q``: the integer grid ``[out, in]`` as
    masq-jax stores it (signed when symmetric; ``0..15`` with ``zero_point`` when asymmetric);
    ``scale`` / ``zero_point``: ``[out, groups]``; ``dtype``: the checkpoint's float dtype."""
    out = {f"{prefix}.weight_scale": np.ascontiguousarray(scale.astype(dtype))}
    if bias is not None:
        out[f"{prefix}.bias"] = np.ascontiguousarray(bias.astype(dtype))
    if scheme == "W8A8":
        out[f"{prefix}.weight"] = np.ascontiguousarray(q.astype(np.int8))
        return out
    q = q.astype(np.int32)
    if zero_point is not None:  # masq-jax's unsigned 0..15 grid -> compressed-tensors' signed one
        q = q - 8
        zp = np.rint(zero_point).astype(np.int64) - 8
        out[f"{prefix}.weight_zero_point"] = pack_int4(zp, axis=0)
    out[f"{prefix}.weight_packed"] = pack_int4(q)
    out[f"{prefix}.weight_shape"] = np.asarray(q.shape, np.int64)
    return out
