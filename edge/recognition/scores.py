"""Checks shared by the post-processing classes: labels, score vectors, timestamps."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from edgesense.schema.validate import is_number, require


def _check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    labels = tuple(labels)
    require(len(labels) >= 1 and all(isinstance(x, str) and x for x in labels), "labels",
             "a non-empty sequence of non-empty strings", labels)
    require(len(set(labels)) == len(labels), "labels", "unique labels", labels)
    return labels


def _check_scores(scores: Any, count: int, name: str) -> np.ndarray:
    """``scores`` as a float64 copy (a caller may refill its array for the next hop) of shape ``(count,)``."""
    x = np.array(scores, dtype=np.float64)
    if x.shape != (count,):
        raise ValueError(f"{name}: expected shape ({count},), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: expected finite values, got {x.tolist()}")
    return x


def _check_time(t_ms: Any, previous: float | None) -> float:
    if not is_number(t_ms):
        raise ValueError(f"t_ms: expected a finite number, got {t_ms!r}")
    if previous is not None and t_ms < previous:
        raise ValueError(f"t_ms: expected >= the previous time {previous:g} (in order), got {t_ms:g}")
    return float(t_ms)
