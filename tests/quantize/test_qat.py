import json

import numpy as np
import pytest

from edgesense.quantize.qat import INT8_MAX, QatOptions, fake_quantize


def test_fake_quantize_lands_on_a_symmetric_int8_grid_per_channel():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 4, 5)).astype(np.float32) * np.array([1, 10, 0.1, 3, 0], np.float32)
    q = fake_quantize(kernel, per_channel=True)
    for c in range(4):  # channel 4 is all zeros and stays so
        scale = np.abs(kernel[..., c]).max() / INT8_MAX
        steps = q[..., c] / scale
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
        assert np.abs(q[..., c] - kernel[..., c]).max() <= scale / 2 + 1e-6
    assert np.all(q[..., 4] == 0)
    per_tensor = fake_quantize(kernel, per_channel=False)
    assert len(np.unique(np.round(per_tensor / (np.abs(kernel).max() / INT8_MAX)))) <= 2 * INT8_MAX + 1


def test_the_qat_grid_of_a_dense_kernel_is_the_converters():
    # The converter's int8 dense weights (the bundled model's fusion head, dequantized) lie on its grid:
    # fake-quantizing them the way --qat does must leave them where they are.
    pytest.importorskip("tensorflow")
    import keras

    from edgesense.quantize.adapt import fuse_layers
    from edgesense.quantize.convert import split_tflite_parts
    from edgesense.quantize.qat import _quantize_layer_kernel, _quantized_kernels
    from edgesense.shipped import MODELS, shipped_path

    layers = fuse_layers(split_tflite_parts(shipped_path(MODELS, "edgesense.tflite").read_bytes())["fuse"])
    checked = 0
    for kernel in (layer.kernel for layer in layers):
        in_dim, out_dim = kernel.shape
        model = keras.Sequential([keras.Input((in_dim,)), keras.layers.Dense(out_dim)])
        [(layer, per_channel)] = list(_quantized_kernels(model))
        step = np.abs(kernel).max(axis=0) / INT8_MAX
        if np.allclose(step, step.max()):
            continue  # one scale for every unit: per tensor and per channel agree
        np.testing.assert_allclose(_quantize_layer_kernel(layer, per_channel, kernel), kernel, rtol=0,
                                   atol=1e-3 * step.min())
        checked += 1
    assert checked


def test_options_are_validated():
    with pytest.raises(ValueError, match="epochs"):
        QatOptions(epochs=0)
    with pytest.raises(ValueError, match="learning_rate"):
        QatOptions(learning_rate=0.0)


def test_run_qat_sits_beside_the_run_however_the_run_is_named(tmp_path, monkeypatch):
    from edgesense.quantize.qat import default_out_dir

    run = tmp_path / "runs" / "v1"
    (run / "sub").mkdir(parents=True)
    assert default_out_dir(run) == tmp_path / "runs" / "v1-qat"
    monkeypatch.chdir(run)
    assert default_out_dir(".").resolve() == tmp_path.resolve() / "runs" / "v1-qat"
    assert default_out_dir("sub/..").resolve() == tmp_path.resolve() / "runs" / "v1-qat"
    monkeypatch.chdir(run / "sub")
    assert default_out_dir("..").resolve() == tmp_path.resolve() / "runs" / "v1-qat"


def test_an_out_dir_holding_files_is_refused_before_any_training(tmp_path):
    from edgesense.quantize.qat import qat_finetune

    run, out = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir()
    out.mkdir()
    (out / "keep.txt").write_text("the user's")
    with pytest.raises(ValueError, match=r"^out_dir .*: holds files \(keep.txt\), not a run, which is all force=True "
                                         r"replaces; choose another out_dir$"):
        qat_finetune(run, out)
    with pytest.raises(ValueError, match=r"^out_dir .*: not empty and not a run folder .*even with force=True$"):
        qat_finetune(run, out, force=True)
    assert (out / "keep.txt").read_text() == "the user's"


@pytest.mark.slow
def test_qat_fine_tunes_a_trained_run_and_converts_it(tmp_path):
    pytest.importorskip("tensorflow")
    from datagen import make_scenes, make_speech_commands, write_train_yaml

    from edgesense.app.cli import main
    from edgesense.runtime.model import EdgeModel
    from edgesense.train.config import load_train_config
    from edgesense.train.trainer import train

    speech = make_speech_commands(tmp_path / "speech", speakers=12, per_speaker=1)
    scenes = make_scenes(tmp_path / "scenes", per_class=12)
    config = load_train_config(write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes, epochs=1,
                                                steps_per_epoch=3))
    train(config, tmp_path / "run", verbose=0)

    out = tmp_path / "qat.tflite"
    mine = tmp_path / "run-qat" / "keep.txt"  # the default output folder, already holding a user's file
    mine.parent.mkdir()
    mine.write_text("the user's")
    command = ["quantize", str(tmp_path / "run"), "--out", str(out), "--qat", "--qat-epochs", "1"]
    assert main(command) == 2
    assert mine.read_text() == "the user's" and not out.exists()
    mine.unlink()
    assert main([*command, "--report", str(tmp_path / "report")]) == 0
    info = json.loads((tmp_path / "run-qat" / "run.json").read_text())
    assert info["metrics"]["qat"]["kernels"] > 5 and info["name"].endswith("-qat")
    model = EdgeModel.load(out)
    assert model.fuse(None, np.zeros(model.image_embedding_dim, np.float32))[1].shape == (3,)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert set(report["heads"]) == {"command", "scene"}
    assert report["run"].endswith("run-qat")  # the float side of the parity is the fine-tuned model
    # Again, onto the same model and fine-tuned run: refused unless --force, which replaces both.
    assert main(command) == 2 and info == json.loads((tmp_path / "run-qat" / "run.json").read_text())
    assert main([*command, "--force"]) == 0 and EdgeModel.load(out).metadata["name"].endswith("-qat")
