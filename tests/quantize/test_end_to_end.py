"""The real trainer's model, for every fusion strategy, through the int8 converter and the
device runtime: what `edgesense train` writes, `edgesense quantize` must deploy."""

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


@pytest.mark.slow
@pytest.mark.parametrize("fusion", FUSION_STRATEGIES)
def test_trained_model_converts_to_int8_and_runs_on_the_device_runtime(tmp_path, data, fusion):
    speech, scenes = data
    yaml_path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes, epochs=1, steps_per_epoch=3)
    yaml_path.write_text(yaml_path.read_text().replace("model:\n", f"model:\n  fusion: {fusion}\n"))
    train(load_train_config(yaml_path), tmp_path / "run", verbose=0)

    result = convert_run(tmp_path / "run", tmp_path / "model.tflite", QuantizeOptions(mode="int8"))
    ops = check_builtin_ops((tmp_path / "model.tflite").read_bytes())  # raises on Flex/custom ops
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "SOFTMAX"} <= set(ops)
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
