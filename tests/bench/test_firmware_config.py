"""``bench --write-config``: the recommended settings edited into a firmware YAML in place."""

from __future__ import annotations

import difflib
import shutil
import stat
from pathlib import Path

import pytest

from edgesense.app import cli
from edgesense.bench.firmware_config import RECOGNIZER_FIELDS, update_firmware_config
from edgesense.loop.config import load_config
from edgesense.recognition.commands import CommandRecognizerOptions
from edgesense.runtime.second_opinion import SecondOpinionOptions
from edgesense.schema.yaml import load_yaml_mapping

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = sorted((REPO / "firmware_configs").glob("*.yaml"))
CHOSEN = CommandRecognizerOptions(threshold=0.85, suppression_ms=1000.0, average_window_ms=500.0, minimum_count=3)


def _changed_lines(before: str, after: str) -> list[str]:
    return [line for line in difflib.ndiff(before.splitlines(), after.splitlines()) if line[:2] in ("- ", "+ ")]


@pytest.mark.parametrize("src", FIRMWARE, ids=[p.stem for p in FIRMWARE])
def test_each_firmware_config_changes_only_its_commands_values(src, tmp_path):
    path = Path(shutil.copy(src, tmp_path / src.name))
    before = path.read_text()
    update_firmware_config(path, CHOSEN)
    after = path.read_text()
    data = load_yaml_mapping(path)
    for key in ("threshold", "suppression_ms", "average_window_ms", "minimum_count"):
        assert data["commands"][key] == getattr(CHOSEN, key)
    assert isinstance(data["commands"]["suppression_ms"], int)  # 1000, not 1000.0
    changed = _changed_lines(before, after)
    assert changed and all(line[2:].startswith("  ") for line in changed)  # only indented fields ...
    assert {line[2:].split(":")[0].strip() for line in changed} <= set(RECOGNIZER_FIELDS)
    assert [ln for ln in before.splitlines() if "#" in ln and not ln.lstrip().startswith(
        ("threshold", "suppression_ms", "average_window_ms", "minimum_count"))] == \
        [ln for ln in after.splitlines() if "#" in ln and not ln.lstrip().startswith(
            ("threshold", "suppression_ms", "average_window_ms", "minimum_count"))]  # every comment kept
    assert load_config(path).commands.threshold == 0.85
    update_firmware_config(path, CHOSEN)
    assert path.read_text() == after  # idempotent


def _device_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "device.yaml"
    path.write_text(text)
    return path


def test_a_flow_style_file_is_edited_in_place_not_appended_to(tmp_path):
    path = _device_yaml(tmp_path, "# my device\n{device: {name: t}, commands: {threshold: 0.7, suppression_ms: 750}, "
                                  "vad: {enabled: true}, scenes: {window_ms: 2000}}  # end\n")
    update_firmware_config(path, CHOSEN)
    text = path.read_text()
    assert text.count("commands") == 1 and text.startswith("# my device\n") and "# end" in text
    data = load_yaml_mapping(path)
    assert data["commands"]["threshold"] == 0.85 and data["vad"]["enabled"] is True
    assert data["scenes"] == {"window_ms": 2000}
    config = load_config(path)
    assert config.vad.enabled is True and config.commands.average_window_ms == 500


def test_whole_numbers_are_written_as_integers_zero_included(tmp_path):
    path = _device_yaml(tmp_path, "device:\n  name: t\ncommands:\n  suppression_ms: 750\n")
    update_firmware_config(path, CommandRecognizerOptions(threshold=0.7, suppression_ms=0.0, release_threshold=0.5))
    assert "  suppression_ms: 0\n" in path.read_text()  # not 0.0
    assert load_yaml_mapping(path)["commands"]["threshold"] == 0.7


def test_a_missing_commands_section_is_added(tmp_path):
    path = _device_yaml(tmp_path, "device:\n  name: t   # keep\n")
    update_firmware_config(path, CHOSEN)
    text = path.read_text()
    assert text.startswith("device:\n  name: t   # keep\n") and load_yaml_mapping(path)["commands"]["threshold"] == 0.85


def test_duplicate_keys_are_refused_in_one_line_and_the_file_is_untouched(tmp_path):
    text = "device:\n  name: t\ncommands:\n  threshold: 0.7\n  minimum_count: 3\ncommands: {threshold: 0.5}\n"
    path = _device_yaml(tmp_path, text)
    with pytest.raises(ValueError) as err:
        update_firmware_config(path, CHOSEN)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}:6: duplicate key 'commands'")
    assert path.read_text() == text
    nested = _device_yaml(tmp_path, "device:\n  name: t\ncommands:\n  threshold: 0.7\n  threshold: 0.6\n")
    with pytest.raises(ValueError, match=r"device.yaml:5: duplicate key 'threshold'"):
        update_firmware_config(nested, CHOSEN)


def test_a_result_the_loader_rejects_is_not_written(tmp_path):
    text = "device:\n  name: t\nscheduler:\n  command_hop_ms: 100\ncommands:\n  threshold: 0.7\n"
    path = _device_yaml(tmp_path, text)
    with pytest.raises(ValueError, match="minimum_count"):  # 7 results never fit a 500 ms window at 100 ms hops
        update_firmware_config(path, CommandRecognizerOptions(average_window_ms=500.0, minimum_count=7))
    assert path.read_text() == text
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(ValueError, match="no such file"):
        update_firmware_config(tmp_path / "missing.yaml", CHOSEN)


def test_a_linked_config_is_edited_through_its_link_and_the_link_kept(tmp_path):
    """A device config that is a symbolic link (e.g. to a shared checkout's file): the file it points to
    gets the settings; the link is not replaced by a copy, which would leave that file as it was."""
    shared = tmp_path / "shared"
    shared.mkdir()
    target = shared / "kitchen.yaml"
    target.write_text("device:\n  name: t\ncommands:\n  threshold: 0.7  # mine\n")
    link = tmp_path / "device.yaml"
    link.symlink_to(target)
    assert update_firmware_config(link, CHOSEN) == link
    assert link.is_symlink() and link.resolve() == target
    assert load_yaml_mapping(target)["commands"]["threshold"] == 0.85 and "# mine" in target.read_text()
    assert not list(shared.glob(".*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_the_config_keeps_its_permissions(tmp_path):
    """A config readable by its owner only (it may hold an MQTT password) does not become readable by all."""
    path = _device_yaml(tmp_path, "device:\n  name: t\ncommands:\n  threshold: 0.7\n")
    path.chmod(0o600)
    update_firmware_config(path, CHOSEN)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_yaml_mapping(path)["commands"]["threshold"] == 0.85


def test_the_cli_refuses_a_duplicate_key_before_the_benchmark_runs(tmp_path, capsys):
    path = _device_yaml(tmp_path, "device:\n  name: t\ndevice:\n  name: u\n")
    speech = tmp_path / "sc"
    speech.mkdir()  # empty: the benchmark itself would fail later, on the data
    code = cli.main(["bench", "--model", str(REPO / "models" / "edgesense.tflite"), "--speech-commands", str(speech),
                     "--write-config", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"{path}:3: duplicate key 'device'" in err[0] and str(path) in err[0]


def test_a_config_of_another_command_hop_is_refused_and_left_untouched(tmp_path):
    text = "device:\n  name: t\nscheduler:\n  command_hop_ms: 50\ncommands:\n  threshold: 0.7\n"
    path = _device_yaml(tmp_path, text)
    with pytest.raises(ValueError) as err:
        update_firmware_config(path, CHOSEN, command_hop_ms=100.0)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: scheduler.command_hop_ms: expected 100 ")
    assert message.endswith(f"got 50; measure this device with --config {path}")
    assert path.read_text() == text
    update_firmware_config(path, CHOSEN, command_hop_ms=50.0)  # measured at its own hop: written
    assert load_config(path).commands.threshold == CHOSEN.threshold


def test_a_config_of_another_detector_is_refused_and_left_untouched(tmp_path, tiny_heads_path):
    measured_on = SecondOpinionOptions(heads_path=str(tiny_heads_path), student_weight=0.3)
    alone = _device_yaml(tmp_path, "device:\n  name: t\ncommands:\n  threshold: 0.7\n")
    before = alone.read_text()
    with pytest.raises(ValueError) as err:
        update_firmware_config(alone, CHOSEN, second_opinion=measured_on)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{alone}: second_opinion: expected heads "
                                                       f"{tiny_heads_path.name} at student_weight 0.3 ")
    assert "got no second opinion (the model alone)" in message and alone.read_text() == before
    update_firmware_config(alone, CHOSEN, second_opinion=SecondOpinionOptions())  # measured alone: written
    assert load_config(alone).commands.threshold == CHOSEN.threshold

    copy = Path(shutil.copy(tiny_heads_path, tmp_path / "same_bytes.tflite"))  # the same heads elsewhere: one detector
    pair = tmp_path / "pair.yaml"
    pair.write_text(f"device: {{name: p}}\nsecond_opinion: {{heads_path: {copy.name}, student_weight: 0.3}}\n")
    update_firmware_config(pair, CHOSEN, second_opinion=measured_on)
    assert load_config(pair).commands.threshold == CHOSEN.threshold
    for other in (SecondOpinionOptions(), SecondOpinionOptions(heads_path=str(tiny_heads_path), student_weight=0.5)):
        before = pair.read_text()
        with pytest.raises(ValueError, match=r"pair\.yaml: second_opinion: expected .* got heads same_bytes\.tflite "
                                             r"at student_weight 0\.3; measure this device with --config"):
            update_firmware_config(pair, CommandRecognizerOptions(threshold=0.9), second_opinion=other)
        assert pair.read_text() == before


def test_the_cli_measures_the_model_alone_for_a_config_without_a_second_opinion(tmp_path, capsys):
    path = _device_yaml(tmp_path, "device:\n  name: t\n")  # no second opinion; desktop.yaml, the default, has one
    speech = tmp_path / "sc"
    speech.mkdir()  # empty: the benchmark itself fails later, on the data
    args = ["bench", "--model", str(REPO / "models" / "edgesense.tflite"), "--speech-commands", str(speech),
            "--write-config", str(path), "--out", str(tmp_path / "out")]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{path}: second_opinion: expected heads stream_heads.tflite" in err[0], err
    assert not (tmp_path / "out").exists()
    assert cli.main([*args, "--model-alone"]) == 2  # the detector it measures now: refused for the data instead
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "second_opinion" not in err[0] and str(speech) in err[0], err


def test_the_cli_refuses_a_config_of_another_hop_than_config_before_the_benchmark_runs(tmp_path, capsys):
    orin = REPO / "firmware_configs" / "jetson-orin.yaml"
    assert load_config(orin).scheduler.command_hop_ms != load_config(REPO / "firmware_configs" /
                                                                     "desktop.yaml").scheduler.command_hop_ms
    path = Path(shutil.copy(orin, tmp_path / orin.name))
    before = path.read_text()
    speech = tmp_path / "sc"
    speech.mkdir()
    code = cli.main(["bench", "--model", str(REPO / "models" / "edgesense.tflite"), "--speech-commands", str(speech),
                     "--write-config", str(path), "--out", str(tmp_path / "out")])  # --config: desktop.yaml
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"{path}: scheduler.command_hop_ms: expected 100" in err[0], err
    assert path.read_text() == before and not (tmp_path / "out").exists()
