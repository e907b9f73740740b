"""The training configurations shipped in train/configs/: each is valid for the strict loader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgesense.frontend.wav import write_wav
from edgesense.schema.yaml import load_yaml_document
from edgesense.train.config import load_train_config

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "train" / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
#: The data every shipped recipe reads (``../shared/data`` beside the checkout): without it a recipe cannot load.
SHARED_DATA = REPO.parent / "shared" / "data"
#: Where ``edgesense synth-commands`` puts the synthesized speech a recipe names (made by the user, never
#: shipped): a fresh machine has none, so the test gives the loader a folder of its own in its place.
USER_RUNS = REPO / "runs"


def _load(path: Path, tmp_path: Path):
    """``path`` loaded as it is, but for its ``data.synthetic_speech`` folders under ``runs/`` that are not made
    here: those are one folder of one clip (``--set``), so that every other field and data folder is checked."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{path.name}: its data is not on this machine ({SHARED_DATA} is not there)")
    named = (load_yaml_document(path).data.get("data") or {}).get("synthetic_speech") or []
    folders = [(path.parent / p).resolve() for p in named]
    overrides = []
    if any(f.is_relative_to(USER_RUNS) and not f.exists() for f in folders):
        stand_in = tmp_path / "synth"
        (stand_in / "yes").mkdir(parents=True)
        write_wav(stand_in / "yes" / "synth_nohash_0.wav", np.zeros(16000, np.float32), 16000)
        kept = [str(f) for f in folders if not (f.is_relative_to(USER_RUNS) and not f.exists())]
        overrides.append(f"data.synthetic_speech={json.dumps([*kept, str(stand_in)])}")
    return load_train_config(path, overrides)


def test_the_shipped_configs_are_found():
    assert {p.name for p in CONFIGS} >= {"shared_data.yaml", "v5.yaml", "distilled_stream.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_each_shipped_config_parses_and_validates(path, tmp_path):
    config = _load(path, tmp_path)
    assert config.data.speech_commands and config.data.scenes is not None


def test_the_bundled_recipe_trains_on_real_speakers_and_the_noise_pool(tmp_path):
    config = _load(CONFIG_DIR / "shared_data.yaml", tmp_path)
    assert config.data.synthetic_speech == () and config.train.real_speech_share is None
    assert {p.name for p in config.data.noise} == {"ambient", "noise"}
    assert config.audio_augment.max_shift_ms == 200
    assert config.model.audio_floor_frames == 3  # p1, the bundled file's audio side
