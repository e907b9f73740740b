"""The training configurations shipped in train/configs/: each is valid for the strict loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgesense.train.config import load_train_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "train" / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
#: The loader checks the data folders last, once every field has parsed and validated.
MISSING_DATA = "no such file or folder"


def _load(path: Path):
    try:
        return load_train_config(path)
    except ValueError as exc:
        if MISSING_DATA in str(exc):
            pytest.skip(f"{path.name}: its data is not on this machine ({exc})")
        raise


def test_the_shipped_configs_are_found():
    assert {p.name for p in CONFIGS} >= {"shared_data.yaml", "v5.yaml", "distilled_stream.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_each_shipped_config_parses_and_validates(path):
    config = _load(path)
    assert config.data.speech_commands and config.data.scenes is not None


def test_the_bundled_recipe_trains_on_real_speakers_and_the_noise_pool():
    config = _load(CONFIG_DIR / "shared_data.yaml")
    assert config.data.synthetic_speech == () and config.train.real_speech_share is None
    assert {p.name for p in config.data.noise} == {"ambient", "noise"}
    assert config.audio_augment.max_shift_ms == 200
    assert config.model.audio_floor_frames == 3  # p1, the bundled file's audio side
