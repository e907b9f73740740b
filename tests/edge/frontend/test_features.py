import wave
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesense.frontend.audio import (
    AudioFrontendOptions,
    StreamingAudioFrontend,
    fit_clip,
    log_mel_batch,
    log_mel_spectrogram,
    mel_filterbank,
)
from edgesense.frontend.image import ImageFrontendOptions, preprocess_frame

DATA = Path(__file__).parents[2] / "data"


def _pcm16(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def test_golden_audio_features():
    features = log_mel_spectrogram(_pcm16(DATA / "golden_yes.wav"))
    expected = np.load(DATA / "golden_yes_features.npy")
    assert features.shape == expected.shape == (49, 40)
    assert features.dtype == np.float32
    np.testing.assert_allclose(features, expected, rtol=0, atol=1e-4)


def test_golden_audio_has_speech_in_the_middle():
    # Guards the golden file itself: the spoken word must stand out from the floor.
    features = np.load(DATA / "golden_yes_features.npy")
    energy = features.mean(axis=1)
    assert energy[15:35].max() > energy[:5].max() + 5


def test_golden_image():
    frame = cv2.imread(str(DATA / "golden_scene.png"), cv2.IMREAD_COLOR)
    image = preprocess_frame(frame)
    expected = np.load(DATA / "golden_scene_input.npy")
    assert image.shape == (96, 96, 3) and image.dtype == np.float32
    assert np.abs(image - expected.astype(np.float32)).max() <= 1.0


def test_default_shapes_follow_micro_speech():
    options = AudioFrontendOptions()
    assert (options.window_samples, options.hop_samples, options.fft_length) == (480, 320, 512)
    assert options.feature_shape == (49, 40)
    assert log_mel_spectrogram(np.zeros(16000, np.float32)).shape == (49, 40)


def test_tone_lands_in_the_right_mel_band():
    options = AudioFrontendOptions()
    t = np.arange(16000) / 16000
    low = log_mel_spectrogram(0.5 * np.sin(2 * np.pi * 300 * t)).mean(axis=0).argmax()
    high = log_mel_spectrogram(0.5 * np.sin(2 * np.pi * 4000 * t)).mean(axis=0).argmax()
    assert low < high
    centres_hz = np.linspace(0, 8000, options.fft_length // 2 + 1) @ mel_filterbank(options) / \
        mel_filterbank(options).sum(axis=0)
    assert abs(centres_hz[low] - 300) < 120 and abs(centres_hz[high] - 4000) < 500


def test_int16_and_float_inputs_agree():
    x = (np.random.default_rng(0).normal(size=16000) * 3000).astype(np.int16)
    np.testing.assert_allclose(log_mel_spectrogram(x), log_mel_spectrogram(x / 32768.0), atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(chunks=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=40),
       seed=st.integers(min_value=0, max_value=2**31 - 1))
def test_streaming_gives_exactly_the_frames_of_the_whole_clip(chunks, seed):
    rng = np.random.default_rng(seed)
    signal = (rng.normal(size=sum(chunks)) * 0.1).astype(np.float32)
    whole = log_mel_spectrogram(signal)
    stream = StreamingAudioFrontend()
    parts, start = [], 0
    for size in chunks:
        parts.append(stream.push(signal[start:start + size]))
        start += size
    streamed = np.concatenate(parts)
    assert streamed.shape == whole.shape
    assert np.array_equal(streamed, whole)
    assert stream.frames_emitted == whole.shape[0]


def test_stream_reset_starts_over():
    stream = StreamingAudioFrontend()
    x = np.random.default_rng(1).normal(size=5000).astype(np.float32) * 0.1
    first = stream.push(x)
    stream.reset()
    assert np.array_equal(stream.push(x), first)


def test_fit_clip_pads_and_trims_centred():
    short = np.ones(8000, np.float32)
    padded = fit_clip(short)
    assert padded.shape == (16000,) and padded[:4000].sum() == 0 and padded[4000:12000].sum() == 8000
    long = np.arange(20000, dtype=np.float32) / 20000
    trimmed = fit_clip(long)
    assert trimmed.shape == (16000,) and trimmed[0] == pytest.approx(2000 / 20000)


@pytest.mark.parametrize("kwargs, field", [
    ({"hop_ms": 40.0}, "hop_ms"),
    ({"upper_edge_hz": 9000.0}, "upper_edge_hz"),
    ({"num_mel_bins": 0}, "num_mel_bins"),
    ({"sample_rate_hz": 0}, "sample_rate_hz"),
    ({"lower_edge_hz": 8000.0, "upper_edge_hz": 7000.0}, "lower_edge_hz"),
    # A hop or window shorter than one sample (it rounds to none: frames_per_clip divided by zero).
    ({"hop_ms": 0.01}, "hop_ms: expected at least one sample at 16000 Hz"),
    ({"window_ms": 0.02, "hop_ms": 0.01, "clip_duration_ms": 1}, "window_ms: expected at least one sample"),
    # Values of the wrong type (a hand-edited run.json or model metadata) raised TypeError.
    ({"num_mel_bins": 40.5}, "num_mel_bins: expected an integer"),
    ({"sample_rate_hz": "16000"}, "sample_rate_hz: expected an integer"),
    ({"hop_ms": "20"}, "hop_ms: expected a number"),
])
def test_bad_audio_options_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        AudioFrontendOptions(**kwargs)
    with pytest.raises(ValueError, match=field):
        AudioFrontendOptions.from_dict(kwargs)


def test_options_round_trip_and_reject_unknown_fields():
    options = AudioFrontendOptions(num_mel_bins=32)
    assert AudioFrontendOptions.from_dict(options.to_dict()) == options
    with pytest.raises(ValueError, match="window_size"):
        AudioFrontendOptions.from_dict({"window_size": 30})


def test_bad_samples_are_rejected():
    with pytest.raises(ValueError, match="1-D"):
        log_mel_spectrogram(np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        log_mel_spectrogram(np.zeros(100, np.int32))
    with pytest.raises(ValueError, match="clips: expected float samples in \\[-1, 1\\] or int16, got dtype int32"):
        log_mel_batch(np.full((2, 16000), 1000, np.int32))  # was read as unscaled floats


def test_preprocess_crops_the_centre_and_converts_to_rgb():
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, :80] = (255, 0, 0)  # a blue band on the left edge, outside the centred square crop
    frame[:, 80:560] = (0, 0, 255)  # red (BGR) in the centre
    image = preprocess_frame(frame)
    assert image.shape == (96, 96, 3)
    assert np.all(image[..., 0] == 255) and np.all(image[..., 2] == 0)  # RGB: red channel first


def test_preprocess_accepts_gray_and_bgra_and_rejects_the_rest():
    assert preprocess_frame(np.zeros((50, 50), np.uint8)).shape == (96, 96, 3)
    assert preprocess_frame(np.zeros((50, 70, 4), np.uint8)).shape == (96, 96, 3)
    gray = np.arange(50 * 50, dtype=np.uint8).reshape(50, 50)
    np.testing.assert_array_equal(preprocess_frame(gray[:, :, None]), preprocess_frame(gray))  # (H, W, 1) too
    with pytest.raises(ValueError, match="uint8"):
        preprocess_frame(np.zeros((50, 50, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        preprocess_frame(np.zeros((50, 50, 2), np.uint8))
    with pytest.raises(ValueError, match="width_px"):
        ImageFrontendOptions(width_px=2)


@pytest.mark.parametrize("frame", [
    np.zeros((50, 50), np.int64),  # grayscale of another dtype: OpenCV's cvtColor raised cv2.error
    np.zeros((50, 50), bool),
    np.zeros((50, 70, 4), np.int32),  # BGRA of another dtype
    np.zeros((50, 50), np.float64),
])
def test_preprocess_names_the_dtype_of_any_frame(frame):
    with pytest.raises(ValueError, match=f"frame: expected dtype uint8, got {frame.dtype}"):
        preprocess_frame(frame)


def test_preprocess_rejects_an_empty_grayscale_frame_and_fractional_sizes():
    with pytest.raises(ValueError, match=r"frame: expected an image of shape \(H, W\) or \(H, W, C\) with C in "
                                         r"\(1, 3, 4\), got \(0, 5\)"):
        preprocess_frame(np.zeros((0, 5), np.uint8))  # was cv2.error from cvtColor
    with pytest.raises(ValueError, match="width_px: expected an integer"):
        ImageFrontendOptions(width_px=96.5)  # was accepted, then cv2.resize failed on it
    with pytest.raises(ValueError, match="height_px: expected an integer"):
        ImageFrontendOptions.from_dict({"height_px": "96"})  # was a TypeError


def test_log_mel_batch_equals_the_per_clip_frontend():
    from edgesense.frontend.audio import AudioFrontendOptions, log_mel_batch, log_mel_spectrogram

    options = AudioFrontendOptions()
    clips = np.random.default_rng(7).uniform(-0.5, 0.5, size=(5, options.clip_samples)).astype(np.float32)
    batch = log_mel_batch(clips, options)
    assert batch.shape == (5, *options.feature_shape) and batch.dtype == np.float32
    for clip, features in zip(clips, batch):
        np.testing.assert_allclose(features, log_mel_spectrogram(clip, options), atol=1e-5)
    assert log_mel_batch(np.zeros((2, 100), np.float32), options).shape == (2, 0, options.num_mel_bins)


def test_a_hot_resampled_microphone_gives_the_features_of_its_recording(tmp_path):
    # A 44.1 kHz microphone driven into clipping: its live stream (the microphone's StreamingResampler,
    # 20 ms chunks) overshoots full scale; the same recording as a WAV file, as training, record's pairs
    # and --audio replays read it, is clipped. The features differed: by up to 4.1 here, 0.6 on a clipped "yes".
    from edgesense.frontend.resample import StreamingResampler, resample
    from edgesense.frontend.wav import read_wav, write_wav

    options = AudioFrontendOptions()
    t = np.arange(16000) / 16000
    word = 4.0 * np.sin(2 * np.pi * 440 * t) * np.hanning(16000)  # a loud tone with its peaks clipped
    pcm = np.round(np.clip(resample(word, 16000, 44100), -1.0, 1.0) * 32767).astype(np.int16)
    path = write_wav(tmp_path / "hot.wav", pcm, 44100)
    trained = log_mel_batch(fit_clip(read_wav(path), options)[None], options)[0]

    live = np.concatenate([pcm / 32768.0, np.zeros(4410)]).astype(np.float32)  # the microphone goes on
    resampler, stream, frames = StreamingResampler(44100, 16000), StreamingAudioFrontend(options), []
    for start in range(0, live.size, 882):
        samples = resampler.push(live[start:start + 882])
        assert samples.size == 0 or np.abs(samples).max() <= 1.25
        frames.append(stream.push(samples))
    streamed = np.concatenate(frames)[:options.frames_per_clip]
    np.testing.assert_array_equal(streamed, trained)
    np.testing.assert_array_equal(log_mel_spectrogram(np.full(960, 1.2)), log_mel_spectrogram(np.ones(960)))


def test_a_signal_of_exactly_one_window_is_one_frame():
    options = AudioFrontendOptions()
    assert log_mel_spectrogram(np.zeros(options.window_samples, np.float32)).shape == (1, options.num_mel_bins)
    assert log_mel_spectrogram(np.zeros(options.window_samples - 1, np.float32)).shape == (0, options.num_mel_bins)
    assert log_mel_batch(np.zeros((2, options.window_samples), np.float32)).shape == (2, 1, options.num_mel_bins)


def test_streaming_emits_each_frame_as_soon_as_its_window_is_complete():
    # Window 480, hop 320: frames end at samples 480, 800, 1120. A frame held back to the next chunk is a
    # chunk late on the device, and lost when the stream ends.
    stream = StreamingAudioFrontend()
    assert [stream.push(np.zeros(n, np.float32)).shape[0] for n in (480, 319, 1, 320)] == [1, 0, 1, 1]
    assert stream.frames_emitted == 3
    stream.reset()
    assert stream.frames_emitted == 0


def test_log_mel_batch_reads_int16_as_the_per_clip_frontend_does():
    clips = (np.random.default_rng(3).normal(size=(3, 16000)) * 3000).astype(np.int16)
    batch = log_mel_batch(clips)
    for clip, features in zip(clips, batch):
        np.testing.assert_allclose(features, log_mel_spectrogram(clip), atol=1e-5)


def test_fft_length_is_the_smallest_power_of_two_holding_the_window_and_a_hop_may_equal_the_window():
    assert AudioFrontendOptions(window_ms=32.0, hop_ms=16.0).fft_length == 512  # a window of exactly 512
    assert AudioFrontendOptions(window_ms=30.0, hop_ms=30.0).hop_samples == 480  # "hop_ms in (0, window_ms]"


def test_preprocess_keeps_the_colours_of_a_bgra_frame():
    frame = np.zeros((40, 60, 4), np.uint8)
    frame[...] = (0, 0, 255, 255)  # opaque red in BGRA
    assert np.all(preprocess_frame(frame) == (255.0, 0.0, 0.0))


def test_preprocess_crops_the_vertical_centre_of_a_portrait_frame():
    frame = np.zeros((640, 480, 3), np.uint8)
    frame[:80] = (255, 0, 0)  # blue above the centred square crop (rows 80..560)
    frame[80:560] = (0, 0, 255)  # red (BGR) inside it
    frame[560:] = (0, 255, 0)  # green below it
    image = preprocess_frame(frame)
    assert np.all(image == (255.0, 0.0, 0.0))
