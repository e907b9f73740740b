"""scripts/mic_impairment_probe.py: each impairment does what its name says, the remedies' filters are the
recursions they stand for, the clips are scored as ``edgesense bench`` scores them, the script reads the
test speakers of the split the model records and prints its table, and bad input is one line with exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import load_script
from datagen import make_speech_commands

from edgesense.bench.accuracy import evaluate_commands
from edgesense.bench.latency import STAGES, _Timer
from edgesense.frontend.audio import fit_clip, log_mel_spectrogram
from edgesense.runtime.model import EdgeModel
from edgesense.train.data import SplitSpec, load_speech_commands
from edgesense.types import DEFAULT_COMMAND_WORDS

RATE = 16000
T = np.arange(RATE) / RATE


@pytest.fixture(scope="module")
def probe():
    return load_script("mic_impairment_probe")


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    """Every command word of the tiny model, and enough speakers that its split's testing part holds some."""
    return make_speech_commands(tmp_path_factory.mktemp("speech"), words=DEFAULT_COMMAND_WORDS, speakers=24,
                                per_speaker=1)


def _tone(hz: float, amplitude: float = 0.3) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * hz * T)).astype(np.float32)


def _level_db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2)) + 1e-20)


def _band_power(x: np.ndarray, hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(np.asarray(x, np.float64))) ** 2
    return float(spectrum[int(round(hz))])  # 1-s clips: one bin per Hz


def _recursion(b, a, x):
    """The IIR filter ``b/a`` as its difference equation, from rest."""
    y = np.zeros(x.size)
    for n in range(x.size):
        acc = sum(b[k] * x[n - k] for k in range(len(b)) if n >= k)
        acc -= sum(a[k] * y[n - k] for k in range(1, len(a)) if n >= k)
        y[n] = acc
    return y


def test_additive_impairments_add_what_they_name(probe):
    clip = _tone(440.0, 0.1)
    assert np.mean(probe.dc_offset(clip, 0.05) - clip) == pytest.approx(0.05, abs=1e-6)
    hum = probe.hum(np.zeros(RATE, np.float32), 60.0, -30.0, np.random.default_rng(0))
    assert _level_db(hum) == pytest.approx(-30.0, abs=0.01)
    powers = {hz: _band_power(hum, hz) for hz in (60, 120, 180, 90, 150)}
    assert min(powers[60], powers[120], powers[180]) > 1e6 * max(powers[90], powers[150])  # harmonics of 60 only


def test_level_impairments(probe):
    clip = _tone(440.0, 0.25)
    at_full_scale = probe.overdriven(clip, 0.0)
    assert np.max(np.abs(at_full_scale)) == pytest.approx(1.0, abs=1e-6)
    clipped = probe.overdriven(clip, 12.0)
    assert np.max(np.abs(clipped)) == 1.0 and np.mean(np.abs(clipped) == 1.0) > 0.5  # a 4x sine: mostly flat tops
    assert np.array_equal(probe.overdriven(np.zeros(RATE, np.float32), 12.0), np.zeros(RATE, np.float32))
    assert _level_db(probe.gain(clip, -20.0)) == pytest.approx(_level_db(clip) - 20.0, abs=1e-3)


def test_the_agc_pumps_and_its_held_twin_does_not(probe):
    # A quiet background with a loud word in the middle.
    clip = (0.002 * np.random.default_rng(1).standard_normal(RATE)).astype(np.float32)
    clip[6000:10000] += _tone(300.0, 0.5)[6000:10000]
    gains_db = 20 * np.log10(probe.agc_gains(clip))
    low, high = probe.AGC_GAIN_DB
    assert np.all(gains_db >= low - 1e-9) and np.all(gains_db <= high + 1e-9)
    assert gains_db[:5000].mean() > gains_db[7000:9500].mean() + 10  # the background is boosted, the word held down
    assert gains_db[9000] < gains_db[-1] - 5  # and the gain comes back up after the word: pumping
    held = probe.agc(clip, held=True)
    ratio = held[clip != 0] / clip[clip != 0]
    assert np.ptp(ratio[np.abs(held[clip != 0]) < 1.0]) < 1e-3  # one gain for the whole clip


@pytest.mark.parametrize("mic_hz", [44100, 48000])
def test_a_fast_microphone_through_the_device_resampler_gives_the_clip_back(probe, mic_hz):
    clip = _tone(1000.0) + _tone(6000.0, 0.1)
    out = probe.through_device_resampler(clip, mic_hz)
    assert out.shape == clip.shape and out.dtype == np.float32
    middle = slice(1000, RATE - 1000)  # the periodic "analog" signal's seam aside
    assert _level_db(out[middle] - clip[middle]) < _level_db(clip) - 40


def test_an_8_khz_microphone_keeps_the_low_band_and_loses_the_high(probe):
    low, high = _tone(1000.0), _tone(5000.0)
    out = probe.through_device_resampler(low + high, 8000)
    assert _band_power(out, 5000) < 1e-6 * _band_power(high, 5000)
    assert _band_power(out, 1000) == pytest.approx(_band_power(low, 1000), rel=0.01)


def test_the_filters_are_the_recursions_they_stand_for(probe):
    x = np.random.default_rng(2).standard_normal(600)
    for sections in ([probe.dc_blocker()], [probe.biquad_highpass(100.0, RATE)], probe.mains_notches(50.0)[:3]):
        expected = x
        for b, a in sections:
            expected = _recursion(b, a, expected)
        np.testing.assert_allclose(probe.filtered(x, probe.response(sections)), expected, atol=1e-5)


def test_the_remedies_take_out_what_they_answer(probe):
    remedies = {r.name: r for r in probe.remedies()}
    dc = next(r for name, r in remedies.items() if name.startswith("DC blocker"))
    running = next(r for name, r in remedies.items() if name.startswith("running mean"))
    offset = probe.dc_offset(_tone(440.0, 0.1), 0.05)
    for remedy in (dc, running):
        assert abs(np.mean(probe.warmed_up(remedy.apply, offset))) < 1e-3
    hum = probe.hum(np.zeros(RATE, np.float32), 60.0, -30.0, np.random.default_rng(3))
    notches = next(r for name, r in remedies.items() if name.startswith("60 Hz notches"))
    assert _level_db(probe.warmed_up(notches.apply, hum)) < -30.0 - 40
    impairments = {i.name for i in probe.IMPAIRMENTS}
    assert all(set(r.answers) <= impairments for r in remedies.values())


def test_clips_are_scored_as_the_benchmark_scores_them(probe, tiny_model_path):
    model = EdgeModel.load(tiny_model_path)
    rng = np.random.default_rng(4)
    clips = (0.1 * rng.standard_normal((6, RATE))).astype(np.float32)
    labels = np.arange(6) % len(model.command_labels)
    accuracy, answers = probe.score(model, clips, labels)
    report = evaluate_commands(model, clips, labels, _Timer(STAGES))
    assert accuracy == report["accuracy"]
    by_hand = [int(np.argmax(model.fuse(model.encode_audio(log_mel_spectrogram(fit_clip(c, model.audio_frontend),
                                                                                   model.audio_frontend)), None)[0]))
               for c in clips]
    assert answers.tolist() == by_hand


def test_it_reads_the_test_speakers_of_the_recorded_split_and_prints_its_table(probe, tiny_model_path, speech,
                                                                                capsys):
    model = EdgeModel.load(tiny_model_path)
    items, clips, truth, _ = probe.load(model, tiny_model_path, speech, "testing")
    expected = SplitSpec.from_metadata(model.metadata, None).split_clips(load_speech_commands(speech))["testing"]
    assert sorted(str(it.path) for it in items) == sorted(str(it.path) for it in expected) != []
    assert clips.shape == (len(items), RATE) and truth.shape == (len(items),)

    argv = ["--model", str(tiny_model_path), "--speech-commands", str(speech), "--only", "DC offset 5",
            "--only", "48 kHz", "--list-changed", "0"]
    assert probe.main(argv) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    names = [row.split("|")[1].strip() for row in rows]
    assert names[:4] == ["impairment", "clean", "DC offset 5 %", "48 kHz mic, device resampler"]
    assert len([n for n in names if n.startswith(("DC blocker", "running mean", "high-pass", "50 Hz", "60 Hz"))]) == 5
    assert f"{len(items)} testing clips" in out


@pytest.mark.parametrize(("extra", "named"), [(["--only", "no such impairment"], "--only"),
                                              (["--list-changed", "-1"], "--list-changed")])
def test_bad_input_is_one_line_and_exit_code_2(probe, tiny_model_path, speech, capsys, extra, named):
    assert probe.main(["--model", str(tiny_model_path), "--speech-commands", str(speech), *extra]) == 2
    err = capsys.readouterr().err
    assert named in err and err.count("\n") == 1, err


def test_a_missing_folder_is_one_line_and_exit_code_2(probe, tmp_path, capsys):
    assert probe.main(["--speech-commands", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "none" in err and err.count("\n") == 1, err
