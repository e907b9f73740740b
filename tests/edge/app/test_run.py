"""``edgesense run`` end to end: replayed media, JSON Lines, summary, signals, errors (exit 2)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sounddevice as sd
from cli_run import ERROR_PREFIX, edgesense, error_line, only_line
from datagen import write_stream_heads
from media import REQUIRED_KEYS, TEST_THRESHOLD, scene_video, tone_wav  # noqa: E402

from edgesense.app.cli import main
from edgesense.schema.yaml import dump_yaml
from edgesense.types import DEFAULT_COMMAND_LABELS

ROOT = Path(__file__).resolve().parents[3]
SUMMARY_PREFIX = "edgesense run: events:"


def write_config(tmp_path: Path, **sections) -> Path:
    data = {"device": {"name": "test-device"},
            "commands": {"threshold": TEST_THRESHOLD},
            "scenes": {"window_ms": 500, "min_hold_ms": 400, "heartbeat_ms": 1000},
            "outputs": {"events": "-", "mqtt": None}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path = tmp_path / "device.yaml"
    path.write_text(dump_yaml(data), encoding="utf-8")
    return path


@pytest.fixture
def media(tmp_path):
    wav = tone_wav(tmp_path / "words.wav", [("yes", 1.0)], 4.0)
    video = scene_video(tmp_path / "scene.avi", [("indoor", 2.0), ("vehicle", 2.0)])
    return wav, video


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def one_error_line(err: str) -> str:
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 1, err
    return errors[0]


def test_run_replay_fast_to_stdout_with_summary(tiny_model_path, tmp_path, media, capsys):
    wav, video = media
    config = write_config(tmp_path)
    rc = main(["run", "--config", str(config), "--model", str(tiny_model_path), "--video", str(video),
               "--audio", str(wav), "--fast", "--events", "-", "--stats"])
    out, err = capsys.readouterr()
    assert rc == 0
    events = json_lines(out)
    assert events and all(REQUIRED_KEYS <= set(e) for e in events)
    assert [e["label"] for e in events if e["type"] == "command"] == ["yes"]
    changes = [e["label"] for e in events if e["type"] == "scene" and e["reason"] == "change"]
    assert changes == ["indoor", "vehicle"]
    lines = err.splitlines()
    summary = next(line for line in lines if line.startswith(SUMMARY_PREFIX))
    assert "1 command" in summary and "RTF" in summary and "audio_encoder=" in summary
    stats = json.loads(lines[-1])
    assert stats["stream_ms"] == pytest.approx(4000.0) and stats["command_events"] == 1
    assert stats["latency_ms"]["image_encoder"]["p95"] >= stats["latency_ms"]["image_encoder"]["p50"] > 0


def test_run_events_file_and_duration(tiny_model_path, tmp_path, media, capsys):
    wav, video = media
    events_file = tmp_path / "out" / "events.jsonl"
    events_file.parent.mkdir()
    rc = main(["run", "--config", str(write_config(tmp_path)), "--model", str(tiny_model_path),
               "--video", str(video), "--audio", str(wav), "--fast", "--events", str(events_file),
               "--duration-s", "2", "--stats"])
    out, err = capsys.readouterr()
    assert rc == 0 and out == ""
    events = json_lines(events_file.read_text())
    assert events and max(e["t_ms"] for e in events) <= 2000
    assert json.loads(err.splitlines()[-1])["stream_ms"] == pytest.approx(2000.0)


def test_only_audio_or_only_video_leaves_the_other_modality_absent(tiny_model_path, tmp_path, media, capsys):
    wav, video = media
    config = str(write_config(tmp_path))  # camera and microphone enabled: neither may be opened
    assert main(["run", "--config", config, "--model", str(tiny_model_path), "--audio", str(wav), "--fast"]) == 0
    audio_only = json_lines(capsys.readouterr().out)
    assert [e["type"] for e in audio_only] == ["command"]
    assert audio_only[0]["latency_ms"]["image_encoder"] == 0.0
    assert main(["run", "--config", config, "--model", str(tiny_model_path), "--video", str(video), "--fast"]) == 0
    video_only = json_lines(capsys.readouterr().out)
    assert video_only and {e["type"] for e in video_only} == {"scene"}


def test_with_stderr_closed_the_summary_and_stats_never_join_the_events_on_stdout(tiny_model_path, tmp_path, media):
    """``edgesense run ... 2>&- | consumer``: Python's print(file=sys.stderr) writes to stdout when stderr is
    closed, so the summary line and the --stats object (JSON, read as an event) ended the event stream."""
    wav, video = media
    argv = [sys.executable, "-m", "edgesense.app.cli", "run", "--config", str(write_config(tmp_path)), "--model",
            str(tiny_model_path), "--video", str(video), "--audio", str(wav), "--fast", "--events", "-", "--stats"]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True, preexec_fn=lambda: os.close(2), timeout=300,
                          check=False)
    assert proc.returncode == 0
    events = json_lines(proc.stdout)
    assert events and all(REQUIRED_KEYS <= set(e) for e in events), proc.stdout
    assert [e["label"] for e in events if e["type"] == "command"] == ["yes"]
    assert "edgesense run" not in proc.stdout


def test_with_stderr_closed_an_error_line_never_joins_the_events_on_stdout(tmp_path):
    """``edgesense run ... 2>&- | consumer`` with a bad flag value: the one-line error goes nowhere (stderr is
    closed), never onto stdout where the consumer reads events; the exit code still says it failed."""
    argv = [sys.executable, "-m", "edgesense.app.cli", "run", "--config", str(tmp_path / "missing.yaml"),
            "--events", "-"]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True, preexec_fn=lambda: os.close(2), timeout=300,
                          check=False)
    assert proc.returncode == 2
    assert proc.stdout == ""


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_run_flushes_and_exits_0(tiny_model_path, tmp_path, stop_signal):
    wav = tone_wav(tmp_path / "long.wav", [("yes", 1.0)], 8.0)
    video = scene_video(tmp_path / "long.avi", [("indoor", 8.0)])
    config = write_config(tmp_path, scenes={"min_hold_ms": 0, "heartbeat_ms": 100})  # an event every 200 ms
    events_file = tmp_path / "events.jsonl"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgesense.app.cli", "run", "--config", str(config), "--model", str(tiny_model_path),
         "--video", str(video), "--audio", str(wav), "--events", str(events_file), "--headless"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if events_file.exists() and events_file.read_text().count("\n") >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(stop_signal)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    text = events_file.read_text()
    assert text.endswith("\n")  # no torn last line
    events = json_lines(text)
    assert len(events) >= 3 and all(REQUIRED_KEYS <= set(e) for e in events)
    summary = next(line for line in err.splitlines() if line.startswith(SUMMARY_PREFIX))
    assert "8.0 s of media" not in summary  # stopped before the end of the replay
    assert "Traceback" not in err


#: Runs ``edgesense ARGV`` and sends itself SIGNAL once the loop's modules start loading: a stop during a slow
#: start-up (seconds on a Pi), as ``systemctl stop`` right after the service started.
STOP_WHILE_LOADING = """
import os, signal, sys
from edgesense.app.cli import main

class StopWhileLoading:
    def find_spec(self, name, path=None, target=None):
        if name == "edgesense.loop.config":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), int(sys.argv[1]))
        return None

sys.meta_path.insert(0, StopWhileLoading())
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_loop_loads_exits_0_as_any_stop(tiny_model_path, tmp_path, media, stop_signal):
    wav, _ = media
    events_file = tmp_path / "events.jsonl"
    proc = subprocess.run(
        [sys.executable, "-c", STOP_WHILE_LOADING, str(int(stop_signal)), "run", "--config",
         str(write_config(tmp_path)), "--model", str(tiny_model_path), "--audio", str(wav),
         "--events", str(events_file), "--headless"],
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=120,
        check=False)
    assert proc.returncode == 0, proc.stderr  # was 130: a KeyboardInterrupt raised inside the import
    assert "Traceback" not in proc.stderr
    summary = [line for line in proc.stderr.splitlines() if line.startswith(SUMMARY_PREFIX)]
    assert len(summary) == 1 and "0.0 s of media" in summary[0], proc.stderr  # stopped before the replay
    assert not events_file.exists() or events_file.read_text() == ""


def test_missing_video_file_is_one_line_exit_2(tiny_model_path, tmp_path, capsys):
    rc = main(["run", "--config", str(write_config(tmp_path)), "--model", str(tiny_model_path),
               "--video", str(tmp_path / "nope.mp4"), "--fast"])
    assert rc == 2
    assert f"--video {tmp_path / 'nope.mp4'}: no such file" in one_error_line(capsys.readouterr().err)


def test_a_video_name_that_is_not_utf8_is_one_line_exit_2_and_a_utf8_one_plays_in_any_locale(tmp_path, media):
    """A video whose name is Latin-1 bytes (``caf\\xe9.avi`` from an old archive) crashed ``edgesense run`` in OpenCV
    with a segmentation fault (exit 139, no message); so did ``café.avi``, a UTF-8 name, in a C locale without UTF-8
    mode (``LC_ALL=C PYTHONUTF8=0``), where Python reads it with the same surrogate escapes."""
    wav, video = media
    config = write_config(tmp_path, model={"path": str(BUNDLED_MODEL)})  # defined below, read when run
    latin1 = tmp_path / os.fsdecode(b"caf\xe9.avi")
    shutil.copy(video, latin1)
    line = error_line(edgesense("run", "--config", config, "--video", latin1, "--audio", wav, "--fast"))
    assert f"--video {tmp_path}/caf" in line and "expected a video file whose name is UTF-8" in line
    assert "/caf\\xe9.avi): rename it" in line  # the name's bytes, as the user sees them
    utf8 = tmp_path / "café ñandú.avi"
    shutil.copy(video, utf8)
    proc = edgesense("run", "--config", config, "--video", utf8, "--audio", wav, "--fast", "--events", "-",
                     env={"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": None})
    assert proc.returncode == 0, proc.stderr
    assert [e["label"] for e in json_lines(proc.stdout) if e["type"] == "scene" and e["reason"] == "change"]


def test_a_config_whose_model_cannot_be_loaded_names_the_field(tmp_path, media, capsys):
    wav, _ = media
    for bad, found in ((tmp_path / "missing.tflite", "no such file"), (tmp_path, "a folder")):
        config = write_config(tmp_path, model={"path": str(bad)})
        assert main(["run", "--config", str(config), "--audio", str(wav), "--fast"]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert line.endswith(f"{config}: model.path: expected a .tflite file, got {bad} ({found})"), line


def test_a_config_its_model_does_not_fit_names_the_config_and_the_field(tiny_model_path, tmp_path, media, capsys):
    """Class thresholds of a word the model lacks: the line named neither the config nor the commands section
    (``class_thresholds: expected labels of the model ...``), unlike deploy's for the same config."""
    wav, _ = media
    config = write_config(tmp_path, commands={"class_thresholds": {"hello": 0.8}})
    assert main(["run", "--config", str(config), "--model", str(tiny_model_path), "--audio", str(wav), "--fast"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{config}: commands.class_thresholds: expected labels of the model [" in line, line
    assert line.endswith(f"got ['hello'] (model {tiny_model_path})"), line


def test_corrupt_inputs_are_one_line_exit_2(tiny_model_path, tmp_path, media, capsys):
    wav, video = media
    config = str(write_config(tmp_path))
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(Path(tiny_model_path).read_bytes()[:2000])
    assert main(["run", "--config", config, "--model", str(truncated), "--audio", str(wav), "--fast"]) == 2
    assert "truncated.tflite" in one_error_line(capsys.readouterr().err)

    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(4096))
    assert main(["run", "--config", config, "--model", str(tiny_model_path), "--video", str(garbage), "--fast"]) == 2
    assert "garbage.mp4" in one_error_line(capsys.readouterr().err)

    assert main(["run", "--config", str(tmp_path / "none.yaml"), "--audio", str(wav)]) == 2
    assert f"--config {tmp_path / 'none.yaml'}: no such file" in one_error_line(capsys.readouterr().err)

    assert main(["run", "--config", config, "--model", str(tiny_model_path), "--audio", str(wav),
                 "--duration-s", "-1"]) == 2
    assert "--duration-s" in one_error_line(capsys.readouterr().err)

    missing_model = tmp_path / "models" / "missing.tflite"
    assert main(["run", "--config", config, "--model", str(missing_model), "--audio", str(wav)]) == 2
    assert "missing.tflite" in one_error_line(capsys.readouterr().err)


def test_no_microphone_is_one_line_exit_2(tiny_model_path, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sd, "query_devices", lambda device=None, kind=None: [])  # a machine without a sound card
    config = write_config(tmp_path, camera={"enabled": False})
    assert main(["run", "--config", str(config), "--model", str(tiny_model_path)]) == 2
    assert "no audio input device" in one_error_line(capsys.readouterr().err)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_runs_the_documented_command():
    makefile = (ROOT / "Makefile").read_text()
    assert ("edgesense run --config firmware_configs/desktop.yaml" in makefile
            and "--video samples/scene.mp4 --audio samples/speech_commands.wav --fast --events -" in makefile)
    for name in ("scene.mp4", "speech_commands.wav", "speech_commands.json"):
        assert (ROOT / "samples" / name).is_file()


# --------------------------------------------------------------------------- what a user sees (subprocess)

BUNDLED_MODEL = ROOT / "models" / "edgesense.tflite"
STILL_IMAGE = ROOT / "tests" / "data" / "golden_scene.png"


@pytest.fixture
def bundled_config(tmp_path) -> Path:
    """A device config for the bundled model (no tiny model, no TensorFlow needed)."""
    path = tmp_path / "device.yaml"
    path.write_text(dump_yaml({"device": {"name": "test-device"}, "model": {"path": str(BUNDLED_MODEL)},
                                    "outputs": {"events": "-", "mqtt": None}}), encoding="utf-8")
    return path


def test_a_still_image_as_video_is_one_line_exit_2(bundled_config, tmp_path):
    image = shutil.copy(STILL_IMAGE, tmp_path / "photo.png")
    for extra in ((), ("--audio", str(ROOT / "samples" / "commands.wav"))):
        proc = edgesense("run", "--config", bundled_config, "--video", image, *extra, "--fast", "--headless")
        line = error_line(proc)
        assert f"--video {image}: a still image, not a video" in line
        assert proc.stdout == ""  # no events, no "RTF nan" summary


@pytest.mark.parametrize("flag", ["--config", "--model", "--video", "--audio"])
def test_a_folder_where_a_file_is_expected_names_the_flag(flag, bundled_config, tmp_path):
    args = {"--config": str(bundled_config), "--audio": str(ROOT / "samples" / "commands.wav")}
    args[flag] = str(tmp_path)
    proc = edgesense("run", *[x for pair in args.items() for x in pair], "--fast", "--headless")
    assert only_line(proc) == f"{ERROR_PREFIX} {flag} {tmp_path}: is a folder; expected a file"


@pytest.mark.parametrize("flag", ["--config", "--model", "--video", "--audio"])
def test_an_empty_file_flag_is_said_as_such_not_as_the_current_folder(flag, capsys):
    # --video "$VIDEO" with the variable unset: said "--video .: is a folder; expected a file" (a "." never typed)
    args = {"--config": "rpi5", "--audio": str(ROOT / "samples" / "commands.wav"), flag: ""}
    with pytest.raises(SystemExit) as exited:
        main(["run", *[x for pair in args.items() for x in pair], "--fast", "--headless"])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", f"edgesense run: error: {flag}: expected a file, got an empty string\n")


def test_a_truncated_video_is_our_line_only_and_v_after_the_command_shows_ffmpeg(bundled_config, tmp_path):
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes((ROOT / "samples" / "scene.mp4").read_bytes()[:5000])
    args = ("run", "--config", bundled_config, "--video", truncated, "--fast", "--headless")
    ffmpeg_default = {"OPENCV_FFMPEG_LOGLEVEL": None}  # as a user's shell has it
    quiet = edgesense(*args, env=ffmpeg_default)
    assert f"--video {truncated}: not a readable video file" in error_line(quiet)  # no "moov atom not found"
    verbose = edgesense(*args, "-v", env=ffmpeg_default)  # -v after the command works: the chatter is back
    assert verbose.returncode == 2 and "moov atom not found" in verbose.stderr


def test_fast_without_a_replayed_file_is_refused_not_ignored(tiny_model_path, tmp_path, capsys):
    """--fast paces a replay; the live camera and microphone run in real time whatever it says: it was
    silently ignored (the run went on to open the devices)."""
    config = write_config(tmp_path, camera={"enabled": False})
    assert main(["run", "--config", str(config), "--model", str(tiny_model_path), "--fast", "--headless"]) == 2
    assert one_error_line(capsys.readouterr().err) == (f"{ERROR_PREFIX} --fast: acts only with --video or --audio "
                                                       "(a replay), which are not given")


def test_neither_camera_nor_microphone_reports_both_and_says_how_to_run_without(tmp_path):
    config = tmp_path / "nodev.yaml"
    config.write_text(dump_yaml({"device": {"name": "nodev"}, "model": {"path": str(BUNDLED_MODEL)},
                                      "camera": {"enabled": True, "source": str(tmp_path / "video-none")},
                                      "audio": {"enabled": True, "device": "no-such-microphone"},
                                      "outputs": {"events": "-", "mqtt": None}}), encoding="utf-8")
    line = error_line(edgesense("run", "--config", config, "--headless"))
    assert "microphone:" in line and "camera: cannot open camera" in line
    assert f"audio.enabled: false in {config}" in line and "camera.enabled: false" in line
    assert "--video FILE / --audio FILE" in line


def test_without_devices_a_config_of_the_installation_is_to_be_copied_not_edited(tmp_path, monkeypatch):
    """From a wheel install, ``--config desktop`` is site-packages/edgesense/firmware_configs/desktop.yaml: the line
    told the user to edit that file, which the next upgrade replaces."""
    import sysconfig

    from edgesense.app.run import live_device_help
    from edgesense.loop.pipeline import LiveDeviceError
    from edgesense.shipped import part_of_an_installation

    site = tmp_path / "site-packages"
    installed = site / "edgesense" / "firmware_configs" / "desktop.yaml"
    installed.parent.mkdir(parents=True)
    installed.write_text("device: {name: desktop}\n")
    mine = tmp_path / "mine.yaml"
    mine.write_text("device: {name: mine}\n")
    real = sysconfig.get_paths
    monkeypatch.setattr(sysconfig, "get_paths", lambda *args, **kwargs: {**real(*args, **kwargs), "purelib": str(site),
                                                                         "platlib": str(site)})
    assert part_of_an_installation(installed) and not part_of_an_installation(mine)
    failure = LiveDeviceError(["microphone: no input device"])
    model, heads = site / "edgesense" / "models" / "edgesense.tflite", site / "edgesense" / "models" / "heads.tflite"
    paths = [("model.path", str(model)), ("second_opinion.heads_path", str(heads))]
    line = str(live_device_help(failure, str(installed), paths))
    assert (f"in a copy of {installed} (the installed one is replaced by every upgrade: cp {installed} desktop.yaml, "
            f"set model.path: {model}, second_opinion.heads_path: {heads} in it, then --config desktop.yaml)") in line
    assert "heads_path" not in str(live_device_help(failure, str(installed), [("second_opinion.heads_path", None)]))
    assert f"audio.enabled: false in {mine} to run without it" in str(live_device_help(failure, str(mine)))


def test_a_yaml_syntax_error_is_one_line_naming_the_file_and_line(tmp_path):
    config = tmp_path / "device.yaml"
    config.write_text("device:\n  name: x\ncamera: {fps: 3\n")
    for command in ("run", "demo"):
        line = only_line(edgesense(command, "--config", config, env={"DISPLAY": ""}))
        assert line.startswith(f"{ERROR_PREFIX} {config}:4: not valid YAML") and "<unicode string>" not in line


def test_mqtt_broker_away_at_start_spools_by_default_and_the_next_run_delivers_in_order(
        tiny_model_path, tmp_path, media, caplog):
    from brokers import MOSQUITTO, WAIT_S, Broker, free_port

    if not os.path.exists(MOSQUITTO):
        pytest.skip(f"{MOSQUITTO} is not installed")
    import paho.mqtt.client as mqtt

    wav, _ = media
    port = free_port()
    config = write_config(tmp_path, device={"device_id": "test-pi"}, outputs={"events": None})
    url = f"mqtt://127.0.0.1:{port}"
    run = ["run", "--config", str(config), "--model", str(tiny_model_path), "--audio", str(wav), "--fast",
           "--mqtt", url]
    with caplog.at_level("WARNING", logger="edgesense.sinks.mqtt"):
        assert main(run) == 0  # the broker is away: the loop runs anyway
    assert "unreachable" in caplog.text and "spool" in caplog.text
    from edgesense.sinks.spool import EventSpool

    spool = EventSpool(Path(os.environ["XDG_STATE_HOME"]) / "edgesense" / "spool" / "test-pi")
    assert len(spool) == 1  # the event waits on disk
    spool.close()
    broker = Broker(tmp_path / "broker", ("allow_anonymous true",), port=port)
    received: list[dict] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_message = lambda c, u, msg: received.append(json.loads(msg.payload))
    try:
        client.connect(broker.host, broker.port)
        client.loop_start()
        client.subscribe("edgesense/test-pi/command", qos=1)
        time.sleep(0.5)
        assert main(run) == 0  # second run: first the first run's events, then its own
        deadline = time.monotonic() + WAIT_S
        while len(received) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(received) >= 2 and received[0]["label"] == received[1]["label"] == "yes"
        assert received[0]["wall_time"] < received[1]["wall_time"]  # the older event first
    finally:
        client.loop_stop()
        client.disconnect()
        broker.stop()


def test_mqtt_without_a_spool_says_how_many_events_were_lost_and_exits_1(tiny_model_path, tmp_path, media, capsys):
    from brokers import free_port

    wav, _ = media
    config = write_config(tmp_path, outputs={"events": None, "mqtt_spool_dir": None})
    rc = main(["run", "--config", str(config), "--model", str(tiny_model_path), "--audio", str(wav), "--fast",
               "--mqtt", f"mqtt://127.0.0.1:{free_port()}?qos=1"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "1 events were lost: not written to the events file, or neither delivered to the MQTT broker nor " \
           "spooled" in err


def test_an_events_file_that_cannot_be_written_reports_the_lost_events_and_exits_1(tiny_model_path, tmp_path,
                                                                                   media, capsys):
    wav, _ = media
    rc = main(["run", "--config", str(write_config(tmp_path)), "--model", str(tiny_model_path), "--audio", str(wav),
               "--fast", "--events", "/dev/full"])  # every write: ENOSPC
    err = capsys.readouterr().err
    assert rc == 1
    assert "1 events were lost: not written to the events file" in err


def test_an_events_path_that_is_a_folder_is_one_line_naming_the_flag_or_the_config_field(tiny_model_path, tmp_path,
                                                                                        media, capsys):
    wav, _ = media
    run = ["run", "--model", str(tiny_model_path), "--audio", str(wav), "--fast"]
    config = write_config(tmp_path)
    assert main([*run, "--config", str(config), "--events", str(tmp_path)]) == 2
    assert one_error_line(capsys.readouterr().err) == (f"{ERROR_PREFIX} --events {tmp_path}: is a folder; "
                                                       "expected a JSON Lines file or -")
    assert main([*run, "--config", str(config), "--events", ""]) == 2
    assert one_error_line(capsys.readouterr().err) == (f"{ERROR_PREFIX} --events: expected a JSON Lines file or -, "
                                                       "got an empty path")
    config = write_config(tmp_path, outputs={"events": str(tmp_path)})
    assert main([*run, "--config", str(config)]) == 2
    assert one_error_line(capsys.readouterr().err) == (f"{ERROR_PREFIX} {config}: outputs.events {tmp_path}: "
                                                       "is a folder; expected a JSON Lines file or -")


def test_an_events_file_that_is_an_input_of_the_run_is_refused_and_left_as_it_was(tiny_model_path, tmp_path,
                                                                                  media, capsys):
    """Events are appended: --events (or outputs.events) naming the config, the model or a replayed file
    would spoil it (a config with events appended no longer loads). One line naming both, nothing written."""
    wav, video = media
    config = write_config(tmp_path)
    before = {path: path.read_bytes() for path in (config, wav, video, tiny_model_path)}
    run = ["run", "--config", str(config), "--model", str(tiny_model_path), "--video", str(video), "--audio", str(wav),
           "--fast", "--headless"]
    for target, what in ((config, "the --config file"), (wav, "the --audio file"), (video, "the --video file"),
                         (tiny_model_path, "the --model file")):
        assert main([*run, "--events", str(target)]) == 2
        assert one_error_line(capsys.readouterr().err) == (
            f"{ERROR_PREFIX} --events {target}: expected a JSON Lines file of its own, got {what} {target} "
            "(events are appended to the file)")
    config = write_config(tmp_path, outputs={"events": str(wav)})
    before[config] = config.read_bytes()
    assert main(run) == 2
    assert one_error_line(capsys.readouterr().err).startswith(f"{ERROR_PREFIX} {config}: outputs.events {wav}: "
                                                              "expected a JSON Lines file of its own")
    assert {path: path.read_bytes() for path in before} == before


def test_one_file_given_to_two_flags_names_both(bundled_config, tmp_path):
    wav = shutil.copy(ROOT / "samples" / "commands.wav", tmp_path / "w.wav")
    line = error_line(edgesense("run", "--config", bundled_config, "--video", wav, "--audio", wav, "--fast",
                                "--headless"))
    assert f"--video/--audio {wav}: not a readable video file" in line


@pytest.mark.parametrize("url, needle", [
    ("mqtt://127.0.0.1:0", "--mqtt: mqtt url 'mqtt://127.0.0.1:0': expected a port in [1, 65535], got 0"),
    ("mqtt://u:secret@[::1", "--mqtt: mqtt url 'mqtt://u:***@[::1': "),
    ("mqtts://127.0.0.1:1?certfile={notes}", "--mqtt: certfile={notes}: expected a PEM file"),
])
def test_a_bad_mqtt_url_or_tls_file_is_one_line_naming_the_flag(tiny_model_path, tmp_path, media, capsys, url,
                                                                needle):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a certificate\n")
    wav, _ = media
    rc = main(["run", "--config", str(write_config(tmp_path)), "--model", str(tiny_model_path), "--audio", str(wav),
               "--fast", "--mqtt", url.format(notes=notes)])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and needle.format(notes=notes) in line and "secret" not in line


def test_heads_of_other_words_name_the_config_field_and_the_way_out(tiny_model_path, tmp_path, media, capsys):
    """A model of the user's own words run with a config whose second opinion knows other words (every shipped
    config's heads know the ten words): one line naming the config, its field and the way out, exit 2. It named
    only the heads file (inside the installation), not the config that asks for it."""
    words = list(DEFAULT_COMMAND_LABELS[:5])
    heads = write_stream_heads(tmp_path / "heads.tflite", words)
    config = write_config(tmp_path, second_opinion={"heads_path": str(heads)})
    wav, _ = media
    capsys.readouterr()
    rc = main(["run", "--config", str(config), "--model", str(tiny_model_path), "--audio", str(wav), "--fast",
               "--events", str(tmp_path / "events.jsonl")])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2
    assert line.startswith(f"{ERROR_PREFIX} --config {config}: second_opinion.heads_path: {heads}: labels: "
                           f"expected the model's {list(DEFAULT_COMMAND_LABELS)}, got {words}"), line
    assert "edgesense train-stream-heads --model" in line and "delete the second_opinion: section" in line, line
