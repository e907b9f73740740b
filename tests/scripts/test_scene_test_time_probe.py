"""scripts/scene_test_time_probe.py: the mirror probe on a real int8 model, the size probe on a real
run folder, and bad input as one line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import TINY_SCENE_LABELS, load_script, make_scene_images
from datagen import make_scenes, make_speech_commands, write_train_yaml

from edgesense.frontend.image import preprocess_frame
from edgesense.runtime.model import EdgeModel

PHOTOS_PER_CLASS = 40


@pytest.fixture(scope="module")
def probe():
    return load_script("scene_test_time_probe")


@pytest.fixture(scope="module")
def tiny_scenes(tmp_path_factory) -> Path:
    """Photos of the tiny model's scene classes, CLASS/NAME.png."""
    root = tmp_path_factory.mktemp("tiny_scenes")
    images, labels = make_scene_images(PHOTOS_PER_CLASS, np.random.default_rng(3))
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / TINY_SCENE_LABELS[label]
        folder.mkdir(exist_ok=True)
        cv2.imwrite(str(folder / f"photo_{i:03d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return root


def test_the_mirror_probe_names_the_models_validation_photos_as_it_is_and_mirrored(probe, tiny_model_path,
                                                                                    tiny_scenes, capsys):
    assert probe.main(["--model", str(tiny_model_path), "--scenes", str(tiny_scenes)]) == 0
    report = json.loads(capsys.readouterr().out)
    model = EdgeModel.load(tiny_model_path)
    items = probe.split_items(tiny_scenes, probe.SplitSpec.from_metadata(model.metadata, None), "validation")
    assert report["photos"] == len(items) > 0
    # By hand, the way edgesense bench names a photo with the microphone absent.
    correct = {"as_is": 0, "mirrored": 0, "mean_of_both": 0}
    for item in items:
        frame = preprocess_frame(cv2.imread(str(item.path)), model.image_frontend)
        plain = model.fuse(None, model.encode_image(frame))[1]
        mirrored = model.fuse(None, model.encode_image(np.ascontiguousarray(frame[:, ::-1])))[1]
        truth = model.scene_labels.index(item.label)
        for name, scores in (("as_is", plain), ("mirrored", mirrored), ("mean_of_both", plain + mirrored)):
            correct[name] += int(np.argmax(scores) == truth)
    assert report["mirror"] == pytest.approx({name: n / len(items) for name, n in correct.items()})


def test_bad_input_is_one_line_and_exit_code_2(probe, tiny_model_path, tmp_path, capsys):
    other = make_scenes(tmp_path / "other", per_class=4)  # classes the tiny model does not have
    cases = [(["--model", str(tiny_model_path), "--scenes", str(other)], "--scenes"),
             (["--model", str(tiny_model_path), "--scenes", str(other), "--sizes", "64"], "--sizes"),
             (["--model", str(tmp_path / "none.tflite"), "--scenes", str(other)], "none.tflite"),
             # --run without --sizes was silently unused: the mirror probe's report alone, no size probe
             (["--model", str(tiny_model_path), "--scenes", str(other), "--run", str(tmp_path)],
              "--run: acts only with --sizes")]
    for argv, named in cases:
        assert probe.main(argv) == 2
        err = capsys.readouterr().err
        assert named in err and err.count("\n") == 1, err


@pytest.mark.slow
def test_the_size_probe_rebuilds_the_runs_float_model_with_its_own_weights(probe, tmp_path):
    import keras

    from edgesense.train.config import load_train_config
    from edgesense.train.data import load_images
    from edgesense.train.trainer import predict_heads, train

    speech = make_speech_commands(tmp_path / "speech", speakers=12, per_speaker=1)
    scenes = make_scenes(tmp_path / "scenes", per_class=20)
    config = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes, epochs=1, steps_per_epoch=2)
    train(load_train_config(config), tmp_path / "run", verbose=0)
    items = probe.split_items(scenes, probe.SplitSpec(image_validation_percent=20, image_testing_percent=20),
                              "validation")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    labels = np.array([info["labels"]["scene"].index(item.label) for item in items])
    trained_px = info["image_frontend"]["height_px"]
    # At the size it was trained for, the rebuilt model is the trained one, score for score.
    trained = keras.saving.load_model(tmp_path / "run" / "model.keras", compile=False)
    photos, _ = load_images(items, (trained_px, trained_px))
    expected = predict_heads(trained, images=photos)["scene"]
    rebuilt = predict_heads(probe.rebuilt_model(tmp_path / "run", trained_px), images=photos)["scene"]
    np.testing.assert_allclose(rebuilt, expected, atol=1e-5)
    figures = probe.size_probe(tmp_path / "run", items, labels, [trained_px, trained_px + 32])
    assert figures[str(trained_px)] == pytest.approx(float(np.mean(expected.argmax(axis=1) == labels)))
    assert 0.0 <= figures[str(trained_px + 32)] <= 1.0
