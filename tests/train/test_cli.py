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
    assert line == f"{ERROR_PREFIX} --config {path}: seed: expected {SEED_EXPECTED}, got {seed}"
    assert not out.exists()


@pytest.mark.parametrize("count", [0, -2])
def test_logical_cpus_must_be_positive(tmp_path, count):
    path = _config(tmp_path)
    line = only_line(edgesense("train", "--config", path, "--out", tmp_path / "run", "--logical-cpus", count,
                               timeout=QUICK_S))
    assert line == f"{ERROR_PREFIX} --logical-cpus: expected an integer >= 1, got {count}"
    assert not (tmp_path / "run").exists()


def test_an_infinite_learning_rate_is_refused(tmp_path):
    path = _config(tmp_path)
    line = only_line(edgesense("train", "--config", path, "--out", tmp_path / "run",
                               "--set", "train.learning_rate=.inf", timeout=QUICK_S))
    assert line == f"{ERROR_PREFIX} --config {path}: train.learning_rate: expected a finite number > 0, got inf"
