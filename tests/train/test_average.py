"""``edgesense average``: the mean of several runs' weights, greedy or uniform, as a run folder."""

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from cli_run import ERROR_PREFIX, edgesense, only_line  # noqa: E402

from edgesense.train.average import average_runs  # noqa: E402


def _variant(src, dest, scale, seed):
    """A copy of run ``src`` with every float weight moved by ``scale`` times its own size at random."""
    import keras

    import edgesense.train.model  # noqa: F401

    shutil.copytree(src, dest)
    model = keras.saving.load_model(src / "model.keras", compile=False)
    rng = np.random.default_rng(seed)
    model.set_weights([w + (scale * np.abs(w) * rng.normal(size=w.shape)).astype(w.dtype) for w in
                       model.get_weights()])
    model.save(dest / "model.keras")
    return dest, model.get_weights()


@pytest.fixture(scope="module")
def runs(tiny_run_dir, tmp_path_factory):
    """The tiny run, a close variant of it and a ruined one (weights moved by ten times their size)."""
    import keras

    import edgesense.train.model  # noqa: F401

    root = tmp_path_factory.mktemp("soup")
    first = keras.saving.load_model(tiny_run_dir / "model.keras", compile=False).get_weights()
    near, near_w = _variant(tiny_run_dir, root / "near", 0.05, 1)
    ruined, _ = _variant(tiny_run_dir, root / "ruined", 10.0, 2)
    return {"first": tiny_run_dir, "near": near, "ruined": ruined, "first_w": first, "near_w": near_w}


def test_the_average_is_the_mean_of_the_weights_and_a_run_folder(runs, tmp_path):
    import keras

    metrics = average_runs([runs["first"], runs["near"]], tmp_path / "soup")
    soup = keras.saving.load_model(tmp_path / "soup" / "model.keras", compile=False)
    for got, a, b in zip(soup.get_weights(), runs["first_w"], runs["near_w"]):
        np.testing.assert_allclose(got, (a + b) / 2, rtol=1e-6, atol=1e-7)
    info = json.loads((tmp_path / "soup" / "run.json").read_text())
    original = json.loads((runs["first"] / "run.json").read_text())
    assert info["labels"] == original["labels"] and info["params"] == original["params"]
    assert info["metrics"]["averaged_from"] == [str(runs["first"]), str(runs["near"])]
    assert 0 <= metrics["command_accuracy"] <= 1 and 0 <= metrics["scene_accuracy"] <= 1
    for name in ("calibration.npz", "validation.npz"):
        assert (tmp_path / "soup" / name).read_bytes() == (runs["first"] / name).read_bytes()
    assert "audio_encoder" in (tmp_path / "soup" / "model_summary.txt").read_text()
    assert json.loads((tmp_path / "soup" / "metrics.json").read_text()) == metrics


def test_greedy_leaves_out_a_run_that_pulls_the_mean_down(runs, tmp_path):
    uniform = average_runs([runs["first"], runs["ruined"]], tmp_path / "uniform")
    greedy = average_runs([runs["ruined"], runs["first"], runs["near"]], tmp_path / "greedy", greedy=True)
    assert str(runs["ruined"]) in greedy["left_out"]
    assert greedy["averaged_from"] and set(greedy["averaged_from"]) <= {str(runs["first"]), str(runs["near"])}
    ingredients = greedy["ingredients"]
    assert ingredients[str(runs["ruined"])]["val_score"] < ingredients[str(runs["first"])]["val_score"]
    assert greedy["command_accuracy"] + greedy["scene_accuracy"] > uniform["command_accuracy"] + uniform[
        "scene_accuracy"]


def test_greedy_by_the_command_loss_ranks_the_lowest_first_and_leaves_out_a_rise(runs, tmp_path):
    import keras

    from edgesense.train.trainer import HeadValidation

    greedy = average_runs([runs["ruined"], runs["near"], runs["first"]], tmp_path / "by_loss", greedy=True,
                          monitor="command_loss")
    loss = {run: figures["val_command_loss"] for run, figures in greedy["ingredients"].items()}
    assert loss[str(runs["ruined"])] > max(loss[str(runs["first"])], loss[str(runs["near"])])
    assert str(runs["ruined"]) in greedy["left_out"]
    assert greedy["averaged_from"][0] == min((str(runs["first"]), str(runs["near"])), key=loss.get)
    # What it kept is no worse by the cross-entropy than its best ingredient alone.
    validation = np.load(runs["first"] / "validation.npz")
    check = HeadValidation(validation["audio_features"], validation["command_label"], validation["image"],
                           validation["scene_label"])
    check.set_model(keras.saving.load_model(tmp_path / "by_loss" / "model.keras", compile=False))
    assert check.evaluate()["val_command_loss"] <= min(loss.values()) + 1e-6
    assert greedy["monitor"] == "command_loss"


def _edited_copy(run, dest, edit):
    """A copy of ``run`` whose ``run.json`` is changed in place by ``edit(info)``."""
    copy = shutil.copytree(run, dest)
    info = json.loads((copy / "run.json").read_text())
    edit(info)
    (copy / "run.json").write_text(json.dumps(info))
    return copy


def _with_model(run, dest, **model):
    """A copy of ``run`` whose ``run.json`` records ``model`` as its config's model options."""
    return _edited_copy(run, dest, lambda info: info.setdefault("config", {}).update(model=model))


def test_runs_that_differ_in_a_training_only_field_are_averaged_and_other_models_refused(runs, tmp_path):
    import dataclasses

    from edgesense.train.config import TRAINING_ONLY_MODEL_FIELDS, ModelOptions

    assert set(TRAINING_ONLY_MODEL_FIELDS) == {"dropout", "batchnorm_momentum"}
    assert set(TRAINING_ONLY_MODEL_FIELDS) <= {f.name for f in dataclasses.fields(ModelOptions)}
    model = {"audio_channels": 8, "dropout": 0.1, "batchnorm_momentum": 0.99}
    first = _with_model(runs["first"], tmp_path / "first", **model)
    no_dropout = _with_model(runs["near"], tmp_path / "no_dropout", **{**model, "dropout": 0.0,
                                                                      "batchnorm_momentum": 0.9})
    average_runs([first, no_dropout], tmp_path / "soup")
    assert json.loads((tmp_path / "soup" / "run.json").read_text())["config"]["model"] == model
    wider = _with_model(runs["near"], tmp_path / "wider", **{**model, "audio_channels": 16})
    with pytest.raises(ValueError, match=r"does not match .* in config\.model \("):
        average_runs([first, wider], tmp_path / "soup2")
    assert not (tmp_path / "soup2").exists()


def _copy_with_run_json(src, dest, info):
    shutil.copytree(src, dest)
    (dest / "run.json").write_text(json.dumps(info))
    return dest


def test_runs_of_other_labels_and_bad_folders_are_refused_in_one_line(runs, tmp_path):
    other = _edited_copy(runs["near"], tmp_path / "other",
                         lambda info: info["labels"].update(scene=["kitchen", "garden"]))
    line = only_line(edgesense("average", runs["first"], other, "--out", tmp_path / "soup"))
    assert line.startswith(f"{ERROR_PREFIX} runs {other}: does not match {runs['first']} in labels (")
    assert not (tmp_path / "soup").exists()
    split = _edited_copy(runs["near"], tmp_path / "split",
                         lambda info: info["data"].update(split={"speaker_salt": "other"}))
    line = only_line(edgesense("average", runs["first"], split, "--out", tmp_path / "soup"))
    assert line.startswith(f"{ERROR_PREFIX} runs {split}: does not match {runs['first']} in data.split (")
    # A run.json that is not a JSON object, or whose config or data is not one: a traceback (AttributeError).
    listed = _copy_with_run_json(runs["near"], tmp_path / "listed", [])
    line = only_line(edgesense("average", runs["first"], listed, "--out", tmp_path / "soup"))
    assert line == f"{ERROR_PREFIX} runs {listed}: expected run.json to hold a JSON object, got list"
    odd = _edited_copy(runs["near"], tmp_path / "odd",
                       lambda info: info.update(config="x", data=["y"], labels={"command": [], "scene": []}))
    line = only_line(edgesense("average", odd, runs["first"], "--out", tmp_path / "soup"))
    assert line.startswith(f"{ERROR_PREFIX} runs {runs['first']}: does not match {odd} in labels (")
    assert not (tmp_path / "soup").exists()
    line = only_line(edgesense("average", runs["first"], "--out", tmp_path / "soup"))
    assert line == f"{ERROR_PREFIX} runs: expected at least two run folders to average, got 1"
    line = only_line(edgesense("average", runs["first"], tmp_path / "nowhere", "--out", tmp_path / "soup"))
    assert line == (f"{ERROR_PREFIX} runs {tmp_path / 'nowhere'}: no such folder; expected a run folder with "
                    f"model.keras")
    # Nothing the user made is replaced unasked; --force replaces an earlier run.
    line = only_line(edgesense("average", runs["first"], runs["near"], "--out", runs["ruined"]))
    assert line.startswith(f"{ERROR_PREFIX} --out {runs['ruined']}: already holds a run") and "--force" in line
    line = only_line(edgesense("average", runs["first"], runs["near"], "--out", runs["near"], "--force"))
    assert line == f"{ERROR_PREFIX} runs {runs['near']}: the same folder as --out, which the average replaces"


def test_the_cli_writes_an_averaged_run_that_quantizes(runs, tmp_path):
    proc = edgesense("average", runs["first"], runs["near"], "--out", tmp_path / "soup", "--greedy",
                     "--monitor", "command", timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["run"] == str(tmp_path / "soup") and out["monitor"] == "command" and out["greedy"] is True
    proc = edgesense("quantize", tmp_path / "soup", "--out", tmp_path / "soup.tflite", timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "soup.tflite").stat().st_size > 0


def _without_validation_data(run, dest):
    """A copy of ``run`` whose validation set holds no clips and no photos."""
    copy = shutil.copytree(run, dest)
    data = dict(np.load(copy / "validation.npz"))
    np.savez(copy / "validation.npz", **{name: array[:0] for name, array in data.items()})
    return copy


def test_greedy_without_validation_data_is_refused_not_a_keep_all(runs, tmp_path):
    first = _without_validation_data(runs["first"], tmp_path / "first")
    near = _without_validation_data(runs["near"], tmp_path / "near")
    line = only_line(edgesense("average", first, near, "--greedy", "--out", tmp_path / "soup"))
    assert line == (f"{ERROR_PREFIX} --greedy: expected validation clips or photos to rank the runs by ('score') in "
                    f"{first / 'validation.npz'}, found none")
    line = only_line(edgesense("average", runs["first"], runs["near"], "--monitor", "command", "--out",
                               tmp_path / "soup"))
    assert line == f"{ERROR_PREFIX} --monitor: acts only with --greedy, which is not given"
    assert not (tmp_path / "soup").exists()
    # Without --greedy nothing is ranked: the uniform mean needs no validation data.
    metrics = average_runs([first, near], tmp_path / "uniform", monitor="command")
    assert metrics["averaged_from"] == [str(first), str(near)] and metrics["command_accuracy"] is None


def test_a_first_run_that_is_incomplete_or_repeated_is_refused_before_out_is_touched(runs, tmp_path):
    earlier = shutil.copytree(runs["ruined"], tmp_path / "earlier")
    before = {p.name: p.read_bytes() for p in earlier.iterdir()}
    half = shutil.copytree(runs["first"], tmp_path / "half")
    (half / "calibration.npz").unlink()
    line = only_line(edgesense("average", half, runs["near"], "--out", earlier, "--force"))
    assert line == (f"{ERROR_PREFIX} runs {half}: expected a complete run folder with calibration.npz (the average "
                    f"takes it from the first run), found none")
    assert {p.name: p.read_bytes() for p in earlier.iterdir()} == before  # the run --force would replace is kept
    line = only_line(edgesense("average", runs["first"], runs["first"], "--out", tmp_path / "soup"))
    assert line == (f"{ERROR_PREFIX} runs {runs['first']}: the same run as {runs['first']}; expected distinct run "
                    "folders")
    assert not (tmp_path / "soup").exists()


@pytest.mark.parametrize("damage, message", [
    (lambda path: path.write_bytes(b""), "expected validation.npz to be a NumPy .npz archive (numpy.savez), got one "
                                         "that cannot be read ("),
    (lambda path: path.write_bytes(path.read_bytes()[:200]), "expected validation.npz to be a NumPy .npz archive"),
    (lambda path: _resave(path, command_label=lambda a: a[:3]), "validation.npz command_label: expected 48 integer "
                                                                "labels (one per audio_features), got int"),
    (lambda path: _resave(path, command_label=lambda a: a * 0 + 12), "validation.npz command_label: expected values "
                                                                     "in [0, 12) (run.json labels.command), got 12"),
    (lambda path: _resave(path, image=lambda a: a[:, :32]), "validation.npz image: expected (N, 96, 96, 3) as "
                                                            "run.json's frontend, got (24, 32, 96, 3)"),
    (lambda path: _as_npy(path), "expected validation.npz to be a NumPy .npz archive "
                                   "(numpy.savez), got one that cannot be read (a single"),
], ids=["empty", "truncated", "label-count", "label-range", "shape", "npy"])
def test_a_first_run_whose_validation_set_is_damaged_is_refused_in_one_line(runs, tmp_path, damage, message):
    # An empty file was a traceback (EOFError), a label count off "operands could not be broadcast together".
    first = shutil.copytree(runs["first"], tmp_path / "first")
    damage(first / "validation.npz")
    for greedy in ((), ("--greedy",)):
        line = only_line(edgesense("average", first, runs["near"], *greedy, "--out", tmp_path / "soup"))
        assert line.startswith(f"{ERROR_PREFIX} runs {first}: {message}"), line
    assert not (tmp_path / "soup").exists()


def _resave(path, **changes):
    data = dict(np.load(path))
    np.savez(path, **{name: changes.get(name, lambda a: a)(array) for name, array in data.items()})


def _as_npy(path):
    with open(path, "wb") as handle:  # np.save(path) would add ".npy" to the name
        np.save(handle, np.zeros(3))


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_an_average_interrupted_while_it_writes_leaves_the_earlier_run_whole(runs, tmp_path, sig):
    # --force emptied --out first and wrote the soup file by file: Ctrl-C there lost the earlier run and left a
    # folder with an empty model.keras, which the same command again refused as a run (it has model.keras)
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "soup"
    average_runs([runs["first"], runs["near"]], out)
    earlier = {p.name: p.read_bytes() for p in out.iterdir()}
    argv = [sys.executable, "-m", "edgesense.app.cli", "average", str(runs["first"]), str(runs["near"]),
            "--out", str(out), "--force"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if any(p.name != "soup" for p in tmp_path.iterdir()) or not (out / "run.json").exists():
            break  # it has started writing: a staging folder beside --out, or --out emptied
        time.sleep(0.001)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 130), err
    assert sorted(os.listdir(tmp_path)) == ["soup"]  # no staging folder left beside it
    now = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(now) == sorted(earlier)  # a whole run: the earlier one, or the new one when the signal came late
    json.loads(now["run.json"])
    assert now["model.keras"][:2] == b"PK"  # a whole Keras archive
    again = edgesense(*argv[3:])
    assert again.returncode == 0, again.stderr
