"""Scoring streams: detections against the placed words, the operating-point sweep, per-word
thresholds and the DET curve.

:func:`detect` replays cached posteriors through the device's rule and gives exactly the
events :class:`edgesense.recognition.commands.CommandRecognizer` gives (tests compare the two),
vectorized, so a sweep of a few thousand settings over hours of stream takes seconds.

:func:`score_stream`: a detection of word W at time t *hits* the earliest not-yet-hit command
word W with ``start_ms <= t <= end_ms + match_tolerance_ms`` (its span); every other detection is
a *false accept*: a ``substitution`` (inside a command word's span, wrong word or a second
detection), ``on_other_speech`` (inside another utterance's span) or ``on_background`` (elsewhere).
A hit then moves to a later W that had ended by t and that nothing hit ("stop … stop" detected once,
after both: the second word answered), which changes no count. Latency is ``t - end_ms`` of the
word hit, ``end_ms`` being the end of its *spoken* part.

:class:`OperatingPoint`: one setting scored on the three streams of a split: hit rate (commands),
false accepts per hour (talk), false accepts per 100 other words (words).
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from edgesense.bench.streams import PlacedWord, StreamPosteriors
from edgesense.loop.scheduler import MAX_PERIOD_MS, MIN_PERIOD_MS, SchedulerOptions
from edgesense.recognition.commands import MINIMUM_WINDOW_FRACTION, CommandRecognizerOptions
from edgesense.schema.validate import is_number, require, require_kinds
from edgesense.types import UNKNOWN_LABEL

__all__ = ["Detection", "Replay", "detect", "StreamScore", "score_stream", "OperatingPoint", "SweepOptions",
           "evaluate", "sweep", "within_budget", "ranked", "ranked_hit_rate", "best_within", "recommend",
           "calibrate_class_thresholds", "det_curve"]

logger = logging.getLogger(__name__)

#: Which budget a recommendation misses (:func:`recommend`).
Missed = Literal["latency", "false_accepts"]

_PER_100 = 100.0
#: Per-word calibration: hits gained minus this many per false accept added (within the budget).
CALIBRATION_FALSE_ACCEPT_COST = 0.25
#: The latency percentile a latency budget (``SweepOptions.max_latency_p95_ms``) bounds.
LATENCY_BUDGET_PERCENTILE = 95
#: How a latency budget chooses among the settings within the false-accept budget
#: (``SweepOptions.latency_rule``): ``in-time`` ranks them by the words detected at most that long
#: after they end (a later detection a miss: a late word costs its own share); ``p95`` keeps only
#: the settings whose 95th percentile is within it (a step: a few slow words drop a setting whole).
LATENCY_RULES = ("in-time", "p95")
#: Latency percentiles reported.
LATENCY_PERCENTILES = (50, LATENCY_BUDGET_PERCENTILE)
#: A false accept that falls in no utterance's span is on the background.
BACKGROUND_SOURCE = "background"
#: How many of the utterances fired on most the report lists.
TOP_FALSE_ACCEPT_SOURCES = 10


# --------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class Detection:
    label: str
    t_ms: float
    score: float


class Replay:
    """One stream's posteriors, with what every setting of a sweep shares cached: the window averages of each
    ``average_window_ms``, the rows ready to fire, the rows that re-arm each label, and the placed words sorted
    for scoring."""

    def __init__(self, posteriors: StreamPosteriors) -> None:
        self.posteriors = posteriors
        self._p = np.asarray(posteriors.posteriors, dtype=np.float64)
        self._cumsum = np.concatenate([np.zeros((1, self._p.shape[1])), np.cumsum(self._p, axis=0)])
        self._times = np.asarray(posteriors.times_ms, dtype=np.float64)
        self._averages: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        self._top_scores: dict[float, np.ndarray] = {}
        self._ready: dict[tuple[float, int], np.ndarray] = {}
        self._release_rows: dict[tuple[float, int, float], list[np.ndarray]] = {}
        self._contexts: dict[tuple[int, float, float], np.ndarray] = {}
        self._words: dict[float, _ScoredWords] = {}

    def averages(self, window_ms: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(averages (H, C), results per window (H,), span ms (H,), top label (H,)) as the recognizer sees them."""
        if window_ms not in self._averages:
            t = self._times
            first = np.searchsorted(t, t - window_ms, side="left")  # the deque keeps results >= t - window
            idx = np.arange(t.size)
            count = idx + 1 - first
            averages = (self._cumsum[idx + 1] - self._cumsum[first]) / np.maximum(count, 1)[:, None]
            self._averages[window_ms] = (averages, count, t - t[first] if t.size else t, np.argmax(averages, axis=1))
        return self._averages[window_ms]

    def top_scores(self, window_ms: float) -> np.ndarray:
        """(H,) the top label's average of each result (:meth:`averages`)."""
        if window_ms not in self._top_scores:
            averages, _, _, top = self.averages(window_ms)
            self._top_scores[window_ms] = averages[np.arange(averages.shape[0]), top]
        return self._top_scores[window_ms]

    def ready(self, window_ms: float, minimum_count: int) -> np.ndarray:
        """(H,) whether the recognizer's window holds enough results to fire (and to re-arm a label)."""
        key = (window_ms, minimum_count)
        if key not in self._ready:
            _, count, span, _ = self.averages(window_ms)
            self._ready[key] = (count >= minimum_count) & (span >= window_ms * MINIMUM_WINDOW_FRACTION)
        return self._ready[key]

    def release_rows(self, window_ms: float, minimum_count: int, release_threshold: float) -> list[np.ndarray]:
        """Per label, the rows (ascending) whose average re-arms it: ready, at or below ``release_threshold``.
        Only those of one window and count are kept (a sweep scores its releases together; a long stream's rows
        of every setting would be hundreds of megabytes)."""
        key = (window_ms, minimum_count, release_threshold)
        if key not in self._release_rows:
            if any(k[:2] != key[:2] for k in self._release_rows):
                self._release_rows.clear()
            averages = self.averages(window_ms)[0]
            released = self.ready(window_ms, minimum_count)[:, None] & (averages <= release_threshold)
            self._release_rows[key] = [np.flatnonzero(released[:, c]) for c in range(averages.shape[1])]
        return self._release_rows[key]

    def context_means(self, label: int, offset_ms: float, window_ms: float) -> np.ndarray:
        """(H,) mean score of ``label`` over the results ``offset_ms + window_ms`` … ``offset_ms``
        before each result, as the recognizer's context rule sees it (0 where there are none)."""
        key = (label, offset_ms, window_ms)
        if key not in self._contexts:
            t = self._times
            first = np.searchsorted(t, t - offset_ms - window_ms, side="left")
            # up to this result, not past it: a result at the same time after it is one the recognizer has not seen
            last = np.minimum(np.searchsorted(t, t - offset_ms, side="right"), np.arange(1, t.size + 1))
            count = last - first
            total = self._cumsum[last, label] - self._cumsum[first, label]
            self._contexts[key] = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        return self._contexts[key]

    def scored_words(self, match_tolerance_ms: float) -> "_ScoredWords":
        """The stream's placed words as :func:`score_stream` matches detections to them."""
        if match_tolerance_ms not in self._words:
            self._words[match_tolerance_ms] = _ScoredWords(self.posteriors.words, match_tolerance_ms)
        return self._words[match_tolerance_ms]


def detect(replay: Replay | StreamPosteriors, options: CommandRecognizerOptions) -> list[Detection]:
    """The events :class:`CommandRecognizer` would give on these posteriors (one recognizer, never reset)."""
    if not isinstance(replay, Replay):
        replay = Replay(replay)
    labels = replay.posteriors.labels
    window = float(options.average_window_ms)
    averages, _, _, top = replay.averages(window)
    if averages.shape[0] == 0:
        return []
    ready = replay.ready(window, options.minimum_count)
    thresholds = np.array([options.threshold_of(label) for label in labels])
    fires = np.array([label not in options.ignored_labels for label in labels])
    if not fires.any():
        return []
    top_score = replay.top_scores(window)
    # only the rows above the lowest threshold can fire: the rule is applied to those (a sweep's high thresholds
    # leave a few per cent of an hour of talk)
    rows = np.flatnonzero(top_score > thresholds[fires].min())
    labels_of = top[rows]
    candidate = ready[rows] & fires[labels_of] & (top_score[rows] > thresholds[labels_of])
    unknown = options.context_label_index(labels)
    if unknown is not None:
        context = replay.context_means(unknown, float(options.context_offset_ms), float(options.context_window_ms))
        candidate &= context[rows] <= options.max_context_unknown
    candidates = rows[candidate]
    if candidates.size == 0:
        return []
    top_of = labels_of[candidate]
    # where each run of candidates of one label ends (the rows a word holds above its threshold)
    changes = np.flatnonzero(top_of[1:] != top_of[:-1]) + 1
    run_ends = np.append(changes, top_of.size)[np.searchsorted(changes, np.arange(top_of.size), side="right")]
    # Python numbers, not numpy scalars: the same values (times are float64), a fraction of the cost per row
    candidate_rows, tops, run_end = candidates.tolist(), top_of.tolist(), run_ends.tolist()
    times, scores = replay._times[candidates].tolist(), top_score[candidates].tolist()
    release_rows: list[np.ndarray] | None = None  # each label's re-arming rows, once a label has fired
    suppression = options.suppression_ms
    #: per label, the first row after its last event that re-arms it (None: not looked up yet; inf: none)
    rearmed_at: list[float | None] = [-math.inf] * len(labels)
    last_fired = [-1] * len(labels)
    out = []
    k, n = 0, len(candidate_rows)
    while k < n:
        i, c = candidate_rows[k], tops[k]
        rearmed = rearmed_at[c]
        if rearmed is None:  # armed again only if its average fell to the release level since it fired
            if release_rows is None:
                release_rows = replay.release_rows(window, options.minimum_count, options.release_threshold)
            r = release_rows[c]
            after = int(r.searchsorted(last_fired[c], side="right"))
            rearmed_at[c] = rearmed = int(r[after]) if after < r.size else math.inf
        if rearmed >= i:  # not armed: nor is any candidate of its run before the row that re-arms it
            k = run_end[k] if rearmed == math.inf else min(run_end[k], bisect.bisect_left(candidate_rows, rearmed,
                                                                                             lo=k + 1))
            continue
        t = times[k]
        out.append(Detection(label=labels[c], t_ms=t, score=scores[k]))
        rearmed_at[c] = None
        last_fired[c] = i
        # suppressed: every later result up to suppression_ms after this one, t' - t <= suppression_ms as the
        # recognizer computes it (monotonic in t': a run of results), found by t + suppression_ms then made exact
        k = bisect.bisect_right(times, t + suppression, lo=k + 1)
        while k < n and times[k] - t <= suppression:
            k += 1
        while times[k - 1] - t > suppression:
            k -= 1
    return out


# --------------------------------------------------------------------------- scoring one stream


@dataclass(frozen=True, kw_only=True)
class StreamScore:
    """Detections on one stream, scored against its placed words (see the module docstring)."""

    command_words: int
    hits: int
    other_utterances: int
    substitutions: int
    on_other_speech: int
    on_background: int
    hours: float
    latencies_ms: tuple[float, ...] = ()
    per_word: Mapping[str, tuple[int, int]] = field(default_factory=dict)  #: word -> (hits, said)
    #: False accepts by the command they fired as, and by the utterance they fired on (its
    #: ``source``; ``background`` for none), most first.
    false_accepts_by_word: Mapping[str, int] = field(default_factory=dict)
    false_accepts_by_source: Mapping[str, int] = field(default_factory=dict)

    @property
    def false_accepts(self) -> int:
        return self.substitutions + self.on_other_speech + self.on_background

    def per_hour(self, count: int) -> float:
        return count / self.hours if self.hours > 0 else 0.0


class _ScoredWords:
    """A stream's placed words as :func:`score_stream` matches detections to them, sorted by start, with what
    every scoring of the stream shares (a sweep scores it thousands of times)."""

    def __init__(self, words: Sequence[PlacedWord], match_tolerance_ms: float) -> None:
        self.words: list[PlacedWord] = sorted(words, key=lambda w: w.start_ms)
        self.match_tolerance_ms = match_tolerance_ms
        self.starts: list[float] = [float(w.start_ms) for w in self.words]
        #: the last time a detection can fall in each word's span
        self.span_ends: list[float] = [float(w.end_ms + match_tolerance_ms) for w in self.words]
        self.reach_ms = float(max((w.end_ms - w.start_ms for w in self.words), default=0.0) + match_tolerance_ms)
        self.labels: list[str] = [w.label for w in self.words]
        self.is_command: list[bool] = [w.is_command for w in self.words]
        self.command_words = sum(w.is_command for w in self.words)
        self.other_utterances = len(self.words) - self.command_words
        #: word -> the indices of its command words, in word order (its hits and how many were said)
        said: dict[str, list[int]] = {}
        for j, w in enumerate(self.words):
            if w.is_command:
                said.setdefault(w.label, []).append(j)
        self.said = dict(sorted(said.items()))


def score_stream(posteriors: StreamPosteriors, detections: Sequence[Detection], *,
                 match_tolerance_ms: float = 1000.0) -> StreamScore:
    return _score(_ScoredWords(posteriors.words, match_tolerance_ms), detections, hours=posteriors.hours)


def _score(scored: _ScoredWords, detections: Sequence[Detection], *, hours: float) -> StreamScore:
    """:func:`score_stream` on words sorted once (:meth:`Replay.scored_words`)."""
    words, starts, span_ends, reach_ms = scored.words, scored.starts, scored.span_ends, scored.reach_ms
    labels, is_command = scored.labels, scored.is_command
    hit = [False] * len(words)
    hit_by: dict[int, float] = {}  # word -> the time of the detection that hit it
    substitutions = on_other = on_background = 0
    by_word: Counter[str] = Counter()
    by_source: Counter[str] = Counter()
    for d in detections:
        t, label = d.t_ms, d.label
        lo = bisect.bisect_left(starts, t - reach_ms)
        hi = bisect.bisect_right(starts, t)  # words started by t
        inside = [j for j in range(lo, hi) if t <= span_ends[j]]
        match = next((j for j in inside if not hit[j] and is_command[j] and labels[j] == label), None)
        if match is not None:
            hit[match] = True
            hit_by[match] = t
            continue
        by_word[label] += 1
        by_source[words[inside[-1]].source if inside else BACKGROUND_SOURCE] += 1
        if any(is_command[j] for j in inside):
            substitutions += 1
        elif inside:
            on_other += 1
        else:
            on_background += 1
    _answer_the_latest_word(words, starts, hit, hit_by)
    latencies = [hit_by[j] - words[j].end_ms for j in sorted(hit_by, key=hit_by.__getitem__)]
    return StreamScore(command_words=scored.command_words, hits=sum(hit),
                       other_utterances=scored.other_utterances, substitutions=substitutions,
                       on_other_speech=on_other, on_background=on_background, hours=hours,
                       latencies_ms=tuple(latencies),
                       per_word={k: (sum(hit[j] for j in said), len(said)) for k, said in scored.said.items()},
                       false_accepts_by_word=dict(by_word.most_common()),
                       false_accepts_by_source=dict(by_source.most_common()))


def _answer_the_latest_word(words: Sequence[PlacedWord], starts: Sequence[float], hit: list[bool],
                            hit_by: dict[int, float]) -> None:
    """Move each hit (``hit_by``: word -> detection time), in detection order, to the latest word of
    its label that had ended by the detection and that nothing hit: "stop … stop" detected once,
    after both, answers the second "stop", the first missed (the greedy match gave it to the first,
    its latency counted from the first word's end). The number of words hit, per word too, is the
    same: the word given up could be hit by no other detection."""
    for j in sorted(hit_by, key=hit_by.__getitem__):
        t, label = hit_by[j], words[j].label
        last = bisect.bisect_right(starts, t)  # words started by t
        later = [k for k in range(j + 1, last)
                 if not hit[k] and words[k].is_command and words[k].label == label and words[k].end_ms <= t]
        if later:
            hit[j], hit[later[-1]] = False, True
            hit_by[later[-1]] = hit_by.pop(j)


# --------------------------------------------------------------------------- operating points


def _options_dict(options: CommandRecognizerOptions) -> dict[str, Any]:
    d = dataclasses.asdict(options)
    d.pop("ignored_labels")
    return d


@dataclass(frozen=True, kw_only=True)
class OperatingPoint:
    """One recognizer setting on a split's streams (any of them may be missing)."""

    options: CommandRecognizerOptions
    commands: StreamScore | None = None
    talk: StreamScore | None = None
    words: StreamScore | None = None
    #: The latency figures asked for, by percentile or budget (ranking a sweep asks each point many times).
    _latencies: dict[tuple[str, float], Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def hit_rate(self) -> float:
        c = self.commands
        return c.hits / c.command_words if c is not None and c.command_words else 0.0

    @property
    def false_accepts_per_hour(self) -> float:
        """On the command-free talk (all false accepts there, per hour of talk)."""
        return self.talk.per_hour(self.talk.false_accepts) if self.talk is not None else 0.0

    @property
    def false_accepts_per_100_words(self) -> float:
        """On the other words said one at a time (every false accept on that stream, per 100 words)."""
        w = self.words
        return _PER_100 * w.false_accepts / w.other_utterances if w is not None and w.other_utterances else 0.0

    def latency_ms(self, percentile: float) -> float | None:
        key = ("percentile", percentile)
        if key not in self._latencies:
            lat = self.commands.latencies_ms if self.commands is not None else ()
            self._latencies[key] = float(np.percentile(lat, percentile)) if lat else None
        return self._latencies[key]

    def hit_rate_within(self, latency_ms: float) -> float:
        """The share of the command words detected at most ``latency_ms`` after they end (a later
        detection counts as a miss)."""
        c = self.commands
        if c is None or not c.command_words:
            return 0.0
        key = ("within", latency_ms)
        if key not in self._latencies:
            self._latencies[key] = (sum(1 for lat in c.latencies_ms if lat <= latency_ms + 1e-9)
                                    / c.command_words)
        return self._latencies[key]

    def within(self, max_per_hour: float, max_per_100_words: float, max_latency_p95_ms: float | None = None) -> bool:
        """Within the false-accept budgets and, when one is given, the latency budget (the 95th
        percentile from word end; a point that detects nothing shows no latency and is not within one)."""
        latency = self.latency_ms(LATENCY_BUDGET_PERCENTILE)
        return (self.false_accepts_per_hour <= max_per_hour + 1e-9
                and self.false_accepts_per_100_words <= max_per_100_words + 1e-9
                and (max_latency_p95_ms is None or (latency is not None and latency <= max_latency_p95_ms + 1e-9)))

    def _per_100_words(self) -> float | None:
        """The report's false accepts per 100 other words: ``None`` (not measured) without a words stream, which
        a split without any short other speech lacks (its property reads 0, so that no budget excludes a point)."""
        w = self.words
        return round(self.false_accepts_per_100_words, 3) if w is not None and w.other_utterances else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"settings": _options_dict(self.options), "hit_rate": round(self.hit_rate, 4),
                               "miss_rate": round(1 - self.hit_rate, 4) if self.commands else None,
                               "false_accepts_per_hour": round(self.false_accepts_per_hour, 3),
                               "false_accepts_per_100_words": self._per_100_words()}
        out["latency_ms"] = {f"p{p}": None if self.latency_ms(p) is None else round(self.latency_ms(p), 1)
                             for p in LATENCY_PERCENTILES}
        c = self.commands
        if c is not None:
            out["commands_stream"] = {
                "command_words": c.command_words, "hits": c.hits, "other_utterances": c.other_utterances,
                "false_accepts": c.false_accepts, "hours": round(c.hours, 4),
                "false_accepts_per_hour": {"substitutions": round(c.per_hour(c.substitutions), 2),
                                           "other_speech": round(c.per_hour(c.on_other_speech), 2),
                                           "background": round(c.per_hour(c.on_background), 2)},
                "per_word_hit_rate": {k: round(h / n, 4) for k, (h, n) in c.per_word.items()},
                # the counts behind those rates, for their intervals (edgesense.bench.uncertainty)
                "per_word_counts": {k: {"hits": h, "said": n} for k, (h, n) in c.per_word.items()}}
        if self.talk is not None:
            t = self.talk
            # the hours unrounded too: the false accepts' interval is over them (0.067 of --quick's 0.0667 h would
            # move its bounds by half a per cent)
            out["talk_stream"] = {"hours": round(t.hours, 3), "hours_unrounded": float(t.hours),
                                  "utterances": t.other_utterances,
                                  "false_accepts": t.false_accepts,
                                  "false_accepts_per_hour": {"other_speech": round(t.per_hour(t.on_other_speech), 2),
                                                             "background": round(t.per_hour(t.on_background), 2)},
                                  **_false_accepts_by(t)}
        if self.words is not None:
            w = self.words
            out["words_stream"] = {"words": w.other_utterances, "false_accepts_on_words": w.on_other_speech,
                                   "false_accepts_on_background": w.on_background, **_false_accepts_by(w)}
        return out


def _false_accepts_by(score: StreamScore) -> dict[str, Any]:
    """The report's view of a stream's false accepts: every word fired, the sources fired on most, and
    how many recordings were fired on at all (a stream repeats its recordings, so its false accepts
    are fewer independent events than their count)."""
    top = dict(list(score.false_accepts_by_source.items())[:TOP_FALSE_ACCEPT_SOURCES])
    fired_on = sum(1 for source in score.false_accepts_by_source if source != BACKGROUND_SOURCE)
    return {"false_accepts_by_word": dict(score.false_accepts_by_word), "false_accepts_top_sources": top,
            "recordings_fired_on": fired_on}


def evaluate(replays: Mapping[str, Replay], options: CommandRecognizerOptions, *,
             match_tolerance_ms: float = 1000.0) -> OperatingPoint:
    """``options`` on a split's streams (``replays``: some of ``commands``, ``talk``, ``words``)."""
    scores = {kind: _score(r.scored_words(match_tolerance_ms), detect(r, options), hours=r.posteriors.hours)
              for kind, r in replays.items()}
    return OperatingPoint(options=options, **scores)


@dataclass(frozen=True, kw_only=True)
class SweepOptions:
    """The settings swept together, and the false-accept budget of the recommendation."""

    average_windows_ms: tuple[float, ...] = (200.0, 300.0, 500.0, 700.0, 1000.0)
    thresholds: tuple[float, ...] = (*(round(0.3 + 0.05 * k, 2) for k in range(14)), 0.97, 0.99)  # 0.3 … 0.99
    release_thresholds: tuple[float, ...] = (0.2, 0.35, 0.5)
    minimum_counts: tuple[int, ...] = (1, 2, 3)
    suppressions_ms: tuple[float, ...] = (0.0, 500.0, 1000.0)
    #: The context rule's levels (1: off); a model without ``_unknown_`` is swept at 1 alone.
    max_context_unknowns: tuple[float, ...] = (1.0, 0.6, 0.5, 0.4)
    max_false_accepts_per_hour: float = 1.0
    max_false_accepts_per_100_words: float = 2.0
    #: The latency budget (ms from word end) of the recommendation, the target's p95; None: none.
    max_latency_p95_ms: float | None = 500.0
    #: How that budget chooses: one of ``LATENCY_RULES``.
    latency_rule: str = LATENCY_RULES[0]
    match_tolerance_ms: float = 1000.0
    #: Stream time between two scored windows: the device loop's (``scheduler.command_hop_ms``).
    hop_ms: float = SchedulerOptions.command_hop_ms

    def __post_init__(self) -> None:
        require_kinds(self)
        def numbers(name: str, ok) -> None:
            value = getattr(self, name)
            require(isinstance(value, tuple) and len(value) >= 1 and all(ok(v) for v in value), name,
                    "a non-empty tuple of valid values", value)

        numbers("average_windows_ms", lambda v: isinstance(v, (int, float)) and v > 0)
        numbers("thresholds", lambda v: isinstance(v, (int, float)) and 0 < v < 1)
        numbers("release_thresholds", lambda v: isinstance(v, (int, float)) and 0 <= v < 1)
        numbers("minimum_counts", lambda v: isinstance(v, int) and v >= 1)
        numbers("suppressions_ms", lambda v: isinstance(v, (int, float)) and v >= 0)
        numbers("max_context_unknowns", lambda v: isinstance(v, (int, float)) and 0 <= v <= 1)
        for name in ("max_false_accepts_per_hour", "max_false_accepts_per_100_words", "match_tolerance_ms"):
            require(is_number(getattr(self, name)) and getattr(self, name) >= 0, name,
                    "a number >= 0", getattr(self, name))
        require(self.max_latency_p95_ms is None or (is_number(self.max_latency_p95_ms)
                                                    and self.max_latency_p95_ms > 0),
                "max_latency_p95_ms", "None or a number > 0", self.max_latency_p95_ms)
        # the command hop the streams are scored at: a schedule's period, as the device config's scheduler takes it
        require(is_number(self.hop_ms) and MIN_PERIOD_MS <= self.hop_ms <= MAX_PERIOD_MS, "hop_ms",
                f"a number in [{MIN_PERIOD_MS:g}, {MAX_PERIOD_MS:g}] (ms)", self.hop_ms)
        require(self.latency_rule in LATENCY_RULES, "latency_rule", f"one of {', '.join(LATENCY_RULES)}",
                self.latency_rule)

    @property
    def in_time_ms(self) -> float | None:
        """The latency within which a detected word counts when ranking settings (the ``in-time``
        rule's budget); None when the budget is a p95 cap or there is none."""
        return self.max_latency_p95_ms if self.latency_rule == "in-time" else None

    def grid(self, *, context: bool = True) -> list[CommandRecognizerOptions]:
        """Every valid combination (release below threshold; minimum count a window can hold);
        without ``context`` (a model without ``_unknown_``) the context rule stays off."""
        contexts = self.max_context_unknowns if context else (1.0,)
        out = []
        for window in self.average_windows_ms:
            most = int(window // self.hop_ms) + 1
            for count in self.minimum_counts:
                if count > most:
                    continue
                for threshold in self.thresholds:
                    for release in self.release_thresholds:
                        if release >= threshold:
                            continue
                        for suppression in self.suppressions_ms:
                            out.extend(CommandRecognizerOptions(
                                average_window_ms=float(window), threshold=float(threshold),
                                release_threshold=float(release), minimum_count=int(count),
                                suppression_ms=float(suppression), max_context_unknown=float(most_unknown))
                                for most_unknown in dict.fromkeys(contexts))
        return out


def sweep(replays: Mapping[str, Replay], options: SweepOptions) -> list[OperatingPoint]:
    """Every setting of the grid on the same streams."""
    labels = next((r.posteriors.labels for r in replays.values()), ())
    grid = options.grid(context=UNKNOWN_LABEL in labels)
    logger.info("streaming sweep: %d settings", len(grid))
    return [evaluate(replays, o, match_tolerance_ms=options.match_tolerance_ms) for o in grid]


def _rank(p: OperatingPoint) -> tuple[float, ...]:
    """Higher is better: hits, then fewer false accepts (talk, words, the commands stream), then
    lower latency, then the more conservative setting (higher threshold, count, suppression), then
    the higher release level (a label re-arms sooner: the less conservative side, kept so that the
    shipped points stay chosen as they were), then the one whose context rule blocks less."""
    latency = p.latency_ms(50)
    o = p.options
    return (p.hit_rate, -p.false_accepts_per_hour, -p.false_accepts_per_100_words,
            -(p.commands.false_accepts if p.commands is not None else 0),
            -(latency if latency is not None else math.inf), o.threshold, o.minimum_count, o.suppression_ms,
            o.release_threshold, o.max_context_unknown)


def within_budget(points: Sequence[OperatingPoint], options: SweepOptions) -> list[OperatingPoint]:
    """The points within ``options``' false-accept budget (and, by the ``p95`` rule, its latency
    budget), in their order."""
    return [p for p in points if _within(p, options)]


def _within(point: OperatingPoint, options: SweepOptions) -> bool:
    cap = options.max_latency_p95_ms if options.in_time_ms is None else None
    return point.within(options.max_false_accepts_per_hour, options.max_false_accepts_per_100_words, cap)


def ranked(points: Sequence[OperatingPoint], options: SweepOptions) -> list[OperatingPoint]:
    """The points within ``options``' budget, best first: the most words detected within the
    latency budget by the ``in-time`` rule, else the highest hit rate; ties: see :func:`_rank`."""
    return sorted(within_budget(points, options), key=lambda p: (ranked_hit_rate(p, options), *_rank(p)),
                  reverse=True)


def ranked_hit_rate(point: OperatingPoint, options: SweepOptions) -> float:
    """What ``options`` ranks a point by first: its words detected in time (``in-time``), else its hit rate."""
    in_time = options.in_time_ms
    return point.hit_rate if in_time is None else point.hit_rate_within(in_time)


def best_within(points: Sequence[OperatingPoint], options: SweepOptions) -> OperatingPoint | None:
    """The best point within ``options``' budget (:func:`ranked`); None when no point is within it."""
    return next(iter(ranked(points, options)), None)


def recommend(points: Sequence[OperatingPoint], options: SweepOptions) -> tuple[OperatingPoint, Missed | None]:
    """(the best point within the budget, None): see :func:`ranked`. Without any point in budget,
    the point and which budget it misses: by the ``p95`` rule, the best within the false-accept
    budget, ``"latency"``; else the one with the fewest false accepts, ``"false_accepts"``."""
    require(len(points) > 0, "points", "at least one sweep point", 0)
    best = best_within(points, options)
    if best is not None:
        return best, None
    if options.max_latency_p95_ms is not None and options.in_time_ms is None:
        quiet = best_within(points, dataclasses.replace(options, max_latency_p95_ms=None))
        if quiet is not None:
            logger.warning("no setting within the false-accept budget reaches a p95 latency of %g ms on the tuning "
                           "streams; recommending the best of them regardless", options.max_latency_p95_ms)
            return quiet, "latency"
    logger.warning("no setting reaches %.2f false accepts/hour and %.2f per 100 words on the tuning streams; "
                   "recommending the fewest", options.max_false_accepts_per_hour,
                   options.max_false_accepts_per_100_words)
    return min(points, key=lambda p: (p.false_accepts_per_hour + p.false_accepts_per_100_words,
                                      *(-x for x in _rank(p)))), "false_accepts"


def calibrate_class_thresholds(replays: Mapping[str, Replay], base: CommandRecognizerOptions, options: SweepOptions,
                               *, max_offset: float = 0.1, step: float = 0.025) -> CommandRecognizerOptions:
    """Per-word thresholds within ``max_offset`` of ``base.threshold``, greedily: each step moves
    the one word's threshold that gains the most hits (less ``CALIBRATION_FALSE_ACCEPT_COST`` per
    false accept) on the tuning streams while the split stays within the false-accept budget. Hits
    are counted as ``options`` ranks settings: by the ``in-time`` rule only the words detected
    within its latency budget. A word's threshold barely changes the others' events, so each word
    is scored alone (the others silenced); the result is then checked as a whole, and ``base`` is
    returned when it is over the budget or no better."""
    labels = next(iter(replays.values())).posteriors.labels
    words = [w for w in labels if w not in base.ignored_labels]
    offsets = np.arange(-max_offset, max_offset + step / 2, step)
    candidates = sorted({round(float(np.clip(base.threshold + o, base.release_threshold + step, 0.99)), 4)
                         for o in offsets})
    table: dict[tuple[str, float], tuple[int, int, int]] = {}
    for word in words:
        for t in candidates:
            silenced = tuple(w for w in words if w != word)  # ignored: they never fire, whatever they score
            alone = dataclasses.replace(base, class_thresholds={word: t},
                                        ignored_labels=base.ignored_labels + silenced)
            p = evaluate(replays, alone, match_tolerance_ms=options.match_tolerance_ms)
            detected = round(ranked_hit_rate(p, options) * p.commands.command_words) if p.commands else 0
            table[(word, t)] = (detected, p.talk.false_accepts if p.talk else 0,
                                p.words.false_accepts if p.words else 0)
    talk_hours = replays["talk"].posteriors.hours if "talk" in replays else 0.0
    n_words = sum(not w.is_command for w in replays["words"].posteriors.words) if "words" in replays else 0

    def totals(chosen: Mapping[str, float]) -> tuple[int, int, int]:
        return tuple(int(sum(table[(w, chosen[w])][k] for w in words)) for k in range(3))  # type: ignore[return-value]

    def in_budget(fa_talk: int, fa_words: int) -> bool:
        return ((talk_hours == 0 or fa_talk / talk_hours <= options.max_false_accepts_per_hour + 1e-9)
                and (n_words == 0 or _PER_100 * fa_words / n_words <= options.max_false_accepts_per_100_words + 1e-9))

    start = min(candidates, key=lambda t: abs(t - base.threshold))
    chosen = {w: start for w in words}
    while True:
        hits, fa_talk, fa_words = totals(chosen)
        best: tuple[float, dict[str, float]] | None = None
        for w in words:
            for t in candidates:
                if t == chosen[w]:
                    continue
                trial = {**chosen, w: t}
                h, ft, fw = totals(trial)
                if not in_budget(ft, fw):
                    continue
                gain = (h - hits) - CALIBRATION_FALSE_ACCEPT_COST * ((ft - fa_talk) + (fw - fa_words))
                if gain > 1e-9 and (best is None or gain > best[0]):
                    best = (gain, trial)
        if best is None:
            break
        chosen = best[1]
    tuned = dataclasses.replace(base, class_thresholds={w: t for w, t in chosen.items() if t != base.threshold})
    before = evaluate(replays, base, match_tolerance_ms=options.match_tolerance_ms)
    after = evaluate(replays, tuned, match_tolerance_ms=options.match_tolerance_ms)
    if not _within(after, options) or ranked_hit_rate(after, options) <= ranked_hit_rate(before, options):
        logger.info("per-word thresholds: no gain within the budget on the tuning streams; one threshold kept")
        return base
    return tuned


def det_curve(replays: Mapping[str, Replay], base: CommandRecognizerOptions, thresholds: Sequence[float], *,
              match_tolerance_ms: float = 1000.0) -> list[dict[str, float]]:
    """Miss rate and false accepts per hour (talk) of ``base`` at each global threshold (per-word
    thresholds dropped): the DET curve's points."""
    out = []
    for t in thresholds:
        if t <= base.release_threshold:
            continue
        o = dataclasses.replace(base, threshold=float(t), class_thresholds={})
        p = evaluate(replays, o, match_tolerance_ms=match_tolerance_ms)
        out.append({"threshold": float(t), "miss_rate": round(1 - p.hit_rate, 4),
                    "false_accepts_per_hour": round(p.false_accepts_per_hour, 3),
                    "false_accepts_per_100_words": p._per_100_words()})
    return out
