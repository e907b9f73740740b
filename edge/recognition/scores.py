"""Checks shared by the post-processing classes: labels, score vectors, timestamps."""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Sequence

import numpy as np

from edgesense.schema.validate import found, require


def _check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    # one string is a sequence too: "yes" would be the three labels 'y', 'e', 's'
    require(not isinstance(labels, (str, bytes)) and isinstance(labels, Iterable), "labels",
            "a sequence of label strings (one string is not)", labels)
    labels = tuple(labels)
    require(len(labels) >= 1 and all(isinstance(x, str) and x for x in labels), "labels",
             "a non-empty sequence of non-empty strings", labels)
    require(len(set(labels)) == len(labels), "labels", "unique labels", labels)
    return labels


def _check_scores(scores: Any, count: int, name: str) -> np.ndarray:
    """``scores`` as a float64 copy (a caller may refill its array for the next hop) of shape ``(count,)``."""
    try:
        x = np.array(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected {count} numbers, got {found(scores)}") from None
    if x.shape != (count,):
        raise ValueError(f"{name}: expected shape ({count},), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: expected finite values, got {x.tolist()}")
    return x


def _as_time(t_ms: Any) -> float:
    """``t_ms`` as a float, NaN when it is no real number (numpy's numbers are: times often come from an array)."""
    if not isinstance(t_ms, numbers.Real) or isinstance(t_ms, bool):
        return math.nan
    try:
        return float(t_ms)
    except OverflowError:  # an int past a float's range
        return math.nan


def _check_time(t_ms: Any, previous: float | None) -> float:
    value = _as_time(t_ms)
    if not math.isfinite(value):
        raise ValueError(f"t_ms: expected a finite number, got {found(t_ms)}")
    if previous is not None and value < previous:
        raise ValueError(f"t_ms: expected >= the previous time {previous:g} (in order), got {value:g}")
    return value
