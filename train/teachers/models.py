"""EdgeSense model files as one teacher: an ensemble of deployed models taught to one student.

Models of the same size trained apart (other seeds, other fine-tunes) fire falsely on different
stretches of talk, so the mean of their command probabilities is a better detector than any one
of them (models/README.md, *Levers tried*). :class:`ModelEnsembleTeacher` runs int8 files written
by ``edgesense quantize`` through the device's own interpreter, on whatever window a training step
draws, so the student learns the ensemble's scores on talk, background and partial words too, not
only on the labelled clips.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgesense.frontend.audio import AudioFrontendOptions
from edgesense.runtime.model import EdgeModel

__all__ = ["ModelEnsembleTeacher"]


class ModelEnsembleTeacher:
    """The mean command probabilities of ``paths`` (int8 EdgeSense files), camera absent.

    Every file must name ``command_labels`` in the same order and compute ``audio_frontend``'s
    features; otherwise :class:`ValueError` names the file. Each calling thread gets interpreters
    of its own (LiteRT interpreters are not shared across threads).
    """

    def __init__(self, paths: Sequence[str | Path], *, command_labels: Sequence[str],
                 audio_frontend: AudioFrontendOptions, where: str = "data.teacher_models") -> None:
        if not paths:
            raise ValueError(f"{where}: expected at least one model file, got none")
        self.paths = tuple(str(p) for p in paths)
        self.command_labels = tuple(command_labels)
        self.audio_frontend = audio_frontend
        self._where = where
        self._local = threading.local()
        self._models()  # load (and check) every file once, now

    def _models(self) -> list[EdgeModel]:
        models = getattr(self._local, "models", None)
        if models is None:
            models = [self._load(path) for path in self.paths]
            self._local.models = models
        return models

    def _load(self, path: str) -> EdgeModel:
        if not Path(path).is_file():
            raise ValueError(f"{self._where}: {path}: no such model file")
        try:
            model = EdgeModel.load(path, expected_audio_frontend=self.audio_frontend)
        except ValueError as exc:
            raise ValueError(f"{self._where}: {exc}") from None
        if model.command_labels != self.command_labels:
            raise ValueError(f"{self._where}: {path}: command labels {', '.join(model.command_labels)}; expected "
                             f"this run's {', '.join(self.command_labels)}")
        return model

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Log-mel windows ``(N, frames, bins)`` -> the models' mean command probabilities ``(N, C)``,
        float32, each row summing to 1."""
        features = np.asarray(features, np.float32)
        models = self._models()
        out = np.zeros((features.shape[0], len(self.command_labels)), np.float64)
        for model in models:
            for i, window in enumerate(features):
                out[i] += model.fuse(model.encode_audio(window), None)[0]
        out /= np.maximum(out.sum(axis=1, keepdims=True), np.finfo(np.float32).tiny)
        return out.astype(np.float32)

    def accuracy(self, features: np.ndarray, labels: np.ndarray) -> float:
        """Top-1 accuracy of the mean probabilities on ``features`` against ``labels``."""
        labels = np.asarray(labels)
        if not labels.size:
            return float("nan")
        return float(np.mean(self.probabilities(features).argmax(axis=1) == labels))
