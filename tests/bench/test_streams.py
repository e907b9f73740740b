"""Streams and their scoring on hand-made audio and posterior sequences with known answers (no model)."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from operating_points import operating_point

from edgesense.bench.scoring import (
    Detection,
    OperatingPoint,
    Replay,
    SweepOptions,
    best_within,
    calibrate_class_thresholds,
    det_curve,
    detect,
    evaluate,
    ranked,
    recommend,
    score_stream,
    sweep,
    within_budget,
)
from edgesense.bench.streams import (
    PlacedWord,
    PosteriorCache,
    StreamOptions,
    StreamPosteriors,
    build_segments,
    build_stream,
    concat_posteriors,
    speech_span,
    stream_posteriors,
    utterance,
    word_windows,
)
from edgesense.frontend.audio import AudioFrontendOptions
from edgesense.recognition.commands import CommandRecognizer, CommandRecognizerOptions
from edgesense.runtime.second_opinion import SecondOpinionOptions

LABELS = ("_silence_", "_unknown_", "yes", "no")
HOP_MS = 100.0
DURATION_MS = 12_000.0
SR = 16000


def word(label: str, start_ms: float, end_ms: float, source: str = "") -> PlacedWord:
    return PlacedWord(label=label, start_ms=start_ms, end_ms=end_ms,
                      is_command=label not in ("_silence_", "_unknown_"), source=source)


def timeline(bursts: list[tuple[str, float, float]], words=(), duration_ms: float = DURATION_MS) -> StreamPosteriors:
    """One-hot posteriors every 100 ms: silence, except ``label`` for t in [start, stop)."""
    times = np.arange(HOP_MS, duration_ms + 1, HOP_MS)
    post = np.zeros((times.size, len(LABELS)))
    post[:, 0] = 1.0
    for label, start, stop in bursts:
        on = (times >= start) & (times < stop)
        post[on] = 0.0
        post[on, LABELS.index(label)] = 1.0
    return StreamPosteriors(times_ms=times, posteriors=post, labels=LABELS, hop_ms=HOP_MS, words=tuple(words),
                            duration_ms=duration_ms)


# Averaging window 200 ms at a 100 ms hop = the last 3 results: a one-hot burst starting at
# t0 averages 1/3 at t0, 2/3 at t0 + 100 and 1 at t0 + 200.
SHORT = dict(average_window_ms=200.0, minimum_count=1, release_threshold=0.2)
WORDS = [word("yes", 1000, 1500), word("no", 5000, 5600), word("_unknown_", 10_000, 10_500, "talk/u.wav")]
BURSTS = [("yes", 1800, 2400),        # the "yes" word, detected late
          ("no", 8000, 8600),         # no word there: a false accept on background
          ("yes", 10_300, 10_900)]    # during the unknown word: a false accept on other speech


def _score(post: StreamPosteriors, options: CommandRecognizerOptions, **kwargs):
    return score_stream(post, detect(post, options), **kwargs)


# --------------------------------------------------------------------------- scoring


def test_hits_false_accepts_and_latency_are_exact():
    s = _score(timeline(BURSTS, WORDS), CommandRecognizerOptions(threshold=0.5, suppression_ms=0.0, **SHORT))
    assert (s.command_words, s.hits, s.other_utterances) == (2, 1, 1)
    assert s.latencies_ms == (400.0,)  # fires at 1900 (2/3 > 0.5), the word ended at 1500
    assert (s.false_accepts, s.on_background, s.on_other_speech, s.substitutions) == (2, 1, 1, 0)
    assert s.per_hour(s.false_accepts) == pytest.approx(2 / (DURATION_MS / 3_600_000))
    assert s.per_word == {"no": (0, 1), "yes": (1, 1)}
    # Each false accept by the word it fired as and the utterance it fired on.
    assert s.false_accepts_by_word == {"no": 1, "yes": 1}
    assert s.false_accepts_by_source == {"background": 1, "talk/u.wav": 1}
    talk = OperatingPoint(options=CommandRecognizerOptions(), talk=s).to_dict()["talk_stream"]
    assert talk["recordings_fired_on"] == 1  # the background is no recording


def test_a_higher_threshold_fires_one_hop_later():
    s = _score(timeline(BURSTS, WORDS), CommandRecognizerOptions(threshold=0.7, suppression_ms=0.0, **SHORT))
    assert s.latencies_ms == (500.0,) and s.hits == 1  # 2/3 < 0.7: fires at 2000, when the average is 1


def test_late_detection_beyond_the_tolerance_is_a_false_accept_not_a_hit():
    s = _score(timeline(BURSTS, WORDS), CommandRecognizerOptions(threshold=0.5, suppression_ms=0.0, **SHORT),
               match_tolerance_ms=300.0)
    assert s.hits == 0 and s.on_background == 2 and s.latencies_ms == ()


def test_a_word_said_twice_is_two_hits_and_a_second_detection_of_one_word_a_substitution():
    post = timeline([("yes", 1000, 1400), ("yes", 1700, 2100)], [word("yes", 800, 1300), word("yes", 1600, 2000)])
    twice = _score(post, CommandRecognizerOptions(threshold=0.5, suppression_ms=0.0, **SHORT))
    assert (twice.hits, twice.false_accepts) == (2, 0)
    once = dataclasses.replace(post, words=(word("yes", 800, 1300),))
    s = _score(once, CommandRecognizerOptions(threshold=0.5, suppression_ms=0.0, **SHORT))
    assert (s.hits, s.substitutions) == (1, 1)
    # A suppression longer than the pause merges them (and then misses the second of two words).
    merged = _score(post, CommandRecognizerOptions(threshold=0.5, suppression_ms=1000.0, **SHORT))
    assert (merged.hits, merged.false_accepts) == (1, 0)


# --------------------------------------------------------------------------- detect == CommandRecognizer


def _recognizer_events(post: StreamPosteriors, options: CommandRecognizerOptions) -> list[Detection]:
    recognizer = CommandRecognizer(post.labels, options, wall_time=lambda: 0.0)
    events = [recognizer.process(p, float(t)) for t, p in zip(post.times_ms, post.posteriors)]
    return [Detection(e.label, e.t_ms, e.score) for e in events if e is not None]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 31), window=st.sampled_from([100.0, 300.0, 500.0, 1000.0]),
       threshold=st.sampled_from([0.4, 0.55, 0.7, 0.9]), release=st.sampled_from([0.0, 0.2, 0.35]),
       count=st.integers(1, 4), suppression=st.sampled_from([0.0, 250.0, 1000.0]), per_word=st.booleans(),
       context=st.sampled_from([1.0, 0.2, 0.3, 0.5]), context_offset=st.sampled_from([0.0, 300.0, 1200.0]))
def test_detect_gives_exactly_the_recognizers_events(seed, window, threshold, release, count, suppression, per_word,
                                                     context, context_offset):
    """On int8-like posteriors (multiples of 1/256, as the model gives), with a gap in time."""
    rng = np.random.default_rng(seed)
    n = 300
    raw = rng.dirichlet(np.full(len(LABELS), 0.3), size=n)
    hold = np.repeat(rng.integers(0, len(LABELS), n // 5), 5)  # bursts of one label
    raw[np.arange(n), hold] += 1.0
    post = np.round(raw / raw.sum(axis=1, keepdims=True) * 256) / 256
    times = np.arange(n) * HOP_MS + 1000.0
    times[150:] += 1000.0  # segments joined: a second without results
    p = StreamPosteriors(times_ms=times, posteriors=post, labels=LABELS, hop_ms=HOP_MS, duration_ms=times[-1])
    options = CommandRecognizerOptions(average_window_ms=window, threshold=threshold, release_threshold=release,
                                       minimum_count=count, suppression_ms=suppression,
                                       class_thresholds={"no": max(threshold - 0.1, release + 0.01)} if per_word
                                       else {}, max_context_unknown=context, context_offset_ms=context_offset)
    assert detect(p, options) == _recognizer_events(p, options)


# --------------------------------------------------------------------------- sweep, calibration, DET


def _set(post: StreamPosteriors, start_ms: float, stop_ms: float, scores: list[float]) -> StreamPosteriors:
    post.posteriors[(post.times_ms >= start_ms) & (post.times_ms < stop_ms)] = scores
    return post


def _weak_no_replays(no_word_ms: tuple[float, float]) -> dict[str, Replay]:
    """Commands where "yes" is clear (1.0) and "no" weak (0.6, from 5000 to 5600 ms; its word spoken at
    ``no_word_ms``), and talk that holds a weak "yes" (0.6)."""
    commands = _set(timeline([("yes", 1000, 1600)], [word("yes", 900, 1500), word("no", *no_word_ms)]),
                    5000, 5600, [0.4, 0, 0, 0.6])
    talk = _set(timeline([], [word("_unknown_", 1000 * k, 1000 * k + 600) for k in range(1, 12)]),
                3000, 3400, [0.4, 0, 0.6, 0])
    return {"commands": Replay(commands), "talk": Replay(talk)}


def test_sweep_covers_the_grid_and_recommend_respects_the_budget():
    replays = _weak_no_replays((4900, 5500))
    options = SweepOptions(average_windows_ms=(200.0,), thresholds=(0.5, 0.7), release_thresholds=(0.2,),
                           minimum_counts=(1,), suppressions_ms=(0.0, 500.0), max_context_unknowns=(1.0,),
                           max_false_accepts_per_hour=0.0)
    points = sweep(replays, options)
    assert len(points) == 4
    assert {(p.options.threshold, p.options.suppression_ms) for p in points} == {(0.5, 0.0), (0.5, 500.0),
                                                                                 (0.7, 0.0), (0.7, 500.0)}
    best, missed = recommend(points, options)
    assert missed is None
    assert best.options.threshold == 0.7 and best.hit_rate == 0.5 and best.false_accepts_per_hour == 0
    assert best_within(points, options) is best
    within = within_budget(points, options)
    assert best in within and all(p.false_accepts_per_hour <= options.max_false_accepts_per_hour for p in within)
    assert [p for p in points if p in within] == within and len(within) < len(points)
    assert best_within([p for p in points if p.options.threshold == 0.5], options) is None  # each fires on talk
    loose, missed = recommend(points, dataclasses.replace(options, max_false_accepts_per_hour=1e9))
    assert missed is None
    assert loose.options.threshold == 0.5 and loose.hit_rate == 1.0 and loose.false_accepts_per_hour > 0
    assert loose.options.suppression_ms == 500.0  # ties go to the more conservative setting
    # Per-word thresholds: "no" may go down to 0.55 without a false accept; "yes" must stay up.
    base = best.options
    tuned = calibrate_class_thresholds(replays, base, options, max_offset=0.15, step=0.05)
    assert tuned.class_thresholds.get("no", base.threshold) < 0.6 and "yes" not in tuned.class_thresholds
    assert evaluate(replays, tuned).hit_rate == 1.0 and evaluate(replays, tuned).false_accepts_per_hour == 0
    curve = det_curve(replays, base, [0.1, 0.5, 0.7, 0.9])
    assert [c["threshold"] for c in curve] == [0.5, 0.7, 0.9]  # at or below the release level: skipped
    assert [c["miss_rate"] for c in curve] == [0.0, 0.5, 0.5]
    assert curve[0]["false_accepts_per_hour"] > 0 == curve[1]["false_accepts_per_hour"]
    d = best.to_dict()
    assert d["settings"]["threshold"] == 0.7 and "ignored_labels" not in d["settings"]
    assert d["commands_stream"]["per_word_hit_rate"] == {"no": 0.0, "yes": 1.0}


def test_per_word_thresholds_that_only_add_late_words_are_no_gain_by_the_in_time_rule():
    # "no" peaks 700 ms after its word ended: a lower threshold for it hears it, late.
    replays = _weak_no_replays((4000, 4500))
    options = SweepOptions(average_windows_ms=(200.0,), thresholds=(0.7,), release_thresholds=(0.2,),
                           minimum_counts=(1,), suppressions_ms=(0.0,), max_context_unknowns=(1.0,),
                           max_false_accepts_per_hour=0.0, max_latency_p95_ms=None)
    (base,) = [p.options for p in sweep(replays, options)]
    tuned = calibrate_class_thresholds(replays, base, options, max_offset=0.15, step=0.05)  # no latency budget
    assert tuned.class_thresholds.get("no", base.threshold) < 0.6 and "yes" not in tuned.class_thresholds
    before, after = evaluate(replays, base), evaluate(replays, tuned)
    assert (before.hit_rate, after.hit_rate) == (0.5, 1.0) and after.commands.latencies_ms[-1] == 700.0
    assert before.hit_rate_within(500.0) == after.hit_rate_within(500.0) == 0.5
    in_time = dataclasses.replace(options, max_latency_p95_ms=500.0)
    assert calibrate_class_thresholds(replays, base, in_time, max_offset=0.15, step=0.05) == base


def test_per_word_calibration_spends_the_false_accept_budget_on_words_heard_in_time():
    # Two weak "yes" peak 700 ms after their words end, one weak "no" 100 ms after; the talk holds a weak
    # "yes" and a weak "no", and the budget allows one false accept on it: the word to lower is the one
    # heard in time, though "yes" would add more (late) hits.
    commands = timeline([], [word("yes", 900, 1500), word("yes", 2900, 3500), word("no", 4900, 5500)])
    for start_ms, scores in ((2200, [0.4, 0, 0.6, 0]), (4200, [0.4, 0, 0.6, 0]), (5600, [0.4, 0, 0, 0.6])):
        _set(commands, start_ms, start_ms + 400, scores)
    talk = _set(_set(timeline([], [word("_unknown_", 1000 * k, 1000 * k + 600) for k in range(1, 12)]),
                     3000, 3400, [0.4, 0, 0.6, 0]), 7000, 7400, [0.4, 0, 0, 0.6])
    replays = {"commands": Replay(commands), "talk": Replay(talk)}
    one_per_talk = 1.5 / talk.hours  # false accepts per hour: one on the talk stream, not two
    base = CommandRecognizerOptions(average_window_ms=200.0, threshold=0.7, release_threshold=0.2, minimum_count=1,
                                    suppression_ms=0.0, max_context_unknown=1.0)
    in_time = SweepOptions(max_false_accepts_per_hour=one_per_talk)
    tuned = calibrate_class_thresholds(replays, base, in_time, max_offset=0.15, step=0.05)
    assert tuned.class_thresholds.get("no", base.threshold) < 0.6 and "yes" not in tuned.class_thresholds
    assert evaluate(replays, tuned).hit_rate_within(500.0) == pytest.approx(1 / 3)
    # Without a latency budget the two late "yes" are worth more.
    any_time = dataclasses.replace(in_time, max_latency_p95_ms=None)
    tuned = calibrate_class_thresholds(replays, base, any_time, max_offset=0.15, step=0.05)
    assert tuned.class_thresholds.get("yes", base.threshold) < 0.6 and "no" not in tuned.class_thresholds


def test_per_word_calibration_silences_the_other_words_whatever_they_score():
    # A float model scores a clear "yes" 1.0, above any threshold: while "no" is calibrated alone, "yes" must
    # still stay silent, or its confident false accept on the talk counts against every threshold of "no".
    commands = _set(timeline([("yes", 1600, 2000)], [word("yes", 1000, 1500), word("no", 5000, 5500)]),
                    5600, 6000, [0.35, 0, 0, 0.65])
    talk = timeline([("yes", 3000, 3400)], [word("_unknown_", 1000 * k, 1000 * k + 600) for k in range(1, 12)])
    replays = {"commands": Replay(commands), "talk": Replay(talk)}
    base = CommandRecognizerOptions(average_window_ms=200.0, threshold=0.7, release_threshold=0.2, minimum_count=1,
                                    suppression_ms=0.0)
    one_per_talk = SweepOptions(max_false_accepts_per_hour=1.5 / talk.hours, max_latency_p95_ms=None)
    tuned = calibrate_class_thresholds(replays, base, one_per_talk, max_offset=0.15, step=0.05)
    assert tuned.class_thresholds.get("no", base.threshold) < 0.65 and "yes" not in tuned.class_thresholds
    assert evaluate(replays, tuned).hit_rate == 1.0


def test_the_p95_rule_trades_hits_for_a_prompt_p95_within_the_false_accept_budget():
    slow = operating_point(0.6, (300.0,) * 8 + (700.0,), 1)    # most hits, p95 above 500 ms
    prompt = operating_point(0.7, (250.0,) * 7 + (450.0,), 0)  # fewer hits, p95 within 500 ms
    loud = operating_point(0.5, (200.0,) * 10, 5)              # every word, far over the false-accept budget
    silent = operating_point(0.99, (), 0)                      # detects nothing: shows no latency
    points = [slow, prompt, loud, silent]
    assert slow.latency_ms(95) > 500 >= prompt.latency_ms(95)
    assert recommend(points, SweepOptions(max_latency_p95_ms=None)) == (slow, None)  # no latency budget: the most hits
    budget = SweepOptions(max_latency_p95_ms=500.0, latency_rule="p95")
    assert recommend(points, budget) == (prompt, None)
    assert within_budget(points, budget) == [prompt] and ranked(points, budget) == [prompt]
    assert silent.within(1.0, 2.0) and not silent.within(1.0, 2.0, 1e6) and not loud.within(1.0, 2.0, 1e6)
    # No setting within both: the best within the false-accept budget, flagged as over budget.
    assert recommend(points, SweepOptions(max_latency_p95_ms=100.0, latency_rule="p95")) == (slow, "latency")
    # None within the false-accept budget either: the quietest, flagged as over that budget.
    assert recommend([loud, operating_point(0.55, (200.0,) * 10, 9)], budget) == (loud, "false_accepts")
    with pytest.raises(ValueError, match="max_latency_p95_ms"):
        SweepOptions(max_latency_p95_ms=0.0)
    with pytest.raises(ValueError, match="latency_rule"):
        SweepOptions(latency_rule="p50")


def test_the_in_time_rule_counts_a_late_word_as_missed_not_the_whole_setting():
    mostly_prompt = operating_point(0.6, (300.0,) * 8 + (700.0,), 1)  # 8 words in time, 1 late: p95 above 500 ms
    prompt = operating_point(0.7, (250.0,) * 6 + (450.0,), 0)         # 7 words, all in time
    late = operating_point(0.5, (600.0,) * 10, 0)                     # every word, all late
    loud = operating_point(0.4, (200.0,) * 10, 5)  # every word in time, far over the false-accept budget
    points = [mostly_prompt, prompt, late, loud]
    budget = SweepOptions(max_latency_p95_ms=500.0)
    assert budget.latency_rule == "in-time" and budget.in_time_ms == 500.0
    assert SweepOptions(max_latency_p95_ms=500.0, latency_rule="p95").in_time_ms is None
    assert recommend(points, budget) == (mostly_prompt, None)  # 8 in time beats 7, whatever its p95
    assert ranked(points, budget) == [mostly_prompt, prompt, late]  # late: 0 in time, still within the budget
    assert recommend(points, dataclasses.replace(budget, latency_rule="p95")) == (prompt, None)
    # A tie in time goes to the more hits: a late detection beats none.
    slower = operating_point(0.65, (300.0,) * 8 + (700.0,) * 2, 1)
    assert recommend([mostly_prompt, slower], budget) == (slower, None)
    # Nothing detected in time is no missed budget: the in-time rule ranks, it does not exclude.
    assert recommend([late, prompt], SweepOptions(max_latency_p95_ms=100.0)) == (late, None)
    assert recommend([loud], budget) == (loud, "false_accepts")


def test_the_context_rule_keeps_words_after_a_pause_and_drops_peaks_inside_talk():
    # Commands: each word after background. Talk: a weak "yes" right after other speech.
    commands = timeline([("yes", 2000, 2600), ("no", 6000, 6600)], [word("yes", 1900, 2500), word("no", 5900, 6500)])
    talk = timeline([("_unknown_", 1000, 4000), ("yes", 4000, 4500), ("_unknown_", 4500, 8000)],
                    [word("_unknown_", 1000, 8000, "talk/sentence.wav")])
    replays = {"commands": Replay(commands), "talk": Replay(talk)}
    options = SweepOptions(average_windows_ms=(200.0,), thresholds=(0.5,), release_thresholds=(0.2,),
                           minimum_counts=(1,), suppressions_ms=(0.0,), max_context_unknowns=(1.0, 0.5),
                           max_false_accepts_per_hour=0.0)
    points = {p.options.max_context_unknown: p for p in sweep(replays, options)}
    assert set(points) == {1.0, 0.5}
    assert points[1.0].hit_rate == points[0.5].hit_rate == 1.0
    assert points[1.0].false_accepts_per_hour > 0 == points[0.5].false_accepts_per_hour
    best, missed = recommend(list(points.values()), options)
    assert missed is None and best.options.max_context_unknown == 0.5
    tied = sweep({"commands": Replay(commands)}, options)  # the rule changes nothing there: a tie
    assert recommend(tied, options)[0].options.max_context_unknown == 1.0  # ties go to the rule off
    # A model without _unknown_ is swept with the rule off, and refuses it when asked.
    plain = StreamPosteriors(times_ms=commands.times_ms, posteriors=np.delete(commands.posteriors, 1, axis=1),
                             labels=("_silence_", "yes", "no"), hop_ms=HOP_MS, words=commands.words,
                             duration_ms=DURATION_MS)
    assert {p.options.max_context_unknown for p in sweep({"commands": Replay(plain)}, options)} == {1.0}
    with pytest.raises(ValueError, match="max_context_unknown"):
        detect(plain, dataclasses.replace(best.options))


def test_sweep_options_make_only_valid_settings():
    grid = SweepOptions(average_windows_ms=(200.0, 1000.0), thresholds=(0.3, 0.6), release_thresholds=(0.3, 0.5),
                        minimum_counts=(3, 5), suppressions_ms=(0.0,)).grid()
    assert all(o.release_threshold < o.threshold for o in grid)
    assert not any(o.average_window_ms == 200.0 and o.minimum_count == 5 for o in grid)  # 3 results at most
    assert {o.max_context_unknown for o in grid} == set(SweepOptions().max_context_unknowns)
    assert {o.max_context_unknown for o in SweepOptions().grid(context=False)} == {1.0}
    default = SweepOptions().grid()
    assert len(default) == 7380  # docs/BENCHMARK.md, *Operating point*, quotes it
    assert any(o.average_window_ms == 200.0 and o.minimum_count == 3 for o in default)  # all 3 results of 200 ms
    assert {o.minimum_count for o in default} == {1, 2, 3}
    with pytest.raises(ValueError, match="thresholds"):
        SweepOptions(thresholds=())
    with pytest.raises(ValueError, match="max_context_unknowns"):
        SweepOptions(max_context_unknowns=(1.5,))


# --------------------------------------------------------------------------- streams


def _tone(ms: float, freq: float, pad_ms: float = 200.0) -> np.ndarray:
    n, pad = int(SR * ms / 1000), int(SR * pad_ms / 1000)
    x = np.zeros(n + 2 * pad, np.float32)
    x[pad:pad + n] = 0.3 * np.sin(2 * np.pi * freq * np.arange(n) / SR)
    return x


def test_speech_span_and_utterance_keep_the_spoken_part_with_margins():
    clip = np.zeros(SR, np.float32)
    clip[4000:8000] = 0.3 * np.sin(np.arange(4000) * 0.2)
    assert speech_span(clip, SR) == (4000, 8000)
    u = utterance(clip, "yes", "a.wav", SR, group="spk")
    assert u.end - u.first == 4000 and u.first == 1600 and u.samples.size == 4000 + 2 * 1600
    assert u.is_command and not utterance(clip, "_unknown_", "b.wav", SR).is_command


def _material():
    commands = [utterance(_tone(400, 500 + 100 * k), label, f"{label}{k}.wav", SR, group=f"s{k % 2}")
                for k, label in enumerate(["yes", "no", "yes", "no"])]
    others = [utterance(_tone(500, 1500), "_unknown_", "w.wav", SR),
              utterance(_tone(3000, 2000), "_unknown_", "sentence.wav", SR)]
    return commands, others


def test_a_commands_stream_places_words_at_their_levels_with_close_and_repeated_words():
    commands, others = _material()
    options = StreamOptions(kind="commands", duration_s=120, seed=3, close_fraction=0.3, repeat_fraction=0.3)
    stream = build_stream(options, commands=commands, others=others[:1])
    audio = stream.render()
    assert audio.size == 120 * SR and audio.dtype == np.float32
    words = stream.words
    assert sum(w.is_command for w in words) > 20 and any(not w.is_command for w in words)
    gaps = np.array([b.start_ms - a.end_ms for a, b in zip(words, words[1:])])
    assert gaps.min() >= 200 - 1 and (gaps <= 600 + 1).any() and (gaps >= 1500 - 1).any()
    assert any(a.label == b.label and a.is_command and 200 <= b.start_ms - a.end_ms <= 600
               for a, b in zip(words, words[1:]))  # "stop … stop"
    for w in words:
        s0, s1 = int(w.start_ms * SR / 1000), int(w.end_ms * SR / 1000)
        level = 20 * np.log10(np.sqrt(np.mean(audio[s0:s1].astype(np.float64) ** 2)))
        assert -33.0 < level < -14.0  # speech at -32…-16 dBFS, plus the background at 5-20 dB below
    assert np.array_equal(stream.render(), audio)  # deterministic
    again = build_stream(options, commands=commands, others=others[:1])
    assert again.fingerprint == stream.fingerprint and again.words == stream.words
    other_seed = build_stream(dataclasses.replace(options, seed=4), commands=commands, others=others[:1])
    assert other_seed.fingerprint != stream.fingerprint


def test_a_stream_over_a_recording_changed_anywhere_has_another_fingerprint():
    """The fingerprint keys the posterior cache: a noise recording or a word changed in the middle (numpy's repr of a
    long array shows its ends only, and the key took every 997th sample) kept the key, and the bench scored the old
    stream's cached posteriors."""
    commands, others = _material()
    noise = np.random.default_rng(0).normal(scale=0.1, size=70 * SR).astype(np.float32)
    options = StreamOptions(kind="commands", duration_s=30, seed=3)
    stream = build_stream(options, commands=commands, others=others[:1], noise=[noise])
    changed = noise.copy()
    changed[35 * SR + 1] = 0.5  # one sample in the middle of the recording
    assert build_stream(options, commands=commands, others=others[:1], noise=[changed]).fingerprint != \
        stream.fingerprint
    word = commands[0]
    louder = [dataclasses.replace(word, samples=word.samples * np.float32(1.01))] + list(commands[1:])
    assert build_stream(options, commands=louder, others=others[:1], noise=[noise]).fingerprint != stream.fingerprint
    assert build_stream(options, commands=commands, others=others[:1], noise=[noise]).fingerprint == stream.fingerprint


def test_word_windows_hold_each_word_at_the_streams_levels_and_the_asked_offset():
    commands, _ = _material()
    noise = [np.random.default_rng(0).normal(size=3 * SR).astype(np.float32)]
    options = StreamOptions(seed=5)
    frame = SR // 100

    def spoken_frames(x):  # 10 ms frames more than 3 dB above the background
        power = np.mean(x[:x.size // frame * frame].astype(np.float64).reshape(-1, frame) ** 2, axis=1)
        return np.flatnonzero(power > 2 * np.median(power))

    for offset_ms in (0.0, 200.0):
        windows = word_windows(commands, options, window_samples=SR, offset_ms=offset_ms, noise=noise)
        assert windows.shape == (len(commands), SR) and windows.dtype == np.float32
        assert np.array_equal(windows, word_windows(commands, options, window_samples=SR, offset_ms=offset_ms,
                                                    noise=noise))
        for u, x in zip(commands, windows):
            loud = spoken_frames(x)
            middle_ms = (loud[0] + loud[-1] + 1) / 2 * 10
            assert abs(abs(middle_ms - 500) - offset_ms) <= 20  # the spoken part's middle, offset_ms off centre
            spoken = x[loud[0] * frame:(loud[-1] + 1) * frame].astype(np.float64)
            assert -33.0 < 10 * np.log10(np.mean(spoken ** 2)) < -14.0  # -32…-16 dBFS plus the background
            background = np.concatenate([x[:loud[0] * frame - frame], x[(loud[-1] + 2) * frame:]]).astype(np.float64)
            snr_db = 10 * np.log10(np.mean(spoken ** 2) / np.mean(background ** 2))
            assert 4.0 < snr_db < 21.0 and len(loud) * 10 == pytest.approx((u.end - u.first) * 1000 / SR, abs=30)
    sides = {np.sign(spoken_frames(x).mean() * 10 - 500) for x in
             word_windows(commands * 4, options, window_samples=SR, offset_ms=200.0, noise=noise)}
    assert sides == {-1.0, 1.0}
    # with background before the window (a detector that listens further back): the word where it was
    lead = SR // 4
    for u, x in zip(commands, word_windows(commands, options, window_samples=SR, noise=noise, lead_samples=lead)):
        assert x.shape == (lead + SR,) and abs(spoken_frames(x[lead:]).mean() * 10 - 495) <= 20
    with pytest.raises(ValueError, match="lead_samples"):
        word_windows(commands, options, window_samples=SR, lead_samples=-1)
    with pytest.raises(ValueError, match="offset_ms"):
        word_windows(commands, options, window_samples=SR, offset_ms=-1.0)
    with pytest.raises(ValueError, match="window_samples"):
        word_windows(commands, options, window_samples=0)


def test_talk_and_words_streams_hold_no_command_word():
    commands, others = _material()
    talk = build_stream(StreamOptions(kind="talk", duration_s=60, seed=1), others=others)
    assert talk.words and not any(w.is_command for w in talk.words) and talk.total == 60 * SR
    pauses = [b.start_ms - a.end_ms for a, b in zip(talk.words, talk.words[1:])]
    assert min(pauses) >= 100 - 1 and max(pauses) <= 10_000 + 1
    words = build_stream(StreamOptions(kind="words", passes=3, seed=1), others=others)
    assert sorted(w.source for w in words.words) == sorted(["w.wav", "sentence.wav"] * 3)
    with pytest.raises(ValueError, match="others"):
        build_stream(StreamOptions(kind="talk"), others=commands)
    with pytest.raises(ValueError, match="commands"):
        build_stream(StreamOptions(kind="commands"), others=others)
    with pytest.raises(ValueError, match="snr_db"):
        StreamOptions(snr_db=(20.0, 5.0))


@pytest.mark.parametrize("tail_samples", [0, 320, 799, 800, 900])
def test_a_stream_whose_last_background_piece_is_shorter_than_the_crossfade_renders(tail_samples):
    tone = np.zeros(SR, np.float32)
    tone[4000:8000] = 0.3 * np.sin(np.arange(4000) * 0.2)
    duration_s = 20.0 + tail_samples / SR  # 10-s background pieces: the last one is tail_samples long
    stream = build_stream(StreamOptions(kind="commands", duration_s=duration_s, seed=0),
                          commands=[utterance(tone, "yes", "a/yes.wav", SR, group="s1")])
    audio = stream.render()
    assert audio.size == stream.total and np.all(np.isfinite(audio))


def test_segments_join_into_one_stream():
    commands, others = _material()
    pieces = build_segments(StreamOptions(kind="talk", duration_s=75, seed=2), 30, others=others)
    assert len(pieces) == 3 and sum(p.total for p in pieces) == 75 * SR
    parts = [StreamPosteriors(times_ms=np.array([1000.0, 1100.0]), posteriors=np.zeros((2, 4)), labels=LABELS,
                              hop_ms=HOP_MS, words=p.words, duration_ms=p.duration_ms) for p in pieces]
    whole = concat_posteriors(parts)
    assert whole.duration_ms == 75_000 and whole.times_ms.tolist() == [1000, 1100, 26000, 26100, 51000, 51100]
    assert len(whole.words) == sum(len(p.words) for p in pieces)
    assert whole.words[len(pieces[0].words)].start_ms == pieces[1].words[0].start_ms + 25_000


def test_segments_of_the_last_valid_seed_keep_their_seeds_in_the_seed_range():
    _, others = _material()
    last = 2**32 - 1
    pieces = build_segments(StreamOptions(kind="talk", duration_s=75, seed=last), 30, others=others)
    assert [p.options.seed for p in pieces] == [last, 0, 1]


def test_a_second_opinions_cached_posteriors_are_keyed_by_the_speech_embedding_models(tmp_path, monkeypatch):
    from edgesense.runtime import speech_embedding

    _, others = _material()
    stream = build_stream(StreamOptions(kind="words", passes=1), others=others)
    heads = tmp_path / "heads.tflite"
    heads.write_bytes(b"heads")
    models = (tmp_path / "melspectrogram.tflite", tmp_path / "embedding_model.tflite")
    for path in models:
        path.write_bytes(b"models of one version of the wheel")
    monkeypatch.setattr(speech_embedding, "model_files", lambda: models)  # where the second opinion finds them
    second = SecondOpinionOptions(heads_path=str(heads))
    before = PosteriorCache(tmp_path, second_opinion=second).key("sha", stream, 100.0)
    assert PosteriorCache(tmp_path, second_opinion=second).key("sha", stream, 100.0) == before
    models[1].write_bytes(b"the embedding model of another version")
    assert PosteriorCache(tmp_path, second_opinion=second).key("sha", stream, 100.0) != before


class _FakeModel:
    """Scores 'yes' by the loudness of the latest features: enough to check the plumbing."""

    command_labels = LABELS
    audio_frontend = AudioFrontendOptions()

    def __init__(self):
        self.calls = 0

    def encode_audio(self, features):
        assert features.shape == (49, 40)
        self.calls += 1
        return np.array([features[-5:].max()], np.float32)

    def fuse(self, a, v):
        assert v is None
        loud = float(a[0] > 0.0)
        return np.array([1 - loud, 0, loud, 0], np.float32), None


def test_stream_posteriors_runs_every_hop_after_one_second_and_caches(tmp_path):
    samples = np.zeros(5 * SR, np.float32)
    samples[3 * SR:int(3.5 * SR)] = 0.5 * np.sin(np.arange(SR // 2) * 0.3)
    model = _FakeModel()
    result = stream_posteriors(model, samples, hop_ms=100.0, progress=False)
    # Hops end at 100, 200, ... 5000 ms; the first with 49 frames ends at 1000 ms.
    assert result.times_ms[0] == 1000.0 and result.times_ms[-1] == 5000.0 and result.duration_ms == 5000.0
    assert result.posteriors.shape == (41, 4) and model.calls == 41
    loud_times = result.times_ms[result.posteriors[:, 2] > 0.5]
    assert loud_times.min() >= 3000 and loud_times.max() <= 3800
    commands, others = _material()
    stream = build_stream(StreamOptions(kind="words", passes=1), others=others)
    cache = PosteriorCache(tmp_path)
    first = cache.posteriors(model, "sha", stream)
    calls = model.calls
    again = cache.posteriors(model, "sha", stream)
    assert model.calls == calls  # from the cache: not rendered, not run
    assert np.array_equal(again.posteriors, first.posteriors) and again.labels == LABELS
    assert again.words == stream.words and again.duration_ms == stream.duration_ms
    assert cache.load("other") is None
    # a second opinion is part of what is cached: its heads' bytes and the blend's weight
    heads = tmp_path / "heads.tflite"
    heads.write_bytes(b"heads one")
    keys = {PosteriorCache(tmp_path, second_opinion=SecondOpinionOptions(heads_path=str(heads), student_weight=w))
            .key("sha", stream, 100.0) for w in (0.3, 0.5)}
    heads.write_bytes(b"heads two")
    keys.add(PosteriorCache(tmp_path, second_opinion=SecondOpinionOptions(heads_path=str(heads)))
             .key("sha", stream, 100.0))
    keys.add(PosteriorCache(tmp_path, second_opinion=SecondOpinionOptions()).key("sha", stream, 100.0))
    assert len(keys) == 4 and cache.key("sha", stream, 100.0) in keys  # no heads: the model's own key


@pytest.mark.parametrize("damage", ["cut", "empty", "scrambled"])
def test_a_damaged_cached_file_is_scored_again_not_a_traceback(tmp_path, damage, caplog):
    """A posterior file cut short (a copy of --out stopped halfway, a full disk), empty or with damaged bytes raised
    zipfile.BadZipFile or EOFError out of the bench; it is scored again, as a fresh computation gives it."""
    _, others = _material()
    stream = build_stream(StreamOptions(kind="words", passes=1), others=others)
    model = _FakeModel()
    cache = PosteriorCache(tmp_path)
    fresh = cache.posteriors(model, "sha", stream)
    path = cache.path(cache.key("sha", stream, HOP_MS))
    data = path.read_bytes()
    if damage == "cut":
        path.write_bytes(data[:len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes(64) + data[middle + 64:])
    calls = model.calls
    again = cache.posteriors(model, "sha", stream)
    assert model.calls > calls and "ignoring unreadable posterior cache" in caplog.text
    assert np.array_equal(again.posteriors, fresh.posteriors) and again.words == fresh.words
    assert cache.load(cache.key("sha", stream, HOP_MS)) is not None  # saved whole again


def test_a_full_disk_while_caching_is_one_line_naming_the_file_and_leaves_no_partial_file(tmp_path):
    """np.savez_compressed into a fixed hidden name: a full disk raised '[Errno 27] File too large', naming no
    file, and left the hidden '.posteriors-KEY.tmp.npz' in --out's cache/ (on the disk that was full)."""
    code = ("import resource\nimport numpy as np\n"
            "from edgesense.bench.streams import PosteriorCache, StreamPosteriors\n"
            "p = StreamPosteriors(times_ms=np.arange(20000.0), posteriors=np.random.default_rng(0).random((20000, 12))"
            ".astype(np.float32), labels=tuple('abcdefghijkl'), hop_ms=100.0, words=(), duration_ms=2e6)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))  # a write past it fails, as on a full disk\n"
            f"try:\n    PosteriorCache({str(tmp_path)!r}).save('k', p)\nexcept OSError as exc:\n    print(exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.stdout.strip() == f"cannot write the posterior cache {tmp_path / 'posteriors-k.npz'}: File too large", (
        proc.stderr)
    assert list(tmp_path.iterdir()) == []


def test_with_a_second_opinion_the_device_loop_scores_the_hops_the_bench_scores(tiny_model_path, tiny_heads_path,
                                                                               tmp_path):
    """The bench pushes one 100-ms hop at a time, the device 20-ms chunks. The device ran the mel model on each
    chunk (its frames differ where the audio falls 80 dB below the run's loudest, as around digital silence)
    and scored an extra hop between two hops, where its heads got their context: its posteriors were not those
    the bench measured. With the mel model on blocks of the hop, every hop the device scores is the bench's,
    with its posteriors."""
    from conftest import require_speech_embedding

    from edgesense.frontend.wav import read_wav, write_wav
    from edgesense.loop.pipeline import Pipeline, PipelineOptions
    from edgesense.runtime.model import EdgeModel
    from edgesense.runtime.second_opinion import SecondOpinion
    from edgesense.shipped import SAMPLES, shipped_path
    from edgesense.sources.replay import WavReplaySource

    require_speech_embedding()
    samples = read_wav(shipped_path(SAMPLES, "speech_commands.wav"))[:5 * SR].copy()
    samples[2 * SR:3 * SR] = 0.0  # a second of digital silence
    wav = write_wav(tmp_path / "s.wav", samples, SR)
    model = EdgeModel.load(tiny_model_path)
    options = SecondOpinionOptions(heads_path=str(tiny_heads_path), student_weight=0.3)
    bench = stream_posteriors(model, samples, hop_ms=100.0, progress=False, second_opinion=options)
    second = SecondOpinion(options, labels=model.command_labels, sample_rate_hz=SR, hop_ms=100.0)
    pipeline = Pipeline(model, PipelineOptions(), audio=WavReplaySource(wav), second_opinion=second)
    scored = []
    process = pipeline._recognizer.process
    pipeline._recognizer.process = lambda probs, t, **kw: scored.append((t, probs)) or process(probs, t, **kw)
    with pipeline:
        pipeline.run()
    assert [t for t, _ in scored] == list(bench.times_ms)
    np.testing.assert_allclose(np.array([p for _, p in scored]), bench.posteriors, atol=1e-6)


def test_rendering_a_long_words_stream_holds_little_more_than_its_samples():
    """A words stream is one piece: every other word of a large set's test speakers, said twice, runs for hours
    (25 h, 5.8 GB of float32, for the full Speech Commands), and its level envelope in float64 was five times that."""
    import tracemalloc

    _, others = _material()
    stream = build_stream(StreamOptions(kind="words", passes=60, seed=1), others=others)
    assert stream.duration_ms > 300_000  # a long stream: minutes, several level passes
    tracemalloc.start()
    try:
        audio = stream.render()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * audio.nbytes, peak / audio.nbytes


def test_scoring_a_long_words_stream_holds_a_block_of_its_audio_not_all_of_it(tmp_path):
    """A words stream is one piece as long as its words need (25 h, 5.8 GB of float32, for the full Speech
    Commands): the posterior cache rendered it whole before scoring it. It is mixed and scored a minute at a
    time."""
    import tracemalloc

    _, others = _material()
    stream = build_stream(StreamOptions(kind="words", passes=150, seed=5), others=others)
    block_bytes = 60 * SR * 4  # a minute of float32
    assert stream.total * 4 > 20 * block_bytes  # twenty minutes and more
    tracemalloc.start()
    try:
        cached = PosteriorCache(tmp_path).posteriors(_FakeModel(), "sha", stream, hop_ms=1000.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the block, the background pieces across its end and its level envelope (float64): ~9 blocks, whatever the
    # stream's length (the whole stream, 22 blocks, and more before)
    assert peak < 12 * block_bytes, peak / block_bytes
    assert cached.duration_ms == stream.duration_ms and cached.times_ms[-1] > 20 * 60_000


class _FeatureModel(_FakeModel):
    """Its posteriors are the latest frame's first features: any change in the audio shows."""

    def encode_audio(self, features):
        return features[-1, :len(LABELS)].astype(np.float32)

    def fuse(self, a, v):
        return a, None


@pytest.mark.parametrize("hop_ms", [100.0, 70.0])
def test_a_stream_scored_block_by_block_has_the_posteriors_of_its_whole_array(hop_ms):
    """The blocks end to end are the stream's samples, and their posteriors are the whole array's, a hop across a
    block's end included (70 ms does not divide a minute)."""
    _, others = _material()
    stream = build_stream(StreamOptions(kind="words", passes=20, seed=6), others=others)
    audio = stream.render()
    assert audio.size > 2 * 60 * SR  # three blocks
    assert np.array_equal(np.concatenate(list(stream.blocks())), audio)
    assert np.array_equal(np.asarray(stream.blocks()), audio)  # a scorer that takes an array
    model = _FeatureModel()
    blocks = stream_posteriors(model, stream.blocks(), hop_ms=hop_ms, progress=False)
    whole = stream_posteriors(model, audio, hop_ms=hop_ms, progress=False)
    assert np.unique(whole.posteriors).size > 1000  # the features themselves
    assert np.array_equal(blocks.times_ms, whole.times_ms) and np.array_equal(blocks.posteriors, whole.posteriors)
    assert blocks.duration_ms == whole.duration_ms == stream.duration_ms
    assert whole.times_ms[-1] == (audio.size // round(SR * hop_ms / 1000)) * hop_ms


def test_posteriors_computed_say_when_they_start_and_end_and_cached_ones_say_so(tmp_path, caplog):
    """An hour of talk is tens of minutes of posteriors: where stderr is no terminal (no bar) a line says each
    stream piece's start (its minutes) and its end (how long); one read from the cache says that instead."""
    _, others = _material()
    stream = build_stream(StreamOptions(kind="words", passes=1), others=others)
    cache = PosteriorCache(tmp_path)
    with caplog.at_level(logging.INFO, logger="edgesense.bench.streams"):
        cache.posteriors(_FakeModel(), "sha", stream)
    lines = [r.getMessage() for r in caplog.records if r.name == "edgesense.bench.streams"]
    start = (f"words stream {stream.fingerprint}: posteriors of {stream.duration_ms / 60000:.1f} min, one every "
             f"100 ms (cached once done)")
    assert lines[0] == f"{start} ..." and lines[1].startswith(f"{start}: done in ")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edgesense.bench.streams"):
        cache.posteriors(_FakeModel(), "sha", stream)
    assert [r.getMessage() for r in caplog.records] == [f"words stream {stream.fingerprint}: posteriors from the cache"]
