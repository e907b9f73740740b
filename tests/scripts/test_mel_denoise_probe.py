"""scripts/mel_denoise_probe.py: it never reads a test speaker, its suppression takes a steady floor down
and leaves what stands above it, and its streams hold the clip at the SNR and level asked."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_script
from datagen import assert_no_test_speaker_is_read


BINS = 32
FRAMES = 400
FLOOR_DB = 40.0


@pytest.fixture(scope="module")
def probe():
    return load_script("mel_denoise_probe")


def test_clips_of_test_speakers_are_never_read(probe, tmp_path):
    assert_no_test_speaker_is_read(probe._clips, probe.SPLIT, tmp_path)


@pytest.mark.parametrize(("over", "floor_gain"), [(1.0, 0.1), (2.0, 0.05)])
def test_suppression_takes_a_steady_floor_down_and_keeps_what_stands_above_it(probe, over, floor_gain):
    rng = np.random.default_rng(0)
    power = 10 ** (FLOOR_DB / 10) * rng.exponential(size=(FRAMES, BINS))  # noise: exponential power per bin
    burst = slice(300, 330)
    power[burst, :8] *= 10 ** (30 / 10)  # a word 30 dB above the floor in the low channels
    mel_db = 10 * np.log10(power)
    out = probe.suppress(mel_db, over=over, floor_gain=floor_gain)
    assert out.shape == mel_db.shape and out.dtype == np.float32
    taken = mel_db - out
    assert np.all(taken >= -1e-4) and np.all(taken <= -10 * np.log10(floor_gain) + 1e-4)
    steady = taken[probe.HISTORY_FRAMES:burst.start]  # the floor known: the noise loses over half its power
    assert np.median(steady) > 3.0
    assert np.median(taken[burst, :8]) < 0.3  # the word stays within a fraction of a dB


def test_suppression_looks_back_only(probe):
    rng = np.random.default_rng(1)
    mel_db = FLOOR_DB + 5 * rng.standard_normal((FRAMES, BINS))
    head = probe.suppress(mel_db[:250], over=1.0, floor_gain=0.1)
    whole = probe.suppress(mel_db, over=1.0, floor_gain=0.1)
    np.testing.assert_allclose(whole[:250], head, atol=1e-5)


@pytest.mark.parametrize("snr_db", [5.0, 20.0])
def test_the_stream_holds_the_clip_at_the_snr_and_level_asked(probe, snr_db):
    rate = probe.SAMPLE_RATE_HZ
    clip = (0.3 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)).astype(np.float32)
    noise = [np.random.default_rng(2).normal(scale=0.1, size=10 * rate).astype(np.float32)]
    lead, tail = int(probe.LEAD_S * rate), int(probe.TAIL_S * rate)
    clean = probe.stream(clip, noise, None, np.random.default_rng(3))
    assert clean.size == lead + rate + tail and not clean[:lead].any() and not clean[-tail:].any()
    level_db = 10 * np.log10(np.mean(clean[lead:lead + rate] ** 2))
    assert probe.LEVEL_DBFS[0] - 0.01 <= level_db <= probe.LEVEL_DBFS[1] + 0.01

    noisy = probe.stream(clip, noise, snr_db, np.random.default_rng(3)).astype(np.float64)
    speech = clean.astype(np.float64)  # the same draw of the level: the same clip under the noise
    noise_part = noisy - speech
    measured_db = 10 * np.log10(np.mean(speech[lead:lead + rate] ** 2) / np.mean(noise_part[lead:lead + rate] ** 2))
    assert abs(measured_db - snr_db) < 0.3
