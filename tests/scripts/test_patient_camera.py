"""scripts/patient_camera.py: the pack of the split's photos always; the teacher, the student and its
port into the Keras model with the [vision-teacher] extra (PyTorch) and TensorFlow."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from conftest import load_script
from datagen import make_scenes, make_speech_commands, write_train_yaml

from edgesense.train.data import load_image_folder, load_images

#: Mean absolute difference a JPEG round trip of these noisy photos stays within (0-255).
JPEG_TOLERANCE = 8.0


@pytest.fixture(scope="module")
def patient_camera():
    return load_script("patient_camera")


def test_the_pack_holds_the_splits_training_and_validation_photos_and_no_test_photo(patient_camera, tmp_path):
    scenes = make_scenes(tmp_path / "scenes", per_class=20)
    config = write_train_yaml(tmp_path / "train.yaml", speech=None, scenes=scenes)
    patient_camera.main(["pack", "--config", str(config), "--out", str(tmp_path / "pack.npz")])
    data = patient_camera._unpack(tmp_path / "pack.npz")
    index = load_image_folder(scenes)
    split = index.split(validation_percent=20, testing_percent=20)  # write_train_yaml's percentages
    assert list(data["classes"]) == list(index.classes)
    for name in ("training", "validation"):
        expected, _ = load_images(split[name], (patient_camera.PACK_SIZE_PX, patient_camera.PACK_SIZE_PX))
        np.testing.assert_array_equal(data[f"{name}_labels"], index.label_ids(split[name]))
        assert data[f"{name}_photos"].shape == expected.shape and len(expected) > 0
        assert np.abs(data[f"{name}_photos"].astype(float) - expected).mean() < JPEG_TOLERANCE
    assert len(data["training_labels"]) + len(data["validation_labels"]) < len(index.items)  # the test photos stay


def test_pack_of_a_config_without_scenes_is_one_line_naming_the_field(patient_camera, tmp_path, capsys):
    """A speech-only recipe has no photos to pack: it stopped on pathlib's TypeError (a traceback)."""
    config = write_train_yaml(tmp_path / "train.yaml", speech=make_speech_commands(tmp_path / "sc"), scenes=None)
    assert patient_camera.main(["pack", "--config", str(config), "--out", str(tmp_path / "pack.npz")]) == 2
    err = capsys.readouterr().err
    assert err == (f"patient_camera pack: --config {config}: data.scenes: expected the scene photo folder whose "
                   "split is packed, got none\n")
    assert not (tmp_path / "pack.npz").exists()


def test_bad_input_is_one_line_and_exit_code_2(patient_camera, tmp_path, capsys):
    pytest.importorskip("keras")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("the user's")
    run = tmp_path / "run"
    run.mkdir()
    with zipfile.ZipFile(run / "model.keras", "w") as archive:  # what --init-from style checks open
        archive.writestr("model.weights.h5", b"")
    cases = [(["import", "--run", str(tmp_path / "missing"), "--weights", "w.npz", "--out", str(tmp_path / "o")],
              "--run"),
             (["import", "--run", str(run), "--weights", "w.npz", "--out", str(tmp_path / "taken")], "--out"),
             (["pack", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "pack.npz")],
              "missing.yaml")]
    for argv, named in cases:
        assert patient_camera.main(argv) == 2
        err = capsys.readouterr().err
        assert named in err and err.count("\n") == 1, err
    assert (tmp_path / "taken" / "notes.txt").read_text() == "the user's"


@pytest.mark.slow
def test_the_student_trained_in_pytorch_is_the_keras_models_camera_path(patient_camera, tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("tensorflow")
    try:
        patient_camera._weights_file()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    import keras

    import edgesense.train.model  # noqa: F401  (the custom layers)
    from edgesense.train.config import load_train_config
    from edgesense.train.trainer import train

    speech, scenes = make_speech_commands(tmp_path / "speech", speakers=12, per_speaker=1), \
        make_scenes(tmp_path / "scenes", per_class=20)
    config = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes, epochs=1, steps_per_epoch=2)
    train(load_train_config(config), tmp_path / "run", verbose=0)
    patient_camera.main(["pack", "--config", str(config), "--out", str(tmp_path / "pack.npz")])
    student = tmp_path / "student"
    patient_camera.main(["train", "--pack", str(tmp_path / "pack.npz"), "--out", str(student),
                         "--channels", "8", "16", "16", "--strides", "2", "2", "2", "--embedding-dim", "16",
                         "--teacher-px", "64", "--teacher-epochs", "1", "--batch", "8", "--student-minutes", "0.05",
                         "--max-epochs", "2", "--eval-every", "1"])
    weights = np.load(student / "student.npz")
    assert weights["probe_logits"].shape == (len(weights["probe_photos"]), 3)
    # The import checks the probe's logits against PyTorch's and refuses a mismatch.
    patient_camera.main(["import", "--run", str(tmp_path / "run"), "--weights", str(student / "student.npz"),
                         "--out", str(tmp_path / "imported")])
    model = keras.saving.load_model(tmp_path / "imported" / "model.keras", compile=False)
    kernel = model.get_layer("image_encoder").get_layer("image_stem_conv").get_weights()[0]
    np.testing.assert_array_equal(kernel, weights["image_stem_conv/0"])
    capsys.readouterr()
    assert patient_camera.main(["import", "--run", str(tmp_path / "run"), "--weights", str(student / "student.npz"),
                                "--out", str(tmp_path / "imported")]) == 2
    assert "--out" in capsys.readouterr().err  # the import never writes over a folder
    wrong = dict(weights)
    wrong["probe_logits"] = weights["probe_logits"] + 1.0  # as if the layouts disagreed
    np.savez(tmp_path / "wrong.npz", **wrong)
    assert patient_camera.main(["import", "--run", str(tmp_path / "run"), "--weights", str(tmp_path / "wrong.npz"),
                                "--out", str(tmp_path / "wrong")]) == 2
    assert "differ from PyTorch's" in capsys.readouterr().err
    assert not (tmp_path / "wrong").exists()  # nothing half-written is left
