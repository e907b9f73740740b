import numpy as np
import pytest

pytest.importorskip("tensorflow")

from edgesense.train.distill import (  # noqa: E402
    CosineDistance, DistillationLoss, pack_targets, soften, target_accuracy)

C = 4


def _student(rng, batch):
    z = rng.normal(size=(batch, C))
    return soften(z, 1.0), z


def test_pack_targets_lays_out_labels_soft_targets_and_weights():
    soft = soften(np.array([[1.0, 0, 0, 0], [0, 2.0, 0, 0]]), 2.0)
    packed = pack_targets(np.array([2, 0]), C, soft, np.array([0.5, 0.0]))
    assert packed.shape == (2, 2 * C + 1)
    np.testing.assert_array_equal(packed[:, :C], [[0, 0, 1, 0], [1, 0, 0, 0]])
    np.testing.assert_allclose(packed[:, C:2 * C], soft)
    np.testing.assert_array_equal(packed[:, -1], [0.5, 0.0])
    assert np.all(pack_targets(np.array([1]), C)[:, C:] == 0)  # no teacher: weight 0


def test_weight_zero_is_cross_entropy_and_weight_one_is_scaled_kl():
    rng = np.random.default_rng(0)
    p, z = _student(rng, 8)
    labels = rng.integers(0, C, size=8)
    teacher = soften(rng.normal(size=(8, C)) * 3, 2.0)
    ce = -np.log(p[np.arange(8), labels])
    loss = DistillationLoss(C, 2.0, reduction=None)
    hard_only = np.asarray(loss(pack_targets(labels, C, teacher, 0.0), p))
    np.testing.assert_allclose(hard_only, ce, rtol=1e-4)
    student_t = soften(z, 2.0)
    kl = np.sum(teacher * (np.log(teacher) - np.log(student_t)), axis=1)
    soft_only = np.asarray(loss(pack_targets(labels, C, teacher, 1.0), p))
    np.testing.assert_allclose(soft_only, 4.0 * kl, rtol=1e-3, atol=1e-6)
    half = np.asarray(loss(pack_targets(labels, C, teacher, 0.5), p))
    np.testing.assert_allclose(half, 0.5 * ce + 2.0 * kl, rtol=1e-3, atol=1e-6)
    # The loss is smallest when the student matches the teacher.
    matched = np.asarray(loss(pack_targets(labels, C, teacher, 1.0), soften(np.log(teacher) * 2.0, 1.0)))
    np.testing.assert_allclose(matched, 0.0, atol=1e-4)


def test_label_smoothing_applies_to_the_hard_labels_and_accuracy_reads_them():
    rng = np.random.default_rng(1)
    p, _ = _student(rng, 5)
    labels = np.array([0, 1, 2, 3, 0])
    smooth = np.asarray(DistillationLoss(C, 2.0, label_smoothing=0.2, reduction=None)(pack_targets(labels, C), p))
    target = np.full((5, C), 0.05)
    target[np.arange(5), labels] += 0.8
    np.testing.assert_allclose(smooth, -np.sum(target * np.log(p), axis=1), rtol=1e-4)
    hits = np.asarray(target_accuracy(C)(pack_targets(labels, C), p))
    np.testing.assert_array_equal(hits, (p.argmax(1) == labels).astype(np.float32))


def test_cosine_distance_is_one_minus_the_cosine_per_row():
    target = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]], np.float32)
    pred = np.array([[2.0, 0.0], [0.0, -1.0], [4.0, -3.0]], np.float32)  # aligned, opposite, orthogonal
    per_row = CosineDistance(reduction=None)(target, pred)
    np.testing.assert_allclose(np.asarray(per_row), [0.0, 2.0, 1.0], atol=1e-6)
    restored = CosineDistance.from_config(CosineDistance(name="embedding_hint").get_config())
    assert restored.name == "embedding_hint"
