"""train.augment: each transform does what it says, deterministically, without touching its input."""

from __future__ import annotations

import numpy as np
import pytest

from edgesense.train.augment import (
    AudioAugmentOptions,
    ImageAugmentOptions,
    PhotoViews,
    add_reverb,
    augment_features,
    augment_images,
    change_speed,
    color_jitter,
    horizontal_flip,
    mix_noise,
    prepare_noise_pool,
    random_crop,
    random_gain,
    shift_rows,
    spec_augment,
    warp_frequency,
)

N = 16000


def _speech_like(batch: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(N) / N
    freqs = rng.uniform(200, 2000, size=(batch, 1))
    envelope = np.exp(-(((t - 0.5) / 0.15) ** 2))
    return (0.3 * envelope * np.sin(2 * np.pi * freqs * t)).astype(np.float32)


def _noise_recordings() -> list[np.ndarray]:
    rng = np.random.default_rng(42)
    return [(0.05 * rng.standard_normal(3 * N)).astype(np.float32),
            (0.2 * np.sin(2 * np.pi * 50 * np.arange(int(1.5 * N)) / N)).astype(np.float32),
            (0.1 * rng.standard_normal(N // 3)).astype(np.float32)]  # shorter than a clip: tiled


def _power_db(x: np.ndarray) -> np.ndarray:
    return 10 * np.log10(np.mean(np.asarray(x, dtype=np.float64) ** 2, axis=-1))


# --------------------------------------------------------------------------- audio


def test_mix_noise_hits_the_requested_snr() -> None:
    clips = _speech_like(64)
    before = clips.copy()
    out, snr = mix_noise(clips, _noise_recordings(), np.random.default_rng(1), snr_db_range=(0.0, 20.0),
                         probability=1.0, return_snr_db=True)
    np.testing.assert_array_equal(clips, before)  # input untouched
    measured = _power_db(clips) - _power_db(out.astype(np.float64) - clips)
    assert np.all(np.abs(measured - snr) < 0.5)
    assert snr.min() >= 0 and snr.max() <= 20 and np.ptp(snr) > 10  # really drawn from the range


def test_mix_noise_probability_and_determinism() -> None:
    clips = _speech_like(200)
    pool = prepare_noise_pool(_noise_recordings(), N)
    a, snr = mix_noise(clips, pool, np.random.default_rng(7), probability=0.8, return_snr_db=True)
    b = mix_noise(clips, pool, np.random.default_rng(7), probability=0.8)
    np.testing.assert_array_equal(a, b)
    changed = np.any(a != clips, axis=1)
    np.testing.assert_array_equal(changed, ~np.isnan(snr))
    assert 0.65 < changed.mean() < 0.95
    untouched = mix_noise(clips, pool, np.random.default_rng(7), probability=0.0)
    np.testing.assert_array_equal(untouched, clips)


def test_mix_noise_uses_different_stretches_of_real_noise() -> None:
    silent = np.zeros((8, N), dtype=np.float32)
    out = mix_noise(silent, [_noise_recordings()[0]], np.random.default_rng(3), snr_db_range=(10.0, 10.0),
                    probability=1.0, silent_reference_dbfs=-20.0)
    np.testing.assert_allclose(_power_db(out), -30.0, atol=0.01)  # reference -20 dBFS, 10 dB below
    assert len({row.tobytes() for row in out}) == 8


@pytest.mark.parametrize("level", [float("nan"), float("inf"), 6.0])
def test_mix_noise_refuses_a_silent_reference_that_is_no_level(level) -> None:
    # A NaN was taken, and every silent clip came back NaN (an infinity: every silent clip full-scale noise).
    silent = np.zeros((2, N), dtype=np.float32)
    with pytest.raises(ValueError, match="silent_reference_dbfs: expected a finite level <= 0 dBFS"):
        mix_noise(silent, [_noise_recordings()[0]], np.random.default_rng(3), probability=1.0,
                  silent_reference_dbfs=level)


def test_shift_rows_moves_each_row_by_its_shift_and_fills_with_zeros() -> None:
    ramp = np.tile(np.linspace(0.1, 1.0, N, dtype=np.float32), (3, 1))
    out = shift_rows(ramp, np.array([1000, -1000, 0]))
    np.testing.assert_array_equal(out[0, 1000:], ramp[0, :N - 1000])  # later: zeros enter at the start
    assert not out[0, :1000].any()
    np.testing.assert_array_equal(out[1, :N - 1000], ramp[1, 1000:])  # earlier: zeros enter at the end
    assert not out[1, N - 1000:].any()
    np.testing.assert_array_equal(out[2], ramp[2])


def test_random_gain_stays_in_range() -> None:
    clips = _speech_like(50) * 0.1
    out = random_gain(clips, np.random.default_rng(0), gain_db_range=(-6.0, 6.0))
    gain_db = _power_db(out) - _power_db(clips)
    assert np.all(gain_db >= -6.0 - 1e-3) and np.all(gain_db <= 6.0 + 1e-3) and np.ptp(gain_db) > 6


def test_spec_augment_masks_bands_with_the_fill_value() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(64, 49, 40)).astype(np.float32)
    sentinel = -99.0
    out = spec_augment(features, np.random.default_rng(1), time_masks=2, max_time_mask_frames=5, freq_masks=2,
                       max_freq_mask_bins=5, mask_value=sentinel)
    masked = out == sentinel
    assert np.array_equal(out[~masked], features[~masked])
    full_frames = masked.all(axis=2).sum(axis=1)
    full_bins = masked.all(axis=1).sum(axis=1)
    assert np.all(full_frames <= 10) and np.all(full_bins <= 10)
    assert full_frames.sum() > 0 and full_bins.sum() > 0
    # Every masked cell lies in a fully masked frame or a fully masked bin (bands, not speckles).
    assert np.array_equal(masked, masked.all(axis=2, keepdims=True) | masked.all(axis=1, keepdims=True))
    mean_fill = spec_augment(features, np.random.default_rng(1), time_masks=2, max_time_mask_frames=5,
                             freq_masks=2, max_freq_mask_bins=5)
    np.testing.assert_allclose(mean_fill[masked], np.broadcast_to(features.mean(axis=(1, 2))[:, None, None],
                                                                  features.shape)[masked], rtol=1e-6)
    np.testing.assert_array_equal(spec_augment(features, rng, time_masks=0, freq_masks=0), features)


def _peak_frequency_hz(clip: np.ndarray) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(clip))) * N / clip.size)


def test_change_speed_scales_pitch_and_keeps_the_centre() -> None:
    rng = np.random.default_rng(0)
    impulse = np.zeros((2, N), np.float32)
    impulse[:, N // 2] = 1.0
    assert np.argmax(change_speed(impulse, rng, speed_range=(1.1, 1.1)), axis=1).tolist() == [N // 2] * 2
    tone = np.sin(2 * np.pi * 400 * np.arange(N) / N).astype(np.float32)[None]
    faster = change_speed(tone, rng, speed_range=(1.1, 1.1))
    slower = change_speed(tone, rng, speed_range=(0.9, 0.9))
    assert _peak_frequency_hz(faster[0]) == pytest.approx(440, abs=2)
    assert _peak_frequency_hz(slower[0]) == pytest.approx(360, abs=2)
    # Faster playback runs out of source at the edges (the first and last 1 - 1/1.1 of half a
    # clip): zeros there, never wrapped samples; slower playback stays full.
    assert not faster[0, :700].any() and faster[0, 760:800].any() and faster.shape == tone.shape
    assert slower[0, :100].any() and slower[0, -100:].any()
    np.testing.assert_array_equal(change_speed(tone, rng, probability=0.0), tone)


def test_add_reverb_adds_a_decaying_tail_at_the_same_level() -> None:
    rng = np.random.default_rng(1)
    click = np.zeros((4, N), np.float32)
    click[:, 1000] = 0.5
    wet = add_reverb(click, rng, rt60_ms_range=(400.0, 400.0))
    assert wet.shape == click.shape and wet.dtype == np.float32
    np.testing.assert_allclose(_power_db(wet), _power_db(click), atol=0.01)
    assert np.abs(wet[:, :1000]).max() < 1e-6  # causal: nothing before the sound
    early, late = (np.mean(wet[:, 1001 + a:1001 + b] ** 2) for a, b in ((0, 800), (4000, 4800)))
    assert early > 10 * late > 0  # 250 ms later the tail is down by far more than 10 dB
    short, long = (add_reverb(click, np.random.default_rng(2), rt60_ms_range=(r, r)) for r in (150.0, 600.0))
    assert np.mean(long[:, 3000:] ** 2) > np.mean(short[:, 3000:] ** 2)
    np.testing.assert_array_equal(add_reverb(click, rng, probability=0.0), click)


@pytest.mark.parametrize("augment", [add_reverb, change_speed])
def test_a_row_left_alone_is_untouched_and_a_changed_row_does_not_depend_on_the_others(augment) -> None:
    """Only the drawn rows are computed: with half of them drawn, those are what every row drawn
    gives (the same random draws), the rest are the input as it was."""
    x = np.random.default_rng(3).normal(scale=0.1, size=(16, N)).astype(np.float32)
    every = augment(x, np.random.default_rng(7), probability=1.0)
    half = augment(x, np.random.default_rng(7), probability=0.5)
    changed = np.any(half != x, axis=1)
    assert 3 < changed.sum() < 13 and half.dtype == x.dtype  # about half of the 16 rows
    np.testing.assert_array_equal(half[changed], every[changed])
    np.testing.assert_array_equal(half[~changed], x[~changed])


def test_augment_features_keeps_the_shape() -> None:
    options = AudioAugmentOptions(speed_probability=0.5, reverb_probability=0.5)
    feats = np.zeros((4, 49, 40), dtype=np.float32)
    assert augment_features(feats + np.arange(40), np.random.default_rng(0), options).shape == feats.shape


def test_warp_frequency_moves_a_formant_by_its_factor_on_the_drawn_rows_only() -> None:
    bins = 40
    feats = np.zeros((64, 49, bins), dtype=np.float32)
    feats[:, :, 10] = 1.0  # one spectral peak at bin 10
    up = warp_frequency(feats, np.random.default_rng(0), probability=1.0, factor_range=(1.2, 1.2))
    assert up.dtype == feats.dtype and up.shape == feats.shape
    assert np.all(up[:, :, 12] == 1.0) and np.all(up.sum(axis=2) > 0)  # 10 * 1.2
    down = warp_frequency(feats, np.random.default_rng(0), probability=1.0, factor_range=(0.8, 0.8))
    np.testing.assert_allclose(down[0, 0, 8], 1.0)  # 10 * 0.8
    assert np.all(down.argmax(axis=2) == 8)
    np.testing.assert_array_equal(warp_frequency(feats, np.random.default_rng(0), probability=1.0,
                                                 factor_range=(1.0, 1.0)), feats)
    half = warp_frequency(feats, np.random.default_rng(1), probability=0.5, factor_range=(1.2, 1.2))
    changed = np.any(half != feats, axis=(1, 2))
    assert 0 < changed.sum() < len(feats)
    np.testing.assert_array_equal(half[changed][:, :, 12], 1.0)
    assert np.all(feats[:, :, 10] == 1.0) and feats.sum() == 64 * 49  # the input is untouched
    with pytest.raises(ValueError, match="factor_range"):
        warp_frequency(feats, np.random.default_rng(0), probability=1.0, factor_range=(1.1, 0.9))


def test_augment_features_warps_only_when_asked() -> None:
    feats = np.random.default_rng(0).normal(size=(8, 49, 40)).astype(np.float32)
    plain = AudioAugmentOptions(time_masks=0, freq_masks=0)
    np.testing.assert_array_equal(augment_features(feats, np.random.default_rng(0), plain), feats)
    warped = augment_features(feats, np.random.default_rng(0), AudioAugmentOptions(
        time_masks=0, freq_masks=0, warp_probability=1.0, warp_factor_range=(1.1, 1.1)))
    assert np.all(np.any(warped != feats, axis=(1, 2)))
    with pytest.raises(ValueError, match="warp_probability"):
        AudioAugmentOptions(warp_probability=1.5)


def test_audio_options_validation_names_the_field() -> None:
    assert AudioAugmentOptions().max_shift_samples == 1600
    with pytest.raises(ValueError, match="snr_db_range"):
        AudioAugmentOptions(snr_db_range=(20.0, 0.0))
    with pytest.raises(ValueError, match="noise_probability"):
        AudioAugmentOptions(noise_probability=1.5)
    with pytest.raises(ValueError, match="time_masks"):
        AudioAugmentOptions(time_masks=-1)
    with pytest.raises(ValueError, match="speed_range"):
        AudioAugmentOptions(speed_range=(1.1, 0.9))
    with pytest.raises(ValueError, match="rt60_ms_range"):
        AudioAugmentOptions(rt60_ms_range=(0.0, 100.0))
    with pytest.raises(ValueError, match="reverb_probability"):
        AudioAugmentOptions(reverb_probability=-0.1)
    with pytest.raises(ValueError, match="clips"):
        random_gain(np.zeros(10), np.random.default_rng(0))
    with pytest.raises(ValueError, match="noise_pool"):
        mix_noise(np.zeros((1, 10), dtype=np.float32), [], np.random.default_rng(0))


# --------------------------------------------------------------------------- images


def _images(batch: int = 8) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(batch, 24, 32, 3), dtype=np.uint8)


def test_horizontal_flip() -> None:
    x = _images()
    np.testing.assert_array_equal(horizontal_flip(x, np.random.default_rng(0), probability=1.0), x[:, :, ::-1])
    np.testing.assert_array_equal(horizontal_flip(x, np.random.default_rng(0), probability=0.0), x)
    original = _images(64)
    some = horizontal_flip(original, np.random.default_rng(0), probability=0.5)
    flipped = np.all(some == original[:, :, ::-1], axis=(1, 2, 3))
    assert 10 < flipped.sum() < 54
    np.testing.assert_array_equal(some[~flipped], original[~flipped])
    np.testing.assert_array_equal(original, _images(64))  # the input is left as it was


def test_random_crop_zooms_in() -> None:
    x = np.zeros((4, 40, 40, 3), dtype=np.uint8)
    x[:, 10:30, 10:30] = 255  # a centred square
    np.testing.assert_array_equal(random_crop(x, np.random.default_rng(0), scale_range=(1.0, 1.0)), x)
    out = random_crop(x, np.random.default_rng(0), scale_range=(0.6, 0.6))
    assert out.shape == x.shape and out.dtype == np.uint8
    assert np.all((out > 127).sum(axis=(1, 2, 3)) > (x > 127).sum(axis=(1, 2, 3)))  # the square got bigger


def test_color_jitter() -> None:
    x = _images()
    np.testing.assert_array_equal(color_jitter(x, np.random.default_rng(0), brightness_delta=0,
                                               contrast_delta=0, saturation_delta=0), x)
    flat = np.full((32, 8, 8, 3), 100, dtype=np.uint8)
    bright = color_jitter(flat, np.random.default_rng(0), brightness_delta=0.5, contrast_delta=0,
                          saturation_delta=0)
    means = bright.reshape(32, -1).mean(axis=1)
    assert means.min() >= 50 and means.max() <= 150 and np.ptp(means) > 30
    gray = color_jitter(x, np.random.default_rng(0), brightness_delta=0, contrast_delta=0, saturation_delta=1.0)
    assert gray.dtype == np.uint8 and not np.array_equal(gray, x)


def test_augment_images_deterministic_and_validated() -> None:
    x = _images()
    options = ImageAugmentOptions()
    np.testing.assert_array_equal(augment_images(x, np.random.default_rng(4), options),
                                  augment_images(x, np.random.default_rng(4), options))
    with pytest.raises(ValueError, match="crop_scale_range"):
        ImageAugmentOptions(crop_scale_range=(0.5, 1.5))
    with pytest.raises(ValueError, match="images"):
        augment_images(x.astype(np.float32), np.random.default_rng(0), options)


def test_a_photo_view_is_the_same_image_whichever_batch_draws_it() -> None:
    x = _images()
    views = PhotoViews(count=3, seed=7)
    batch = views.render(x, np.array([5, 2, 5, 5]), np.array([1, 0, 1, 2]))
    np.testing.assert_array_equal(batch[0], batch[2])  # photo 5, view 1, twice in one batch
    np.testing.assert_array_equal(batch[0], views.render(x, np.array([5]), np.array([1]))[0])  # and alone
    np.testing.assert_array_equal(batch[1], views.all_photos(x, 0)[2])  # and among every photo's view 0
    assert not np.array_equal(batch[0], batch[3])  # another view of the same photo
    assert not np.array_equal(batch[0], PhotoViews(count=3, seed=8).render(x, np.array([5]), np.array([1]))[0])
    assert views.render(x, np.array([], int), np.array([], int)).shape == (0, *x.shape[1:])


def test_photo_views_are_validated() -> None:
    x = _images()
    with pytest.raises(ValueError, match="count: expected an integer >= 1, got 0"):
        PhotoViews(count=0, seed=0)
    with pytest.raises(ValueError, match=r"views: expected indices in \[0, 2\)"):
        PhotoViews(count=2, seed=0).render(x, np.array([0, 1]), np.array([0, 2]))
    with pytest.raises(ValueError, match="views: expected one per photo"):
        PhotoViews(count=2, seed=0).render(x, np.array([0, 1]), np.array([0]))


# --------------------------------------------------------------------------- the same bytes as the plain formulas
# The batch-side functions copy slices and work in place for speed; these pin them to the plain array formulas
# they replaced (written out here), byte for byte, so that a training run's batches stay the same.


def _shift_rows_by_gather(x: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    n = x.shape[1]
    source = np.arange(n)[None, :] - shifts[:, None]
    valid = (source >= 0) & (source < n)
    return np.where(valid, np.take_along_axis(x, np.clip(source, 0, n - 1), axis=1), 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shift_rows_is_the_gather_it_replaced(dtype) -> None:
    x = np.random.default_rng(0).normal(size=(12, 700)).astype(dtype)
    shifts = np.array([0, 1, -1, 350, -350, 699, -699, 700, -700, 10**9, -10**9, 5])
    out = shift_rows(x, shifts)
    assert out.dtype == x.dtype and out.tobytes() == _shift_rows_by_gather(x, shifts).tobytes()
    assert shift_rows(x[:0], shifts[:0]).shape == (0, 700)


def _change_speed_by_formula(x: np.ndarray, rng: np.random.Generator, speed_range, probability) -> np.ndarray:
    batch, n = x.shape
    factor = rng.uniform(speed_range[0], speed_range[1], size=batch)
    factor[~(rng.random(batch) < probability)] = 1.0
    out = x.copy()
    rows = np.flatnonzero(factor != 1.0)
    centre = (n - 1) / 2.0
    source = centre + (np.arange(n)[None, :] - centre) * factor[rows, None]
    left = np.floor(source).astype(np.int64)
    frac = (source - left).astype(x.dtype)
    valid = (source >= 0) & (source <= n - 1)
    lo = np.take_along_axis(x[rows], np.clip(left, 0, n - 1), axis=1)
    hi = np.take_along_axis(x[rows], np.clip(left + 1, 0, n - 1), axis=1)
    out[rows] = np.where(valid, lo + frac * (hi - lo), 0)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_change_speed_is_the_interpolation_it_replaced(dtype) -> None:
    x = np.random.default_rng(1).normal(scale=0.3, size=(20, 3001)).astype(dtype)
    for probability in (0.0, 0.5, 1.0):
        out = change_speed(x, np.random.default_rng(2), speed_range=(0.7, 1.4), probability=probability)
        expected = _change_speed_by_formula(x, np.random.default_rng(2), (0.7, 1.4), probability)
        assert out.dtype == x.dtype and out.tobytes() == expected.tobytes()


def test_mix_noise_and_gain_are_the_formulas_they_replaced() -> None:
    clips = _speech_like(9)
    clips[3] = 0.0  # digital silence: the reference level
    pool = prepare_noise_pool(_noise_recordings(), N)
    rng = np.random.default_rng(5)
    out = mix_noise(clips, pool, rng, probability=0.7)
    rng = np.random.default_rng(5)
    apply = rng.random(9) < 0.7
    which = rng.integers(0, pool.lengths.size, size=9)
    offsets = (rng.random(9) * (pool.lengths[which] - N + 1)).astype(np.int64)
    snr_db = rng.uniform(0.0, 20.0, size=9)
    noise = pool.samples[(pool.starts[which] + offsets)[:, None] + np.arange(N)[None, :]].astype(np.float64)
    np.testing.assert_array_equal(pool.windows(pool.starts[which] + offsets, np.float64), noise)
    signal_power = np.mean(np.square(clips, dtype=np.float64), axis=-1)
    reference = np.where(signal_power > 1e-12, signal_power, 10.0 ** (-20.0 / 10.0))
    noise_power = np.maximum(np.mean(np.square(noise), axis=-1), 1e-12)
    scale = np.sqrt(reference / (noise_power * 10.0 ** (snr_db / 10.0)))
    scale[~apply] = 0.0
    assert out.tobytes() == np.clip(clips + scale[:, None] * noise, -1.0, 1.0).astype(np.float32).tobytes()

    gained = random_gain(clips, np.random.default_rng(6), gain_db_range=(-6.0, 20.0), probability=0.5)
    rng = np.random.default_rng(6)
    gain_db = rng.uniform(-6.0, 20.0, size=9)
    gain_db[~(rng.random(9) < 0.5)] = 0.0
    expected = np.clip(clips * (10.0 ** (gain_db / 20.0))[:, None], -1.0, 1.0).astype(np.float32)
    assert gained.tobytes() == expected.tobytes()


def test_image_augments_are_the_formulas_they_replaced() -> None:
    x = _images(40)
    flipped = horizontal_flip(x, np.random.default_rng(8), probability=0.5)
    flip = np.random.default_rng(8).random(40) < 0.5
    expected = x.copy()
    expected[flip] = x[flip, :, ::-1, :]
    assert flipped.tobytes() == expected.tobytes()
    np.testing.assert_array_equal(horizontal_flip(x[:, :, ::2], np.random.default_rng(0), probability=1.0),
                                  x[:, :, ::2][:, :, ::-1])  # a strided view too

    jittered = color_jitter(x, np.random.default_rng(9), brightness_delta=0.5, contrast_delta=0.5,
                            saturation_delta=0.5)
    rng = np.random.default_rng(9)
    brightness, contrast, saturation = (rng.uniform(0.5, 1.5, size=(40, 1, 1, 1)).astype(np.float32)
                                        for _ in range(3))
    gray_weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    f = x.astype(np.float32) * brightness
    mean_gray = (f @ gray_weights).mean(axis=(1, 2))[:, None, None, None]
    f = (f - mean_gray) * contrast + mean_gray
    gray = (f @ gray_weights)[..., None]
    f = (f - gray) * saturation + gray
    assert jittered.tobytes() == np.clip(np.rint(f), 0, 255).astype(np.uint8).tobytes()


def test_add_reverb_is_the_convolution_it_replaced() -> None:
    x = _speech_like(10)
    out = add_reverb(x, np.random.default_rng(4), rt60_ms_range=(150.0, 600.0), probability=0.5)
    rng = np.random.default_rng(4)
    apply = rng.random(10) < 0.5
    rt60_s = rng.uniform(150.0, 600.0, size=10)[apply] / 1000.0
    taps = int(np.ceil(0.6 * 16000))
    t = np.arange(taps) / 16000
    rir = rng.standard_normal((10, taps))[apply] * np.exp(-3.0 * np.log(10.0) * t[None, :] / rt60_s[:, None]) * 0.05
    rir[:, 0] = 1.0
    size = 1 << int(np.ceil(np.log2(N + taps)))
    dry = x[apply]
    wet = np.fft.irfft(np.fft.rfft(dry, size, axis=1) * np.fft.rfft(rir, size, axis=1), size, axis=1)[:, :N]
    power = lambda a: np.mean(np.square(a, dtype=np.float64), axis=-1)  # noqa: E731
    wet *= (np.sqrt(power(dry)) / np.sqrt(np.maximum(power(wet), 1e-12)))[:, None]
    expected = x.copy()
    expected[apply] = np.clip(wet, -1.0, 1.0)
    assert out.tobytes() == expected.tobytes()
