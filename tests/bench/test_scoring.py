"""edgesense.bench.scoring on hand-made detections against hand-made words (no model, no posteriors)."""

from __future__ import annotations

import numpy as np
import pytest

from edgesense.bench.scoring import Detection, score_stream
from edgesense.bench.streams import PlacedWord, StreamPosteriors

LABELS = ("_silence_", "_unknown_", "stop", "go")


def word(label: str, start_ms: float, end_ms: float, source: str = "") -> PlacedWord:
    return PlacedWord(label=label, start_ms=start_ms, end_ms=end_ms,
                      is_command=label not in ("_silence_", "_unknown_"), source=source)


def stream(*words: PlacedWord, duration_ms: float = 60_000.0) -> StreamPosteriors:
    return StreamPosteriors(times_ms=np.zeros(0), posteriors=np.zeros((0, len(LABELS))), labels=LABELS,
                            hop_ms=100.0, words=words, duration_ms=duration_ms)


def score(words: tuple[PlacedWord, ...], detections: list[tuple[str, float]], **kwargs):
    return score_stream(stream(*words), [Detection(label, t, 0.9) for label, t in detections], **kwargs)


def test_a_detection_from_the_words_start_to_the_tolerance_after_its_end_is_a_hit():
    stop = (word("stop", 1000, 1500),)
    assert score(stop, [("stop", 1000)]).latencies_ms == (-500,)
    assert score(stop, [("stop", 1500)]).latencies_ms == (0,)
    assert score(stop, [("stop", 2500)]).latencies_ms == (1000,)
    late = score(stop, [("stop", 2500.5)])
    assert (late.hits, late.on_background) == (0, 1)
    early = score(stop, [("stop", 999)])
    assert (early.hits, early.on_background) == (0, 1)


def test_stop_stop_detected_once_after_both_answers_the_second_word():
    # "stop … stop": the one detection comes 100 ms after the second word; the first is the word missed.
    twice = (word("stop", 1000, 1500), word("stop", 1800, 2300))
    s = score(twice, [("stop", 2400)])
    assert (s.hits, s.false_accepts, s.latencies_ms) == (1, 0, (100,))
    assert s.per_word == {"stop": (1, 2)}
    # During the second word, the detection still answers the first (the second is not yet said).
    assert score(twice, [("stop", 2000)]).latencies_ms == (500,)
    # Detected after each word: two hits, each from its own word's end.
    assert score(twice, [("stop", 1600), ("stop", 2400)]).latencies_ms == (100, 100)
    # Two detections after both: both words hit (the first by the earlier detection), as before.
    both = score(twice, [("stop", 2400), ("stop", 2450)])
    assert (both.hits, both.false_accepts, both.latencies_ms) == (2, 0, (900, 150))
    # A second detection only the second word's window holds keeps its hit: the first word is not given up.
    kept = score(twice, [("stop", 2400), ("stop", 3000)])
    assert (kept.hits, kept.false_accepts, kept.latencies_ms) == (2, 0, (900, 700))


def test_a_wrong_word_or_a_second_detection_is_one_substitution_and_the_word_a_miss():
    stop = (word("stop", 1000, 1500, "s.wav"),)
    wrong = score(stop, [("go", 1400)])
    assert (wrong.hits, wrong.substitutions, wrong.false_accepts) == (0, 1, 1)
    second = score(stop, [("stop", 1600), ("stop", 2000)])
    assert (second.hits, second.substitutions, second.false_accepts) == (1, 1, 1)
    assert second.false_accepts_by_source == {"s.wav": 1}


@pytest.mark.parametrize("t_ms, kind", [(10_200, "on_other_speech"), (11_500, "on_other_speech"),
                                        (11_501, "on_background"), (5_000, "on_background")])
def test_a_false_accept_up_to_the_tolerance_after_other_speech_is_on_that_speech(t_ms, kind):
    s = score((word("_unknown_", 10_000, 10_500, "talk/u.wav"),), [("go", t_ms)])
    assert getattr(s, kind) == 1 and s.false_accepts == 1


def test_the_context_rule_replayed_sees_only_the_results_the_recognizer_has_seen_at_a_repeated_time():
    """Two results at one time (a repeated time: allowed on the device) with the context ending at the result
    (offset 0): the replay's context at the first took in the second, which the recognizer has not seen yet, so
    the recognizer fired 'yes' where the replay did not."""
    from edgesense.bench.scoring import detect
    from edgesense.recognition.commands import CommandRecognizer, CommandRecognizerOptions

    labels = ("_silence_", "_unknown_", "yes")
    yes, unknown = np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0])
    times, post = np.array([0.0, 100.0, 200.0, 200.0]), np.stack([yes, yes, yes, unknown])
    options = CommandRecognizerOptions(average_window_ms=200, threshold=0.5, minimum_count=3,
                                       max_context_unknown=0.3, context_offset_ms=0, context_window_ms=100)
    recognizer = CommandRecognizer(labels, options)
    events = [e for t, p in zip(times, post) if (e := recognizer.process(p, float(t))) is not None]
    replayed = detect(StreamPosteriors(times_ms=times, posteriors=post, labels=labels, hop_ms=100.0,
                                       duration_ms=300.0), options)
    assert [(e.label, e.t_ms) for e in events] == [("yes", 200.0)]
    assert [(d.label, d.t_ms) for d in replayed] == [(e.label, e.t_ms) for e in events]


def _random_stream(seed: int, n: int = 400) -> StreamPosteriors:
    """Int8-like posteriors (multiples of 1/256) in bursts of one label, with a repeated time and a gap (segments
    joined), and words placed at random."""
    rng = np.random.default_rng(seed)
    raw = rng.dirichlet(np.full(len(LABELS), 0.3), size=n)
    raw[np.arange(n), np.repeat(rng.integers(0, len(LABELS), n // 4), 4)] += 1.0
    post = np.round(raw / raw.sum(axis=1, keepdims=True) * 256) / 256
    times = np.arange(n) * 100.0 + 1000.0
    times[n // 2:] += 1000.0
    times[n // 3] = times[n // 3 - 1]  # two results at one time
    starts = np.sort(rng.uniform(0, times[-1], 40))
    words = tuple(word(str(rng.choice(LABELS[1:])), float(s), float(s + rng.uniform(200, 900)), f"w{k}.wav")
                  for k, s in enumerate(starts))
    return StreamPosteriors(times_ms=times, posteriors=post, labels=LABELS, hop_ms=100.0, words=words,
                            duration_ms=float(times[-1]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_replay_swept_in_any_order_gives_every_setting_the_recognizers_events(seed):
    """A sweep scores thousands of settings on one Replay, which keeps what they share (window averages, the rows
    ready to fire, each label's re-arming rows of the latest window and count): every setting, in any order, gets
    the events the device's recognizer gives, and the scores of a Replay of its own."""
    from edgesense.bench.scoring import Replay, SweepOptions, detect, evaluate
    from edgesense.recognition.commands import CommandRecognizer, CommandRecognizerOptions

    post = _random_stream(seed)
    grid = SweepOptions(average_windows_ms=(100.0, 300.0, 700.0), thresholds=(0.4, 0.55, 0.8),
                        release_thresholds=(0.0, 0.2, 0.35), minimum_counts=(1, 3), suppressions_ms=(0.0, 100.0, 450.0),
                        max_context_unknowns=(1.0, 0.3), hop_ms=100.0).grid()
    grid.append(CommandRecognizerOptions(threshold=0.6, class_thresholds={"go": 0.45}, release_threshold=0.2,
                                         suppression_ms=0.0, minimum_count=1, average_window_ms=300.0))
    order = np.random.default_rng(seed).permutation(len(grid))[:80]  # (window, count) groups interleaved
    shared = Replay(post)
    for k in order:
        options = grid[k]
        recognizer = CommandRecognizer(LABELS, options, wall_time=lambda: 0.0)
        events = [(e.label, e.t_ms, e.score) for t, p in zip(post.times_ms, post.posteriors)
                  if (e := recognizer.process(p, float(t))) is not None]
        assert [(d.label, d.t_ms, d.score) for d in detect(shared, options)] == events, options
        alone = evaluate({"commands": Replay(post)}, options)
        assert evaluate({"commands": shared}, options) == alone
        assert alone.commands == score_stream(post, detect(post, options))


@pytest.mark.parametrize("first_ms, suppression_ms, second_ms, fires", [
    (3184.8, 269.8, 3454.6000000000004, True),  # second - first > suppression, though second <= first + suppression
    (194.8, 512.7, 707.5000000000001, False),  # second - first <= suppression, though second > first + suppression
])
def test_suppression_ends_where_the_recognizer_ends_it_to_the_last_bit(first_ms, suppression_ms, second_ms, fires):
    """The replay skips the suppressed results in one step: it must skip exactly those the recognizer's
    ``t - last_event <= suppression_ms`` suppresses, not those up to ``last_event + suppression_ms`` (which rounds)."""
    from edgesense.bench.scoring import detect
    from edgesense.recognition.commands import CommandRecognizer, CommandRecognizerOptions

    stop, silence = [0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]
    times = np.array([first_ms - 1, first_ms, first_ms + 100, first_ms + 101, second_ms - 1, second_ms])
    post = np.array([stop, stop, silence, silence, stop, stop])
    options = CommandRecognizerOptions(average_window_ms=2.0, threshold=0.5, minimum_count=2,
                                       suppression_ms=suppression_ms)
    recognizer = CommandRecognizer(LABELS, options, wall_time=lambda: 0.0)
    events = [e.t_ms for t, p in zip(times, post) if (e := recognizer.process(p, float(t))) is not None]
    assert events == ([first_ms, second_ms] if fires else [first_ms])
    replayed = detect(StreamPosteriors(times_ms=times, posteriors=post, labels=LABELS, hop_ms=100.0,
                                       duration_ms=second_ms), options)
    assert [d.t_ms for d in replayed] == events


def test_settings_of_one_window_and_release_re_arm_by_their_own_minimum_count_on_one_replay():
    """After a gap (segments joined), two results re-arm "stop" where two make a window (minimum count 2) and not
    where three do: a Replay that kept the re-arming rows of one count for the other fired at 2800 ms twice."""
    from edgesense.bench.scoring import Replay, detect
    from edgesense.recognition.commands import CommandRecognizer, CommandRecognizerOptions

    stop, silence = [0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]
    times = np.array([1000.0, 1100.0, 1200.0, 1300.0, 2500.0, 2580.0, 2600.0, 2700.0, 2800.0])
    post = np.array([stop] * 4 + [silence] * 2 + [stop] * 3)
    shared = Replay(StreamPosteriors(times_ms=times, posteriors=post, labels=LABELS, hop_ms=100.0,
                                     duration_ms=3000.0))
    for count, expected in ((2, [1100.0, 2800.0]), (3, [1200.0]), (2, [1100.0, 2800.0])):
        options = CommandRecognizerOptions(average_window_ms=300.0, threshold=0.5, release_threshold=0.3,
                                           minimum_count=count, suppression_ms=0.0)
        recognizer = CommandRecognizer(LABELS, options, wall_time=lambda: 0.0)
        events = [e.t_ms for t, p in zip(times, post) if (e := recognizer.process(p, float(t))) is not None]
        assert events == expected
        assert [d.t_ms for d in detect(shared, options)] == events


def test_an_operating_points_dict_holds_the_counts_and_the_hours_its_intervals_are_made_of():
    from edgesense.bench.scoring import OperatingPoint, StreamScore
    from edgesense.recognition.commands import CommandRecognizerOptions

    commands = StreamScore(command_words=55, hits=40, other_utterances=5, substitutions=0, on_other_speech=0,
                           on_background=0, hours=2 / 60, per_word={"go": (2, 2), "stop": (38, 53)})
    talk = StreamScore(command_words=0, hits=0, other_utterances=147, substitutions=0, on_other_speech=1,
                       on_background=0, hours=4 / 60)
    d = OperatingPoint(options=CommandRecognizerOptions(), commands=commands, talk=talk).to_dict()
    # the figures as they always were: rounded rates and hours
    assert d["commands_stream"]["per_word_hit_rate"] == {"go": 1.0, "stop": 0.717}
    assert d["talk_stream"]["hours"] == 0.067 and d["false_accepts_per_hour"] == 15.0
    # beside them, the counts and the unrounded hours
    assert d["commands_stream"]["per_word_counts"] == {"go": {"hits": 2, "said": 2}, "stop": {"hits": 38, "said": 53}}
    assert d["talk_stream"]["hours_unrounded"] == 4 / 60
