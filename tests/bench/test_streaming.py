"""edgesense.bench.streaming: which talk may choose a model's operating point; the streaming-cost breakdown."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgesense.bench.streaming import BREAKDOWN_OFFSETS_MS, cost_breakdown, learned_other_speech
from edgesense.bench.streams import StreamOptions, utterance
from edgesense.frontend.audio import AudioFrontendOptions
from edgesense.recognition.commands import CommandRecognizerOptions
from edgesense.runtime.model import EdgeModel

BUNDLED_MODEL = Path(__file__).resolve().parents[2] / "models" / "edgesense.tflite"


def test_a_model_that_learned_talk_is_told_apart_by_its_metadata(tiny_model_path):
    assert learned_other_speech(EdgeModel.load(BUNDLED_MODEL))  # v18 and v22c learned from 895 windows of talk
    assert not learned_other_speech(EdgeModel.load(tiny_model_path))
    assert learned_other_speech(SimpleNamespace(metadata={"data": {"other_speech_windows": 1276}}))
    assert not learned_other_speech(SimpleNamespace(metadata={"data": {"other_speech_windows": 0}}))
    assert not learned_other_speech(SimpleNamespace(metadata={}))


class _ConstantModel:
    """Scores every window the same: ``yes`` 0.9, ``no`` 0.1."""

    command_labels = ("_silence_", "_unknown_", "yes", "no")
    audio_frontend = AudioFrontendOptions()

    def __init__(self) -> None:
        self.windows = 0

    def encode_audio(self, features):
        assert features.shape == self.audio_frontend.feature_shape
        self.windows += 1
        return features

    def fuse(self, audio, image):
        assert image is None
        return np.array([0.0, 0.0, 0.9, 0.1], np.float32), None


def test_the_cost_breakdown_scores_every_word_at_every_offset_against_its_threshold():
    sr = AudioFrontendOptions().sample_rate_hz
    tone = np.zeros(sr, np.float32)
    tone[4000:9000] = 0.3 * np.sin(np.arange(5000) * 0.2)
    words = [utterance(tone, label, f"{label}{k}.wav", sr) for k, label in enumerate(["yes", "yes", "no", "go"])]
    model = _ConstantModel()
    rows = cost_breakdown(model, words, StreamOptions(seed=1), noise=[],
                          recognizer=CommandRecognizerOptions(threshold=0.85, release_threshold=0.3))
    assert [r["offset_ms"] for r in rows] == list(BREAKDOWN_OFFSETS_MS)
    assert model.windows == 3 * len(BREAKDOWN_OFFSETS_MS)
    # "go" is not one of the model's words; "yes" is named right twice of three words, above 0.85 both times.
    assert all(r["words"] == 3 and r["accuracy"] == pytest.approx(2 / 3, abs=1e-4)
               and r["confident"] == pytest.approx(2 / 3, abs=1e-4) for r in rows)
    stricter = CommandRecognizerOptions(threshold=0.85, class_thresholds={"yes": 0.95}, release_threshold=0.3)
    assert all(r["confident"] == 0.0 for r in cost_breakdown(model, words, StreamOptions(seed=1), noise=[],
                                                               recognizer=stricter))
