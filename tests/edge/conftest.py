"""Shared fixtures for the device-side tests: real media files written into tmp_path."""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import pytest


def _write_wav(path: Path, samples: np.ndarray, sample_rate_hz: int) -> Path:
    """Write int16 samples, shape (n,) mono or (n, channels), as a PCM WAV."""
    data = np.asarray(samples, dtype=np.int16)
    channels = 1 if data.ndim == 1 else data.shape[1]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(sample_rate_hz)
        w.writeframes(data.astype("<i2").tobytes())
    return path


def _write_video(path: Path, images: Sequence[np.ndarray], fps: float, fourcc: str) -> Path:
    """Encode BGR uint8 images with cv2.VideoWriter (really encoded, really decodable)."""
    height, width = images[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), (width, height))
    if not writer.isOpened():
        pytest.skip(f"this OpenCV cannot encode {fourcc}")
    for image in images:
        writer.write(image)
    writer.release()
    return path


def _level_frames(count: int, width_px: int = 64, height_px: int = 48, step: int = 20) -> list[np.ndarray]:
    """Flat grey frames whose levels (0, step, 2*step, ...) identify the frame after lossy coding."""
    return [np.full((height_px, width_px, 3), (i * step) % 256, dtype=np.uint8) for i in range(count)]


@pytest.fixture
def make_wav(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str, samples: np.ndarray, sample_rate_hz: int = 16000) -> Path:
        return _write_wav(tmp_path / name, samples, sample_rate_hz)

    return make


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str, images: Sequence[np.ndarray], fps: float = 25.0, fourcc: str = "MJPG") -> Path:
        return _write_video(tmp_path / name, images, fps, fourcc)

    return make


@pytest.fixture
def level_frames() -> Callable[..., list[np.ndarray]]:
    return _level_frames
