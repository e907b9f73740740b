"""The real trainer's model, for every fusion strategy and the audio encoder's floor channel,
through the int8 converter and the device runtime: what `edgesense train` writes, `edgesense
quantize` must deploy."""

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from datagen import make_scenes, make_speech_commands, write_train_yaml  # noqa: E402

from edgesense.quantize.convert import QuantizeOptions, check_builtin_ops, convert_run  # noqa: E402
from edgesense.runtime.model import EdgeModel  # noqa: E402
from edgesense.train.config import load_train_config  # noqa: E402
from edgesense.train.model import FUSION_STRATEGIES  # noqa: E402
from edgesense.train.trainer import train  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    return make_speech_commands(root / "speech", speakers=12, per_speaker=1), make_scenes(root / "scenes", per_class=12)


#: The model options each case sets; the last one adds the audio encoder's floor channel.
MODEL_CASES = [f"fusion: {fusion}" for fusion in FUSION_STRATEGIES] + ["audio_floor_frames: 3"]
#: The builtin ops that compute the floor channel (``edgesense.train.model.AboveFloor``).
FLOOR_OPS = {"AVERAGE_POOL_2D", "REDUCE_MIN", "SUB", "CONCATENATION"}


@pytest.mark.slow
@pytest.mark.parametrize("model_line", MODEL_CASES)
def test_trained_model_converts_to_int8_and_runs_on_the_device_runtime(tmp_path, data, model_line):
    speech, scenes = data
    yaml_path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes, epochs=1, steps_per_epoch=3)
    yaml_path.write_text(yaml_path.read_text().replace("model:\n", f"model:\n  {model_line}\n"))
    train(load_train_config(yaml_path), tmp_path / "run", verbose=0)

    result = convert_run(tmp_path / "run", tmp_path / "model.tflite", QuantizeOptions(mode="int8"))
    ops = set(check_builtin_ops((tmp_path / "model.tflite").read_bytes()))  # raises on Flex/custom ops
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "SOFTMAX"} <= ops
    assert (FLOOR_OPS <= ops) == model_line.startswith("audio_floor_frames")
    assert result.path.stat().st_mode & 0o044 == 0o044  # readable by the device's service user
    model = EdgeModel.load(result.path)
    assert model.command_labels == ("_silence_", "_unknown_", "yes", "no", "up", "down")
    assert model.scene_labels == ("beach", "forest", "street")

    validation = np.load(tmp_path / "run" / "validation.npz")
    audio = model.encode_audio(validation["audio_features"][0])
    image = model.encode_image(validation["image"][0].astype(np.float32))
    for a, v in ((audio, image), (audio, None), (None, image)):
        command, scene = model.fuse(a, v)
        assert command.shape == (6,) and scene.shape == (3,)
        assert np.all(np.isfinite(command)) and abs(float(scene.sum()) - 1.0) < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("modality", ["speech", "scenes"])
def test_a_single_modality_recipe_converts_to_int8_and_runs_on_the_device_runtime(tmp_path, data, modality):
    """A recipe with speech only or scenes only (DataConfig takes either) trains an encoder and head
    for its own modality; the other encoder has no calibration sample, and the run must convert all
    the same (it was refused: "'image' has no samples"), its own modality's head working."""
    speech, scenes = data
    yaml_path = write_train_yaml(tmp_path / "train.yaml", speech=speech if modality == "speech" else None,
                                 scenes=scenes if modality == "scenes" else None, epochs=1, steps_per_epoch=2)
    train(load_train_config(yaml_path), tmp_path / "run", verbose=0)
    calibration = np.load(tmp_path / "run" / "calibration.npz")
    untrained = "encode_image" if modality == "speech" else "encode_audio"
    assert len(calibration["image" if modality == "speech" else "audio_features"]) == 0

    result = convert_run(tmp_path / "run", tmp_path / "model.tflite", QuantizeOptions(mode="int8"))
    quantization = result.metadata["quantization"]
    assert quantization["calibration_samples"][untrained] == 0
    assert set(quantization["stand_in_samples"]) == {untrained}
    model = EdgeModel.load(result.path)
    validation = np.load(tmp_path / "run" / "validation.npz")
    if modality == "speech":
        assert model.scene_labels == ("none", "other")
        command, _ = model.fuse(model.encode_audio(validation["audio_features"][0]), None)
        assert command.shape == (6,) and abs(float(command.sum()) - 1.0) < 0.05
    else:
        assert model.scene_labels == ("beach", "forest", "street")
        _, scene = model.fuse(None, model.encode_image(validation["image"][0].astype(np.float32)))
        assert scene.shape == (3,) and abs(float(scene.sum()) - 1.0) < 0.05
    # The device feeds whatever it has: the untrained modality too, with a frame or a second of sound.
    command, scene = model.fuse(model.encode_audio(np.zeros(model.audio_frontend.feature_shape, np.float32)),
                                model.encode_image(np.zeros(model.image_frontend.input_shape, np.float32)))
    assert np.all(np.isfinite(command)) and np.all(np.isfinite(scene))
