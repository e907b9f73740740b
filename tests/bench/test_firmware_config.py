"""``bench --write-config``: the recommended settings edited into a firmware YAML in place."""

from __future__ import annotations

import difflib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
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


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_the_config_keeps_its_owner_and_group(tmp_path):
    """``sudo edgesense bench --write-config`` on a user's (or the service's) config: the file was replaced by one
    of root's, which its user could then no longer edit (or, at mode 0600, the service no longer read)."""
    path = _device_yaml(tmp_path, "device:\n  name: t\ncommands:\n  threshold: 0.7\n")
    os.chown(path, 65534, 65534)
    path.chmod(0o640)
    update_firmware_config(path, CHOSEN)
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o640)
    assert load_yaml_mapping(path)["commands"]["threshold"] == 0.85


def test_a_failed_write_leaves_the_file_and_nothing_else(tmp_path):
    """A full disk while the new file is written (here: a file size limit): one line, the config as it was, and no
    partial temporary file beside it (it was left there, and the error was an OSError naming that file)."""
    text = "device:\n  name: t\ncommands:\n  threshold: 0.7\n# " + "x" * 3000 + "\n"
    path = _device_yaml(tmp_path, text)
    script = ("import resource, signal, sys\n"
              "from edgesense.bench.firmware_config import update_firmware_config\n"
              "from edgesense.recognition.commands import CommandRecognizerOptions\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.RLIM_INFINITY))\n"
              "try:\n"
              "    update_firmware_config(sys.argv[1], CommandRecognizerOptions(threshold=0.85))\n"
              "except Exception as exc:\n"
              "    print(type(exc).__name__, exc)\n")
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == f"ValueError {path}: cannot write it (File too large); the file is left as it was"
    assert path.read_text() == text and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


_AS_ANOTHER_USER = """import os, sys
from edgesense.bench.firmware_config import check_firmware_config, update_firmware_config
from edgesense.recognition.commands import CommandRecognizerOptions
if os.geteuid() == 0:  # the test runs as root: act as an ordinary user (once imported: root's Python may be closed)
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
for path in sys.argv[1:]:
    for call in (check_firmware_config, lambda p: update_firmware_config(p, CommandRecognizerOptions(threshold=0.85))):
        try:
            call(path)
            print("written")
        except Exception as exc:
            print(type(exc).__name__, exc)
"""


def test_a_config_this_user_could_not_write_in_place_is_refused_before_the_run():
    """A read-only config was replaced all the same (the new file renamed over it), one in a folder the user may not
    write was an OSError after the whole run, and another user's file became this user's."""
    root = os.geteuid() == 0
    with tempfile.TemporaryDirectory() as name:  # not tmp_path: its parents are closed to another user
        top = Path(name)
        text = "device:\n  name: t\ncommands:\n  threshold: 0.7\n"
        (top / "closed").mkdir()
        files = {"read-only": top / "ro.yaml", "closed folder": top / "closed" / "c.yaml"}
        for path in files.values():
            path.write_text(text)
        files["read-only"].chmod(0o444)
        if root:  # the user the script becomes owns the top folder and the files, not the closed folder
            files["another's"] = top / "theirs.yaml"
            files["another's"].write_text(text)
            files["another's"].chmod(0o666)
            for path in (top, files["read-only"], files["closed folder"]):
                os.chown(path, 65534, 65534)
        else:
            (top / "closed").chmod(0o555)
        top.chmod(0o755)
        try:
            done = subprocess.run([sys.executable, "-c", _AS_ANOTHER_USER, *map(str, files.values())],
                                  capture_output=True, text=True, timeout=120)
        finally:
            (top / "closed").chmod(0o755)
        lines = done.stdout.splitlines()
        assert len(lines) == 2 * len(files), done.stderr
        expected = {"read-only": "expected a file this user may write, got a read-only one (mode 0444",
                    "closed folder": f"expected a file in a folder this user may write (the new file is written "
                                     f"beside it, then renamed over it), got {top / 'closed'}, which this user may not",
                    "another's": "expected a file of this user (uid 65534) in one of its groups, got another's"}
        for i, (kind, path) in enumerate(files.items()):
            for line in lines[2 * i:2 * i + 2]:
                assert line.startswith(f"ValueError {path}: {expected[kind]}"), (kind, line)
            assert path.read_text() == text and not list(path.parent.glob(".*.tmp"))


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


def test_write_config_is_refused_unless_the_tuning_speakers_are_the_models_validation_speakers(tmp_path, capsys,
                                                                                             caplog):
    """``--write-config`` with ``--split all`` (the default) chose the point on half of every speaker of the folder:
    on the folder the model trained on, its test speakers among them (and its training speakers), and wrote it
    into a device's config. ``--split testing`` with another ``--salt`` tunes on another split's validation
    speakers, the same way. The bundled model records ``data/speech_commands`` (salt ``edgesense``)."""
    from datagen import make_speech_commands

    from edgesense.runtime.model import EdgeModel
    from edgesense.types import DEFAULT_COMMAND_WORDS

    speech = make_speech_commands(tmp_path / "data" / "speech_commands", words=DEFAULT_COMMAND_WORDS, speakers=4,
                                  per_speaker=1)
    path = _device_yaml(tmp_path, "device:\n  name: t\ncommands:\n  threshold: 0.7\n")
    before, out = path.read_text(), tmp_path / "out"
    args = ["bench", "--model", str(REPO / "models" / "edgesense.tflite"), "--speech-commands", str(speech),
            "--model-alone", "--write-config", str(path), "--out", str(out)]
    for extra, got in (([], "got --split all"), (["--split", "testing", "--salt", "other"], "got --salt 'other'")):
        assert cli.main([*args, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("edgesense: error: --write-config: expected --split testing with "
                                                   "the salt the model records ('edgesense')"), err
        assert got in err[0] and f"test speakers of {speech}, the folder the model trained on" in err[0], err
        assert path.read_text() == before and not out.exists()
    from edgesense.bench.cli import BenchOptions, _check_tuning_speakers

    model = EdgeModel.load(REPO / "models" / "edgesense.tflite")
    fair = BenchOptions(model_path=REPO / "models" / "edgesense.tflite", speech_commands=speech, split="testing",
                        write_config=(path,), out_dir=out)
    _check_tuning_speakers(fair, model)  # its own split: the validation speakers choose the point
    other = make_speech_commands(tmp_path / "mine", words=DEFAULT_COMMAND_WORDS, speakers=4, per_speaker=1)
    with caplog.at_level("WARNING", logger="edgesense.bench.cli"):  # a folder it does not record: said, not refused
        _check_tuning_speakers(BenchOptions(model_path=fair.model_path, speech_commands=other, write_config=(path,),
                                            out_dir=out), model)
    assert any(r.getMessage().startswith("--write-config with --split all: the operating point is chosen on "
                                         "speakers of") for r in caplog.records)


def test_a_config_is_edited_where_the_system_has_no_user_ids(tmp_path, monkeypatch):
    """Windows has no ``os.geteuid`` (nor ``getegid``, ``getgroups``): ``bench --write-config`` failed there with
    AttributeError before the run (the owner check), where files have no owner ids to keep."""
    for name in ("geteuid", "getegid", "getgroups", "chown"):
        monkeypatch.delattr(os, name, raising=False)
    path = Path(shutil.copy(FIRMWARE[0], tmp_path / FIRMWARE[0].name))
    update_firmware_config(path, CHOSEN)
    assert load_config(path).commands.threshold == 0.85
