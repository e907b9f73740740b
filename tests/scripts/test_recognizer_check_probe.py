"""scripts/recognizer_check_probe.py: what it reads never holds a test speaker, and its mixes have the SNR
asked (the recognizer itself, PyPI pocketsphinx, is not a project dependency)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_script
from datagen import assert_no_test_speaker_is_read


@pytest.fixture(scope="module")
def probe():
    return load_script("recognizer_check_probe")


def test_clips_of_test_speakers_are_never_read(probe, tmp_path):
    assert_no_test_speaker_is_read(probe._clips, probe.SPLIT, tmp_path)


@pytest.mark.parametrize("snr_db", [5.0, 10.0, 20.0])
def test_mix_pads_the_clip_and_adds_noise_at_the_snr_asked(probe, snr_db):
    rng = np.random.default_rng(0)
    rate = probe.SAMPLE_RATE_HZ
    clip = (0.3 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)).astype(np.float32)
    noise = rng.normal(scale=0.1, size=10 * rate).astype(np.float32)
    pad = int(probe.PAD_S * rate)
    padded = np.pad(clip, (pad, pad))

    quiet = probe._mix(clip, noise, None, rng)
    assert quiet.dtype == np.int16 and quiet.size == padded.size
    np.testing.assert_allclose(quiet / probe.INT16_FULL_SCALE, padded, atol=1.0 / probe.INT16_FULL_SCALE)

    mixed = probe._mix(clip, noise, snr_db, rng).astype(np.float64) / probe.INT16_FULL_SCALE
    residual = mixed - padded
    measured_db = 10 * np.log10(np.mean(padded ** 2) / np.mean(residual ** 2))
    assert abs(measured_db - snr_db) < 0.1
