"""Regenerates the golden arrays beside this file. Run it only when the frontend's
output is meant to change, and say so in the commit:

    .venv/bin/python tests/data/make_golden.py
"""

import wave
from pathlib import Path

import cv2
import numpy as np

from edgesense.frontend.audio import AudioFrontendOptions, log_mel_spectrogram
from edgesense.frontend.image import ImageFrontendOptions, preprocess_frame

HERE = Path(__file__).parent


def read_pcm16(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


if __name__ == "__main__":
    samples = read_pcm16(HERE / "golden_yes.wav")
    np.save(HERE / "golden_yes_features.npy", log_mel_spectrogram(samples, AudioFrontendOptions()))
    frame = cv2.imread(str(HERE / "golden_scene.png"), cv2.IMREAD_COLOR)
    np.save(HERE / "golden_scene_input.npy", preprocess_frame(frame, ImageFrontendOptions()).astype(np.uint8))
