"""Per-stage wall time and peak memory for reports (host RSS, plus each device's peak where the
backend reports it)."""

from __future__ import annotations

import contextlib
import resource
import sys
import time

import jax


def peak_host_bytes() -> int:
    """Peak resident set size of this process so far (bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def peak_device_bytes() -> dict[str, int] | None:
    """Peak bytes in use on each local device (id -> bytes), when the backend reports it (GPU/TPU)."""
    out = {}
    for d in jax.local_devices():
        try:
            stats = d.memory_stats()
        except Exception:  # CPU backends may not implement it
            stats = None
        if stats:
            out[str(d.id)] = int(stats.get("peak_bytes_in_use", 0))
    return out or None


class StageTimer:
    """Accumulates wall seconds per named stage; records peak memory after each."""

    def __init__(self) -> None:
        self.stages: dict[str, dict] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            jax.effects_barrier()
            entry = self.stages.setdefault(name, {"seconds": 0.0})
            entry["seconds"] += time.perf_counter() - t0
            entry["peak_host_bytes"] = peak_host_bytes()
            dev = peak_device_bytes()
            if dev is not None:
                entry["peak_device_bytes"] = max(dev.values())
                if len(dev) > 1:
                    entry["peak_bytes_per_device"] = dev

    def as_dict(self) -> dict:
        total = sum(v["seconds"] for v in self.stages.values())
        return {**{k: dict(v, seconds=round(v["seconds"], 3)) for k, v in self.stages.items()},
                "total_seconds": round(total, 3)}
