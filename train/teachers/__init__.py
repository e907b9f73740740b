"""Pretrained teachers (desktop only): frozen feature models with small heads trained here,
whose outputs the compact student learns from (README.md, "Training the default model").

What the teachers share: :class:`TeacherUnavailable` (a missing package, one line naming what
to install), :func:`installed_file` (a file inside an installed wheel; nothing is downloaded)
how a head is trained (:func:`fit_head`) and :func:`teacher_logits` (a head's logits, kept before its
softmax so that any distillation temperature can be applied).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from edgesense.runtime.speech_embedding import installed_file as device_installed_file

__all__ = ["LOGITS_LAYER", "TeacherUnavailable", "class_weights", "fit_head", "installed_file", "teacher_logits"]

#: The name of a teacher head's logits layer (the layer before its softmax).
LOGITS_LAYER = "teacher_logits"


class TeacherUnavailable(RuntimeError):
    """A teacher's package is not installed (the message names what to install)."""


def installed_file(distribution: str, relative_path: str, *, what: str, hint: str) -> Path:
    """``relative_path`` inside the installed ``distribution``; :class:`TeacherUnavailable` naming
    ``hint`` when the package or the file is missing (the device runtime's lookup)."""
    return device_installed_file(distribution, relative_path, what=what, hint=hint, error=TeacherUnavailable)


def teacher_logits(model, inputs: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The logits ``(N, classes)`` of a head whose layer :data:`LOGITS_LAYER` holds them."""
    import keras

    logits_model = keras.Model(model.input, model.get_layer(LOGITS_LAYER).output)
    return np.asarray(logits_model.predict(inputs, batch_size=batch_size, verbose=0), np.float32)


def class_weights(labels: np.ndarray, num_classes: int, class_scale: Mapping[int, float] | None = None) -> np.ndarray:
    """Per-class weights ``(num_classes,)`` that make every present class weigh the same in total
    (``class_scale`` multiplies the classes it names)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float32)
    per_class = counts.sum() / (np.maximum(counts, 1) * np.count_nonzero(counts))
    for label, scale in (class_scale or {}).items():
        per_class[label] *= scale
    return per_class


def fit_head(model, x: np.ndarray, labels: np.ndarray, num_classes: int, *, epochs: int, batch_size: int,
             learning_rate: float, validation: tuple[np.ndarray, np.ndarray] | None = None,
             class_scale: Mapping[int, float] | None = None):
    """Train a head (softmax output) with Adam and class-balanced sample weights; returns it
    with the weights of its best validation epoch when ``validation`` is given. ``class_scale``
    multiplies the balanced weight of the classes it names (``{unknown: 3.0}``: that class weighs
    three)."""
    import keras

    weights = class_weights(labels, num_classes, class_scale)[labels]
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  weighted_metrics=["accuracy"])
    callbacks = []
    if validation is not None:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=epochs,
                                                       restore_best_weights=True))
    model.fit(x, labels, sample_weight=weights, epochs=epochs, batch_size=batch_size, validation_data=validation,
              callbacks=callbacks, verbose=0, shuffle=True)
    return model
