"""``edgesense train``: flags a user can get wrong are one line naming the flag, before TensorFlow or data load."""

from __future__ import annotations

import pytest
from cli_run import ERROR_PREFIX, edgesense, only_line

from edgesense.train.config import SEED_EXPECTED, SEED_LIMIT

#: Long enough for Python and the config, far too short for TensorFlow and the data to load.
QUICK_S = 60


def _config(tmp_path):
    (tmp_path / "sc").mkdir()
    (tmp_path / "scenes").mkdir()
    path = tmp_path / "train.yaml"
    path.write_text("name: tiny\ndata:\n  speech_commands: [sc]\n  scenes: scenes\n")
    return path


@pytest.mark.parametrize("seed", [-1, SEED_LIMIT])
def test_a_bad_seed_names_the_flag_or_the_field(tmp_path, seed):
    path = _config(tmp_path)
    out = tmp_path / "run"
    line = only_line(edgesense("train", "--config", path, "--out", out, "--seed", seed, timeout=QUICK_S))
    assert line == f"{ERROR_PREFIX} --seed: expected {SEED_EXPECTED}, got {seed}"
    line = only_line(edgesense("train", "--config", path, "--out", out, "--set", f"seed={seed}", timeout=QUICK_S))
    assert line == f"{ERROR_PREFIX} --set seed={seed}: seed: expected {SEED_EXPECTED}, got {seed}"
    assert not out.exists()


@pytest.mark.parametrize("flag, value, expected", [
    ("--logical-cpus", 0, "[1, 64]"), ("--logical-cpus", -2, "[1, 64]"),
    ("--logical-cpus", 10**20, "[1, 64]"),  # passed the check and started TensorFlow before
    ("--epochs", 0, "[1, 2**63)"), ("--epochs", 10**20, "[1, 2**63)"),  # the latter named train.epochs
])
def test_device_and_epoch_counts_out_of_range_are_refused_naming_the_flag(tmp_path, flag, value, expected):
    path = _config(tmp_path)
    line = only_line(edgesense("train", "--config", path, "--out", tmp_path / "run", flag, value, timeout=QUICK_S))
    assert line == f"{ERROR_PREFIX} {flag}: expected an integer in {expected}, got {value}"
    assert not (tmp_path / "run").exists()


def test_an_infinite_learning_rate_is_refused(tmp_path):
    path = _config(tmp_path)
    line = only_line(edgesense("train", "--config", path, "--out", tmp_path / "run",
                               "--set", "train.learning_rate=.inf", timeout=QUICK_S))
    assert line == (f"{ERROR_PREFIX} --set train.learning_rate=.inf: train.learning_rate: expected a finite number "
                    "> 0, got inf")


def test_a_bad_set_value_names_the_set_and_a_bad_file_value_the_config(tmp_path):
    path = _config(tmp_path)  # the --set value was reported as the config's: "--config train.yaml: train...."
    path.write_text(path.read_text() + "train:\n  learning_rate: 0.01\n")
    line = only_line(edgesense("train", "--config", path, "--out", tmp_path / "run",
                               "--set", "train.learning_rate=fast", timeout=QUICK_S))
    assert line == f"{ERROR_PREFIX} --set train.learning_rate=fast: train.learning_rate: expected a number, got 'fast'"
    path.write_text(path.read_text().replace("[sc]", "[nowhere]"))
    line = only_line(edgesense("train", "--config", path, "--out", tmp_path / "run",
                               "--set", "train.learning_rate=0.1", timeout=QUICK_S))
    assert line == f"{ERROR_PREFIX} --config {path}: data.speech_commands: no such file or folder: {tmp_path}/nowhere"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["places #2", "home: kitchen"])
def test_an_av_folder_is_the_folder_named_whatever_yaml_would_read_in_its_name(tmp_path, name):
    path = _config(tmp_path)  # "places #2" was read as "places" (a YAML comment cut off): that folder trained, or
    (tmp_path / name / "kitchen").mkdir(parents=True)  # "no such folder"; "home: kitchen" was refused as a mapping
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    # The config loads with that folder: the next check, --out, is what refuses.
    line = only_line(edgesense("train", "--config", path, "--out", busy, "--av", tmp_path / name, timeout=QUICK_S))
    assert line == f"{ERROR_PREFIX} --out {busy}: holds files (notes.txt), not a run, which is all --force " \
                   "replaces; choose another --out"  # it said "or pass --force to replace it", which then refused
    # Inside that folder (not "places"): the --out check sees the folder --av named.
    out = tmp_path / name / "run"
    line = only_line(edgesense("train", "--config", path, "--out", out, "--av", tmp_path / name, timeout=QUICK_S))
    assert line.startswith(f"{ERROR_PREFIX} --out {out}: inside data.av ({tmp_path / name}), ")
    assert not out.exists()


@pytest.mark.parametrize("field, folder", [("scenes", "scenes"), ("speech_commands", "sc")])
def test_an_out_inside_a_folder_whose_sub_folders_are_data_is_refused(tmp_path, field, folder):
    path = _config(tmp_path)  # --out scenes/run1 trained, and the next run had a scene class "run1" (its curves.png)
    out = tmp_path / folder / "run1"
    line = only_line(edgesense("train", "--config", path, "--out", out, timeout=QUICK_S))
    assert line == (f"{ERROR_PREFIX} --out {out}: inside data.{field} ({tmp_path / folder}), whose sub-folders are "
                    "read as words or classes: the run would join the data of the next run; choose another --out")
    assert sorted(p.name for p in (tmp_path / folder).iterdir()) == []


def test_a_folder_of_ones_own_words_without_data_words_names_the_field_and_the_folders_found(tmp_path):
    # a folder of lights/ music/ with data.words left at the default ten: it said "sc: expected a folder for every
    # command word, missing yes, no, ..." once TensorFlow had started, naming neither data.words nor what was there
    path = _config(tmp_path)
    for word in ("lights", "music", "_unknown_"):
        (tmp_path / "sc" / word).mkdir()
    line = only_line(edgesense("train", "--config", path, "--out", tmp_path / "run", timeout=QUICK_S))
    assert line == (f"{ERROR_PREFIX} data.words: expected a folder for each word (the default ten: a model of other "
                    f"words names them in data.words) in data.speech_commands {tmp_path / 'sc'}, missing yes, no, up, "
                    "down, left, right, on, off, stop, go; its word folders: lights, music")
    line = only_line(edgesense("train", "--config", path, "--out", tmp_path / "run", "--set",
                               "data.words=[lights, tv]", timeout=QUICK_S))
    assert line == (f"{ERROR_PREFIX} data.words: expected a folder for each word in data.speech_commands "
                    f"{tmp_path / 'sc'}, missing tv; its word folders: lights, music")
    assert not (tmp_path / "run").exists()


def test_a_strategy_at_odds_with_the_recipe_names_the_field_where_it_was_set(tmp_path):
    # --strategy was applied after the config had loaded: the error named neither the file nor the --set
    path = _config(tmp_path)
    path.write_text(path.read_text() + "bank:\n  variants: 0\ntrain:\n  embedding_hint_weight: 0.1\n")
    expected = ("train.embedding_hint_weight: expected 0 with a distribution strategy (train.strategy 'mirrored': "
                "the hint lives in the training view), got 0.1")
    line = only_line(edgesense("train", "--config", path, "--out", tmp_path / "run", "--strategy", "mirrored",
                               timeout=QUICK_S))
    assert line == f"{ERROR_PREFIX} {path}:8: {expected}"
    line = only_line(edgesense("train", "--config", path, "--out", tmp_path / "run", "--strategy", "mirrored",
                               "--set", "train.embedding_hint_weight=0.1", timeout=QUICK_S))
    assert line == f"{ERROR_PREFIX} --set train.embedding_hint_weight=0.1: {expected}"
    # The flags win over a --set of their field (whose value is then never checked).
    line = only_line(edgesense("train", "--config", path, "--out", tmp_path / "run", "--set", "train.epochs=0",
                               "--epochs", 2, "--set", "train.strategy=default", "--strategy", "mirrored",
                               timeout=QUICK_S))
    assert line == f"{ERROR_PREFIX} {path}:8: {expected}"
    assert not (tmp_path / "run").exists()
