"""``train.yaml``'s strict loader: a bad seed or a non-finite learning rate is one error naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgesense.train.config import (
    SEED_EXPECTED, SEED_LIMIT, TrainOptions, derived_seed, is_seed, load_train_config,
)

NEGATIVE_SEED = -1
BAD_SEEDS = (NEGATIVE_SEED, SEED_LIMIT)
GOOD_SEEDS = (0, SEED_LIMIT - 1)


def tiny_config(folder: Path) -> Path:
    """A valid ``train.yaml`` over empty data folders (the loader checks only that they exist)."""
    (folder / "sc").mkdir()
    (folder / "scenes").mkdir()
    path = folder / "train.yaml"
    path.write_text("name: tiny\nseed: 42\ndata:\n  speech_commands: [sc]\n  scenes: scenes\n")
    return path


def test_a_seed_is_an_integer_below_two_to_the_32():
    assert SEED_LIMIT == 2**32 and SEED_EXPECTED == "an integer in [0, 2**32)"
    assert all(is_seed(seed) for seed in GOOD_SEEDS)
    assert not any(is_seed(seed) for seed in (*BAD_SEEDS, True, 1.0, "1", None))


def test_a_derived_seed_is_the_seed_plus_its_offset_wrapped_into_the_seed_range():
    assert derived_seed(42, 3) == 45
    assert derived_seed(SEED_LIMIT - 1, 1) == 0
    assert derived_seed(SEED_LIMIT - 1, 2000) == 1999
    assert all(is_seed(derived_seed(seed, k)) for seed in GOOD_SEEDS for k in (0, 1, 202, 2000))
    for bad in ((1.5, 1), (1, None), (True, 1)):
        with pytest.raises(ValueError, match="derived_seed"):
            derived_seed(*bad)


@pytest.mark.parametrize("seed", BAD_SEEDS)
def test_a_seed_numpy_refuses_is_refused_naming_the_field_and_its_line(tmp_path, seed):
    path = tiny_config(tmp_path)
    assert load_train_config(path).seed == 42
    with pytest.raises(ValueError) as info:
        load_train_config(path, [f"seed={seed}"])
    assert str(info.value) == f"--set seed={seed}: seed: expected {SEED_EXPECTED}, got {seed}"
    path.write_text(path.read_text().replace("seed: 42", f"seed: {seed}"))
    with pytest.raises(ValueError) as info:
        load_train_config(path)
    assert str(info.value) == f"{path}:2: seed: expected {SEED_EXPECTED}, got {seed}"


@pytest.mark.parametrize("seed", GOOD_SEEDS)
def test_the_edge_seeds_load(tmp_path, seed):
    assert load_train_config(tiny_config(tmp_path), [f"seed={seed}"]).seed == seed


@pytest.mark.parametrize("text, shown", [(".inf", "inf"), ("-.inf", "-inf"), (".nan", "nan")])
def test_a_learning_rate_that_is_not_finite_is_refused(tmp_path, text, shown):
    path = tiny_config(tmp_path)
    with pytest.raises(ValueError) as info:
        load_train_config(path, [f"train.learning_rate={text}"])
    assert str(info.value) == (f"--set train.learning_rate={text}: train.learning_rate: expected a finite number > 0, "
                               f"got {shown}")
    with pytest.raises(ValueError, match="learning_rate: expected a finite number > 0"):
        TrainOptions(learning_rate=float(shown))


@pytest.mark.parametrize("field", ["noise", "speech_negatives", "rirs"])
def test_a_linked_folder_of_recordings_splits_as_the_benchmark_splits_it(tmp_path, field):
    """A folder of recordings that is a link to another name (``noise -> /disk2/background_2024``): the trainer
    read it under the target's name, the benchmark (``--noise noise``) under the link's, and the pools hash
    ``FOLDER/NAME``: the benchmark's evaluation streams held recordings the trainer had trained on."""
    from edgesense.bench.streaming import recording_pools
    from edgesense.train.pools import speech_negative_pools, split_recordings, wav_recordings

    store = tmp_path / "disk2" / "background_2024"
    store.mkdir(parents=True)
    for i in range(8):
        (store / f"rec{i}.wav").write_bytes(b"")
    (tmp_path / "noise").symlink_to(store, target_is_directory=True)
    path = tiny_config(tmp_path)
    read = getattr(load_train_config(path, [f"data.{field}=[noise]"]).data, field)
    pools = speech_negative_pools if field == "speech_negatives" else split_recordings
    trained = pools(wav_recordings(read))
    assert trained == pools(wav_recordings([tmp_path / "noise"]))  # the same folder written in full
    if field == "noise":
        assert [p.name for p in trained["evaluation"]] == [p.name for p in recording_pools([tmp_path / "noise"])[
            "evaluation"]]
    assert read == (tmp_path.resolve() / "noise",)  # the folders above it resolved, its own name kept


@pytest.mark.parametrize("field", ["noise", "speech_negatives", "hard_negatives", "rirs"])
def test_a_folder_of_recordings_that_holds_none_is_refused_naming_the_field(tmp_path, field):
    path = tiny_config(tmp_path)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.txt").write_text("no audio here")
    with pytest.raises(ValueError, match=rf"data\.{field}: expected \.wav recordings under .*empty, found none"):
        load_train_config(path, [f"data.{field}=[empty]"])
    (tmp_path / "empty" / "sub" / "take1.WAV").write_bytes(b"")
    assert load_train_config(path, [f"data.{field}=[empty]"])  # nested, in capitals: found


@pytest.mark.parametrize(("field", "value"), [("speech_commands", "[train.yaml]"), ("synthetic_speech", "[train.yaml]"),
                                              ("scenes", "train.yaml"), ("av", "train.yaml"),
                                              ("scene_ambient", "train.yaml")])
def test_a_file_where_a_folder_is_due_is_refused_naming_the_field(tmp_path, field, value):
    path = tiny_config(tmp_path)
    with pytest.raises(ValueError) as info:
        load_train_config(path, [f"data.{field}={value}"])
    assert str(info.value) == (f"--set data.{field}={value}: data.{field}: expected a folder, got {path}, which is "
                               "a file")


@pytest.mark.parametrize(("data", "expected"), [
    # A recipe of photos alone draws no audio rows: the places' sounds would load and never train.
    ("  scenes: scenes\n  scene_ambient: amb\n", "data.scene_ambient: expected speech_commands beside it"),
    # Without photos there are no scene classes for the sounds to name.
    ("  speech_commands: [sc]\n  scene_ambient: amb\n", "data.scene_ambient: expected scenes or av beside it"),
])
def test_place_sounds_that_would_never_train_are_refused_naming_the_field(tmp_path, data, expected):
    tiny_config(tmp_path)
    (tmp_path / "amb").mkdir()
    path = tmp_path / "places.yaml"
    path.write_text(f"name: places\nseed: 1\ndata:\n{data}")
    with pytest.raises(ValueError) as info:
        load_train_config(path)
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert load_train_config(tiny_config_with_sounds(tmp_path))  # with speech and photos they train


def tiny_config_with_sounds(folder: Path) -> Path:
    path = folder / "both.yaml"
    path.write_text("name: both\nseed: 1\ndata:\n  speech_commands: [sc]\n  scenes: scenes\n  scene_ambient: amb\n")
    return path


@pytest.mark.parametrize(("value", "expected"), [
    ("[_x]", "data.words: expected a non-empty sequence of word folder names (not starting with '_')"),
    ("[yes, yes]", "data.words: expected no duplicates"),
])
def test_words_are_checked_as_the_loader_will_when_the_config_loads(tmp_path, value, expected):
    path = tiny_config(tmp_path)  # a word starting with '_' passed here and failed once the data loaded
    with pytest.raises(ValueError) as info:
        load_train_config(path, [f"data.words={value}"])
    assert str(info.value).startswith(f"--set data.words={value}: {expected}")


def test_a_floor_longer_than_the_audio_window_is_refused_when_the_config_loads(tmp_path):
    path = tiny_config(tmp_path)  # it was refused by the model's builder, once the data had loaded
    frames = 39  # an 800-ms window at 20-ms hops
    assert load_train_config(path, ["audio_frontend.clip_duration_ms=800", f"model.audio_floor_frames={frames}"])
    with pytest.raises(ValueError) as info:
        load_train_config(path, ["audio_frontend.clip_duration_ms=800", f"model.audio_floor_frames={frames + 1}"])
    assert str(info.value) == (f"--set model.audio_floor_frames={frames + 1}: model.audio_floor_frames: expected at "
                               f"most the audio window's {frames} frames (audio_frontend), got {frames + 1}")


def test_the_augmentation_works_at_the_frontends_sample_rate(tmp_path):
    path = tiny_config(tmp_path)  # shifts and reverb tails were counted at 16 kHz for clips of another rate
    with pytest.raises(ValueError) as info:
        load_train_config(path, ["audio_frontend.sample_rate_hz=8000", "audio_frontend.upper_edge_hz=3800"])
    assert str(info.value) == (f"{path}: audio_augment.sample_rate_hz: expected the audio frontend's 8000 Hz "
                               f"(audio_frontend.sample_rate_hz), got 16000")
    assert load_train_config(path, ["audio_frontend.sample_rate_hz=8000", "audio_frontend.upper_edge_hz=3800",
                                    "audio_augment.sample_rate_hz=8000"])


def test_synthetic_speech_alone_says_it_trains_only_and_how_to_validate_on_it(tmp_path):
    path = tiny_config(tmp_path)  # it said "data.speech_commands: expected at least one of ..., got 'none'"
    path.write_text("name: tiny\ndata:\n  synthetic_speech: [sc]\n")
    with pytest.raises(ValueError) as info:
        load_train_config(path)
    assert str(info.value) == (
        f"{path}:3: data.synthetic_speech: expected speech_commands, scenes or av beside it (synthesized voices "
        "train only, never validate; to train and validate on a synth-commands folder, name it under "
        "data.speech_commands), got ['sc']")
    assert load_train_config(path, ["data.speech_commands=[sc]"]).data.synthetic_speech == (tmp_path / "sc",)
    assert load_train_config(path, ["data.synthetic_speech=[]", "data.speech_commands=[sc]"])  # what it says
    path.write_text("name: tiny\ndata:\n  words: [yes]\n")  # no speech at all: as before
    with pytest.raises(ValueError) as info:
        load_train_config(path)
    assert str(info.value) == (f"{path}:2: data.speech_commands: expected at least one of speech_commands, scenes "
                               "or av, got 'none'")


def test_a_bad_value_names_the_set_that_gave_it_or_the_file(tmp_path):
    path = tiny_config(tmp_path)  # a --set value was reported as the file's: "train.yaml: train.learning_rate: ..."
    path.write_text(path.read_text() + "train:\n  learning_rate: 0.01\n")
    for overrides, shown in ((["train.learning_rate=fast"], "train.learning_rate=fast"),
                             (["train.learning_rate=1", "train.learning_rate=fast"], "train.learning_rate=fast"),
                             (["train={learning_rate: fast}"], "train={learning_rate: fast}")):
        with pytest.raises(ValueError) as info:
            load_train_config(path, overrides)
        assert str(info.value) == f"--set {shown}: train.learning_rate: expected a number, got 'fast'"
    with pytest.raises(ValueError) as info:
        load_train_config(path, ["train.epoch=7"])
    assert str(info.value).startswith("--set train.epoch=7: train.epoch: unknown field; expected one of ")
    with pytest.raises(ValueError) as info:
        load_train_config(path, ["data.noise=[nowhere]"])
    assert str(info.value) == f"--set data.noise=[nowhere]: data.noise: no such file or folder: {tmp_path / 'nowhere'}"
    path.write_text(path.read_text().replace("0.01", "fast"))  # a field of the file still names the file and line
    with pytest.raises(ValueError) as info:
        load_train_config(path, ["train.epochs=3"])
    assert str(info.value) == f"{path}:7: train.learning_rate: expected a number, got 'fast'"
    path.write_text(path.read_text().replace("[sc]", "[nowhere]").replace("fast", "0.01"))
    with pytest.raises(ValueError) as info:
        load_train_config(path, ["data.noise=[sc]"])
    assert str(info.value) == f"{path}: data.speech_commands: no such file or folder: {tmp_path / 'nowhere'}"


def test_an_unknown_section_a_set_made_names_the_set_not_the_file(tmp_path):
    path = tiny_config(tmp_path)  # it said "train.yaml: trian: unknown field", a key the file does not hold
    with pytest.raises(ValueError) as info:
        load_train_config(path, ["train.epochs=3", "trian.epochs=1"])
    assert str(info.value).startswith("--set trian.epochs=1: trian: unknown field; expected one of ")
    with pytest.raises(ValueError) as info:
        load_train_config(path, ["train.epochs.max=1"])  # a field as a section
    assert str(info.value) == "--set train.epochs.max=1: train.epochs: expected an integer, got dict"


@pytest.mark.parametrize("name", [".", "..", "  ", "a/b"])
def test_a_name_that_is_not_a_folder_of_its_own_is_refused_naming_its_line(tmp_path, name):
    # "." made runs/ itself the run folder (the next run nested in it, and a --force of "." deleted them all);
    # ".." the working folder
    path = tiny_config(tmp_path)
    path.write_text(path.read_text().replace("name: tiny", f"name: '{name}'"))
    with pytest.raises(ValueError) as info:
        load_train_config(path)
    assert str(info.value) == f"{path}:1: name: expected a folder name: not empty, '.' or '..', without '/', got " \
                              f"{name!r}"
    assert load_train_config(path, ["name=.v2"]).name == ".v2"


def test_a_set_mapping_sets_the_fields_it_names_and_keeps_the_files_others(tmp_path):
    path = tiny_config(tmp_path)  # train={epochs: 1} replaced the section: the file's learning rate was lost unsaid
    path.write_text(path.read_text() + "train:\n  learning_rate: 0.01\n  epochs: 3\naudio_augment:\n"
                    "  speed_probability: 0.5\n  time_masks: 2\n")
    config = load_train_config(path, ["train={epochs: 1}", "audio_augment={time_masks: 0}"])
    assert (config.train.epochs, config.train.learning_rate) == (1, 0.01)
    assert (config.audio_augment.time_masks, config.audio_augment.speed_probability) == (0, 0.5)
    assert load_train_config(path, ["data={scenes: null}"]).data.speech_commands == (tmp_path / "sc",)
    with pytest.raises(ValueError) as info:
        load_train_config(path, ["train={epochs: 0}"])
    assert str(info.value) == "--set train={epochs: 0}: train.epochs: expected >= 1, got 0"


def test_the_embedding_hint_with_a_strategy_names_the_strategy(tmp_path):
    path = tiny_config(tmp_path)
    with pytest.raises(ValueError) as info:
        load_train_config(path, ["bank.variants=0", "train.embedding_hint_weight=0.1", "train.strategy=mirrored"])
    assert str(info.value) == ("--set train.embedding_hint_weight=0.1: train.embedding_hint_weight: expected 0 with a "
                               "distribution strategy (train.strategy 'mirrored': the hint lives in the training "
                               "view), got 0.1")
