"""Scene smoothing: averaged scene scores with hysteresis and a heartbeat, one event per change.

Time without frames is not hold time: after an outage (a camera that stopped delivering frames)
a new label's hold starts again at the first frame after it, so a change is never issued on the
first frame back on the strength of a lead last seen before the outage. An interval between two
frames is an outage when it is longer than ``window_ms``, ``min_hold_ms`` and :data:`GAP_FACTOR`
times the shortest interval seen before it (the camera's cadence: a slow scene rate is not an
outage; the first interval after a start or :meth:`SceneSmoother.reset`, with no cadence yet, is
judged by the window and the hold alone).

Heartbeats keep their period: they fall due every ``heartbeat_ms`` after the change, and each comes on the
first frame at or after its due time; a late frame delays one heartbeat, not the ones after it (frames every
500 ms and ``heartbeat_ms`` 1200 give heartbeats 1000 or 1500 ms apart, every 1200 ms on average, not every
1500). Due times that pass without a frame (an outage) are not made up: one heartbeat on the first frame
back, the next at the next due time.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edgesense.recognition.scores import _check_labels, _check_scores, _check_time
from edgesense.schema.validate import is_number, require
from edgesense.types import SceneEvent

__all__ = ["SceneSmootherOptions", "SceneSmoother"]


SMOOTHING_METHODS = ("ema", "window")
#: An interval between frames longer than this many times the shortest one (and than the window and the
#: hold) is an outage, not hold time.
GAP_FACTOR = 2.0
#: Frame times within this much before a heartbeat's due time count as on it (float rounding of live clocks).
HEARTBEAT_TOLERANCE_MS = 1e-6
#: More due times passed than this since the last heartbeat (a period of a few ulps) restart the count at the frame.
MAX_MISSED_HEARTBEATS = 2.0 ** 52
#: The longest ``window_ms``: an hour (``window`` smoothing keeps every frame of it, so a longer one grows for
#: as long as the loop runs).
MAX_WINDOW_MS = 3_600_000.0


# --------------------------------------------------------------------------- scenes


@dataclass(frozen=True, kw_only=True)
class SceneSmootherOptions:
    """Scene smoothing: ``smoothing`` "ema" (time constant ``window_ms``) or "window" (mean over ``window_ms``);
    a new label must lead the current one by more than ``hysteresis_margin`` for ``min_hold_ms``
    (of frames: an outage restarts the hold, see the module docstring); a heartbeat every ``heartbeat_ms``
    while the label holds, on the first frame at or after each due time (``None``: no heartbeats)."""

    smoothing: str = "ema"
    window_ms: float = 2000.0
    hysteresis_margin: float = 0.1
    min_hold_ms: float = 1000.0
    heartbeat_ms: float | None = 10000.0

    def __post_init__(self) -> None:
        require(self.smoothing in SMOOTHING_METHODS, "smoothing", f"one of {', '.join(SMOOTHING_METHODS)}",
                self.smoothing)
        require(is_number(self.window_ms) and 0 < self.window_ms <= MAX_WINDOW_MS, "window_ms",
                f"a positive number up to {MAX_WINDOW_MS:g} (an hour)", self.window_ms)
        require(is_number(self.hysteresis_margin) and 0 <= self.hysteresis_margin < 1, "hysteresis_margin",
                 "a number in [0, 1)", self.hysteresis_margin)
        require(is_number(self.min_hold_ms) and self.min_hold_ms >= 0, "min_hold_ms", "a number >= 0",
                 self.min_hold_ms)
        require(self.heartbeat_ms is None or (is_number(self.heartbeat_ms) and self.heartbeat_ms > 0),
                 "heartbeat_ms", "null (no heartbeat) or a positive number", self.heartbeat_ms)


class SceneSmoother:
    """Feed scene probabilities with :meth:`update`; get a :class:`SceneEvent` on a change or a heartbeat."""

    def __init__(self, labels: Sequence[str], options: SceneSmootherOptions = SceneSmootherOptions(), *,
                 wall_time: Callable[[], float] = time.time) -> None:
        self.labels = _check_labels(labels)
        require(isinstance(options, SceneSmootherOptions), "options", "SceneSmootherOptions", options)
        self.options = options
        self._wall_time = wall_time
        self.reset()

    def reset(self) -> None:
        self._last_t_ms: float | None = None
        self._smoothed: np.ndarray | None = None
        self._window: collections.deque[tuple[float, np.ndarray]] = collections.deque()
        self._current: int | None = None
        self._candidate: int | None = None
        self._candidate_since_ms = 0.0
        self._changed_ms = 0.0  # heartbeats fall due at _changed_ms + k * heartbeat_ms, k >= _heartbeats
        self._heartbeats = 1
        self._shortest_interval_ms = math.inf  # the camera's cadence (see GAP_FACTOR)

    @property
    def current_label(self) -> str | None:
        return None if self._current is None else self.labels[self._current]

    @property
    def smoothed(self) -> np.ndarray | None:
        """The smoothed probabilities after the latest update (a copy)."""
        return None if self._smoothed is None else self._smoothed.copy()

    def _smooth(self, x: np.ndarray, t_ms: float) -> np.ndarray:
        if self.options.smoothing == "window":
            self._window.append((t_ms, x))
            while self._window[0][0] <= t_ms - self.options.window_ms:
                self._window.popleft()
            return np.mean([p for _, p in self._window], axis=0)
        if self._smoothed is None or self._last_t_ms is None:
            return x
        alpha = 1.0 - math.exp(-(t_ms - self._last_t_ms) / self.options.window_ms)
        return self._smoothed + alpha * (x - self._smoothed)

    def update(self, probabilities: Any, t_ms: float, *,
               latency_ms: Mapping[str, float] | None = None) -> SceneEvent | None:
        """Add the scene probabilities of the frame at ``t_ms``; return a change/heartbeat event or ``None``."""
        x = _check_scores(probabilities, len(self.labels), "probabilities")
        t_ms = _check_time(t_ms, self._last_t_ms)
        outage = self._outage_before(t_ms)
        self._smoothed = self._smooth(x, t_ms)
        self._last_t_ms = t_ms
        p = self._smoothed
        top = int(np.argmax(p))
        current = self._current
        leads = current is None or (top != current and p[top] - p[current] > self.options.hysteresis_margin)
        if not leads:
            self._candidate = None
        else:
            if self._candidate != top or outage:  # the lead before an outage was not seen during it
                self._candidate, self._candidate_since_ms = top, t_ms
            if t_ms - self._candidate_since_ms >= self.options.min_hold_ms:
                self._current, self._candidate = top, None
                self._changed_ms, self._heartbeats = t_ms, 1
                return self._event(top, t_ms, "change", None if current is None else self.labels[current],
                                   latency_ms)
        if current is not None and self._heartbeat_due(t_ms):
            return self._event(current, t_ms, "heartbeat", None, latency_ms)
        return None

    def _heartbeat_due(self, t_ms: float) -> bool:
        """Whether a heartbeat is due at ``t_ms`` (and move to the next due time after it); see the module
        docstring. The due time is computed from the change each time: adding an inexact period drifts."""
        period = self.options.heartbeat_ms
        if period is None:
            return False
        due_ms = self._changed_ms + self._heartbeats * period
        if t_ms < due_ms - HEARTBEAT_TOLERANCE_MS:
            return False
        missed = (t_ms - due_ms + HEARTBEAT_TOLERANCE_MS) / period
        if missed < MAX_MISSED_HEARTBEATS:
            self._heartbeats += math.floor(missed) + 1
        else:  # a period far below a frame interval (5e-324 ms): a heartbeat on every frame, counted from here
            self._changed_ms, self._heartbeats = t_ms, 1
        return True

    def _outage_before(self, t_ms: float) -> bool:
        """Whether the frames stopped between the previous update and ``t_ms`` (see :data:`GAP_FACTOR`)."""
        if self._last_t_ms is None:
            return False
        interval = t_ms - self._last_t_ms
        opts = self.options
        finite_shortest = self._shortest_interval_ms if math.isfinite(self._shortest_interval_ms) else 0.0
        outage = interval > max(opts.window_ms, opts.min_hold_ms, GAP_FACTOR * finite_shortest)
        if interval > 0:
            self._shortest_interval_ms = min(self._shortest_interval_ms, interval)
        return outage

    def _event(self, index: int, t_ms: float, reason: str, previous: str | None,
               latency_ms: Mapping[str, float] | None) -> SceneEvent:
        assert self._smoothed is not None
        return SceneEvent(label=self.labels[index], score=float(self._smoothed[index]), t_ms=t_ms,
                          wall_time=self._wall_time(), reason=reason, previous=previous,
                          latency_ms=dict(latency_ms or {}))
