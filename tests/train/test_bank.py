import numpy as np
import pytest

from edgesense.train import augment
from edgesense.train.bank import (
    BankOptions,
    background_windows,
    convolve_rirs,
    log_mel_features,
    place_words,
    prepare_rirs,
    speech_windows,
    word_extent,
)

RATE = 16000
N = RATE


def _bursts(count: int, start: int, length: int, rng) -> np.ndarray:
    x = rng.normal(scale=1e-4, size=(count, N)).astype(np.float32)
    t = np.arange(length)
    x[:, start:start + length] += (0.3 * np.sin(2 * np.pi * 440 * t / RATE)).astype(np.float32)
    return x


def _dbfs(x):
    return 10 * np.log10(np.mean(np.square(x.astype(np.float64)), axis=-1))


def test_word_extent_finds_the_burst():
    x = _bursts(3, 4000, 6400, np.random.default_rng(0))
    start, end = word_extent(x, sample_rate_hz=RATE)
    np.testing.assert_array_equal(start, 4000)
    np.testing.assert_array_equal(end, 10400)


def test_words_move_anywhere_whole_or_become_partial_negatives():
    rng = np.random.default_rng(1)
    x = _bursts(400, 4800, 6400, rng)
    placeable = np.ones(400, bool)
    partial_ok = np.arange(400) < 200  # command words; the rest are _unknown_ words
    out, partial = place_words(x, rng, placeable=placeable, partial_ok=partial_ok, placement_probability=1.0,
                               partial_probability=0.5, partial_fraction_range=(0.1, 0.5), sample_rate_hz=RATE)
    assert not partial[200:].any() and 60 < partial[:200].sum() < 140
    energy = np.abs(out) > 0.01
    whole = ~partial
    # Placed words keep all of their samples, and their starts spread over the whole window.
    np.testing.assert_allclose(np.sum(out[whole] ** 2, axis=1), np.sum(x[whole] ** 2, axis=1), rtol=1e-3)
    starts = np.argmax(energy[whole], axis=1)
    assert starts.min() < 1000 and starts.max() > N - 6400 - 1000
    # Partial words keep 10-50 % of the burst, at either edge of the window.
    kept = np.sum(out[partial] ** 2, axis=1) / np.sum(x[partial] ** 2, axis=1)
    assert kept.min() > 0.05 and kept.max() < 0.55
    edge = energy[partial][:, 0] | energy[partial][:, -1]
    assert edge.all()


def test_placement_off_keeps_the_small_shift():
    rng = np.random.default_rng(2)
    x = _bursts(50, 4800, 6400, rng)
    out, partial = place_words(x, rng, placeable=np.ones(50, bool), partial_ok=np.zeros(50, bool),
                               placement_probability=0.0, partial_probability=1.0, max_shift_samples=160)
    starts = np.argmax(np.abs(out) > 0.01, axis=1)
    assert not partial.any() and np.all(np.abs(starts - 4800) <= 160 + 5)


def test_shift_probability_chooses_which_unplaced_words_shift():
    x = _bursts(400, 4800, 6400, np.random.default_rng(2))
    common = dict(placeable=np.ones(400, bool), partial_ok=np.zeros(400, bool), placement_probability=0.0,
                  partial_probability=0.0, max_shift_samples=1600)
    moved = {}
    for p in (0.0, 0.25, 1.0):
        out, _ = place_words(x, np.random.default_rng(4), shift_probability=p, **common)
        moved[p] = np.mean(np.abs(np.argmax(np.abs(out) > 0.01, axis=1) - 4800) > 5)
    assert moved[0.0] == 0.0 and 0.15 < moved[0.25] < 0.35 and moved[1.0] > 0.95
    # Always shifting (the default) draws the same shifts as before the choice existed.
    default, _ = place_words(x, np.random.default_rng(4), **common)
    always, _ = place_words(x, np.random.default_rng(4), shift_probability=1.0, **common)
    np.testing.assert_array_equal(default, always)


def test_background_windows_are_at_the_asked_levels():
    rng = np.random.default_rng(3)
    pool = augment.prepare_noise_pool([rng.normal(scale=0.2, size=5 * N), rng.normal(scale=0.01, size=3 * N)], N)
    x = background_windows(pool, 200, rng, dbfs_range=(-70.0, -30.0))
    level = _dbfs(x)
    assert x.shape == (200, N) and level.min() >= -70.1 and level.max() <= -29.9
    assert level.max() - level.min() > 25


def test_speech_windows_hop_half_a_window_and_drop_quiet_ones():
    loud = np.full(3 * N, 0.1, np.float32)
    quiet = np.full(2 * N, 1e-4, np.float32)
    short = np.full(N // 2, 0.1, np.float32)
    out = speech_windows([loud, quiet, short], N, min_dbfs=-45.0)
    assert out.shape == (5 + 1, N)  # 5 windows of the 3 s recording, the short one padded; none quiet


def test_real_rooms_keep_length_and_level():
    rng = np.random.default_rng(4)
    rir = np.zeros(RATE // 2, np.float32)
    rir[100] = 1.0
    rir[100:] += (0.1 * rng.normal(size=RATE // 2 - 100) * np.exp(-np.arange(RATE // 2 - 100) / 800)).astype(
        np.float32)
    rirs = prepare_rirs([rir], sample_rate_hz=RATE)
    assert rirs.shape == (1, RATE) and rirs[0, 0] == pytest.approx(1.0)  # starts at the direct path
    x = _bursts(20, 4000, 6400, rng)
    out, applied = convolve_rirs(x, rng, rirs, probability=0.5)
    assert out.shape == x.shape and 0 < applied.sum() < 20
    np.testing.assert_array_equal(out[~applied], x[~applied])
    np.testing.assert_allclose(_dbfs(out[applied]), _dbfs(x[applied]), atol=0.1)
    assert not np.allclose(out[applied], x[applied])


def test_bank_options_are_validated():
    with pytest.raises(ValueError, match="variants"):
        BankOptions(variants=-1)
    with pytest.raises(ValueError, match="silence_dbfs_range"):
        BankOptions(silence_dbfs_range=(-30.0, 5.0))
    with pytest.raises(ValueError, match="partial_word_probability"):
        BankOptions(partial_word_probability=1.5)


def _variant(clips: np.ndarray, seed: int = 1) -> dict[str, np.ndarray]:
    """One example-bank variant of ``clips`` with every stage on (speed, placement, partial words, real and synthetic
    rooms, gain, noise)."""
    from edgesense.frontend.audio import AudioFrontendOptions
    from edgesense.train.bank import make_variant

    rng = np.random.default_rng(0)
    n = clips.shape[0]
    rirs = prepare_rirs([rng.normal(scale=0.1, size=4000).astype(np.float32) for _ in range(3)])
    options = BankOptions(silence_per_variant=8, other_speech_per_variant=8, real_rir_probability=0.4)
    return make_variant(clips, rng.integers(0, 12, n).astype(np.int32), np.zeros(n, bool), variant=0, seed=seed,
                        options=options,
                        augment_options=augment.AudioAugmentOptions(speed_probability=0.5, reverb_probability=0.5),
                        frontend=AudioFrontendOptions(), word_ids=np.arange(2, 12), silence_id=0, unknown_id=1,
                        noise_pool=augment.prepare_noise_pool([rng.normal(scale=0.05, size=RATE * 5)], N),
                        rirs=rirs, other_speech=clips[:20])


def test_a_bank_variant_is_the_same_whatever_the_rows_per_pass(monkeypatch):
    clips = _bursts(70, 3000, 6400, np.random.default_rng(2))
    clips[::9] = 0.0  # silent rows
    whole = _variant(clips)
    monkeypatch.setattr(augment, "ROWS_PER_PASS", 7)
    in_passes = _variant(clips)
    assert whole.keys() == in_passes.keys()
    for name in whole:
        assert whole[name].dtype == in_passes[name].dtype and np.array_equal(whole[name], in_passes[name]), name


def test_a_bank_variant_of_a_large_set_needs_a_few_times_its_clips_in_memory(monkeypatch):
    """A variant augments every training clip at once: 85,000 clips of the full Speech Commands are 5.4 GB, and
    intermediates of 9 times that (float64 copies, index arrays, spectra) did not fit in a desktop's memory."""
    import tracemalloc

    import edgesense.train.bank as bank

    monkeypatch.setattr(augment, "ROWS_PER_PASS", 16, raising=False)  # a large set's rows, in many passes
    monkeypatch.setattr(bank, "_FEATURE_BATCH", 16)
    clips = _bursts(256, 3000, 6400, np.random.default_rng(3))
    tracemalloc.start()
    try:
        _variant(clips)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6.5 * clips.nbytes, peak / clips.nbytes


def test_batch_pieces_are_the_formulas_they_replaced():
    """Noise windows copied as slices, the room's gain and clip in place, one log-mel call for a batch: the same
    bytes as the plain formulas they replaced (a training run's batches stay the same)."""
    rng = np.random.default_rng(5)
    pool = augment.prepare_noise_pool([rng.normal(scale=0.2, size=5 * N), rng.normal(scale=0.01, size=3 * N)], N)
    x = background_windows(pool, 30, np.random.default_rng(6), dbfs_range=(-70.0, -30.0))
    rng = np.random.default_rng(6)
    which = rng.integers(0, pool.lengths.size, size=30)
    offsets = (rng.random(30) * (pool.lengths[which] - N + 1)).astype(np.int64)
    windows = pool.samples[(pool.starts[which] + offsets)[:, None] + np.arange(N)[None, :]].astype(np.float64)
    gain = 10.0 ** ((rng.uniform(-70.0, -30.0, size=30) - _dbfs(windows)) / 20.0)
    assert x.tobytes() == np.clip(windows * gain[:, None], -1.0, 1.0).astype(np.float32).tobytes()

    rirs = prepare_rirs([rng.normal(size=3000).astype(np.float32) for _ in range(3)], sample_rate_hz=RATE)
    clips = _bursts(12, 4000, 6400, rng)
    out, applied = convolve_rirs(clips, np.random.default_rng(7), rirs, probability=0.5)
    rng = np.random.default_rng(7)
    rows = np.flatnonzero(rng.random(12) < 0.5)
    which = rng.integers(0, len(rirs), size=rows.size)
    size = 1 << int(np.ceil(np.log2(N + rirs.shape[1])))
    dry = clips[rows]
    wet = np.fft.irfft(np.fft.rfft(dry, size, axis=1) * np.fft.rfft(rirs[which], size, axis=1), size, axis=1)[:, :N]
    scale = np.sqrt(np.mean(np.square(dry, dtype=np.float64), axis=1)) / np.sqrt(
        np.maximum(np.mean(np.square(wet), axis=1), 1e-12))
    expected = clips.copy()
    expected[rows] = np.clip(wet * scale[:, None], -1.0, 1.0)
    assert out.tobytes() == expected.tobytes() and np.flatnonzero(applied).tolist() == rows.tolist()

    from edgesense.frontend.audio import AudioFrontendOptions, log_mel_batch

    frontend = AudioFrontendOptions()
    features = log_mel_features(clips, frontend)
    assert features.dtype == np.float32 and features.tobytes() == log_mel_batch(clips, frontend).tobytes()
    assert log_mel_features(clips[:0], frontend).shape == (0, *frontend.feature_shape)
