"""Streaming evaluation on hand-made posterior sequences with known answers (no model)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgesense.bench.streams import (
    PlacedWord,
    PosteriorCache,
    StreamOptions,
    StreamPosteriors,
    SweepOptions,
    build_stream,
    evaluate_stream,
    recommend,
    speech_span,
    stream_posteriors,
    sweep,
    update_firmware_config,
)
from edgesense.frontend.audio import AudioFrontendOptions
from edgesense.recognition.commands import CommandRecognizerOptions
from edgesense.schema.yaml import load_yaml_mapping

LABELS = ("_silence_", "_unknown_", "yes", "no")
HOP_MS = 100.0
DURATION_MS = 12_000.0
REPO = Path(__file__).resolve().parents[2]


def word(label: str, start_ms: float, end_ms: float) -> PlacedWord:
    return PlacedWord(label=label, start_ms=start_ms, end_ms=end_ms, clip_start_ms=start_ms - 100,
                      clip_end_ms=end_ms + 100, is_command=label not in ("_silence_", "_unknown_"))


def timeline(bursts: list[tuple[str, float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """One-hot posteriors every 100 ms: silence, except ``label`` for t in [start, stop)."""
    times = np.arange(HOP_MS, DURATION_MS + 1, HOP_MS)
    post = np.zeros((times.size, len(LABELS)))
    post[:, 0] = 1.0
    for label, start, stop in bursts:
        on = (times >= start) & (times < stop)
        post[on] = 0.0
        post[on, LABELS.index(label)] = 1.0
    return times, post


# Averaging window 200 ms at a 100 ms hop = the last 3 results: a one-hot burst starting at
# t0 averages 1/3 at t0, 2/3 at t0 + 100 and 1 at t0 + 200.
SHORT = dict(average_window_ms=200.0, minimum_count=1)
WORDS = [word("yes", 1000, 1500), word("no", 5000, 5600), word("_unknown_", 10_000, 10_500)]
BURSTS = [("yes", 1800, 2400),        # the "yes" word, detected late
          ("no", 8000, 8600),         # no word there: a false accept on background
          ("yes", 10_300, 10_900)]    # during the unknown word: a false accept on an unknown word


def test_hits_false_accepts_and_latency_are_exact():
    times, post = timeline(BURSTS)
    m = evaluate_stream(times, post, LABELS, WORDS,
                        CommandRecognizerOptions(threshold=0.5, suppression_ms=0.0, **SHORT),
                        duration_ms=DURATION_MS)
    assert (m.command_words, m.hits, m.misses) == (2, 1, 1)
    assert m.hit_rate == 0.5
    assert m.latencies_ms == (400.0,)  # fires at 1900 (2/3 > 0.5), the word ended at 1500
    assert (m.false_accepts, m.on_background, m.on_unknown, m.substitutions) == (2, 1, 1, 0)
    assert m.false_accepts_per_hour == pytest.approx(2 / (DURATION_MS / 3_600_000))
    assert m.per_class_hit_rate == {"no": 0.0, "yes": 1.0}
    d = m.to_dict()
    assert d["latency_ms"]["p50"] == 400.0 and d["false_accepts"] == 2


def test_a_higher_threshold_fires_one_hop_later():
    times, post = timeline(BURSTS)
    m = evaluate_stream(times, post, LABELS, WORDS,
                        CommandRecognizerOptions(threshold=0.7, suppression_ms=0.0, **SHORT),
                        duration_ms=DURATION_MS)
    assert m.latencies_ms == (500.0,)  # 2/3 < 0.7: fires at 2000, when the average is 1
    assert m.hits == 1


def test_late_detection_beyond_the_tolerance_is_a_false_accept_not_a_hit():
    times, post = timeline(BURSTS)
    m = evaluate_stream(times, post, LABELS, WORDS,
                        CommandRecognizerOptions(threshold=0.5, suppression_ms=0.0, **SHORT),
                        duration_ms=DURATION_MS, match_tolerance_ms=300.0)
    assert m.hits == 0 and m.on_background == 2 and m.latencies_ms == ()


def test_suppression_turns_a_double_detection_into_one():
    # Two bursts of "yes" for one word, 300 ms of silence between them.
    times, post = timeline([("yes", 1000, 1400), ("yes", 1700, 2100)])
    words = [word("yes", 800, 1300)]
    loose = evaluate_stream(times, post, LABELS, words,
                            CommandRecognizerOptions(threshold=0.5, suppression_ms=0.0, **SHORT),
                            duration_ms=DURATION_MS, match_tolerance_ms=1000.0)
    strict = evaluate_stream(times, post, LABELS, words,
                             CommandRecognizerOptions(threshold=0.5, suppression_ms=2000.0, **SHORT),
                             duration_ms=DURATION_MS, match_tolerance_ms=1000.0)
    assert (loose.hits, loose.substitutions, loose.false_accepts) == (1, 1, 1)
    assert (strict.hits, strict.false_accepts) == (1, 0)
    assert loose.latencies_ms == strict.latencies_ms == (-200.0,)  # fired at 1100, before the word's end


def test_sweep_covers_the_grid_and_recommend_respects_the_budget():
    times, post = timeline(BURSTS)
    posts = StreamPosteriors(times_ms=times, posteriors=post, labels=LABELS, hop_ms=HOP_MS)
    options = SweepOptions(thresholds=(0.5, 0.7, 0.9), suppressions_ms=(0.0, 500.0), average_window_ms=200.0,
                           minimum_count=1, max_false_accepts_per_hour=0.0)
    points = sweep(posts, WORDS, DURATION_MS, options)
    assert len(points) == 6
    assert {(p.threshold, p.suppression_ms) for p in points} == {(t, s) for t in (0.5, 0.7, 0.9) for s in (0.0, 500.0)}
    # Every setting fires on all three bursts here (they are one-hot): nothing is within a 0 FA budget.
    best = recommend(points, 0.0)
    assert best.false_accepts == 2
    best = recommend(points, 1e9)
    assert best.hit_rate == 0.5 and best.threshold == 0.9  # ties go to the higher threshold


def test_speech_span_finds_the_spoken_part():
    sr = 16000
    clip = np.zeros(sr, np.float32)
    clip[4000:8000] = 0.3 * np.sin(np.arange(4000) * 0.2)
    first, end = speech_span(clip, sr)
    assert first == 4000 and end == 8000


def test_build_stream_places_words_at_their_recorded_times():
    sr = 16000
    rng = np.random.default_rng(0)
    labels = ["yes", "no", "_unknown_", "_silence_"]
    clips = np.zeros((4, sr), np.float32)
    for i in range(3):
        clips[i, 5000:9000] = 0.2 * np.sin(np.arange(4000) * (0.1 + 0.05 * i))
    clips[3] = rng.normal(0, 0.01, sr)
    options = StreamOptions(duration_s=60, gap_s=(1.0, 2.0), unknown_fraction=0.3, seed=3,
                            noise_level_dbfs=(-70.0, -70.0))
    stream = build_stream(clips, labels, options)
    assert stream.samples.size == 60 * sr
    assert {w.label for w in stream.words} <= {"yes", "no", "_unknown_"}  # silence clips are not placed
    assert sum(w.is_command for w in stream.words) >= 10
    for w in stream.words:
        s0, s1 = int(w.start_ms * sr / 1000), int(w.end_ms * sr / 1000)
        inside = np.sqrt(np.mean(stream.samples[s0:s1] ** 2))
        assert 20 * np.log10(inside) > -35  # the word is there, far above the -70 dBFS background
        assert w.start_ms - w.clip_start_ms == pytest.approx(5000 / 16, abs=10)  # 10 ms envelope frames
    assert build_stream(clips, labels, options).fingerprint == stream.fingerprint
    with pytest.raises(ValueError, match="duration_s"):
        StreamOptions(duration_s=1)


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
    sr = 16000
    samples = np.zeros(5 * sr, np.float32)
    samples[3 * sr:int(3.5 * sr)] = 0.5 * np.sin(np.arange(sr // 2) * 0.3)
    model = _FakeModel()
    result = stream_posteriors(model, samples, hop_ms=100.0, progress=False)
    # Hops end at 100, 200, ... 5000 ms; the first with 49 frames ends at 1000 ms.
    assert result.times_ms[0] == 1000.0 and result.times_ms[-1] == 5000.0
    assert result.posteriors.shape == (41, 4) and model.calls == 41
    loud_times = result.times_ms[result.posteriors[:, 2] > 0.5]
    assert loud_times.min() >= 3000 and loud_times.max() <= 3800
    cache = PosteriorCache(tmp_path)
    cache.save("k", result)
    again = cache.load("k")
    assert np.array_equal(again.posteriors, result.posteriors) and again.labels == LABELS
    assert cache.load("other") is None


def test_update_firmware_config_keeps_comments_and_validates(tmp_path):
    src = REPO / "firmware_configs" / "rpi4.yaml"
    if not src.is_file():
        pytest.skip("firmware_configs/rpi4.yaml not present")
    path = Path(shutil.copy(src, tmp_path / "rpi4.yaml"))
    update_firmware_config(path, threshold=0.85, suppression_ms=1000)
    data = load_yaml_mapping(path)
    assert data["commands"]["threshold"] == 0.85 and data["commands"]["suppression_ms"] == 1000
    assert data["commands"]["average_window_ms"] == 1000  # the rest untouched
    assert "# skip command inference on silence" in path.read_text()
    flow = tmp_path / "flow.yaml"
    flow.write_text("{device: {name: x}, commands: {threshold: 0.5, average_window_ms: 800, minimum_count: 2}}\n")
    update_firmware_config(flow, threshold=0.6, suppression_ms=900)
    assert load_yaml_mapping(flow)["commands"] == {"threshold": 0.6, "average_window_ms": 800, "minimum_count": 2,
                                                   "suppression_ms": 900}
    duplicate = tmp_path / "dup.yaml"
    duplicate.write_text("device: {name: x}\ncommands: {threshold: 0.5}\ncommands: {threshold: 0.6}\n")
    with pytest.raises(ValueError, match=r"dup.yaml:3: duplicate key 'commands'"):
        update_firmware_config(duplicate, threshold=0.7, suppression_ms=900)
    with pytest.raises(ValueError, match="threshold"):
        update_firmware_config(path, threshold=1.5, suppression_ms=1000)
    assert load_yaml_mapping(path)["commands"]["threshold"] == 0.85  # a bad value is not written
