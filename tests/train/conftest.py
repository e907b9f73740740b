"""Fixtures for train/ tests: a tiny Speech Commands folder in tmp_path, and the shared real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgesense.frontend.wav import write_wav

RATE = 16000
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def tone(freq_hz: float, seconds: float = 1.0, amp: float = 0.3, rate: int = RATE) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq_hz * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


def write_tone(path: Path, freq_hz: float, seconds: float = 1.0, rate: int = RATE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_wav(path, tone(freq_hz, seconds, rate=rate), rate)


@pytest.fixture()
def speech_root(tmp_path: Path) -> Path:
    """A miniature Speech Commands folder mixing both layouts.

    yes/ (3 speakers), no/ (2), bed/ (another word -> _unknown_), _unknown_/ (test-set naming),
    _silence_/ (2 clips), _background_noise_/ (one 3.5 s recording).
    """
    root = tmp_path / "sc"
    for speaker in ("aaaa1111", "bbbb2222", "cccc3333"):
        write_tone(root / "yes" / f"{speaker}_nohash_0.wav", 500)
    write_tone(root / "yes" / "aaaa1111_nohash_1.wav", 520)
    for speaker in ("aaaa1111", "dddd4444"):
        write_tone(root / "no" / f"{speaker}_nohash_0.wav", 700)
    write_tone(root / "bed" / "eeee5555_nohash_0.wav", 900)
    write_tone(root / "_unknown_" / "house_ffff6666_nohash_2.wav", 1100)
    write_tone(root / "_silence_" / "1024.wav", 60)
    write_tone(root / "_silence_" / "77.wav", 60)
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(int(RATE * 3.5))).astype(np.float32)
    (root / "_background_noise_").mkdir()
    write_wav(root / "_background_noise_" / "white_noise.wav", noise, RATE)
    (root / "README.md").write_text("not a folder")
    return root


@pytest.fixture()
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not present at {SHARED_DATA}")
    return SHARED_DATA
