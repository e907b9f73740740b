from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest

from edgesense.loop.config import SECTIONS, DeviceConfig, load_config
from edgesense.recognition.commands import CommandRecognizerOptions
from edgesense.recognition.gate import EnergyGateOptions
from edgesense.recognition.scenes import SceneSmootherOptions
from edgesense.runtime.interpreter import InterpreterOptions
from edgesense.runtime.model import DEFAULT_MODEL_PATH
from edgesense.sinks.mqtt import MqttOptions
from edgesense.sources.camera import CameraOptions, is_gstreamer_pipeline
from edgesense.sources.microphone import MicrophoneOptions

REPO = Path(__file__).resolve().parents[3]
BUNDLED = sorted((REPO / "firmware_configs").glob("*.yaml"))


def test_all_expected_configs_are_bundled():
    assert {p.stem for p in BUNDLED} >= {"rpi4", "rpi5", "jetson-nano", "jetson-orin", "desktop"}


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.stem)
def test_bundled_config_loads_and_each_section_is_its_component_options(path):
    config = load_config(path)
    assert config.device.name == path.stem and config.source_path == str(path)
    # model.path is relative to the YAML's folder: firmware_configs/../models/edgesense.tflite
    assert config.model_path == REPO / DEFAULT_MODEL_PATH
    assert isinstance(config.model, InterpreterOptions)
    assert isinstance(config.camera, CameraOptions) and isinstance(config.audio, MicrophoneOptions)
    assert isinstance(config.commands, CommandRecognizerOptions) and isinstance(config.vad, EnergyGateOptions)
    assert isinstance(config.scenes, SceneSmootherOptions)
    assert set(SECTIONS) == {"device", "model", "camera", "audio", "scheduler", "commands", "vad", "scenes",
                             "outputs", "second_opinion"}
    # Round trip through plain data.
    assert DeviceConfig.from_dict(config.to_dict(), source=str(path)) == config


def test_bundled_device_specifics():
    rpi4, rpi5 = load_config(REPO / "firmware_configs/rpi4.yaml"), load_config(REPO / "firmware_configs/rpi5.yaml")
    assert rpi4.model.num_threads == 4 and rpi5.model.num_threads == 4
    assert (rpi4.camera.width_px, rpi4.camera.height_px, rpi4.camera.fps) == (640, 480, 15)
    assert rpi4.scheduler.scene_rate_hz == 2 and rpi5.scheduler.scene_rate_hz == 5
    assert rpi4.vad.enabled and not rpi5.vad.enabled
    for name in ("jetson-nano", "jetson-orin"):
        jetson = load_config(REPO / f"firmware_configs/{name}.yaml")
        assert is_gstreamer_pipeline(jetson.camera.source)
        assert jetson.camera.source.startswith("nvarguscamerasrc") and jetson.camera.source.endswith(
            "appsink drop=true max-buffers=1")
        assert "\n" not in jetson.camera.source
        assert jetson.model.delegate == "gpu"
    desktop = load_config(REPO / "firmware_configs/desktop.yaml")
    assert desktop.camera.source == 0 and desktop.model.delegate is None  # "delegate: none" in the file


def write(tmp_path: Path, text: str, name: str = "device.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_minimal_config_uses_defaults(tmp_path):
    config = load_config(write(tmp_path, "device: {name: bench}\n"))
    assert config.model.path == str(tmp_path.resolve() / DEFAULT_MODEL_PATH)
    assert (config.scheduler.command_hop_ms, config.scheduler.scene_rate_hz) == (100.0, 5.0)
    assert (config.commands.threshold, config.commands.suppression_ms, config.commands.average_window_ms,
            config.commands.minimum_count) == (0.7, 750.0, 1000.0, 3)
    assert config.scenes.heartbeat_ms == 10000.0 and config.outputs.events == "-"
    assert config.outputs.mqtt_options(node_id=config.device.node_id, device_name=config.device.name) is None


def test_model_path_absolute_and_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert load_config(write(tmp_path, "device: {name: a}\nmodel: {path: /opt/m.tflite}\n")).model.path == \
        "/opt/m.tflite"
    assert load_config(write(tmp_path, "device: {name: a}\nmodel: {path: ~/m.tflite}\n")).model.path == \
        str(tmp_path / "home" / "m.tflite")


def test_the_outputs_paths_expand_home_and_are_otherwise_as_written(tmp_path, monkeypatch):
    # ``mqtt_spool_dir: ~/spool`` made a folder named "~" in the working directory (a trap: ``rm -rf ~``), and
    # ``events: ~/events.jsonl`` was refused as a file in a folder that does not exist.
    from edgesense.sinks.spool import EventSpool

    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    path = write(tmp_path, "device: {name: a}\noutputs: {events: ~/events.jsonl, mqtt: 'mqtt://localhost:1883', "
                           "mqtt_spool_dir: ~/spool}\n")
    outputs = load_config(path).outputs
    assert (outputs.events, outputs.mqtt_spool_dir) == (str(home / "events.jsonl"), str(home / "spool"))
    spool = EventSpool(outputs.mqtt_spool_dir)
    spool.close()
    assert (home / "spool").is_dir() and not list(work.iterdir())
    outputs = load_config(write(tmp_path, "device: {name: a}\noutputs: {events: out/e.jsonl, mqtt_spool_dir: s}\n"
                                )).outputs
    assert (outputs.events, outputs.mqtt_spool_dir) == ("out/e.jsonl", "s")  # relative: to the working directory
    outputs = load_config(write(tmp_path, "device: {name: a}\n")).outputs
    assert (outputs.events, outputs.mqtt_spool_dir) == ("-", "auto")


@pytest.mark.parametrize("backoff", ["{}", "null", "{initial_ms: 100}", "{multiplier: 3}"])
def test_a_camera_backoff_section_keeps_the_cameras_one_second_cap_for_what_it_leaves_out(tmp_path, backoff):
    """The camera's reopen backoff is capped at 1 s (CAMERA_REOPEN_MAX_MS, docs/RELIABILITY.md), but a backoff:
    section that named only initial_ms took BackoffOptions' own 10 s cap: after a long outage the camera was
    tried every 10 s, frames coming back up to 10 s after it."""
    from edgesense.sources.camera import CAMERA_REOPEN_MAX_MS

    camera = load_config(write(tmp_path, f"device: {{name: a}}\ncamera: {{backoff: {backoff}}}\n")).camera
    assert camera.backoff.max_ms == CAMERA_REOPEN_MAX_MS == CameraOptions().backoff.max_ms == 1000.0
    assert camera.backoff.initial_ms == (100.0 if "initial_ms" in backoff else 250.0)
    assert camera.backoff.multiplier == (3.0 if "multiplier" in backoff else 2.0)
    assert load_config(write(tmp_path, "device: {name: a}\ncamera: {backoff: {max_ms: 5000}}\n")
                       ).camera.backoff.max_ms == 5000.0  # named: as written


@pytest.mark.parametrize("source, fps, timeout, effective", [
    ("v4l2src ! appsink", 15, None, 10000.0), ("v4l2src ! appsink", 0.25, None, 12000.0),
    ("v4l2src ! appsink", 0.25, 5000, 12000.0), ("v4l2src ! appsink", 30, 2000, 2000.0),
    ("v4l2src ! appsink", 15, "null", None),
    # a V4L2 camera: at least what OpenCV takes to fail a read that reopens it (2 x its 10 s select() and 1 s)
    (0, 15, None, 21000.0), ("/dev/video0", 30, 2000, 21000.0), (0, 0.1, None, 30000.0), (0, 15, "null", None)])
def test_a_time_lapse_camera_keeps_its_default_stall_timeout_and_waits_three_frames(tmp_path, monkeypatch, source, fps,
                                                                                   timeout, effective):
    """A camera at fps 0.25 (a frame every 4 s) was refused for the default stall_timeout_ms (10 s, under 3 frame
    periods): every time-lapse config had to set it. Now the stall is taken after 3 frame periods where that is
    longer."""
    monkeypatch.delenv("OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT", raising=False)
    line = (f"camera: {{source: {source!r}, fps: {fps}" + ("" if timeout is None else f", stall_timeout_ms: {timeout}")
            + "}")
    camera = load_config(write(tmp_path, f"device: {{name: a}}\n{line}\n")).camera
    assert camera.effective_stall_timeout_ms == effective


def test_a_deaf_microphone_ends_the_run_after_30_s_unless_audio_stall_timeout_ms_is_null(tmp_path):
    assert load_config(write(tmp_path, "device: {name: a}\n")).audio.stall_timeout_ms == 30_000.0
    config = load_config(write(tmp_path, "device: {name: a}\naudio: {stall_timeout_ms: null}\n"))
    assert config.audio.stall_timeout_ms is None
    assert load_config(write(tmp_path, "device: {name: a}\naudio: {stall_timeout_ms: 5000}\n")
                       ).audio.stall_timeout_ms == 5000.0


def test_a_make_up_gain_is_audio_gain_db_and_none_by_default(tmp_path):
    assert load_config(write(tmp_path, "device: {name: a}\n")).audio.gain_db == 0.0
    assert load_config(write(tmp_path, "device: {name: a}\naudio: {gain_db: 20}\n")).audio.gain_db == 20.0
    assert load_config(write(tmp_path, "device: {name: a}\naudio: {gain_db: -6.5}\n")).audio.gain_db == -6.5


def test_second_opinion_heads_path_resolves_like_the_model_and_is_off_by_default(tmp_path):
    assert not load_config(write(tmp_path, "device: {name: a}\n")).second_opinion.enabled
    config = load_config(write(tmp_path, "device: {name: a}\nsecond_opinion: {heads_path: m/heads.tflite, "
                                         "student_weight: 0.25}\n"))
    assert config.second_opinion.heads_path == str(tmp_path.resolve() / "m" / "heads.tflite")
    assert config.second_opinion.student_weight == 0.25 and config.second_opinion.enabled
    path = write(tmp_path, "device: {name: a}\nsecond_opinion:\n  student_weight: 1.5\n")
    expected = r"device.yaml:3: second_opinion.student_weight: expected a number in \[0, 1\)"
    with pytest.raises(ValueError, match=expected):
        load_config(path)


def test_mqtt_options_from_config(tmp_path):
    config = load_config(write(tmp_path, """
        device: {name: Kitchen Pi 4, device_id: kitchen_pi_4}
        outputs: {mqtt: "mqtts://u:p@broker.lan", topic_prefix: house/kitchen, ha_discovery: false}
    """))
    opts = config.outputs.mqtt_options(node_id=config.device.node_id, device_name=config.device.name)
    assert isinstance(opts, MqttOptions)
    assert (opts.host, opts.port, opts.tls, opts.topic_prefix, opts.ha_discovery, opts.node_id, opts.device_name) == (
        "broker.lan", 8883, True, "house/kitchen", False, "kitchen_pi_4", "Kitchen Pi 4")
    with_path = load_config(write(tmp_path, """
        device: {name: x}
        outputs: {mqtt: "mqtt://broker.lan/from/url", topic_prefix: ignored}
    """))
    assert with_path.outputs.mqtt_options(node_id="x", device_name="x").topic_prefix == "from/url"


BAD = [  # (text after "device: {name: test}" on line 1, the error after "FILE:2: ")
    ("camera: {fps: fast}", "camera.fps: expected a number, got 'fast'"),
    ("camera: {fps: 0}", "camera.fps: expected a positive number, got 0.0"),
    ("camera: {fsp: 15}", "camera.fsp: unknown field; expected one of backoff, enabled, fps, height_px, "
                          "reopen_after_failures, source, stall_timeout_ms, width_px"),
    ("camera: {stall_timeout_ms: 500}", "camera.stall_timeout_ms: expected null (never) or a number of ms >= 1000, "
                                        "got 500"),
    ("audio: {stall_timeout_ms: 500}", "audio.stall_timeout_ms: expected null (never) or a number of ms >= 1000, "
                                       "got 500"),
    ("audio: {stall_timeout_ms: 30s}", "audio.stall_timeout_ms: expected a number, got '30s'"),
    ("audio: {gain_db: 60}", "audio.gain_db: expected a number of dB in [-20, 40], got 60"),
    ("audio: {gain_db: +20 dB}", "audio.gain_db: expected a number, got '+20 dB'"),
    ("cameras: {}", "cameras: unknown field; expected one of audio, camera, commands, device, model, outputs, "
                    "scenes, scheduler, second_opinion, vad"),
    ("audio: {sample_rate_hz: 16k}", "audio.sample_rate_hz: expected an integer, got '16k'"),
    ("audio: {sample_rate_hz: 16000.0}", "audio.sample_rate_hz: expected an integer"),
    ("audio: {sample_rate_hz: 400000}", "audio.sample_rate_hz: expected an integer in [1, 192000], got 400000"),
    ("audio: {device: -1}", "audio.device: expected null (the default input)"),
    ("model: {num_threads: true}", "model.num_threads: expected an integer, got True"),
    ("model: {num_threads: 65}", "model.num_threads: expected an integer in [1, 64], got 65"),
    ("model: {delegate: tpu}", "model.delegate: expected one of none, xnnpack, edgetpu, gpu, got 'tpu'"),
    ("model: {delegate: none, delegate_library: libx.so}", "model.delegate_library: expected null"),
    ("commands: {threshold: 1.5}", "commands.threshold: expected a number in [0, 1), got 1.5"),
    ("commands: {minimum_count: 20}", "commands.minimum_count: expected <= 11"),
    ("commands: {vad_enabled: true}", "commands.vad_enabled: this field is now vad.enabled"),
    ("vad: {enabled: yes}", "vad.enabled: expected true or false, got 'yes'"),
    ("scenes: {smoothing: median}", "scenes.smoothing: expected one of ema, window, got 'median'"),
    ("scenes: {heartbeat_ms: 0}", "scenes.heartbeat_ms: expected null (no heartbeat) or a positive number, got 0"),
    ("scheduler: {scene_rate_hz: -2}", "scheduler.scene_rate_hz: expected a number in [0.000277778, 1000] (Hz), "
                                       "got -2"),
    ("scheduler: {command_hop_ms: 1.0e-320}", "scheduler.command_hop_ms: expected a number in [1, 3.6e+06] (ms)"),
    ("audio: {chunk_ms: 200}", "audio.chunk_ms: expected <= scheduler.command_hop_ms (100)"),
    # with the microphone disabled too: `edgesense run --audio FILE` replays a WAV through the recognizer
    ("commands: {average_window_ms: 50}\naudio: {enabled: false}", "commands.average_window_ms: expected >= "
                                                                    "scheduler.command_hop_ms (100;"),
    ("commands: {minimum_count: 20}\naudio: {enabled: false}", "commands.minimum_count: expected <= 11"),
    ("audio: {chunk_ms: 200, enabled: false}", "audio.chunk_ms: expected <= scheduler.command_hop_ms (100)"),
    ("commands: {ignored_labels: [off]}", "commands.ignored_labels: expected a list holding '_silence_' and "
                                          "'_unknown_' (they never fire) and the words to mute, got ['off']"),
    ("commands: {class_thresholds: {yes: 1}}", "commands.class_thresholds.yes: expected a number in [0, 1), got 1"),
    ("commands: {class_thresholds: {_silence_: 0.2}}", "commands.class_thresholds: expected command words only"),
    ("outputs: {mqtt: 'http://broker'}", "outputs.mqtt: mqtt url 'http://broker': expected a scheme"),
    ("outputs: {topic_prefix: 'a/#'}", "outputs.topic_prefix: expected an MQTT topic"),
    ("outputs: {events: 3}", "outputs.events: expected a string, got 3"),
    ("camera: {enabled: false}\naudio: {enabled: false}", "camera.enabled: expected the camera or the audio"),
    ("camera: 15", "camera: expected a mapping, got 15"),
]


@pytest.mark.parametrize("extra, message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_errors_name_file_line_and_dotted_field(tmp_path, extra, message):
    path = write(tmp_path, "device: {name: test}\n" + extra + "\n", name="rpi4.yaml")
    with pytest.raises(ValueError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:2: {message}"), str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("extra", ["commands: {minimum_count: %s}", "scheduler: {command_hop_ms: %s}",
                                   "audio: {sample_rate_hz: %s}"])
def test_a_400_digit_value_is_shortened_in_its_error_line(tmp_path, extra):
    path = write(tmp_path, "device: {name: test}\n" + extra % ("9" * 400) + "\n", name="rpi4.yaml")
    with pytest.raises(ValueError) as info:
        load_config(path)
    assert str(info.value).endswith(", got 999999...9999 (400 digits)"), str(info.value)
    assert len(str(info.value)) < len(str(path)) + 150


def test_error_message_matches_the_documented_example(tmp_path, monkeypatch):
    (tmp_path / "firmware_configs").mkdir()
    write(tmp_path / "firmware_configs", "device: {name: rpi4}\ncamera: {fps: high}\n", name="rpi4.yaml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=re.escape(
            "firmware_configs/rpi4.yaml:2: camera.fps: expected a number, got 'high'")):
        load_config("firmware_configs/rpi4.yaml")


def test_a_duplicate_key_and_a_yaml_1_1_boolean_name_file_and_line(tmp_path):
    duplicate = write(tmp_path, """\
        device: {name: test}
        commands:
          threshold: 0.5
          minimum_count: 3
          threshold: 0.9
        """)
    with pytest.raises(ValueError, match=re.escape(f"{duplicate}:5: duplicate key 'threshold'")):
        load_config(duplicate)
    yes = write(tmp_path, """\
        device: {name: test}
        vad:
          enabled: yes
        """, name="yes.yaml")
    with pytest.raises(ValueError, match=re.escape(f"{yes}:3: vad.enabled: expected true or false, got 'yes'")):
        load_config(yes)


@pytest.mark.parametrize("text, message", [
    ("camera: {fps: 15}\n", ": device: required field is missing"),
    ("device: {description: no name}\n", ":1: device.name: required field is missing"),
    ("- just\n- a list\n", ": expected a mapping of fields at the top level, got list"),
    ("device: {name: [unclosed\n", ":2: not valid YAML"),
    ("device: {name: '  '}\n", ":1: device.name: expected a non-empty string"),
])
def test_structural_errors(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=re.escape(f"{path}{message}")):
        load_config(path)


def test_missing_file_and_a_folder(tmp_path):
    with pytest.raises(ValueError, match="nope.yaml: no such file"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match="expected a YAML file, found a folder"):
        load_config(tmp_path)


def test_device_id_defaults_to_host_and_machine_id_so_stock_configs_differ(tmp_path, monkeypatch):
    from edgesense.loop import config as config_mod

    machine_a, machine_b = tmp_path / "a-machine-id", tmp_path / "b-machine-id"
    machine_a.write_text("3d1219c7c4c5404aaa1f6d2a48adfda4\n")
    machine_b.write_text("77e0c1d2b3a4958687f6e5d4c3b2a190\n")
    monkeypatch.setattr(config_mod.socket, "gethostname", lambda: "raspberrypi")
    stock = REPO / "firmware_configs" / "rpi5.yaml"
    node_ids = []
    for machine in (machine_a, machine_b):
        monkeypatch.setattr(config_mod, "MACHINE_ID_FILES", (str(machine),))
        config = load_config(stock)
        options = config.outputs.mqtt_options(node_id=config.device.node_id, device_name=config.device.name) \
            if config.outputs.mqtt else None
        assert options is None  # the stock file has no broker; the id is ready for one
        node_ids.append(config.device.node_id)
    assert node_ids == ["raspberrypi-3d1219c7", "raspberrypi-77e0c1d2"]
    monkeypatch.setattr(config_mod, "MACHINE_ID_FILES", (str(tmp_path / "none"),))
    assert config_mod.default_device_id() == "raspberrypi"
    pinned = DeviceConfig.from_dict({"device": {"name": "x", "device_id": "Kitchen Pi"}})
    assert pinned.device.node_id == "kitchen_pi"
    with pytest.raises(ValueError, match="device.device_id: expected null"):
        DeviceConfig.from_dict({"device": {"name": "x", "device_id": "!!"}})


def test_a_relative_xdg_state_home_is_ignored_not_a_spool_that_follows_the_current_folder(tmp_path, monkeypatch,
                                                                                           caplog):
    # XDG_STATE_HOME=state put the spool in ./state/...: a run started from another folder never sent what an
    # earlier one had spooled while the broker was away.
    from edgesense.sinks.outputs import default_spool_dir

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_STATE_HOME", "state")
    with caplog.at_level("WARNING"):
        assert default_spool_dir("pi") == tmp_path / "home" / ".local" / "state" / "edgesense" / "spool" / "pi"
    assert "XDG_STATE_HOME=state: expected an absolute path" in caplog.text
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "abs"))
    assert default_spool_dir("pi") == tmp_path / "abs" / "edgesense" / "spool" / "pi"


def test_topics_discovery_ids_and_the_automatic_spool_follow_the_device_id(tmp_path, monkeypatch):
    config = load_config(write(tmp_path, """
        device: {name: Kitchen, device_id: kitchen-pi}
        outputs: {mqtt: "mqtt://broker.lan", topic_prefix: "home/{device_id}"}
    """))
    opts = config.outputs.mqtt_options(node_id=config.device.node_id, device_name=config.device.name)
    assert (opts.topic_prefix, opts.node_id, opts.device_name) == ("home/kitchen-pi", "kitchen-pi", "Kitchen")
    assert opts.spool_dir == str(Path(os.environ["XDG_STATE_HOME"]) / "edgesense" / "spool" / "kitchen-pi")
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/edgesense")  # under the bundle's systemd unit
    assert config.outputs.mqtt_options(node_id="k", device_name="K").spool_dir == "/var/lib/edgesense/spool"
    at_most_once = DeviceConfig.from_dict({"device": {"name": "x"}, "outputs": {"mqtt": "mqtt://h?qos=0"}})
    assert at_most_once.outputs.mqtt_options(node_id="x", device_name="x").spool_dir is None
    off = DeviceConfig.from_dict({"device": {"name": "x"}, "outputs": {"mqtt": "mqtt://h", "mqtt_spool_dir": None}})
    assert off.outputs.mqtt_options(node_id="x", device_name="x").spool_dir is None
    default = DeviceConfig.from_dict({"device": {"name": "x", "device_id": "d1"}, "outputs": {"mqtt": "mqtt://h"}})
    assert default.outputs.mqtt_options(node_id="d1", device_name="x").topic_prefix == "edgesense/d1"
    with pytest.raises(ValueError, match="outputs.topic_prefix: expected an MQTT topic"):
        DeviceConfig.from_dict({"device": {"name": "x"}, "outputs": {"topic_prefix": "a/{host}"}})
