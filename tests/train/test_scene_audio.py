"""Place sounds in training rows: which rows, at what level, with which labels."""

import numpy as np
import pytest

from edgesense.train.scene_audio import PlaceSounds, SceneAudioOptions, mix_under, place_rows

CLIP = 1600
SILENCE, UNKNOWN, YES = 0, 1, 2


def _sounds():
    """Class 0: a 440 Hz tone; class 1: a 1 kHz tone; class 2: no sound."""
    t = np.arange(3 * CLIP) / 16000.0
    return PlaceSounds([[0.3 * np.sin(2 * np.pi * 440 * t)], [0.3 * np.sin(2 * np.pi * 1000 * t)], []], CLIP)


def _dbfs(x):
    return 10 * np.log10(np.mean(np.square(x, dtype=np.float64), axis=-1))


def test_draw_gives_each_row_its_own_class_sound_and_silence_without_one():
    sounds = _sounds()
    out = sounds.draw(np.array([0, 1, 2, 0]), np.random.default_rng(0))
    spectrum = np.abs(np.fft.rfft(out, axis=-1))
    peak_hz = spectrum.argmax(-1) * 16000 / CLIP
    assert np.allclose(peak_hz[[0, 1, 3]], [440, 1000, 440], atol=10)
    assert not out[2].any()
    assert list(sounds.has_sound) == [True, True, False]


def test_only_rows_become_silence_at_their_level_and_keep_the_command_balance():
    rng = np.random.default_rng(1)
    n = 2000
    scenes = rng.integers(0, 3, size=n)
    words = rng.choice([SILENCE, UNKNOWN, YES], size=n)
    options = SceneAudioOptions(only_probability=0.3, level_dbfs_range=(-40.0, -20.0))
    rows = place_rows(scenes, words, _sounds(), rng, options, silence_id=SILENCE)
    has = scenes < 2
    assert not (rows["only"] | rows["under"])[~has].any()  # a class without sound keeps its audio
    assert np.array_equal(rows["only"] | rows["under"], has)
    assert rows["only"][has & (words == SILENCE)].all()  # a silent row always carries the place
    share = rows["only"][has & (words != SILENCE)].mean()
    assert 0.25 < share < 0.35
    assert (rows["labels"][rows["only"]] == SILENCE).all()
    assert np.array_equal(rows["labels"][~rows["only"]], words[~rows["only"]])
    # The command loss is off where a word was replaced by the place, on everywhere else.
    replaced = rows["only"] & (words != SILENCE)
    assert (rows["command_weight"][replaced] == 0).all() and (rows["command_weight"][~replaced] == 1).all()
    level = _dbfs(rows["sound"][rows["only"]])
    assert level.min() > -40.5 and level.max() < -19.5


def test_speech_goes_over_the_place_at_the_drawn_snr():
    rng = np.random.default_rng(2)
    speech = (0.1 * rng.standard_normal((400, CLIP))).astype(np.float32)
    scenes = np.zeros(400, int)
    options = SceneAudioOptions(only_probability=0.0, snr_db_range=(10.0, 10.0))
    rows = place_rows(scenes, np.full(400, YES), _sounds(), rng, options, silence_id=SILENCE)
    original = speech.copy()
    mixed = mix_under(speech, rows, rng, options)
    added = mixed - speech
    snr = _dbfs(speech) - _dbfs(added)
    assert np.allclose(snr, 10.0, atol=0.2)
    assert np.array_equal(speech, original)  # the input is untouched


def test_only_rows_are_replaced_by_the_place():
    rng = np.random.default_rng(3)
    speech = np.full((50, CLIP), 0.5, np.float32)
    rows = place_rows(np.zeros(50, int), np.full(50, SILENCE), _sounds(), rng, SceneAudioOptions(),
                      silence_id=SILENCE)
    mixed = mix_under(speech, rows, rng, SceneAudioOptions())
    assert np.array_equal(mixed, rows["sound"])


@pytest.mark.parametrize("field, value", [("only_probability", 1.5), ("level_dbfs_range", (-10.0, 3.0)),
                                          ("snr_db_range", (20.0, 0.0))])
def test_bad_options_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SceneAudioOptions(**{field: value})


def test_a_pool_without_any_sound_is_refused():
    with pytest.raises(ValueError, match="recordings"):
        PlaceSounds([[], []], CLIP)


def _silent_stretch() -> np.ndarray:
    """A recording's silent stretch as 16-bit audio leaves it: zeros with a 1-step pulse here and there
    (-99 dBFS RMS), as most of the shared sea recording flightgear-base_wave.wav is."""
    x = np.zeros(3 * CLIP, np.float32)
    x[::8] = np.where(np.arange(x[::8].size) % 2, 1.0, -1.0) / 32768.0
    return x


def test_a_silent_stretch_of_a_place_is_never_raised_to_a_level_or_an_snr():
    # It was: 50-90 dB of gain made the place's row hiss and clicks (each 1-step pulse at -45..-15 dBFS).
    quiet = _silent_stretch()
    sounds = PlaceSounds([[quiet]], CLIP)
    rng = np.random.default_rng(4)
    rows = place_rows(np.zeros(40, int), np.full(40, YES), sounds, rng, SceneAudioOptions(only_probability=0.5),
                      silence_id=SILENCE)
    assert rows["only"].any() and rows["under"].any()
    assert np.abs(rows["sound"]).max() <= 1.0 / 32768  # the only rows: as recorded
    speech = (0.1 * rng.standard_normal((40, CLIP))).astype(np.float32)
    mixed = mix_under(speech, rows, rng, SceneAudioOptions())
    added = mixed[rows["under"]] - speech[rows["under"]]
    assert np.abs(added).max() <= 1.5 / 32768  # the under rows: the stretch as it is (float32 rounding aside)


def test_a_quiet_place_that_holds_sound_is_still_raised_to_its_level():
    # A place 80 dB down (one 16-bit step is -90 dB) is sound: it gets its level, as before.
    t = np.arange(3 * CLIP) / 16000.0
    faint = 10 ** (-80 / 20) * np.sqrt(2) * np.sin(2 * np.pi * 440 * t)
    rows = place_rows(np.zeros(20, int), np.full(20, SILENCE), PlaceSounds([[faint]], CLIP),
                      np.random.default_rng(5), SceneAudioOptions(level_dbfs_range=(-30.0, -30.0)), silence_id=SILENCE)
    assert np.allclose(_dbfs(rows["sound"]), -30.0, atol=0.1)


def test_the_shared_sea_recordings_silent_stretch_stays_silent(shared_data):
    from edgesense.frontend.wav import read_wav

    sea = read_wav(shared_data / "scene_ambient" / "sea" / "flightgear-base_wave.wav")
    rows = place_rows(np.zeros(200, int), np.full(200, SILENCE), PlaceSounds([[sea]], 16000),
                      np.random.default_rng(0), SceneAudioOptions(), silence_id=SILENCE)
    level = _dbfs(rows["sound"])
    # the loud second of waves is raised to its level; the rest (1-step pulses) is left as it is
    assert ((level > -46) | (level < -90)).all() and (level < -90).sum() > 100
