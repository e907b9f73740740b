"""Post-processing on hand-made score sequences (no model)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesense.bench.scoring import Detection, detect
from edgesense.bench.streams import StreamPosteriors
from edgesense.loop.config import DeviceConfig
from edgesense.recognition.commands import CommandRecognizer, CommandRecognizerOptions
from edgesense.recognition.gate import EnergyGate, EnergyGateOptions, rms_dbfs
from edgesense.recognition.scenes import SceneSmoother, SceneSmootherOptions
from edgesense.types import DEFAULT_COMMAND_LABELS, CommandEvent, SceneEvent

LABELS = DEFAULT_COMMAND_LABELS
HOP_MS = 100.0


def scores(label: str, p: float = 0.9, labels=LABELS) -> np.ndarray:
    """``p`` on ``label``, the rest spread evenly on the others."""
    out = np.full(len(labels), (1.0 - p) / (len(labels) - 1))
    out[labels.index(label)] = p
    return out


def feed(recognizer: CommandRecognizer, timeline: list[tuple[float, np.ndarray]]) -> list[CommandEvent]:
    events = [recognizer.process(s, t) for t, s in timeline]
    return [e for e in events if e is not None]


def steady(label: str, start_ms: float, stop_ms: float, p: float = 0.9) -> list[tuple[float, np.ndarray]]:
    return [(t, scores(label, p)) for t in np.arange(start_ms, stop_ms, HOP_MS)]


def clock():
    return 1_700_000_000.5


# --------------------------------------------------------------------------- commands


def test_sustained_word_fires_once_after_enough_results():
    recognizer = CommandRecognizer(LABELS, CommandRecognizerOptions(), wall_time=clock)
    results = [recognizer.process(s, t) for t, s in steady("yes", 0, 1500)]
    # t=0, 100: fewer than minimum_count=3; t=200: 3 results spanning 200 ms < window/4 = 250 ms.
    assert results[:3] == [None, None, None]
    event = results[3]
    assert isinstance(event, CommandEvent)
    assert (event.label, event.t_ms, event.wall_time) == ("yes", 300.0, clock())
    assert event.score == pytest.approx(0.9)
    assert all(r is None for r in results[4:])  # same label: never again while it stays on top
    assert recognizer.last_result.label == "yes" and not recognizer.last_result.is_new_command


def test_minimum_count_blocks_sparse_results():
    timeline = [(t, scores("go")) for t in (0.0, 400.0, 800.0, 1200.0, 1600.0)]
    assert [e.t_ms for e in feed(CommandRecognizer(LABELS), timeline)] == [800.0]
    # With 4 required, a 1000 ms window never holds more than 3 results 400 ms apart.
    strict = CommandRecognizer(LABELS, CommandRecognizerOptions(minimum_count=4))
    assert feed(strict, timeline) == []


@pytest.mark.parametrize("threshold, p, fires", [(0.7, 0.65, False), (0.6, 0.65, True),
                                                (0.5, 0.5, False)])  # an average equal to it does not beat it
def test_threshold(threshold, p, fires):
    recognizer = CommandRecognizer(LABELS, CommandRecognizerOptions(threshold=threshold))
    events = feed(recognizer, steady("left", 0, 1200, p=p))
    assert [e.label for e in events] == (["left"] if fires else [])


def test_single_spike_is_averaged_away():
    timeline = steady("_silence_", 0, 1000, p=0.95)
    timeline[5] = (timeline[5][0], scores("stop", 1.0))
    assert feed(CommandRecognizer(LABELS), timeline) == []


@pytest.mark.parametrize("suppression_ms, expected_t_ms", [(750.0, 1000.0), (500.0, 900.0)])
def test_suppression_after_a_detection(suppression_ms, expected_t_ms):
    # Window 300 ms (4 results): "yes" fires at 200; "no" averages 0.9 from t=900 on,
    # but within 750 ms of the "yes" it is suppressed until t=1000.
    options = CommandRecognizerOptions(average_window_ms=300, suppression_ms=suppression_ms)
    timeline = steady("yes", 0, 600) + steady("no", 600, 1500)
    events = feed(CommandRecognizer(LABELS, options), timeline)
    assert [(e.label, e.t_ms) for e in events] == [("yes", 200.0), ("no", expected_t_ms)]


def test_a_repeated_word_fires_twice_without_a_confident_silence_between():
    # Real background never gives a confident _silence_: here it is mostly _unknown_ (p 0.5).
    for between in ("_silence_", "_unknown_"):
        timeline = steady("yes", 0, 600) + steady(between, 600, 2000, p=0.5) + steady("yes", 2000, 3000)
        events = feed(CommandRecognizer(LABELS), timeline)
        assert [e.label for e in events] == ["yes", "yes"]
        assert events[1].t_ms > 2000.0
    assert feed(CommandRecognizer(LABELS), steady("_unknown_", 0, 3000, p=0.99)) == []
    assert feed(CommandRecognizer(LABELS), steady("_silence_", 0, 3000, p=0.99)) == []


def test_a_word_re_arms_only_when_its_own_average_falls_to_the_release_level():
    # Window 300 ms (4 results). "stop" dips to 0.4 between two peaks of 0.9: above a release
    # level of 0.3 it is one long word (one event); with a release level of 0.5, two.
    dip = steady("stop", 0, 1000) + steady("stop", 1000, 1500, p=0.4) + steady("stop", 1500, 2500)
    held = CommandRecognizerOptions(average_window_ms=300, suppression_ms=0, release_threshold=0.3)
    assert [e.t_ms for e in feed(CommandRecognizer(LABELS, held), dip)] == [200.0]
    split = dataclasses.replace(held, release_threshold=0.5)
    assert [e.t_ms for e in feed(CommandRecognizer(LABELS, split), dip)] == [200.0, 1700.0]
    at_release = steady("stop", 0, 1000) + steady("stop", 1000, 1500, p=0.5) + steady("stop", 1500, 2500)
    assert len(feed(CommandRecognizer(LABELS, split), at_release)) == 2  # falling to the level re-arms
    # A word held for ten seconds fires once.
    assert len(feed(CommandRecognizer(LABELS, held), steady("go", 0, 10_000))) == 1


def test_class_thresholds_override_the_threshold_for_their_word():
    options = CommandRecognizerOptions(threshold=0.7, class_thresholds={"off": 0.5})
    assert options.threshold_of("off") == 0.5 and options.threshold_of("on") == 0.7
    assert [e.label for e in feed(CommandRecognizer(LABELS, options), steady("off", 0, 1200, p=0.6))] == ["off"]
    assert feed(CommandRecognizer(LABELS, options), steady("on", 0, 1200, p=0.6)) == []
    source = {"off": 0.5}
    copied = CommandRecognizerOptions(class_thresholds=source)
    source["off"] = 0.9
    assert copied.class_thresholds == {"off": 0.5}  # the options keep their own copy
    with pytest.raises(ValueError, match="class_thresholds.*labels of the model"):
        CommandRecognizer(LABELS, CommandRecognizerOptions(class_thresholds={"of": 0.5}))


def test_the_context_rule_blocks_a_word_inside_other_speech_and_not_after_a_pause():
    # Context: the mean _unknown_ of the results 1200 + 800 … 1200 ms before.
    options = CommandRecognizerOptions(max_context_unknown=0.5, context_window_ms=800, context_offset_ms=1200)
    after_talk = steady("_unknown_", 0, 2000) + steady("stop", 2000, 3000)
    assert feed(CommandRecognizer(LABELS, options), after_talk) == []
    assert [e.label for e in feed(CommandRecognizer(LABELS), after_talk)] == ["stop"]  # the rule off (1)
    after_pause = steady("_unknown_", 0, 1000) + steady("_silence_", 1000, 2000) + steady("stop", 2000, 3000)
    assert [e.label for e in feed(CommandRecognizer(LABELS, options), after_pause)] == ["stop"]
    at_most = steady("_unknown_", 0, 2000, p=0.5) + steady("stop", 2000, 3000)  # a context of exactly 0.5
    assert [e.label for e in feed(CommandRecognizer(LABELS, options), at_most)] == ["stop"]
    # A word held while the talk before it leaves the context fires once the context is quiet.
    talk_then_word = steady("_unknown_", 0, 1500) + steady("stop", 1500, 4000)
    events = feed(CommandRecognizer(LABELS, options), talk_then_word)
    # At 3000 the context (1000…1800) holds 5 of 9 results of talk (mean 0.50); at 3100, 4 (0.41).
    assert [(e.label, e.t_ms) for e in events] == [("stop", 3100.0)]
    # No results in the context (the stream's start, or after a reset) pass.
    recognizer = CommandRecognizer(LABELS, options)
    feed(recognizer, steady("_unknown_", 0, 2000))
    recognizer.reset()
    assert [e.label for e in feed(recognizer, steady("stop", 0, 1000))] == ["stop"]
    with pytest.raises(ValueError, match="max_context_unknown"):
        CommandRecognizer(("_silence_", "yes", "no"), options)


def test_a_caller_that_refills_one_array_each_hop_gets_the_same_events():
    timeline = steady("yes", 0, 600) + steady("_silence_", 600, 2000) + steady("yes", 2000, 3200)
    fresh = feed(CommandRecognizer(LABELS, wall_time=clock), timeline)
    buffer = np.zeros(len(LABELS))
    reused = CommandRecognizer(LABELS, wall_time=clock)
    events = []
    for t, s in timeline:
        buffer[:] = s  # one array, refilled for every hop
        events.append(reused.process(buffer, t))
    assert [e.label for e in fresh] == ["yes", "yes"] and [e for e in events if e is not None] == fresh


def test_latency_is_attached_to_the_event():
    recognizer = CommandRecognizer(LABELS)
    events = [recognizer.process(s, t, latency_ms={"inference": 4.2}) for t, s in steady("up", 0, 400)]
    assert events[-1].latency_ms == {"inference": 4.2}
    assert events[-1].to_dict()["latency_ms"] == {"inference": 4.2}


def test_out_of_order_and_malformed_scores_are_value_errors():
    recognizer = CommandRecognizer(LABELS)
    recognizer.process(scores("yes"), 500.0)
    recognizer.process(scores("yes"), 500.0)  # equal times are fine
    with pytest.raises(ValueError, match="t_ms.*500.*got 400"):
        recognizer.process(scores("yes"), 400.0)
    with pytest.raises(ValueError, match=r"scores: expected shape \(12,\)"):
        recognizer.process(np.zeros(11), 600.0)
    with pytest.raises(ValueError, match="finite"):
        recognizer.process(np.full(12, np.nan), 600.0)
    recognizer.reset()
    assert recognizer.process(scores("yes"), 0.0) is None  # time restarts after reset


def test_a_window_shorter_than_a_hop_is_refused_by_the_config():
    # A window shorter than the hop holds one result, which never spans the quarter window the
    # recognizer needs: even minimum_count 1 and a certain word never fire.
    short = CommandRecognizerOptions(average_window_ms=80, minimum_count=1)
    assert feed(CommandRecognizer(LABELS, short), steady("yes", 0, 10_000, p=1.0)) == []
    assert [e.label for e in feed(CommandRecognizer(LABELS, dataclasses.replace(short, average_window_ms=100)),
                                  steady("yes", 0, 1000, p=1.0))] == ["yes"]
    commands = {"average_window_ms": 80, "minimum_count": 1}
    with pytest.raises(ValueError, match=r"^my.yaml: commands.average_window_ms: expected >= "
                                         r"scheduler.command_hop_ms \(100; .*got 80$"):
        DeviceConfig.from_dict({"device": {"name": "x"}, "commands": commands}, source="my.yaml")
    # with the microphone disabled too: `edgesense run --audio FILE` replays a WAV through the recognizer
    audio_off = {"device": {"name": "x"}, "commands": commands, "audio": {"enabled": False},
                 "camera": {"enabled": True}}
    with pytest.raises(ValueError, match=r"^my.yaml: commands.average_window_ms: expected >= "):
        DeviceConfig.from_dict(audio_off, source="my.yaml")


@pytest.mark.parametrize("as_time", [np.int64, np.int32, np.float32, np.float64, int])
def test_numpy_times_are_times(as_time):
    # Times taken from a numpy array (np.arange(0, 3000, 100) holds np.int64) were refused with
    # "t_ms: expected a finite number, got np.int64(0)".
    timeline = steady("yes", 0, 600) + steady("_silence_", 600, 2000) + steady("yes", 2000, 3000)
    expected = [(e.label, e.t_ms) for e in feed(CommandRecognizer(LABELS), timeline)]
    assert [(e.label, e.t_ms) for e in feed(CommandRecognizer(LABELS), [(as_time(t), s) for t, s in timeline])] \
        == expected == [("yes", 300.0), ("yes", 2800.0)]
    smoother = SceneSmoother(SCENES, dataclasses.replace(WINDOW, min_hold_ms=0, heartbeat_ms=1000))
    scene_events = run_scenes(smoother, [(as_time(t), probs(home=0.9)) for t in range(0, 2200, 200)])
    assert [(e.reason, e.t_ms) for e in scene_events] == [("change", 0.0), ("heartbeat", 1000.0),
                                                          ("heartbeat", 2000.0)]
    gate = EnergyGate(EnergyGateOptions(threshold_dbfs=-40, hangover_ms=100))
    assert [gate.update(tone(0.3 if t == 0 else 0.0), as_time(t)) for t in (0, 100, 200)] == [True, True, False]


@pytest.mark.parametrize("t_ms", [True, np.bool_(True), "100", None, float("nan"), np.float32("inf"),
                                  pytest.param(10 ** 400, id="an int past a float")])
def test_times_that_are_not_finite_numbers_are_value_errors(t_ms):
    with pytest.raises(ValueError, match="^t_ms: expected a finite number, got "):
        CommandRecognizer(LABELS).process(scores("yes"), t_ms)
    with pytest.raises(ValueError, match="^t_ms: expected a finite number, got "):
        SceneSmoother(SCENES).update(probs(home=0.9), t_ms)
    with pytest.raises(ValueError, match="^t_ms: expected a finite number, got "):
        EnergyGate().update(tone(0.3), t_ms)


@pytest.mark.parametrize("bad", [["0.5"] * 11 + ["x"], [{}] * 12, [[0.5], [0.5, 0.5]]])
def test_scores_that_are_not_numbers_are_value_errors_naming_them(bad):
    with pytest.raises(ValueError, match=r"^scores: expected 12 numbers, got "):
        CommandRecognizer(LABELS).process(bad, 0.0)
    with pytest.raises(ValueError, match=r"^probabilities: expected 3 numbers, got "):
        SceneSmoother(SCENES).update(bad[-3:], 0.0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 31), window=st.sampled_from([100.0, 200.0, 300.0, 500.0]),
       threshold=st.sampled_from([0.4, 0.55, 0.75]), release=st.sampled_from([0.0, 0.2, 0.35]),
       count=st.integers(1, 4), suppression=st.sampled_from([0.0, 250.0, 500.0]),
       per_word=st.sampled_from([{}, {"no": 0.38}, {"yes": 0.95, "no": 0.38}]),
       context=st.sampled_from([1.0, 0.2, 0.5]), context_offset=st.sampled_from([0.0, 300.0, 1500.0]),
       context_window=st.sampled_from([100.0, 800.0, 3000.0]),
       spacing=st.sampled_from(["regular", "dropped hops", "jitter", "irregular"]), dyadic=st.booleans())
def test_the_benchs_replay_gives_the_recognizers_events_on_irregular_hops(
        seed, window, threshold, release, count, suppression, per_word, context, context_offset, context_window,
        spacing, dyadic):
    """bench.scoring.detect (the vectorised replay of the sweep) against the recognizer, event for event: per-word
    thresholds above and below the global one, the context rule with every window, hops dropped, jittered or
    irregular, and scores that are not multiples of 1/256 (a blend with the second opinion)."""
    rng = np.random.default_rng(seed)
    n = 200
    raw = rng.dirichlet(np.full(len(LABELS), 0.3), size=n)
    raw[np.arange(n), np.repeat(rng.integers(0, len(LABELS), n // 5), 5)] += 1.0
    post = raw / raw.sum(axis=1, keepdims=True)
    if dyadic:
        post = np.round(post * 256) / 256
    steps = {"regular": np.full(n, HOP_MS), "dropped hops": rng.choice([HOP_MS, 2 * HOP_MS], n, p=[0.85, 0.15]),
             "jitter": HOP_MS + rng.uniform(-3.0, 3.0, n), "irregular": rng.choice([50.0, 100.0, 150.0, 1000.0], n)}
    times = 6.048e8 + 0.123456 + np.cumsum(steps[spacing])  # a week into a live clock
    options = CommandRecognizerOptions(average_window_ms=window, threshold=threshold, release_threshold=release,
                                       minimum_count=count, suppression_ms=suppression, class_thresholds=per_word,
                                       max_context_unknown=context, context_offset_ms=context_offset,
                                       context_window_ms=context_window)
    stream = StreamPosteriors(times_ms=times, posteriors=post, labels=LABELS, hop_ms=HOP_MS, duration_ms=times[-1])
    recognizer = CommandRecognizer(LABELS, options)
    events = [e for t, p in zip(times, post) if (e := recognizer.process(p, float(t))) is not None]
    replayed = detect(stream, options)
    assert [(d.label, d.t_ms) for d in replayed] == [(e.label, e.t_ms) for e in events]
    assert [d.score for d in replayed] == pytest.approx([e.score for e in events], abs=1e-9)
    assert all(isinstance(d, Detection) for d in replayed)


@pytest.mark.parametrize("kwargs, field", [
    ({"threshold": 1.5}, "threshold"), ({"minimum_count": 0}, "minimum_count"),
    ({"suppression_ms": -1}, "suppression_ms"), ({"average_window_ms": "1s"}, "average_window_ms"),
    ({"release_threshold": 0.7}, "release_threshold"), ({"release_threshold": -0.1}, "release_threshold"),
    ({"class_thresholds": {"off": 0.2}}, "release_threshold"), ({"class_thresholds": {"off": 1.0}}, "class_thresholds"),
    ({"class_thresholds": [("off", 0.5)]}, "class_thresholds"),
    ({"class_thresholds": {"_unknown_": 0.5}}, "class_thresholds"),
    ({"max_context_unknown": 1.5}, "max_context_unknown"), ({"context_window_ms": 0}, "context_window_ms"),
    ({"context_offset_ms": -1}, "context_offset_ms"),
])
def test_recognizer_options_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        CommandRecognizerOptions(**kwargs)


def test_ignored_labels_keep_silence_and_unknown_and_mute_only_words_of_the_model():
    # `ignored_labels: [off]` (to mute "off") replaced the default: _silence_ then fired as a command
    with pytest.raises(ValueError, match=r"^ignored_labels: expected a list holding '_silence_' and '_unknown_' "
                                         r".*got \['off'\]$"):
        CommandRecognizerOptions(ignored_labels=("off",))
    with pytest.raises(ValueError, match=r"^ignored_labels: .*got \[\]$"):
        CommandRecognizerOptions(ignored_labels=())
    muted = CommandRecognizerOptions(ignored_labels=("_silence_", "_unknown_", "off"), release_threshold=0.2)
    events = feed(CommandRecognizer(LABELS, muted), steady("off", 0, 1000) + steady("_silence_", 1000, 3000)
                  + steady("yes", 3000, 4000))
    assert [e.label for e in events] == ["yes"]
    # a word the model lacks (a typo) muted nothing: one line naming the field, as class_thresholds
    typo = dataclasses.replace(muted, ignored_labels=("_silence_", "_unknown_", "of"))
    with pytest.raises(ValueError, match=r"^ignored_labels: expected labels of the model \[.*\], got \['of'\]$"):
        CommandRecognizer(LABELS, typo)
    # _silence_ / _unknown_ stay allowed for a model without them (they are the default)
    assert CommandRecognizer(("yes", "no"), CommandRecognizerOptions()).labels == ("yes", "no")


@pytest.mark.parametrize("class_thresholds, message", [
    ({"yes": 1.0}, r"^class_thresholds\.yes: expected a number in \[0, 1\), got 1\.0$"),
    ({"yes": "high"}, r"^class_thresholds\.yes: expected a number in \[0, 1\), got 'high'$"),
    ({"": 0.8}, r"^class_thresholds: expected labels that are non-empty strings, got ''$"),
    # an ignored label named the release_threshold (0.5 is not below 0.5), not the entry that is wrong
    ({"_silence_": 0.5}, r"^class_thresholds: expected command words only .*got \['_silence_'\]$"),
])
def test_a_bad_class_threshold_is_one_line_naming_its_word(class_thresholds, message):
    with pytest.raises(ValueError, match=message):
        CommandRecognizerOptions(class_thresholds=class_thresholds, release_threshold=0.5, threshold=0.7)


# --------------------------------------------------------------------------- energy gate


def tone(amplitude: float, ms: float = 20.0, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(rate * ms / 1000)) / rate
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_rms_dbfs():
    assert rms_dbfs(np.ones(100)) == pytest.approx(0.0)
    assert rms_dbfs(tone(0.5, ms=1000)) == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.01)
    assert rms_dbfs(np.zeros(10)) == -120.0 and rms_dbfs(np.zeros(0)) == -120.0


def test_energy_gate_opens_on_speech_and_holds_for_hangover():
    gate = EnergyGate(EnergyGateOptions(threshold_dbfs=-40, hangover_ms=100))
    rng = np.random.default_rng(1)
    quiet = (rng.standard_normal(320) * 1e-4).astype(np.float32)  # about -80 dBFS
    opened = []
    t = 0.0
    for chunk in [quiet, quiet, tone(0.3), tone(0.3)] + [quiet] * 8:
        t += 20.0
        opened.append(gate.update(chunk, t))
    # Loud at t=60, 80 -> open until 180; closed from 200 on.
    assert opened == [False, False, True, True, True, True, True, True, True, False, False, False]
    assert gate.last_dbfs < -70
    with pytest.raises(ValueError, match="t_ms"):
        gate.update(quiet, 100.0)


def test_energy_gate_options_validation():
    with pytest.raises(ValueError, match="threshold_dbfs"):
        EnergyGateOptions(threshold_dbfs=3.0)
    with pytest.raises(ValueError, match="hangover_ms"):
        EnergyGateOptions(hangover_ms=-5)


# --------------------------------------------------------------------------- scenes

SCENES = ("home", "office", "street")


def probs(**values: float) -> np.ndarray:
    return np.array([values.get(label, 0.05) for label in SCENES])


def run_scenes(smoother: SceneSmoother, timeline) -> list[SceneEvent]:
    events = [smoother.update(p, t) for t, p in timeline]
    return [e for e in events if e is not None]


WINDOW = SceneSmootherOptions(smoothing="window", window_ms=400, hysteresis_margin=0.1, min_hold_ms=1000,
                              heartbeat_ms=None)


def test_first_label_needs_min_hold_then_switch_needs_margin_for_min_hold():
    smoother = SceneSmoother(SCENES, WINDOW, wall_time=clock)
    timeline = [(float(t), probs(home=0.9)) for t in range(0, 1200, 200)]
    timeline += [(float(t), probs(office=0.9)) for t in range(1200, 3000, 200)]
    events = run_scenes(smoother, timeline)
    # home: candidate at 0, held 1000 ms. office: tie at 1200 (window mean), leads from 1400, held until 2400.
    assert [(e.label, e.t_ms, e.reason, e.previous) for e in events] == [
        ("home", 1000.0, "change", None), ("office", 2400.0, "change", "home")]
    assert events[1].score == pytest.approx(0.9) and events[1].wall_time == clock()
    assert smoother.current_label == "office"


def test_flicker_and_near_ties_never_switch():
    smoother = SceneSmoother(SCENES, SceneSmootherOptions(smoothing="window", window_ms=400, min_hold_ms=0,
                                                          hysteresis_margin=0.1, heartbeat_ms=None))
    assert smoother.update(probs(home=0.9), 0.0).label == "home"  # min_hold_ms=0: at once
    near_tie = [(float(t), probs(home=0.42, office=0.48)) for t in range(200, 3000, 200)]
    assert run_scenes(smoother, near_tie) == []  # office leads by 0.06 < margin
    # No smoothing (a 200 ms window at 200 ms hops): each office spike leads by 0.85 for one
    # frame. The spikes are 1000 ms apart, so only resetting the candidate keeps them from switching.
    held = SceneSmoother(SCENES, dataclasses.replace(WINDOW, window_ms=200))
    timeline = [(float(t), probs(street=0.9)) for t in range(0, 1200, 200)]
    timeline += [(float(t), probs(office=0.95) if (t // 200) % 5 == 0 else probs(street=0.9))
                 for t in range(1200, 6000, 200)]
    assert [e.label for e in run_scenes(held, timeline)] == ["street"]


def test_heartbeats_while_the_label_holds():
    options = SceneSmootherOptions(smoothing="window", window_ms=400, min_hold_ms=0, heartbeat_ms=1000)
    smoother = SceneSmoother(SCENES, options)
    events = run_scenes(smoother, [(float(t), probs(street=0.8)) for t in range(0, 3500, 250)])
    assert [(e.reason, e.t_ms) for e in events] == [
        ("change", 0.0), ("heartbeat", 1000.0), ("heartbeat", 2000.0), ("heartbeat", 3000.0)]
    assert all(e.label == "street" for e in events)
    assert events[1].to_dict()["reason"] == "heartbeat" and "previous" not in events[1].to_dict()


def test_heartbeats_keep_their_period_when_the_frames_do_not_divide_it():
    # Frames every 500 ms, a heartbeat due every 1200 ms: each comes on the first frame at or after its due
    # time (1500, 2500, 4000, 5000, 6000, ...: 1200 ms apart on average). They were measured from the previous
    # heartbeat's frame instead, so each was 1500 ms after the last: 20 % fewer than configured.
    options = SceneSmootherOptions(smoothing="window", window_ms=400, min_hold_ms=0, heartbeat_ms=1200)
    events = run_scenes(SceneSmoother(SCENES, options), [(float(t), probs(home=0.9)) for t in range(0, 60_500, 500)])
    beats = [e.t_ms for e in events if e.reason == "heartbeat"]
    assert beats[:5] == [1500.0, 2500.0, 4000.0, 5000.0, 6000.0]
    assert len(beats) == 50 and beats[-1] == 60_000.0  # due at 1200 … 60000
    # After a change the heartbeats fall due every 1200 ms from the change; due times without frames (an
    # outage) are not made up: one heartbeat on the first frame back (10100), then at the next due times
    # (10200, 11400: the frames at 10600, 11600).
    timeline = [(float(t), probs(home=0.9)) for t in range(0, 3000, 500)]
    timeline += [(float(t), probs(office=0.9)) for t in range(3000, 4500, 500)]
    timeline += [(float(t), probs(office=0.9)) for t in range(10_100, 12_600, 500)]
    events = run_scenes(SceneSmoother(SCENES, options), timeline)
    assert [(e.reason, e.label, e.t_ms) for e in events] == [
        ("change", "home", 0.0), ("heartbeat", "home", 1500.0), ("heartbeat", "home", 2500.0),
        ("change", "office", 3000.0), ("heartbeat", "office", 10_100.0), ("heartbeat", "office", 10_600.0),
        ("heartbeat", "office", 11_600.0)]
    # A live camera's jittery frames: on average one heartbeat per period, not one per period and a frame.
    rng = np.random.default_rng(0)
    times = np.cumsum(rng.uniform(150.0, 250.0, 3000)) + 6.048e8
    live = SceneSmoother(SCENES, dataclasses.replace(options, heartbeat_ms=10_000))
    beats = [e.t_ms for e in run_scenes(live, [(t, probs(home=0.9)) for t in times]) if e.reason == "heartbeat"]
    assert len(beats) == int((times[-1] - times[0]) // 10_000)


def test_ema_time_constant():
    smoother = SceneSmoother(SCENES, SceneSmootherOptions(smoothing="ema", window_ms=1000, heartbeat_ms=None))
    smoother.update(np.array([1.0, 0.0, 0.0]), 0.0)
    smoother.update(np.array([0.0, 1.0, 0.0]), 1000.0)  # one time constant later
    assert smoother.smoothed[1] == pytest.approx(1 - math.exp(-1))
    smoother.update(np.array([0.0, 1.0, 0.0]), 1500.0)  # irregular steps use the elapsed time
    assert smoother.smoothed[1] == pytest.approx(1 - math.exp(-1.5))


@pytest.mark.parametrize("smoothing", ["window", "ema"])
def test_the_scene_smoother_keeps_its_own_copy_of_each_update(smoothing):
    smoother = SceneSmoother(SCENES, SceneSmootherOptions(smoothing=smoothing, window_ms=1000, heartbeat_ms=None))
    buffer = probs(home=0.9)
    smoother.update(buffer, 0.0)
    buffer[:] = probs(office=0.9)  # the caller refills its array for the next frame
    smoother.update(buffer, 1.0)
    assert smoother.smoothed[0] > 0.45  # home's first frame still counts


def test_scene_input_validation():
    smoother = SceneSmoother(SCENES)
    smoother.update(probs(home=0.9), 100.0)
    with pytest.raises(ValueError, match="t_ms"):
        smoother.update(probs(home=0.9), 50.0)
    with pytest.raises(ValueError, match="probabilities"):
        smoother.update(np.ones(4), 200.0)
    with pytest.raises(ValueError, match="labels"):
        SceneSmoother(("a", "a"))
    with pytest.raises(ValueError, match="smoothing"):
        SceneSmootherOptions(smoothing="median")
    with pytest.raises(ValueError, match="heartbeat_ms"):
        SceneSmootherOptions(heartbeat_ms=0)


def test_time_without_frames_is_not_hold_time():
    # Home from 0; office leads from 1400 (window mean); the camera stops after 1800, 400 ms into
    # the 1000-ms hold, and comes back a minute later with one office frame, then home again.
    before = [(float(t), probs(home=0.9)) for t in range(0, 1200, 200)]
    before += [(float(t), probs(office=0.9)) for t in range(1200, 2000, 200)]
    back = 61_800.0
    after = [(back, probs(office=0.9))] + [(back + t, probs(home=0.9)) for t in range(200, 2000, 200)]
    events = run_scenes(SceneSmoother(SCENES, WINDOW), before + after)
    assert [(e.label, e.t_ms) for e in events] == [("home", 1000.0)]  # no change on the first frame back
    # An office the camera keeps showing after the outage changes once held again for 1000 ms of frames.
    kept = [(back + t, probs(office=0.9)) for t in range(0, 2000, 200)]
    events = run_scenes(SceneSmoother(SCENES, WINDOW), before + kept)
    assert [(e.label, e.t_ms) for e in events] == [("home", 1000.0), ("office", back + 1000.0)]
    # The first label too: one street frame, a minute without frames, then street.
    first = [(0.0, probs(street=0.9))] + [(60_000.0 + t, probs(street=0.9)) for t in range(0, 1400, 200)]
    assert [e.t_ms for e in run_scenes(SceneSmoother(SCENES, WINDOW), first)] == [61_000.0]


def test_a_slow_scene_rate_is_not_an_outage():
    # One frame every 5 s (longer than the window and the hold): the hold is still met from one frame to the next.
    timeline = [(k * 5000.0, probs(home=0.9) if k < 4 else probs(office=0.9)) for k in range(8)]
    events = run_scenes(SceneSmoother(SCENES, WINDOW), timeline)
    # The first interval has no cadence to compare with, so home waits for the third frame.
    assert [(e.label, e.t_ms) for e in events] == [("home", 10_000.0), ("office", 25_000.0)]
    # One frame missed (10 s) is not an outage either: office, held since 20 s, changes at 30 s.
    skipped = [(t, p) for t, p in timeline if t != 25_000.0]
    events = run_scenes(SceneSmoother(SCENES, WINDOW), skipped)
    assert [(e.label, e.t_ms) for e in events] == [("home", 10_000.0), ("office", 30_000.0)]


@pytest.mark.parametrize("make", [CommandRecognizer, SceneSmoother], ids=["commands", "scenes"])
def test_labels_given_as_one_string_or_none_are_one_line_naming_labels(make):
    """One string is a sequence of letters: ``SceneSmoother("home")`` took the scenes 'h', 'o', 'm', 'e'."""
    for labels in ("yes", b"yes", None, 3):
        with pytest.raises(ValueError, match=r"^labels: expected a sequence of label strings \(one string is not\)"):
            make(labels)
    assert make(["yes", "no"]).labels == ("yes", "no")


# --------------------------------------------------------------------------- at the edges of the rules
# A value exactly at a threshold, a margin or a window's end, and what a reset forgets when the stream's
# times go on.

# commands


def test_results_spanning_exactly_a_quarter_of_the_window_are_enough():
    # Window 400 ms: two results 100 ms apart span a quarter of it, which is not "less than a quarter".
    options = CommandRecognizerOptions(average_window_ms=400, minimum_count=2)
    assert [e.t_ms for e in feed(CommandRecognizer(LABELS, options), steady("yes", 0, 1000))] == [100.0]


def test_reset_re_arms_every_word_and_forgets_the_suppression():
    # The loop resets when the energy gate closes, and stream times go on. "yes" fires at 300 and is still on
    # top at the reset (400): said again, it fires as soon as the window holds enough (700), neither waiting
    # to re-arm (its average never falls after the reset) nor for the suppression (until 1050).
    recognizer = CommandRecognizer(LABELS)
    events = feed(recognizer, steady("yes", 0, 400))
    recognizer.reset()
    events += feed(recognizer, steady("yes", 400, 1500))
    assert [(e.label, e.t_ms) for e in events] == [("yes", 300.0), ("yes", 700.0)]


def test_reset_forgets_the_context():
    # Talk, then the gate closes (no results during the pause): the word after it is said after a pause.
    options = CommandRecognizerOptions(max_context_unknown=0.5, context_window_ms=800, context_offset_ms=1200)
    recognizer = CommandRecognizer(LABELS, options)
    assert feed(recognizer, steady("_unknown_", 0, 2000)) == []
    recognizer.reset()
    assert [(e.label, e.t_ms) for e in feed(recognizer, steady("stop", 2500, 3500))] == [("stop", 2800.0)]
    unreset = CommandRecognizer(LABELS, options)  # without the reset the talk is the context: blocked
    feed(unreset, steady("_unknown_", 0, 2000))
    assert feed(unreset, steady("stop", 2500, 3500)) == []


# at the edges: energy gate


def test_levels_below_the_floor_are_the_floor():
    assert rms_dbfs(np.full(10, 1e-9)) == -120.0  # -180 dBFS
    assert rms_dbfs(np.full(10, 1e-9), floor_dbfs=-200.0) == pytest.approx(-180.0)


def test_energy_gate_opens_at_its_threshold_and_starts_over_after_a_reset():
    gate = EnergyGate(EnergyGateOptions(threshold_dbfs=-40, hangover_ms=100))
    at_threshold = np.full(320, 0.01)  # exactly -40 dBFS: "at least the threshold"
    assert rms_dbfs(at_threshold) == -40.0
    assert gate.update(at_threshold, 1000.0) is True
    gate.reset()  # it was open until 1100; time starts again
    assert gate.update(np.zeros(320), 0.0) is False and not gate.is_open


# at the edges: scenes


def test_a_lead_of_exactly_the_margin_does_not_switch():
    # One-frame windows (200 ms at 200 ms frames) and values exact in binary: office leads home by 0.25.
    options = SceneSmootherOptions(smoothing="window", window_ms=200, hysteresis_margin=0.25, min_hold_ms=0,
                                   heartbeat_ms=None)
    start = [(0.0, np.array([0.75, 0.25, 0.0]))]
    at_margin = start + [(float(t), np.array([0.375, 0.625, 0.0])) for t in range(200, 1000, 200)]
    assert [(e.label, e.t_ms) for e in run_scenes(SceneSmoother(SCENES, options), at_margin)] == [("home", 0.0)]
    beyond = start + [(float(t), np.array([0.3125, 0.6875, 0.0])) for t in range(200, 1000, 200)]
    assert [(e.label, e.t_ms) for e in run_scenes(SceneSmoother(SCENES, options), beyond)] == [
        ("home", 0.0), ("office", 200.0)]


def test_the_window_mean_holds_the_frames_of_the_last_window_ms():
    # Window 400 ms at 200 ms frames: the frames at t - 200 and t, not the one at t - 400.
    smoother = SceneSmoother(SCENES, WINDOW)
    run_scenes(smoother, [(0.0, probs(home=0.9)), (200.0, probs(office=0.9)), (400.0, probs(office=0.9))])
    np.testing.assert_array_equal(smoother.smoothed, probs(office=0.9))


def test_a_heartbeat_names_the_label_that_holds_not_a_challenger_within_the_margin():
    # Street holds; from 500 office is on top by 0.05, less than the margin: the heartbeats are street's.
    options = SceneSmootherOptions(smoothing="window", window_ms=400, min_hold_ms=0, heartbeat_ms=1000)
    timeline = [(float(t), probs(street=0.8)) for t in range(0, 500, 250)]
    timeline += [(float(t), probs(office=0.45, street=0.4)) for t in range(500, 2250, 250)]
    events = run_scenes(SceneSmoother(SCENES, options), timeline)
    assert [(e.reason, e.label, e.t_ms) for e in events] == [
        ("change", "street", 0.0), ("heartbeat", "street", 1000.0), ("heartbeat", "street", 2000.0)]
    assert events[1].score == pytest.approx(0.4)


def test_a_repeated_frame_time_is_no_cadence():
    # One frame every 5 s, one of them twice (the loop keeps times in order by repeating the last one): a
    # cadence of 0 ms would make every 5 s interval an outage, and the hold would never be met.
    timeline = [(k * 5000.0, probs(home=0.9) if k < 4 else probs(office=0.9)) for k in range(8)]
    repeated = timeline[:2] + [timeline[1]] + timeline[2:]
    events = run_scenes(SceneSmoother(SCENES, WINDOW), repeated)
    assert [(e.label, e.t_ms) for e in events] == [("home", 10_000.0), ("office", 25_000.0)]


@pytest.mark.parametrize("interval_ms, window_ms, expected_ms", [
    (800.0, 400.0, 1600.0),  # longer than the window, shorter than the hold (1000)
    (1500.0, 2000.0, 1500.0),  # longer than the hold, shorter than the window
])
def test_a_first_interval_within_the_window_or_the_hold_is_not_an_outage(interval_ms, window_ms, expected_ms):
    timeline = [(k * interval_ms, probs(home=0.9)) for k in range(5)]
    events = run_scenes(SceneSmoother(SCENES, dataclasses.replace(WINDOW, window_ms=window_ms)), timeline)
    assert [(e.label, e.t_ms) for e in events] == [("home", expected_ms)]


def test_the_gate_reads_int16_samples_in_dbfs_as_the_frontend_does():
    """int16 samples were measured as they were: a -40 dBFS chunk read as +50 dBFS and opened a -30 dB gate."""
    quiet = np.full(320, 328, np.int16)  # 328 / 32768: -40 dBFS
    gate = EnergyGate(EnergyGateOptions(threshold_dbfs=-30.0, hangover_ms=0.0))
    assert gate.update(quiet, 0.0) is False and gate.last_dbfs == pytest.approx(-40.0, abs=0.01)
    assert gate.update(np.full(320, 16384, np.int16), 20.0) is True and gate.last_dbfs == pytest.approx(-6.02, abs=0.01)
    assert gate.update(quiet.astype(np.float32) / 32768.0, 40.0) is False  # the same level as floats


def test_options_and_samples_of_the_wrong_kind_are_one_line_naming_them():
    """A dict of options gave an AttributeError (the smoother took None and failed at its first frame), and a
    gate fed None took it for silence."""
    for build in (lambda: CommandRecognizer(LABELS, {"threshold": 0.6}), lambda: SceneSmoother(SCENES, None),
                  lambda: EnergyGate(None)):
        with pytest.raises(ValueError, match="^options: expected "):
            build()
    gate = EnergyGate()
    for bad in (None, "loud", ["a", "b"]):
        with pytest.raises(ValueError, match="^samples: expected an array of audio samples"):
            gate.update(bad, 0.0)
    assert gate.update([0.5] * 320, 0.0) and gate.update(np.zeros(320, np.int16), 20.0)  # lists and int16 still
