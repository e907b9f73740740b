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
