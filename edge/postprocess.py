"""Turning per-hop model scores into events: pure numpy, no model needed.

* :class:`CommandRecognizer`: TensorFlow's ``RecognizeCommands`` (speech_commands
  example) semantics: posteriors averaged over ``average_window_ms``; a word fires
  when its average beats ``detection_threshold``, differs from the previous top
  label and more than ``suppression_ms`` passed since that one; too few results
  (fewer than ``minimum_count``, or spanning less than a quarter of the window)
  never fire. ``_silence_`` / ``_unknown_`` take part (a confident silence re-arms
  the word before it) but produce no event.
* :class:`EnergyGate`: RMS level in dBFS with hangover, to skip command inference
  on silence.
* :class:`SceneSmoother`: smoothed scene probabilities with hysteresis: a change
  event when a new label beats the current one by ``hysteresis_margin`` for
  ``min_hold_ms``, and a heartbeat every ``heartbeat_ms`` while it holds.

All of them take monotonic stream times in milliseconds and raise ``ValueError``
when they go backwards. They return :class:`edge.types.CommandEvent` /
:class:`edge.types.SceneEvent` (``wall_time`` from the ``wall_time`` supplier) or
``None`` when nothing happened.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edge.types import DEFAULT_COMMAND_LABELS, SILENCE_LABEL, UNKNOWN_LABEL, CommandEvent, SceneEvent
from edge.schema import require

__all__ = [
    "CommandRecognizerOptions",
    "CommandRecognizer",
    "RecognitionResult",
    "EnergyGateOptions",
    "EnergyGate",
    "rms_dbfs",
    "SceneSmootherOptions",
    "SceneSmoother",
]

#: Results must span at least this fraction of the averaging window (as in RecognizeCommands).
MINIMUM_WINDOW_FRACTION = 0.25
SMOOTHING_METHODS = ("ema", "window")




def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    labels = tuple(labels)
    require(len(labels) >= 1 and all(isinstance(x, str) and x for x in labels), "labels",
             "a non-empty sequence of non-empty strings", labels)
    require(len(set(labels)) == len(labels), "labels", "unique labels", labels)
    return labels


def _check_scores(scores: Any, count: int, name: str) -> np.ndarray:
    x = np.asarray(scores, dtype=np.float64)
    if x.shape != (count,):
        raise ValueError(f"{name}: expected shape ({count},), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: expected finite values, got {x.tolist()}")
    return x


def _check_time(t_ms: Any, previous: float | None) -> float:
    if not _is_number(t_ms):
        raise ValueError(f"t_ms: expected a finite number, got {t_ms!r}")
    if previous is not None and t_ms < previous:
        raise ValueError(f"t_ms: expected >= the previous time {previous:g} (in order), got {t_ms:g}")
    return float(t_ms)


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True, kw_only=True)
class CommandRecognizerOptions:
    """Smoothing of keyword-spotting posteriors (TensorFlow RecognizeCommands)."""

    average_window_ms: float = 1000.0
    detection_threshold: float = 0.7
    suppression_ms: float = 750.0
    minimum_count: int = 3
    ignored_labels: tuple[str, ...] = (SILENCE_LABEL, UNKNOWN_LABEL)

    def __post_init__(self) -> None:
        require(_is_number(self.average_window_ms) and self.average_window_ms > 0, "average_window_ms",
                 "a positive number", self.average_window_ms)
        require(_is_number(self.detection_threshold) and 0 <= self.detection_threshold < 1, "detection_threshold",
                 "a number in [0, 1)", self.detection_threshold)
        require(_is_number(self.suppression_ms) and self.suppression_ms >= 0, "suppression_ms",
                 "a number >= 0", self.suppression_ms)
        require(isinstance(self.minimum_count, int) and not isinstance(self.minimum_count, bool)
                 and self.minimum_count >= 1, "minimum_count", "an integer >= 1", self.minimum_count)
        require(isinstance(self.ignored_labels, tuple) and all(isinstance(x, str) for x in self.ignored_labels),
                 "ignored_labels", "a tuple of labels", self.ignored_labels)


@dataclass(frozen=True)
class RecognitionResult:
    """The averaged top label after the latest scores (whether or not it fired)."""

    label: str
    score: float
    t_ms: float
    is_new_command: bool


class CommandRecognizer:
    """Feed one score vector per hop with :meth:`process`; get a :class:`CommandEvent` when a word fires."""

    def __init__(self, labels: Sequence[str] = DEFAULT_COMMAND_LABELS,
                 options: CommandRecognizerOptions = CommandRecognizerOptions(), *,
                 wall_time: Callable[[], float] = time.time) -> None:
        self.labels = _check_labels(labels)
        self.options = options
        self._wall_time = wall_time
        self._results: collections.deque[tuple[float, np.ndarray]] = collections.deque()
        self._last_t_ms: float | None = None
        self._previous_top_label = SILENCE_LABEL
        self._previous_top_t_ms = -math.inf
        self.last_result: RecognitionResult | None = None

    def reset(self) -> None:
        self._results.clear()
        self._last_t_ms = None
        self._previous_top_label = SILENCE_LABEL
        self._previous_top_t_ms = -math.inf
        self.last_result = None

    def process(self, scores: Any, t_ms: float, *,
                latency_ms: Mapping[str, float] | None = None) -> CommandEvent | None:
        """Add the posteriors computed for the audio ending at ``t_ms``; return an event or ``None``."""
        x = _check_scores(scores, len(self.labels), "scores")
        t_ms = _check_time(t_ms, self._last_t_ms)
        self._last_t_ms = t_ms
        opts = self.options
        self._results.append((t_ms, x))
        time_limit = t_ms - opts.average_window_ms
        while self._results[0][0] < time_limit:
            self._results.popleft()
        count = len(self._results)
        span_ms = t_ms - self._results[0][0]
        if count < opts.minimum_count or span_ms < opts.average_window_ms * MINIMUM_WINDOW_FRACTION:
            self.last_result = RecognitionResult(self._previous_top_label, 0.0, t_ms, False)
            return None
        average = np.mean([r for _, r in self._results], axis=0)
        top = int(np.argmax(average))
        label, score = self.labels[top], float(average[top])
        if self._previous_top_label == SILENCE_LABEL or self._previous_top_t_ms == -math.inf:
            since_ms = math.inf
        else:
            since_ms = t_ms - self._previous_top_t_ms
        is_new = (score > opts.detection_threshold and label != self._previous_top_label
                  and since_ms > opts.suppression_ms)
        if is_new:
            self._previous_top_label = label
            self._previous_top_t_ms = t_ms
        self.last_result = RecognitionResult(label, score, t_ms, is_new)
        if not is_new or label in opts.ignored_labels:
            return None
        return CommandEvent(label=label, score=score, t_ms=t_ms, wall_time=self._wall_time(),
                            latency_ms=dict(latency_ms or {}))


# --------------------------------------------------------------------------- energy gate


def rms_dbfs(samples: Any, floor_dbfs: float = -120.0) -> float:
    """RMS level of float samples in [-1, 1] in dB relative to full scale (a full-scale square is 0 dBFS)."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return floor_dbfs
    rms = math.sqrt(float(np.mean(x * x)))
    return max(floor_dbfs, 20.0 * math.log10(rms)) if rms > 0 else floor_dbfs


@dataclass(frozen=True, kw_only=True)
class EnergyGateOptions:
    """Open while the level is at least ``threshold_dbfs`` and for ``hangover_ms`` after."""

    threshold_dbfs: float = -50.0
    hangover_ms: float = 500.0
    floor_dbfs: float = -120.0

    def __post_init__(self) -> None:
        require(_is_number(self.floor_dbfs) and self.floor_dbfs < 0, "floor_dbfs", "a negative number",
                 self.floor_dbfs)
        require(_is_number(self.threshold_dbfs) and self.floor_dbfs < self.threshold_dbfs <= 0, "threshold_dbfs",
                 f"a number in ({self.floor_dbfs:g}, 0]", self.threshold_dbfs)
        require(_is_number(self.hangover_ms) and self.hangover_ms >= 0, "hangover_ms", "a number >= 0",
                 self.hangover_ms)


class EnergyGate:
    """A voice-activity gate on signal energy: :meth:`update` says whether to run inference."""

    def __init__(self, options: EnergyGateOptions = EnergyGateOptions()) -> None:
        self.options = options
        self._last_t_ms: float | None = None
        self._open_until_ms = -math.inf
        self.last_dbfs = options.floor_dbfs
        self.is_open = False

    def reset(self) -> None:
        self._last_t_ms = None
        self._open_until_ms = -math.inf
        self.last_dbfs = self.options.floor_dbfs
        self.is_open = False

    def update(self, samples: Any, t_ms: float) -> bool:
        """Measure the chunk that ends at ``t_ms``; True while speech-level audio (or its hangover) lasts."""
        t_ms = _check_time(t_ms, self._last_t_ms)
        self._last_t_ms = t_ms
        self.last_dbfs = rms_dbfs(samples, self.options.floor_dbfs)
        if self.last_dbfs >= self.options.threshold_dbfs:
            self._open_until_ms = t_ms + self.options.hangover_ms
        self.is_open = t_ms <= self._open_until_ms
        return self.is_open


# --------------------------------------------------------------------------- scenes


@dataclass(frozen=True, kw_only=True)
class SceneSmootherOptions:
    """Scene smoothing: ``method`` "ema" (time constant ``window_ms``) or "window" (mean over ``window_ms``);
    a new label must lead the current one by more than ``hysteresis_margin`` for ``min_hold_ms``;
    a heartbeat every ``heartbeat_ms`` while the label holds (``None``: no heartbeats)."""

    method: str = "ema"
    window_ms: float = 2000.0
    hysteresis_margin: float = 0.1
    min_hold_ms: float = 1000.0
    heartbeat_ms: float | None = 10000.0

    def __post_init__(self) -> None:
        require(self.method in SMOOTHING_METHODS, "method", f"one of {', '.join(SMOOTHING_METHODS)}", self.method)
        require(_is_number(self.window_ms) and self.window_ms > 0, "window_ms", "a positive number", self.window_ms)
        require(_is_number(self.hysteresis_margin) and 0 <= self.hysteresis_margin < 1, "hysteresis_margin",
                 "a number in [0, 1)", self.hysteresis_margin)
        require(_is_number(self.min_hold_ms) and self.min_hold_ms >= 0, "min_hold_ms", "a number >= 0",
                 self.min_hold_ms)
        require(self.heartbeat_ms is None or (_is_number(self.heartbeat_ms) and self.heartbeat_ms > 0),
                 "heartbeat_ms", "None or a positive number", self.heartbeat_ms)


class SceneSmoother:
    """Feed scene probabilities with :meth:`update`; get a :class:`SceneEvent` on a change or a heartbeat."""

    def __init__(self, labels: Sequence[str], options: SceneSmootherOptions = SceneSmootherOptions(), *,
                 wall_time: Callable[[], float] = time.time) -> None:
        self.labels = _check_labels(labels)
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
        self._last_emit_ms = 0.0

    @property
    def current_label(self) -> str | None:
        return None if self._current is None else self.labels[self._current]

    @property
    def smoothed(self) -> np.ndarray | None:
        """The smoothed probabilities after the latest update (a copy)."""
        return None if self._smoothed is None else self._smoothed.copy()

    def _smooth(self, x: np.ndarray, t_ms: float) -> np.ndarray:
        if self.options.method == "window":
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
        self._smoothed = self._smooth(x, t_ms)
        self._last_t_ms = t_ms
        p = self._smoothed
        top = int(np.argmax(p))
        current = self._current
        leads = current is None or (top != current and p[top] - p[current] > self.options.hysteresis_margin)
        if not leads:
            self._candidate = None
        else:
            if self._candidate != top:
                self._candidate, self._candidate_since_ms = top, t_ms
            if t_ms - self._candidate_since_ms >= self.options.min_hold_ms:
                self._current, self._candidate = top, None
                self._last_emit_ms = t_ms
                return self._event(top, t_ms, "change", None if current is None else self.labels[current],
                                   latency_ms)
        heartbeat = self.options.heartbeat_ms
        if current is not None and heartbeat is not None and t_ms - self._last_emit_ms >= heartbeat:
            self._last_emit_ms = t_ms
            return self._event(current, t_ms, "heartbeat", None, latency_ms)
        return None

    def _event(self, index: int, t_ms: float, reason: str, previous: str | None,
               latency_ms: Mapping[str, float] | None) -> SceneEvent:
        assert self._smoothed is not None
        return SceneEvent(label=self.labels[index], score=float(self._smoothed[index]), t_ms=t_ms,
                          wall_time=self._wall_time(), reason=reason, previous=previous,
                          latency_ms=dict(latency_ms or {}))
