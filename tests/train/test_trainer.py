import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from datagen import make_scenes, make_speech_commands, write_train_yaml  # noqa: E402
from train.config import load_train_config  # noqa: E402
from train.trainer import train  # noqa: E402


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return (make_speech_commands(root / "speech", speakers=12, per_speaker=1),
            make_scenes(root / "scenes", per_class=20))


@pytest.mark.slow
def test_training_writes_a_complete_run_folder_and_learns(tmp_path, tiny_data):
    speech, scenes = tiny_data
    config = load_train_config(write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes,
                                                epochs=3, steps_per_epoch=8))
    metrics = train(config, tmp_path / "run", verbose=0)
    run = tmp_path / "run"
    for name in ("model.keras", "run.json", "metrics.json", "calibration.npz", "validation.npz", "curves.png",
                 "history.csv", "model_summary.txt"):
        assert (run / name).is_file(), name
    info = json.loads((run / "run.json").read_text())
    assert info["labels"]["command"] == ["_silence_", "_unknown_", "yes", "no", "up", "down"]
    assert info["labels"]["scene"] == ["beach", "forest", "street"]
    assert info["audio_frontend"]["num_mel_bins"] == 40
    assert info["params"]["total"] > 0 and info["macs"]["total"] > 0
    calibration = np.load(run / "calibration.npz")
    assert calibration["audio_features"].shape[1:] == (49, 40) and calibration["image"].dtype == np.uint8
    validation = np.load(run / "validation.npz")
    assert validation["command_label"].shape[0] == validation["audio_features"].shape[0] > 0
    # Colours are trivially separable: three epochs must clear chance (1/3) by far.
    assert metrics["scene_accuracy"] > 0.6
    assert metrics["command_accuracy"] is not None and metrics["test_scene_accuracy"] is not None


def test_config_errors_name_the_field(tmp_path, tiny_data):
    speech, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes, extra="colour: red\n")
    with pytest.raises(ValueError, match=r"train.yaml: colour: unknown field"):
        load_train_config(path)
    path.write_text(path.read_text().replace("colour: red\n", "").replace("epochs: 2", "epochs: two"))
    with pytest.raises(ValueError, match=r"train.epochs: expected an integer, got 'two'"):
        load_train_config(path)
    path = write_train_yaml(tmp_path / "missing.yaml", speech=tmp_path / "nowhere", scenes=None)
    with pytest.raises(ValueError, match=r"data.speech_commands: no such file or folder"):
        load_train_config(path)


def test_cli_reports_a_bad_config_in_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: {}\nmodel: {fusion: sum}\n")
    out = subprocess.run([sys.executable, "-m", "edge.cli", "train", "--config", str(path)],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "bad.yaml" in out.stderr


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tmp_path, tiny_data):
    speech, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes, epochs=1, steps_per_epoch=2)
    out = subprocess.run(
        [sys.executable, "-m", "edge.cli", "train", "--config", str(path), "--out", str(tmp_path / "run"),
         "--strategy", "mirrored", "--logical-cpus", "2"],
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 devices" in out.stderr or "CPU:1" in out.stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs_run"] == 1
