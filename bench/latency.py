"""Benchmark latency: per-stage wall-clock timings and their percentiles."""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from edgesense.loop.scheduler import SchedulerOptions

__all__ = ["STAGES", "COMMAND_HOPS_PER_S", "SCENE_FRAMES_PER_S", "device_rates"]


STAGES = ("audio_frontend", "audio_encoder", "image_preprocess", "image_encoder", "fusion")
_MS_PER_S = 1000.0


def device_rates(scheduler: SchedulerOptions) -> tuple[float, float]:
    """(command hops, scene frames) per second of stream at ``scheduler``'s rates; whole numbers as int."""
    def plain(value: float) -> float:
        return int(value) if float(value).is_integer() else value

    return plain(_MS_PER_S / scheduler.command_hop_ms), plain(scheduler.scene_rate_hz)


#: The device loop's default rates (:class:`edgesense.loop.scheduler.SchedulerOptions`).
COMMAND_HOPS_PER_S, SCENE_FRAMES_PER_S = device_rates(SchedulerOptions())
_PERCENTILES = (50, 95, 99)


def latency_summary(samples_ms: Sequence[float]) -> dict[str, float | int | None]:
    """p50/p95/p99/mean/max (ms) and the sample count."""
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None, "n": 0}
    out: dict[str, Any] = {f"p{p}": round(float(np.percentile(x, p)), 4) for p in _PERCENTILES}
    out.update(mean=round(float(x.mean()), 4), max=round(float(x.max()), 4), n=int(x.size))
    return out


class _Timer:
    """Collects wall-clock milliseconds per stage."""

    def __init__(self, stages: Sequence[str]) -> None:
        self.samples: dict[str, list[float]] = {s: [] for s in stages}

    def time(self, stage: str, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        self.samples.setdefault(stage, []).append((time.perf_counter() - start) * _MS_PER_S)
        return out

    def summary(self) -> dict[str, dict[str, Any]]:
        return {stage: latency_summary(v) for stage, v in self.samples.items()}
