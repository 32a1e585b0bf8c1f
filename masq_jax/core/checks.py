"""Trace-time argument checks shared by the pure functions of ``masq_jax.core`` (shapes are static,
so a bad argument fails with one line before any XLA work)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from masq_jax.errors import CoreInputError
from masq_jax.modality import NUM_MODALITIES


def check_rank(name: str, a, ranks: tuple[int, ...], what: str) -> None:
    """``a.ndim`` must be one of ``ranks``; ``what`` describes the expected layout."""
    if a.ndim not in ranks:
        raise CoreInputError(f"{name} must be {what}, got shape {tuple(a.shape)}")


def check_tokens(x, modality_ids, valid=None) -> None:
    """``x`` [..., in] with ``modality_ids`` (and ``valid``) of shape x.shape[:-1]."""
    if x.ndim < 1:
        raise CoreInputError(f"x must be [..., in], got shape {tuple(x.shape)}")
    if modality_ids is not None and tuple(modality_ids.shape) != tuple(x.shape[:-1]):
        raise CoreInputError(
            f"modality_ids must have shape x.shape[:-1]={tuple(x.shape[:-1])}, got {tuple(modality_ids.shape)}"
        )
    if modality_ids is not None and not jnp.issubdtype(modality_ids.dtype, jnp.integer):
        raise CoreInputError(f"modality_ids must be integers (0 text, 1 vision, 2 audio), got {modality_ids.dtype}")
    if valid is not None and tuple(valid.shape) != tuple(x.shape[:-1]):
        raise CoreInputError(f"valid must have shape x.shape[:-1]={tuple(x.shape[:-1])}, got {tuple(valid.shape)}")


def weight_dims(weight, x_in: int | None = None) -> tuple[int, int]:
    """``(out, in)`` of a ``[out, in]`` weight, checking ``x``'s width ``x_in`` against it."""
    check_rank("weight", weight, (2,), "[out, in]")
    out_dim, in_dim = weight.shape
    if x_in is not None and x_in != in_dim:
        raise CoreInputError(f"x's last axis ({x_in}) must equal weight's in dimension ({in_dim}); weight is [out, in]")
    return out_dim, in_dim


def per_modality(smooth, in_dim: int) -> jax.Array:
    """Accept ``smooth`` [3, in] (per modality) or [in] (shared) and return [3, in]."""
    if smooth.shape == (in_dim,):
        return jnp.broadcast_to(smooth, (NUM_MODALITIES, in_dim))
    if smooth.shape != (NUM_MODALITIES, in_dim):
        raise CoreInputError(f"smooth must be [3, in]=[3, {in_dim}] or [in]=[{in_dim}], got {tuple(smooth.shape)}")
    return smooth


def flat_tokens(x, modality_ids=None, valid=None):
    """``x`` as ``[T, in]`` with ``modality_ids`` and ``valid`` (bool) flattened to ``[T]``."""
    x2 = x.reshape(-1, x.shape[-1])
    mid = None if modality_ids is None else modality_ids.reshape(-1)
    val = None if valid is None else valid.reshape(-1).astype(bool)
    return x2, mid, val
