"""Distillation: the student's command head learns from hard labels and a teacher's soft targets.

Per example, ``(1 - a) * CE(label, p) + a * T^2 * KL(softmax(t / T) || softmax(z / T))`` with
the student's logits ``z`` (recovered from its softmax output: ``log p`` differs from ``z`` by a
constant per row, which a softmax ignores), the teacher's logits ``t``, temperature ``T`` and
``a`` the example's distillation weight (0 for known negatives and rows without a teacher
output). Targets travel packed in one array ``[one-hot | teacher probabilities at T | a]`` so
that Keras' per-output loss, sample weights and batching need no change.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

__all__ = ["CosineDistance", "DistillationLoss", "pack_targets", "soften", "target_accuracy"]

_EPS = 1e-7


def soften(logits: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(logits / temperature)`` row-wise, float32."""
    z = np.asarray(logits, np.float64) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def pack_targets(labels: np.ndarray, num_classes: int, soft: np.ndarray | None = None,
                 weight: np.ndarray | float = 0.0) -> np.ndarray:
    """``(B, 2 * num_classes + 1)`` float32: one-hot labels, soft targets (zeros when None) and
    the per-row distillation weight (forced to 0 where ``soft`` is None)."""
    labels = np.asarray(labels, np.int64)
    out = np.zeros((labels.size, 2 * num_classes + 1), np.float32)
    out[np.arange(labels.size), labels] = 1.0
    if soft is not None:
        out[:, num_classes:2 * num_classes] = soft
        out[:, -1] = np.broadcast_to(np.asarray(weight, np.float32), labels.shape)
    return out


@keras.saving.register_keras_serializable(package="edgesense")
class DistillationLoss(keras.losses.Loss):
    """A Keras loss over packed targets (:func:`pack_targets`) and the student's probabilities;
    ``label_smoothing`` applies to the hard labels."""

    def __init__(self, num_classes: int, temperature: float, label_smoothing: float = 0.0,
                 name: str = "distillation", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes, self.temperature = int(num_classes), float(temperature)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        c, t = self.num_classes, self.temperature
        hard, soft, weight = y_true[:, :c], y_true[:, c:2 * c], y_true[:, 2 * c]
        hard = hard * (1.0 - self.label_smoothing) + self.label_smoothing / c
        log_p = ops.log(ops.clip(y_pred, _EPS, 1.0))
        hard_loss = -ops.sum(hard * log_p, axis=-1)
        student_t = ops.log_softmax(log_p / t, axis=-1)
        kl = ops.sum(soft * (ops.log(ops.clip(soft, _EPS, 1.0)) - student_t), axis=-1)
        return (1.0 - weight) * hard_loss + weight * (t * t) * kl

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "temperature": self.temperature,
                "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="edgesense")
class CosineDistance(keras.losses.Loss):
    """``1 - cos(y_true, y_pred)`` per row: 0 when they point the same way, 2 when opposite. The
    gradient of Keras' ``CosineSimilarity`` loss (``-cos``), without its negative figures in the log."""

    def __init__(self, name: str = "cosine_distance", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return 1.0 + keras.losses.cosine_similarity(y_true, y_pred, axis=-1)


def target_accuracy(num_classes: int, name: str = "accuracy"):
    """A Keras metric function named ``name``: top-1 of the student against the packed targets'
    hard labels."""
    def accuracy(y_true, y_pred):
        return ops.cast(ops.argmax(y_true[:, :num_classes], axis=-1) == ops.argmax(y_pred, axis=-1), "float32")

    accuracy.__name__ = name
    return accuracy
