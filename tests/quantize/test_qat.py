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


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run folder written by ``edgesense train`` (one short epoch) on generated data: what --qat fine-tunes."""
    pytest.importorskip("tensorflow")
    from datagen import make_scenes, make_speech_commands, write_train_yaml

    from edgesense.train.config import load_train_config
    from edgesense.train.trainer import train

    data = tmp_path_factory.mktemp("qat_data")
    speech = make_speech_commands(data / "speech", speakers=12, per_speaker=1)
    scenes = make_scenes(data / "scenes", per_class=12)
    config = load_train_config(write_train_yaml(data / "train.yaml", speech=speech, scenes=scenes, epochs=1,
                                                steps_per_epoch=3))
    train(config, data / "run", verbose=0)
    return data / "run"


@pytest.mark.slow
def test_a_run_whose_training_data_moved_is_named_in_one_line(trained_run, tmp_path, capsys):
    # It said "speech commands root: expected a folder, got '...' (does not exist)": neither the run, nor that --qat
    # reads the data the run was trained on (quantizing without --qat reads none of it).
    import shutil

    from edgesense.app.cli import main

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    info = json.loads((run / "run.json").read_text())
    moved = tmp_path / "moved"
    info["config"]["data"]["speech_commands"] = [str(moved)]  # as after `mv data/speech data/moved`
    (run / "run.json").write_text(json.dumps(info))
    assert main(["quantize", str(run), "--out", str(tmp_path / "m.tflite"), "--qat", "--qat-epochs", "1"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("edgesense: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert errors[0].startswith(f"edgesense: error: {run / 'run.json'}: config.data: expected the run's training "
                                "data to fine-tune on, got "), errors[0]
    assert str(moved) in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no model, no RUN-qat


@pytest.mark.slow
def test_an_interrupted_qat_leaves_the_earlier_fine_tuned_run_whole(trained_run, tmp_path, monkeypatch):
    # --qat --force emptied RUN-qat first, copied the run in and saved the fine-tuned model over its model.keras:
    # Ctrl-C there lost the earlier fine-tuned run, or left the run's own model and run.json, read as fine-tuned.
    import shutil

    import keras

    from edgesense.quantize.qat import qat_finetune

    runs = tmp_path / "runs"
    shutil.copytree(trained_run, runs / "run")
    earlier = runs / "run-qat"  # an earlier fine-tuned run, which force may replace only with a whole new one
    shutil.copytree(runs / "run", earlier)
    info = json.loads((earlier / "run.json").read_text())
    (earlier / "run.json").write_text(json.dumps({**info, "name": "earlier-qat"}))
    before = {p.name: p.read_bytes() for p in earlier.iterdir()}

    def interrupted(self, *args, **kwargs):  # Ctrl-C while the fine-tuned model is being written
        raise KeyboardInterrupt

    monkeypatch.setattr(keras.Model, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        qat_finetune(runs / "run", earlier, QatOptions(epochs=1), force=True)
    assert sorted(p.name for p in runs.iterdir()) == ["run", "run-qat"]  # no staging folder left beside it
    assert {p.name: p.read_bytes() for p in earlier.iterdir()} == before
    monkeypatch.undo()
    qat_finetune(runs / "run", earlier, QatOptions(epochs=1), force=True)  # a whole run replaces it
    info = json.loads((earlier / "run.json").read_text())
    assert info["name"].endswith("-qat") and "qat" in info["metrics"] and info["name"] != "earlier-qat"
    assert sorted(p.name for p in runs.iterdir()) == ["run", "run-qat"]

@pytest.mark.slow
def test_each_head_fine_tunes_with_the_label_smoothing_it_trained_with(trained_run, tmp_path, monkeypatch):
    # The command head took train.label_smoothing, the scene head's: a run trained with command_label_smoothing 0
    # (a clear word scores near 1, what a stream's threshold needs) was fine-tuned toward smoothed targets.
    import shutil

    import keras

    from edgesense.quantize.qat import qat_finetune

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    info = json.loads((run / "run.json").read_text())
    info["config"]["train"].update(label_smoothing=0.3, command_label_smoothing=0.0)
    (run / "run.json").write_text(json.dumps(info))
    compiled = {}

    class Compiled(Exception):
        pass

    def compile_(self, *args, loss=None, **kwargs):  # what each head's loss is; the fine-tuning itself is not run
        compiled.update({head: fn.get_config()["label_smoothing"] for head, fn in loss.items()})
        raise Compiled

    monkeypatch.setattr(keras.Model, "compile", compile_)
    with pytest.raises(Compiled):
        qat_finetune(run, tmp_path / "run-qat", QatOptions(epochs=1))
    assert compiled == {"command": 0.0, "scene": pytest.approx(0.3)}
