"""CalibSet: what enters the decoder for every calibration sample, plus padding into static shapes.

A sample holds ``input_ids [S]`` *or* ``inputs_embeds [S, H]``, ``position_ids [3, S]`` (multimodal
RoPE, Omni/VL) or ``[S]`` (1-D RoPE), and ``modality_ids [S]`` (0 text, 1 vision, 2 audio; docs/method.md §0:
only image/audio placeholder tokens are vision/audio). Samples keep their own length; ``batches``
pads them into a few bucket lengths so jitted code compiles once per bucket, not once per sample.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from masq_jax.modality import IDS as MODALITY_IDS
from masq_jax.modality import NAMES as MODALITY_NAMES

from .errors import CalibFormatError, MissingModalityError
from .io import arrays_to_samples, read_npz, save_npz
from .sample import CalibSample, make_sample

def _pad_positions(pos: np.ndarray, total: int) -> np.ndarray:
    """Extend ``[S]`` or ``[3, S]`` positions to ``total`` by counting on from each row's maximum."""
    s = pos.shape[-1]
    if total == s:
        return pos
    tail = np.arange(1, total - s + 1, dtype=np.int32)
    if pos.ndim == 1:
        return np.concatenate([pos, pos.max() + tail])
    return np.concatenate([pos, pos.max(axis=1, keepdims=True) + tail[None, :]], axis=1)


class CalibSet:
    """An ordered collection of ``CalibSample`` of one kind (ids or embeds) and one position rank."""

    def __init__(self, samples: Sequence[CalibSample], meta: dict[str, Any] | None = None):
        samples = list(samples)
        if not samples:
            raise CalibFormatError("a CalibSet needs at least one sample")
        first = samples[0]
        self._kind = "ids" if first.input_ids is not None else "embeds"
        self._rope_ndim = 3 if first.position_ids.ndim == 2 else 1
        self._hidden = None if first.inputs_embeds is None else int(first.inputs_embeds.shape[1])
        for i, smp in enumerate(samples):
            if not isinstance(smp, CalibSample):
                raise CalibFormatError(f"sample {i}: expected a CalibSample, got {type(smp).__name__}")
            kind = "ids" if smp.input_ids is not None else "embeds"
            if kind != self._kind:
                raise CalibFormatError(
                    f"sample {i}: has {kind} but sample 0 has {self._kind}; a CalibSet holds one kind"
                )
            if (3 if smp.position_ids.ndim == 2 else 1) != self._rope_ndim:
                raise CalibFormatError(
                    f"sample {i}: position_ids rank differs from sample 0 ([3, S] vs [S] mixed)"
                )
            if self._hidden is not None and smp.inputs_embeds.shape[1] != self._hidden:
                raise CalibFormatError(
                    f"sample {i}: hidden size {smp.inputs_embeds.shape[1]} differs from sample 0 ({self._hidden})"
                )
        self._samples = samples
        self.meta: dict[str, Any] = dict(meta or {})

    # ---- basic views -------------------------------------------------------------------------
    @classmethod
    def from_samples(cls, samples: Sequence[dict[str, Any]], meta: dict[str, Any] | None = None) -> "CalibSet":
        """Build from dicts with keys modality_ids, position_ids and input_ids or inputs_embeds."""
        return cls([make_sample(**d, index=i) for i, d in enumerate(samples)], meta)

    def __len__(self) -> int:
        return len(self._samples)

    def __iter__(self) -> Iterator[CalibSample]:
        return iter(self._samples)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return CalibSet(self._samples[idx], self.meta)
        return self._samples[idx]

    def __repr__(self) -> str:
        c = self.token_counts()
        return (
            f"CalibSet(n={len(self)}, kind={self.kind}, rope_ndim={self.rope_ndim}, hidden={self.hidden_size}, "
            f"max_len={self.max_len}, tokens={c})"
        )

    @property
    def samples(self) -> list[CalibSample]:
        return list(self._samples)

    @property
    def kind(self) -> str:
        """"ids" (token ids; the decoder embeds them) or "embeds" (ready inputs_embeds)."""
        return self._kind

    @property
    def rope_ndim(self) -> int:
        """3 for multimodal RoPE positions [3, S], 1 for plain positions [S]."""
        return self._rope_ndim

    @property
    def hidden_size(self) -> int | None:
        return self._hidden

    @property
    def lengths(self) -> np.ndarray:
        return np.array([s.length for s in self._samples], dtype=np.int64)

    @property
    def max_len(self) -> int:
        return int(self.lengths.max())

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())

    def token_counts(self) -> dict[str, int]:
        """Number of tokens per modality name over all samples (padding never counted)."""
        counts = np.zeros(3, dtype=np.int64)
        for s in self._samples:
            counts += np.bincount(s.modality_ids, minlength=3)[:3]
        return {n: int(c) for n, c in zip(MODALITY_NAMES, counts)}

    def modalities(self) -> tuple[str, ...]:
        """Names of the modalities that have at least one token, in id order."""
        return tuple(n for n, c in self.token_counts().items() if c > 0)

    # ---- deterministic selection -------------------------------------------------------------
    def subsample(self, n: int, seed: int = 0) -> "CalibSet":
        """``n`` samples chosen by ``seed`` (kept in original order); all of them if ``n >= len``."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise CalibFormatError(f"subsample: n must be a positive integer, got {n!r}")
        if n >= len(self):
            return CalibSet(self._samples, self.meta)
        idx = np.sort(np.random.default_rng(seed).permutation(len(self))[:n])
        return CalibSet([self._samples[i] for i in idx], self.meta)

    def split(self, held_out: float | int, seed: int = 0) -> tuple["CalibSet", "CalibSet"]:
        """(train, held_out) with disjoint samples chosen by ``seed``.

        ``held_out`` is a fraction in (0, 1) or a sample count; both parts must be non-empty.
        """
        n = len(self)
        if isinstance(held_out, float) and 0 < held_out < 1:
            k = int(round(held_out * n))
        elif isinstance(held_out, (int, np.integer)) and not isinstance(held_out, bool):
            k = int(held_out)
        else:
            raise CalibFormatError(f"split: held_out must be a fraction in (0, 1) or a count, got {held_out!r}")
        if not 1 <= k <= n - 1:
            raise CalibFormatError(
                f"split: held_out={held_out!r} leaves {n - k} train and {k} held-out samples of {n}; "
                "both parts need at least one"
            )
        perm = np.random.default_rng(seed).permutation(n)
        held = np.sort(perm[:k])
        train = np.sort(perm[k:])
        return (
            CalibSet([self._samples[i] for i in train], self.meta),
            CalibSet([self._samples[i] for i in held], self.meta),
        )

    def truncate(self, seq_len: int) -> "CalibSet":
        """Cut every sample to at most ``seq_len`` tokens (positions are explicit, so this is exact)."""
        if seq_len < 1:
            raise CalibFormatError(f"truncate: seq_len must be >= 1, got {seq_len}")
        out = []
        for s in self._samples:
            if s.length <= seq_len:
                out.append(s)
                continue
            out.append(
                CalibSample(
                    modality_ids=s.modality_ids[:seq_len],
                    position_ids=s.position_ids[..., :seq_len],
                    input_ids=None if s.input_ids is None else s.input_ids[:seq_len],
                    inputs_embeds=None if s.inputs_embeds is None else s.inputs_embeds[:seq_len],
                )
            )
        return CalibSet(out, self.meta)

    def with_rope_ndim(self, ndim: int) -> "CalibSet":
        """Positions as [3, S] (1-D positions copied to the three rows, as HF does for text) or [S].

        Going from 3 rows to 1 is allowed only when the three rows are equal (pure text).
        """
        if ndim not in (1, 3):
            raise CalibFormatError(f"with_rope_ndim: ndim must be 1 or 3, got {ndim}")
        if ndim == self._rope_ndim:
            return self
        out = []
        for i, s in enumerate(self._samples):
            if ndim == 3:
                pos = np.broadcast_to(s.position_ids, (3, s.length)).copy()
            else:
                if not (s.position_ids == s.position_ids[0:1]).all():
                    raise CalibFormatError(
                        f"sample {i}: its 3-D positions differ between rows (multimodal); "
                        "a 1-D RoPE model cannot take them"
                    )
                pos = s.position_ids[0].copy()
            out.append(dataclasses.replace(s, position_ids=pos))
        return CalibSet(out, self.meta)

    def concat(self, other: "CalibSet") -> "CalibSet":
        return CalibSet(self._samples + list(other), self.meta)

    def fingerprint(self) -> str:
        """SHA-256 over every array of every sample (content identity, for caches and tests)."""
        h = hashlib.sha256()
        for s in self._samples:
            for a in (s.modality_ids, s.position_ids, s.input_ids, s.inputs_embeds):
                if a is None:
                    h.update(b"-")
                    continue
                a = np.ascontiguousarray(a)
                h.update(f"{a.dtype.str}{a.shape}".encode())
                h.update(a.tobytes())
        return h.hexdigest()

    # ---- padding -----------------------------------------------------------------------------
    def pad_samples(self, indices: Sequence[int], seq_len: int, rows: int | None = None, pad_id: int = 0) -> dict:
        """Right-pad the given samples to ``seq_len`` (and ``rows`` batch rows) as numpy arrays.

        Padding tokens: ``attention_mask`` 0, modality 0 (text), input id ``pad_id`` / zero
        embedding, positions counting on from the row's last position (finite, monotone RoPE).
        Filler rows (beyond ``len(indices)``) are all padding with ``sample_index`` -1.
        """
        rows = len(indices) if rows is None else rows
        if rows < len(indices):
            raise CalibFormatError(f"pad_samples: rows={rows} < {len(indices)} samples")
        mask = np.zeros((rows, seq_len), dtype=np.int32)
        mod = np.zeros((rows, seq_len), dtype=np.int32)
        pos_shape = (3, rows, seq_len) if self._rope_ndim == 3 else (rows, seq_len)
        pos = np.zeros(pos_shape, dtype=np.int32)
        if self._kind == "ids":
            data = np.full((rows, seq_len), pad_id, dtype=np.int32)
        else:
            data = np.zeros((rows, seq_len, self._hidden), dtype=self._samples[0].inputs_embeds.dtype)
        sidx = np.full((rows,), -1, dtype=np.int32)
        for r in range(rows):
            if r >= len(indices):
                p = np.arange(seq_len, dtype=np.int32)
                pos[..., r, :] = p if self._rope_ndim == 1 else np.broadcast_to(p, (3, seq_len))
                continue
            i = int(indices[r])
            s = self._samples[i]
            n = s.length
            if n > seq_len:
                raise CalibFormatError(f"sample {i} has {n} tokens, more than the padded length {seq_len}")
            sidx[r] = i
            mask[r, :n] = 1
            mod[r, :n] = s.modality_ids
            pos[..., r, :] = _pad_positions(s.position_ids, seq_len)
            if self._kind == "ids":
                data[r, :n] = s.input_ids
            else:
                data[r, :n] = s.inputs_embeds
        key = "input_ids" if self._kind == "ids" else "inputs_embeds"
        return {
            key: data,
            "position_ids": pos,
            "modality_ids": mod,
            "attention_mask": mask,
            "sample_index": sidx,
        }

    def batches(
        self,
        batch_size: int = 1,
        bucket_sizes: Sequence[int] | None = None,
        *,
        pad_id: int = 0,
        fill_last: bool = False,
        shuffle_seed: int | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Padded numpy batches: each sample goes to the smallest bucket length that holds it.

        Yields dicts with ``input_ids [B, L]`` or ``inputs_embeds [B, L, H]``, ``position_ids
        [3, B, L]`` or ``[B, L]``, ``modality_ids [B, L]``, ``attention_mask [B, L]`` (1 = real token)
        and ``sample_index [B]`` (-1 for filler rows). ``bucket_sizes=None`` uses one bucket: the
        longest sample rounded up to a multiple of 8. Batches come bucket by bucket (shortest first),
        samples in original order within a bucket (or shuffled by ``shuffle_seed``). With
        ``fill_last`` the last batch of a bucket is filled with all-padding rows so every batch has
        exactly ``batch_size`` rows (consumers must then mask by ``attention_mask``).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise CalibFormatError(f"batch_size must be a positive integer, got {batch_size!r}")
        if bucket_sizes is None:
            buckets = [int(-(-self.max_len // 8) * 8)]
        else:
            buckets = sorted({int(b) for b in bucket_sizes})
            if not buckets or buckets[0] < 1:
                raise CalibFormatError(f"bucket_sizes must be positive lengths, got {list(bucket_sizes)!r}")
            if buckets[-1] < self.max_len:
                longest = int(np.argmax(self.lengths))
                raise CalibFormatError(
                    f"sample {longest} has {self.max_len} tokens but the largest bucket is {buckets[-1]}; "
                    "add a larger bucket or truncate the set"
                )
        lengths = self.lengths
        order = np.arange(len(self))
        if shuffle_seed is not None:
            order = np.random.default_rng(shuffle_seed).permutation(len(self))
        which = np.searchsorted(np.asarray(buckets), lengths[order], side="left")
        for b, blen in enumerate(buckets):
            members = order[which == b]
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                yield self.pad_samples(chunk, blen, rows=batch_size if fill_last else None, pad_id=pad_id)

    # ---- npz -------------------------------------------------------------------------------
    def to_arrays(self, seq_len: int | None = None, pad_id: int = 0) -> dict[str, np.ndarray]:
        """The bring-your-own npz layout: all samples right-padded to one length, plus attention_mask."""
        arrays = self.pad_samples(range(len(self)), seq_len or self.max_len, pad_id=pad_id)
        arrays.pop("sample_index")
        return arrays

    def save(self, path, *, compress: bool = False) -> None:
        """Write the set to one ``.npz`` (atomic: temp file, then ``os.replace``)."""
        save_npz(self, path, compress=compress)

    @classmethod
    def load(cls, path) -> "CalibSet":
        """Read and validate a ``.npz`` written by ``save`` or by hand (bring-your-own embeddings)."""
        return load_npz(path)


def arrays_to_calibset(arrays: dict, where: str = "arrays", meta: dict | None = None) -> CalibSet:
    """Validate bring-your-own-layout arrays (already in memory) and build a CalibSet from them."""
    return CalibSet(arrays_to_samples(arrays, where), meta)


def load_npz(path) -> CalibSet:
    """Load and validate a CalibSet ``.npz``; every problem is one ``CalibFormatError`` line."""
    samples, meta = read_npz(path)
    cs = CalibSet(samples, meta)
    cs.meta.setdefault("source", str(path))
    return cs


def require_modalities(calibset: CalibSet, names: Sequence[str], min_tokens: int = 1) -> dict[str, int]:
    """Raise ``MissingModalityError`` unless every named modality has at least ``min_tokens`` tokens.

    The pipeline calls this before statistics/smoothing that need a modality; returns the counts.
    """
    counts = calibset.token_counts()
    for n in names:
        if n not in MODALITY_IDS:
            raise MissingModalityError(f"unknown modality {n!r}; expected one of {', '.join(MODALITY_NAMES)}")
        if counts[n] < min_tokens:
            have = ", ".join(f"{k}={v}" for k, v in counts.items())
            raise MissingModalityError(
                f"the method needs {n} tokens (at least {min_tokens}) but the calibration set has "
                f"{counts[n]} ({have}); add {n} samples to the calibration source or choose a method "
                f"that does not use {n} statistics"
            )
    return counts
