"""Property-based tests (hypothesis) of the feature frontend, the device-config loader and the
post-processing (command recognizer, scene smoother)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgesense.frontend.audio import AudioFrontendOptions, StreamingAudioFrontend, log_mel_spectrogram
from edgesense.frontend.image import ImageFrontendOptions, preprocess_frame
from edgesense.loop.config import SECTIONS, DeviceConfig
from edgesense.recognition.commands import CommandRecognizer, CommandRecognizerOptions
from edgesense.recognition.scenes import SMOOTHING_METHODS, SceneSmoother, SceneSmootherOptions
from edgesense.runtime.interpreter import DELEGATES, NO_DELEGATE

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OPTIONS = AudioFrontendOptions()
WIN, HOP, BINS = OPTIONS.window_samples, OPTIONS.hop_samples, OPTIONS.num_mel_bins

# --------------------------------------------------------------------------- audio

#: Finite samples in the contract's range [-1, 1], with silence and full-scale clipping common.
sample_values = st.one_of(st.just(0.0), st.just(1.0), st.just(-1.0),
                          st.floats(-1.0, 1.0, allow_nan=False, allow_infinity=False, width=32))


@st.composite
def signals(draw, max_samples: int = 4000) -> np.ndarray:
    n = draw(st.integers(0, max_samples))
    kind = draw(st.sampled_from(["random", "silence", "clipped", "square", "tiny"]))
    if kind == "random":
        return draw(hnp.arrays(np.float32, n, elements=sample_values))
    if kind == "silence":
        return np.zeros(n, np.float32)
    if kind == "clipped":  # a full-scale sine pushed into clipping
        return np.clip(3.0 * np.sin(np.arange(n) * 0.3), -1.0, 1.0).astype(np.float32)
    if kind == "square":
        return np.where(np.arange(n) % 40 < 20, 1.0, -1.0).astype(np.float32)
    return np.full(n, np.float32(1e-30))  # subnormal-ish: far below the log floor


@st.composite
def chunkings(draw, n: int) -> list[int]:
    """Cut points splitting n samples into chunks of any size (including empty chunks)."""
    cuts = draw(st.lists(st.integers(0, n), max_size=12))
    return sorted(cuts)


def _expected_frames(n: int) -> int:
    return 0 if n < WIN else 1 + (n - WIN) // HOP


@SETTINGS
@given(data=st.data(), x=signals())
def test_streaming_equals_whole_clip_for_any_chunking(data, x):
    whole = log_mel_spectrogram(x, OPTIONS)
    cuts = data.draw(chunkings(x.size))
    frontend = StreamingAudioFrontend(OPTIONS)
    parts = [frontend.push(chunk) for chunk in np.split(x, cuts)]
    streamed = np.concatenate(parts) if parts else np.empty((0, BINS), np.float32)
    assert whole.shape == (_expected_frames(x.size), BINS) and whole.dtype == np.float32
    assert streamed.dtype == np.float32 and frontend.frames_emitted == whole.shape[0]
    np.testing.assert_array_equal(streamed, whole)  # bit for bit, not approximately


@SETTINGS
@given(x=signals())
def test_log_mel_is_finite_and_bounded(x):
    out = log_mel_spectrogram(x, OPTIONS)
    assert np.all(np.isfinite(out))
    if out.size:
        assert out.min() >= math.log(OPTIONS.log_floor) - 1e-3  # never below the floor
        # a full-scale signal's power in one band is at most (window * 1.0)^2 summed over the band's bins
        assert out.max() < math.log((WIN ** 2) * (OPTIONS.fft_length // 2 + 1)) + 1


@SETTINGS
@given(x=hnp.arrays(np.int16, st.integers(0, 3000)))
def test_int16_input_equals_scaled_float(x):
    np.testing.assert_array_equal(log_mel_spectrogram(x, OPTIONS),
                                  log_mel_spectrogram(x.astype(np.float64) / 32768.0, OPTIONS))


# --------------------------------------------------------------------------- image


@SETTINGS
@given(h=st.integers(1, 300), w=st.integers(1, 300), channels=st.sampled_from([None, 3, 4]),
       size=st.sampled_from([(96, 96), (64, 48), (8, 200)]), seed=st.integers(0, 2 ** 32 - 1))
def test_preprocess_frame_any_size(h, w, channels, size, seed):
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels is None else (h, w, channels)
    frame = rng.integers(0, 256, shape, dtype=np.uint8)
    options = ImageFrontendOptions(width_px=size[0], height_px=size[1])
    out = preprocess_frame(frame, options)
    assert out.shape == options.input_shape and out.dtype == np.float32
    assert np.all(np.isfinite(out)) and out.min() >= 0.0 and out.max() <= 255.0


@SETTINGS
@given(h=st.integers(1, 120), w=st.integers(1, 120), value=st.integers(0, 255))
def test_preprocess_flat_frame_stays_flat(h, w, value):
    """A uniform BGR frame gives a uniform RGB image of the same level (no border or interpolation artefacts)."""
    out = preprocess_frame(np.full((h, w, 3), value, np.uint8))
    assert np.all(out == value)


# --------------------------------------------------------------------------- config loader

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 6, 10 ** 6), st.floats(allow_nan=True),
                    st.text(max_size=12))
FIELD_NAMES = sorted({f for cls in SECTIONS.values() for f in cls.__dataclass_fields__})
keys = st.one_of(st.sampled_from(sorted(SECTIONS)), st.sampled_from(FIELD_NAMES), st.text(max_size=8),
                 st.integers(), st.none())
anything = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(keys, inner, max_size=5)), max_leaves=20)
#: Mostly well-shaped configs (known sections and fields) with random values: reaches the field checks.
near_valid = st.dictionaries(
    st.sampled_from(sorted(SECTIONS)),
    st.one_of(st.dictionaries(st.sampled_from(FIELD_NAMES), anything, max_size=6), anything),
    max_size=8,
)


@SETTINGS
@given(data=st.one_of(anything, near_valid), base_dir=st.sampled_from([None, "/tmp"]))
def test_config_loader_raises_only_value_error(data, base_dir):
    try:
        config = DeviceConfig.from_dict(data, source="fuzz.yaml", base_dir=base_dir)
    except ValueError as exc:
        assert str(exc).startswith("fuzz.yaml: "), exc  # names the file
        return
    assert isinstance(config, DeviceConfig)


finite = dict(allow_nan=False, allow_infinity=False)


@st.composite
def valid_configs(draw) -> dict:
    hop = draw(st.floats(10, 1000, **finite))
    window = draw(st.floats(hop, 5000, **finite))
    camera_on = draw(st.booleans())
    threshold = draw(st.floats(0.01, 0.99, **finite))
    delegate = draw(st.sampled_from([NO_DELEGATE, *(d for d in DELEGATES if d)]))
    data = {
        "device": {"name": draw(st.text(min_size=1, max_size=20).filter(str.strip)),
                   "description": draw(st.text(max_size=20))},
        "model": {"path": "/models/m.tflite", "num_threads": draw(st.integers(1, 64)), "delegate": delegate,
                  "delegate_library": None if delegate == "none" else draw(st.sampled_from([None, "libx.so"]))},
        "camera": {"enabled": camera_on, "source": draw(st.one_of(st.integers(0, 9), st.just("/dev/video0"))),
                   "width_px": draw(st.integers(1, 8192)), "height_px": draw(st.integers(1, 8192)),
                   "fps": draw(st.floats(0.1, 120, **finite))},
        "audio": {"enabled": True if not camera_on else draw(st.booleans()),
                  "device": draw(st.one_of(st.none(), st.integers(0, 5), st.just("USB mic"))),
                  "sample_rate_hz": draw(st.integers(1, 192000)),
                  "chunk_ms": draw(st.floats(0.5, hop, **finite))},
        "scheduler": {"command_hop_ms": hop, "scene_rate_hz": draw(st.floats(0.1, 30, **finite))},
        "commands": {"threshold": threshold, "release_threshold": draw(st.floats(0, threshold * 0.99, **finite)),
                     "suppression_ms": draw(st.floats(0, 5000, **finite)), "average_window_ms": window,
                     "minimum_count": draw(st.integers(1, int(window // hop) + 1))},
        "vad": {"enabled": draw(st.booleans()), "threshold_dbfs": draw(st.floats(-119, 0, **finite)),
                "hangover_ms": draw(st.floats(0, 2000, **finite))},
        "scenes": {"smoothing": draw(st.sampled_from(SMOOTHING_METHODS)),
                   "window_ms": draw(st.floats(1, 10000, **finite)),
                   "hysteresis_margin": draw(st.floats(0, 0.99, **finite)),
                   "min_hold_ms": draw(st.floats(0, 5000, **finite)),
                   "heartbeat_ms": draw(st.one_of(st.none(), st.floats(1, 60000, **finite)))},
        "outputs": {"events": draw(st.sampled_from(["-", "/var/log/events.jsonl", None])),
                    "mqtt": draw(st.sampled_from([None, "mqtt://broker.local", "mqtts://u:p@h:8884/a/b?qos=2"])),
                    "topic_prefix": draw(st.sampled_from(["edgesense", "home/kitchen"])),
                    "ha_discovery": draw(st.booleans()),
                    "mqtt_spool_dir": draw(st.sampled_from([None, "/var/lib/edgesense/spool"]))},
    }
    # drop some optional sections and fields: defaults must round-trip too
    for section in [s for s in data if s != "device"]:
        if draw(st.booleans()) and draw(st.booleans()):
            del data[section]
    return data


@SETTINGS
@given(data=valid_configs())
def test_valid_configs_round_trip(data):
    try:
        config = DeviceConfig.from_dict(data)
    except ValueError as exc:
        # A default of a dropped section against a drawn value. Hypothesis fails the test when
        # this filters out too many examples, so the test cannot pass vacuously.
        assume("minimum_count" not in str(exc) and "chunk_ms" not in str(exc) and "camera.enabled" not in str(exc))
        raise
    again = DeviceConfig.from_dict(config.to_dict())
    assert again == config
    assert again.to_dict() == config.to_dict()
    for name, value in data.get("commands", {}).items():
        assert getattr(config.commands, name) == value


# --------------------------------------------------------------------------- recognizers

LABELS4 = ("_silence_", "_unknown_", "yes", "no")
#: A week of live monotonic clock (t_ms near 6e8) with a fractional start.
LIVE_START_MS = 6.048e8 + 0.123456


@st.composite
def score_sequences(draw, max_size: int = 50) -> list[np.ndarray]:
    """One-hot-ish score vectors, exactly-at-threshold values common."""
    n = draw(st.integers(1, max_size))
    out = []
    for _ in range(n):
        p = draw(st.sampled_from([0.0, 0.3, 0.5, 0.6, 0.7, 0.9, 1.0]))
        x = np.full(len(LABELS4), (1.0 - p) / (len(LABELS4) - 1))
        x[draw(st.integers(0, len(LABELS4) - 1))] = p
        out.append(x)
    return out


recognizer_options = st.builds(
    CommandRecognizerOptions, average_window_ms=st.sampled_from([100.0, 300.0, 1000.0]), threshold=st.just(0.6),
    release_threshold=st.sampled_from([0.0, 0.3, 0.5]), suppression_ms=st.sampled_from([0.0, 300.0, 500.0]),
    minimum_count=st.integers(1, 4), max_context_unknown=st.sampled_from([0.5, 1.0]),
    context_window_ms=st.just(600.0), context_offset_ms=st.just(300.0))
scene_options = st.builds(
    SceneSmootherOptions, smoothing=st.sampled_from(SMOOTHING_METHODS), window_ms=st.sampled_from([200.0, 1000.0]),
    min_hold_ms=st.sampled_from([0.0, 400.0, 1000.0]), heartbeat_ms=st.sampled_from([None, 1000.0]))


def _commands(recognizer: CommandRecognizer, seq: list[np.ndarray], start_ms: float) -> list[tuple[int, str]]:
    return [(k, e.label) for k, x in enumerate(seq) if (e := recognizer.process(x, start_ms + k * 100.0))]


def _scenes(smoother: SceneSmoother, seq: list[np.ndarray], start_ms: float) -> list[tuple[int, str, str]]:
    return [(k, e.label, e.reason) for k, x in enumerate(seq) if (e := smoother.update(x, start_ms + k * 200.0))]


@SETTINGS
@given(before=score_sequences(), seq=score_sequences(), options=recognizer_options)
def test_command_recognizer_reset_forgets_everything_and_live_clocks_change_nothing(before, seq, options):
    fresh = _commands(CommandRecognizer(LABELS4, options), seq, 0.0)
    used = CommandRecognizer(LABELS4, options)
    _commands(used, before, 0.0)
    used.reset()
    assert _commands(used, seq, 0.0) == fresh
    assert _commands(CommandRecognizer(LABELS4, options), seq, LIVE_START_MS) == fresh  # 100-ms hops a week in


@SETTINGS
@given(before=score_sequences(), seq=score_sequences(), options=scene_options)
def test_scene_smoother_reset_forgets_everything_and_live_clocks_change_nothing(before, seq, options):
    labels = LABELS4
    fresh = _scenes(SceneSmoother(labels, options), seq, 0.0)
    used = SceneSmoother(labels, options)
    _scenes(used, before, 0.0)
    used.reset()
    assert _scenes(used, seq, 0.0) == fresh
    assert _scenes(SceneSmoother(labels, options), seq, LIVE_START_MS) == fresh
