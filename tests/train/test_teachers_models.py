"""EdgeSense model files as one ensemble teacher, run through the device's own interpreter."""

import threading

import numpy as np
import pytest

from edgesense.frontend.audio import AudioFrontendOptions
from edgesense.runtime.model import EdgeModel
from edgesense.shipped import MODELS, shipped_path
from edgesense.train.teachers.models import ModelEnsembleTeacher
from edgesense.types import DEFAULT_COMMAND_LABELS

BUNDLED = shipped_path(MODELS, "edgesense.tflite")


def _windows(count: int, seed: int = 0) -> np.ndarray:
    """Log-mel windows of the shape every model here takes, at the level of quiet sound."""
    shape = AudioFrontendOptions().feature_shape
    return np.random.default_rng(seed).normal(-8.0, 3.0, (count, *shape)).astype(np.float32)


def _own_scores(path, windows: np.ndarray) -> np.ndarray:
    model = EdgeModel.load(path)
    return np.stack([model.fuse(model.encode_audio(w), None)[0] for w in windows]).astype(np.float64)


def test_the_teacher_scores_each_window_with_the_mean_of_its_models(tiny_model_path):
    windows = _windows(6)
    teacher = ModelEnsembleTeacher([tiny_model_path, BUNDLED], command_labels=DEFAULT_COMMAND_LABELS,
                                   audio_frontend=AudioFrontendOptions())
    scores = teacher.probabilities(windows)
    tiny, bundled = _own_scores(tiny_model_path, windows), _own_scores(BUNDLED, windows)
    mean = (tiny + bundled) / 2
    np.testing.assert_allclose(scores, mean / mean.sum(axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-6)
    assert scores.dtype == np.float32 and scores.shape == (6, len(DEFAULT_COMMAND_LABELS))
    for alone in (tiny, bundled):  # neither model alone: both count
        assert np.abs(scores - alone / alone.sum(axis=1, keepdims=True)).max() > 1e-3
    labels = scores.argmax(axis=1)
    assert teacher.accuracy(windows, labels) == 1.0 and teacher.accuracy(windows, (labels + 1) % 12) == 0.0


def test_each_thread_scores_with_interpreters_of_its_own(tiny_model_path):
    windows = _windows(4, seed=1)
    teacher = ModelEnsembleTeacher([tiny_model_path], command_labels=DEFAULT_COMMAND_LABELS,
                                   audio_frontend=AudioFrontendOptions())
    here = teacher.probabilities(windows)
    found = {}

    def score(name):
        found[name] = (teacher.probabilities(windows), teacher._models())

    threads = [threading.Thread(target=score, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for scores, models in found.values():
        np.testing.assert_array_equal(scores, here)
    assert found["a"][1][0] is not found["b"][1][0] and found["a"][1][0] is not teacher._models()[0]


def test_a_teacher_model_that_does_not_fit_the_run_is_refused_naming_it(tiny_model_path, tmp_path):
    options = AudioFrontendOptions()
    with pytest.raises(ValueError, match=r"^data.teacher_models: expected at least one model file, got none$"):
        ModelEnsembleTeacher([], command_labels=DEFAULT_COMMAND_LABELS, audio_frontend=options)
    missing = tmp_path / "gone.tflite"
    with pytest.raises(ValueError, match=rf"^data.teacher_models: {missing}: no such model file$"):
        ModelEnsembleTeacher([missing], command_labels=DEFAULT_COMMAND_LABELS, audio_frontend=options)
    with pytest.raises(ValueError, match=r"tiny_int8.tflite: command labels _silence_, _unknown_, yes, .*; "
                                         r"expected this run's _silence_, _unknown_, yes, no$"):
        ModelEnsembleTeacher([tiny_model_path], command_labels=DEFAULT_COMMAND_LABELS[:4], audio_frontend=options)
    with pytest.raises(ValueError, match=r"audio frontend mismatch \(num_mel_bins: model has 40, expected 32\)"):
        ModelEnsembleTeacher([tiny_model_path], command_labels=DEFAULT_COMMAND_LABELS,
                             audio_frontend=AudioFrontendOptions(num_mel_bins=32))
