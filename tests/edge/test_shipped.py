"""The files shipped in the package, found where the installation put them."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgesense.shipped import CONFIGS, MODELS, SAMPLES, config_argument, model_argument, shipped_config, shipped_path

REPO = Path(__file__).resolve().parents[2]


def test_shipped_files_are_the_checkouts_in_a_development_install():
    assert shipped_config("desktop").read_bytes() == (REPO / "firmware_configs" / "desktop.yaml").read_bytes()
    assert shipped_config("rpi5.yaml").name == "rpi5.yaml"
    assert shipped_path(MODELS, "edgesense.tflite").read_bytes() == (REPO / "models" / "edgesense.tflite").read_bytes()
    assert shipped_path(SAMPLES, "scene.mp4").stat().st_size == (REPO / "samples" / "scene.mp4").stat().st_size


def test_a_missing_file_names_it_and_no_script_that_is_not_shipped():
    with pytest.raises(ValueError, match=r"^samples/nope.mp4: not part of this EdgeSense installation") as info:
        shipped_path(SAMPLES, "nope.mp4")
    assert "scripts/" not in str(info.value)
    with pytest.raises(ValueError, match=r"^folder: expected one of"):
        shipped_path("tests", "x")
    assert shipped_config("desktop").parent.name == CONFIGS


def test_a_config_flag_names_a_shipped_config_from_any_folder_and_a_file_there_comes_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the checkout: firmware_configs/rpi4.yaml is no file here
    for value in ("rpi4", "rpi4.yaml", "firmware_configs/rpi4.yaml"):
        assert config_argument(value) == str(shipped_config("rpi4"))
    for value in ("nope", "firmware_configs/nope.yaml", "other/rpi4.yaml", None):
        assert config_argument(value) == value  # the command then says "no such file"
    (tmp_path / "rpi4.yaml").write_text("device: {name: mine}\n")
    assert config_argument("rpi4.yaml") == "rpi4.yaml"


def test_a_model_flag_names_a_shipped_model_by_its_checkout_path_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # bench's default --model, models/edgesense.tflite, is no file here
    assert model_argument(Path("models/edgesense.tflite")) == shipped_path(MODELS, "edgesense.tflite")
    for value in (Path("models/nope.tflite"), Path("edgesense.tflite"), Path("other/edgesense.tflite"), None):
        assert model_argument(value) == value  # the command then says "no such file"
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "edgesense.tflite").write_bytes(b"mine")
    assert model_argument(Path("models/edgesense.tflite")) == Path("models/edgesense.tflite")  # a file here first


def test_the_desktop_configs_second_opinion_is_the_shipped_heads_with_the_bundled_models_labels():
    from edgesense.loop.config import load_config
    from edgesense.runtime.model import EdgeModel
    from edgesense.runtime.second_opinion import StreamHeads

    config = load_config(shipped_config("desktop"))
    heads_path = Path(config.second_opinion.heads_path)
    assert heads_path.resolve() == shipped_path(MODELS, "stream_heads.tflite").resolve()
    heads, model = StreamHeads(heads_path), EdgeModel.load(config.model.path)
    assert heads.labels == tuple(model.command_labels)
    assert Path(config.model.path).resolve() == shipped_path(MODELS, "edgesense.tflite").resolve()


def test_every_config_runs_the_desktops_pair_and_those_at_its_hop_its_point():
    """One operating point was measured for the pair at the 100-ms hop, and every config of that hop
    runs it; Orin's 50-ms hop has its own, chosen there (since 2026-12-06 the same settings)."""
    from edgesense.loop.config import load_config

    desktop = load_config(shipped_config("desktop"))
    for name in ("rpi4", "rpi5", "jetson-nano", "jetson-orin"):
        config = load_config(shipped_config(name))
        assert config.second_opinion == desktop.second_opinion  # the same heads (paths resolve alike), the blend
        same_hop = config.scheduler.command_hop_ms == desktop.scheduler.command_hop_ms
        assert same_hop == (name != "jetson-orin")
        if same_hop:
            assert config.commands == desktop.commands
