"""edgesense.bench.streaming: which talk may choose a model's operating point."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from edgesense.bench.streaming import learned_other_speech
from edgesense.runtime.model import EdgeModel

BUNDLED_MODEL = Path(__file__).resolve().parents[2] / "models" / "edgesense.tflite"


def test_a_model_that_learned_talk_is_told_apart_by_its_metadata(tiny_model_path):
    assert learned_other_speech(EdgeModel.load(BUNDLED_MODEL))  # v18 and v22c learned from 895 windows of talk
    assert not learned_other_speech(EdgeModel.load(tiny_model_path))
    assert learned_other_speech(SimpleNamespace(metadata={"data": {"other_speech_windows": 1276}}))
    assert not learned_other_speech(SimpleNamespace(metadata={"data": {"other_speech_windows": 0}}))
    assert not learned_other_speech(SimpleNamespace(metadata={}))
