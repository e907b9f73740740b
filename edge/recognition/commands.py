"""Command words from per-hop model scores: pure numpy, no model needed.

* :class:`CommandRecognizer` (here): posteriors averaged over ``average_window_ms``; a word
  fires when it is the top label of the average, its average beats its threshold
  (``class_thresholds[word]``, else ``threshold``), it is *armed*, and more than
  ``suppression_ms`` passed since the previous event, and what came before the word was not
  other speech (*context*: the mean ``_unknown_`` score of the results between
  ``context_offset_ms + context_window_ms`` and ``context_offset_ms`` ago is at most
  ``max_context_unknown``; a command is said after a pause, a false peak in talk sits inside
  continuous speech; no results there, at the start or after a reset, pass). Firing disarms the word; it
  re-arms when its own average falls to ``release_threshold`` or below (hysteresis),
  so a word said twice fires twice whatever the background does between the two,
  and a word held for a long time fires once. Too few results (fewer than
  ``minimum_count``, or spanning less than a quarter of the window) never fire.
  ``_silence_`` / ``_unknown_`` never fire.
* :class:`EnergyGate` (:mod:`.gate`): RMS level in dBFS with hangover, to skip command inference
  on silence.
* :class:`SceneSmoother` (:mod:`.scenes`): smoothed scene probabilities with hysteresis: a change
  event when a new label beats the current one by ``hysteresis_margin`` for
  ``min_hold_ms``, and a heartbeat every ``heartbeat_ms`` while it holds.

All of them take monotonic stream times in milliseconds and raise ``ValueError``
when they go backwards. The recognizer and the smoother return :class:`edgesense.types.CommandEvent` /
:class:`edgesense.types.SceneEvent` (``wall_time`` from the ``wall_time`` supplier) or
``None`` when nothing happened; the gate returns whether it is open.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edgesense.recognition.scores import _check_labels, _check_scores, _check_time
from edgesense.schema.validate import is_number, require
from edgesense.types import DEFAULT_COMMAND_LABELS, SILENCE_LABEL, UNKNOWN_LABEL, CommandEvent

__all__ = ["CommandRecognizerOptions", "CommandRecognizer", "RecognitionResult"]


#: Results must span at least this fraction of the averaging window (as in RecognizeCommands).
MINIMUM_WINDOW_FRACTION = 0.25
#: The longest stretch of results held (``average_window_ms``, ``context_offset_ms + context_window_ms``): an
#: hour. Every result of a window is kept, so a longer one grows for as long as the loop runs.
MAX_HELD_MS = 3_600_000.0


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True, kw_only=True)
class CommandRecognizerOptions:
    """Smoothing and firing of keyword-spotting posteriors (see the module docstring).

    ``threshold``: the average a word must beat to fire; ``class_thresholds``: per-word
    overrides (``{"off": 0.6}``; words not named use ``threshold``). ``release_threshold``:
    the average at or below which a word that fired re-arms; below every threshold.
    ``max_context_unknown``: the most ``_unknown_`` (other speech) the context before a word may
    hold for it to fire, a mean over the results from ``context_offset_ms + context_window_ms`` to
    ``context_offset_ms`` ago (1: no context rule). ``ignored_labels``: labels that never fire; it must hold
    ``_silence_`` and ``_unknown_``, and may add words of the model to mute.
    """

    average_window_ms: float = 1000.0
    threshold: float = 0.7
    class_thresholds: dict[str, float] = field(default_factory=dict)
    release_threshold: float = 0.3
    suppression_ms: float = 750.0
    minimum_count: int = 3
    ignored_labels: tuple[str, ...] = (SILENCE_LABEL, UNKNOWN_LABEL)
    max_context_unknown: float = 1.0
    context_window_ms: float = 3000.0
    context_offset_ms: float = 1500.0

    def __post_init__(self) -> None:
        require(is_number(self.average_window_ms) and 0 < self.average_window_ms <= MAX_HELD_MS, "average_window_ms",
                f"a positive number up to {MAX_HELD_MS:g} (an hour)", self.average_window_ms)
        require(is_number(self.threshold) and 0 <= self.threshold < 1, "threshold",
                "a number in [0, 1)", self.threshold)
        require(isinstance(self.class_thresholds, Mapping), "class_thresholds",
                "a mapping of labels to numbers in [0, 1)", self.class_thresholds)
        for label, value in self.class_thresholds.items():  # each named: {yes: 1} read as mappingproxy({...})
            require(isinstance(label, str) and label != "", "class_thresholds", "labels that are non-empty strings",
                    label)
            require(is_number(value) and 0 <= value < 1, f"class_thresholds.{label}", "a number in [0, 1)", value)
        object.__setattr__(self, "class_thresholds", {k: float(v) for k, v in self.class_thresholds.items()})
        require(isinstance(self.ignored_labels, tuple) and all(isinstance(x, str) for x in self.ignored_labels),
                "ignored_labels", "a tuple of labels", self.ignored_labels)
        # [off] to mute a word replaced the default and made _silence_ / _unknown_ fire as commands
        require(SILENCE_LABEL in self.ignored_labels and UNKNOWN_LABEL in self.ignored_labels, "ignored_labels",
                f"a list holding {SILENCE_LABEL!r} and {UNKNOWN_LABEL!r} (they never fire) and the words to mute",
                list(self.ignored_labels))
        # before release_threshold's check, which {_silence_: 0.5} failed, naming release_threshold
        ignored = sorted(set(self.class_thresholds) & set(self.ignored_labels))
        require(not ignored, "class_thresholds", "command words only (ignored labels never fire)", ignored)
        lowest = min([self.threshold, *self.class_thresholds.values()])
        require(is_number(self.release_threshold) and 0 <= self.release_threshold < lowest, "release_threshold",
                f"a number in [0, {lowest:g}) (below every threshold)", self.release_threshold)
        require(is_number(self.suppression_ms) and self.suppression_ms >= 0, "suppression_ms",
                "a number >= 0", self.suppression_ms)
        require(isinstance(self.minimum_count, int) and not isinstance(self.minimum_count, bool)
                and self.minimum_count >= 1, "minimum_count", "an integer >= 1", self.minimum_count)
        require(is_number(self.max_context_unknown) and 0 <= self.max_context_unknown <= 1, "max_context_unknown",
                "a number in [0, 1] (1: no context rule)", self.max_context_unknown)
        require(is_number(self.context_offset_ms) and 0 <= self.context_offset_ms < MAX_HELD_MS, "context_offset_ms",
                f"a number in [0, {MAX_HELD_MS:g}) (an hour)", self.context_offset_ms)
        most = MAX_HELD_MS - self.context_offset_ms  # the context ends an hour ago at most
        require(is_number(self.context_window_ms) and 0 < self.context_window_ms <= most, "context_window_ms",
                f"a positive number up to {most:g} (context_offset_ms + context_window_ms up to an hour)",
                self.context_window_ms)

    def context_label_index(self, labels: Sequence[str]) -> int | None:
        """Where ``_unknown_`` is in ``labels`` when the context rule is on (``max_context_unknown``
        below 1), else None; ``ValueError`` when the rule is on and the model has no such label."""
        if self.max_context_unknown >= 1:
            return None
        require(UNKNOWN_LABEL in labels, "max_context_unknown", f"1 for a model without an {UNKNOWN_LABEL!r} label",
                self.max_context_unknown)
        return list(labels).index(UNKNOWN_LABEL)

    def threshold_of(self, label: str) -> float:
        """The threshold ``label`` must beat: its ``class_thresholds`` entry, else ``threshold``."""
        return self.class_thresholds.get(label, self.threshold)


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
        require(isinstance(options, CommandRecognizerOptions), "options", "CommandRecognizerOptions", options)
        unknown = sorted(set(options.class_thresholds) - set(self.labels))
        require(not unknown, "class_thresholds", f"labels of the model {list(self.labels)}", unknown)
        muted = sorted(set(options.ignored_labels) - set(self.labels) - {SILENCE_LABEL, UNKNOWN_LABEL})
        require(not muted, "ignored_labels", f"labels of the model {list(self.labels)}", muted)  # a typo muted nothing
        self.options = options
        self._wall_time = wall_time
        self._thresholds = np.array([options.threshold_of(label) for label in self.labels])
        self._fires = np.array([label not in options.ignored_labels for label in self.labels])
        self._results: collections.deque[tuple[float, np.ndarray]] = collections.deque()
        self._unknown = options.context_label_index(self.labels)  # None: no context rule
        self._context: collections.deque[tuple[float, float]] = collections.deque()  # (t_ms, p(_unknown_))
        self._last_t_ms: float | None = None
        self._armed = np.ones(len(self.labels), dtype=bool)
        self._last_event_t_ms = -math.inf
        self.last_result: RecognitionResult | None = None

    def reset(self) -> None:
        """Forget the window, the context and the last event (its suppression), and re-arm every word (the loop
        calls it when the energy gate closes)."""
        self._results.clear()
        self._context.clear()
        self._last_t_ms = None
        self._armed[:] = True
        self._last_event_t_ms = -math.inf
        self.last_result = None

    def _remember_context(self, scores: np.ndarray, t_ms: float) -> None:
        """Keep the ``_unknown_`` scores the context rule may still look at."""
        if self._unknown is None:
            return
        self._context.append((t_ms, float(scores[self._unknown])))
        oldest_ms = t_ms - self.options.context_offset_ms - self.options.context_window_ms
        while self._context[0][0] < oldest_ms:
            self._context.popleft()

    def _context_allows(self, t_ms: float) -> bool:
        """Whether the context before ``t_ms`` holds little enough other speech (see the options)."""
        if self._unknown is None:
            return True
        newest_ms = t_ms - self.options.context_offset_ms
        values = [p for t, p in self._context if t <= newest_ms]
        return not values or float(np.mean(values)) <= self.options.max_context_unknown

    def process(self, scores: Any, t_ms: float, *,
                latency_ms: Mapping[str, float] | None = None) -> CommandEvent | None:
        """Add the posteriors computed for the audio ending at ``t_ms``; return an event or ``None``."""
        x = _check_scores(scores, len(self.labels), "scores")
        t_ms = _check_time(t_ms, self._last_t_ms)
        self._last_t_ms = t_ms
        opts = self.options
        self._results.append((t_ms, x))
        self._remember_context(x, t_ms)
        time_limit = t_ms - opts.average_window_ms
        while self._results[0][0] < time_limit:
            self._results.popleft()
        count = len(self._results)
        span_ms = t_ms - self._results[0][0]
        if count < opts.minimum_count or span_ms < opts.average_window_ms * MINIMUM_WINDOW_FRACTION:
            self.last_result = RecognitionResult(SILENCE_LABEL, 0.0, t_ms, False)
            return None
        average = np.mean([r for _, r in self._results], axis=0)
        self._armed |= average <= opts.release_threshold
        top = int(np.argmax(average))
        label, score = self.labels[top], float(average[top])
        is_new = bool(self._fires[top] and self._armed[top] and score > self._thresholds[top]
                      and t_ms - self._last_event_t_ms > opts.suppression_ms and self._context_allows(t_ms))
        self.last_result = RecognitionResult(label, score, t_ms, is_new)
        if not is_new:
            return None
        self._armed[top] = False
        self._last_event_t_ms = t_ms
        return CommandEvent(label=label, score=score, t_ms=t_ms, wall_time=self._wall_time(),
                            latency_ms=dict(latency_ms or {}))
