from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from edgesense.config.device import DEFAULT_MODEL_PATH, DeviceConfig, load_config
from edgesense.recognition.commands import CommandRecognizerOptions
from edgesense.recognition.gate import EnergyGateOptions
from edgesense.recognition.scenes import SceneSmootherOptions
from edgesense.runtime.interpreter import InterpreterOptions
from edgesense.sinks.mqtt import MqttOptions
from edgesense.sources.camera import CameraOptions, is_gstreamer_pipeline
from edgesense.sources.microphone import MicrophoneOptions

REPO = Path(__file__).resolve().parents[3]
BUNDLED = sorted((REPO / "firmware_configs").glob("*.yaml"))


def test_all_expected_configs_are_bundled():
    assert {p.stem for p in BUNDLED} >= {"rpi4", "rpi5", "jetson-nano", "jetson-orin", "desktop"}


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.stem)
def test_bundled_config_loads_and_converts(path):
    config = load_config(path)
    assert config.device.name == path.stem and config.source_path == str(path)
    # model.path is relative to the YAML's folder: firmware_configs/../models/edgesense.tflite
    assert config.model_path == REPO / DEFAULT_MODEL_PATH
    assert isinstance(config.model.interpreter_options(), InterpreterOptions)
    assert isinstance(config.camera.camera_options(), CameraOptions)
    assert isinstance(config.audio.microphone_options(), MicrophoneOptions)
    assert isinstance(config.commands.recognizer_options(), CommandRecognizerOptions)
    assert isinstance(config.scenes.smoother_options(), SceneSmootherOptions)
    gate = config.commands.energy_gate_options()
    assert (gate is not None) == config.commands.vad_enabled
    # Round trip through plain data.
    assert DeviceConfig.from_dict(config.to_dict(), source=str(path)) == config


def test_bundled_device_specifics():
    rpi4, rpi5 = load_config(REPO / "firmware_configs/rpi4.yaml"), load_config(REPO / "firmware_configs/rpi5.yaml")
    assert rpi4.model.num_threads == 4 and rpi5.model.num_threads == 4
    assert (rpi4.camera.width_px, rpi4.camera.height_px, rpi4.camera.fps) == (640, 480, 15)
    assert rpi4.scheduler.scene_rate_hz == 2 and rpi5.scheduler.scene_rate_hz == 5
    assert isinstance(rpi4.commands.energy_gate_options(), EnergyGateOptions)
    for name in ("jetson-nano", "jetson-orin"):
        jetson = load_config(REPO / f"firmware_configs/{name}.yaml")
        assert is_gstreamer_pipeline(jetson.camera.source)
        assert jetson.camera.source.startswith("nvarguscamerasrc") and jetson.camera.source.endswith(
            "appsink drop=true max-buffers=1")
        assert "\n" not in jetson.camera.source
        assert jetson.model.interpreter_options().delegate == "gpu"
    desktop = load_config(REPO / "firmware_configs/desktop.yaml")
    assert desktop.camera.source == 0 and desktop.model.interpreter_options().delegate is None


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
    assert config.outputs.mqtt_options(config.device) is None


def test_model_path_absolute_and_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert load_config(write(tmp_path, "device: {name: a}\nmodel: {path: /opt/m.tflite}\n")).model.path == \
        "/opt/m.tflite"
    assert load_config(write(tmp_path, "device: {name: a}\nmodel: {path: ~/m.tflite}\n")).model.path == \
        str(tmp_path / "home" / "m.tflite")


def test_mqtt_options_from_config(tmp_path):
    config = load_config(write(tmp_path, """
        device: {name: Kitchen Pi 4}
        outputs: {mqtt: "mqtts://u:p@broker.lan", topic_prefix: house/kitchen, ha_discovery: false}
    """))
    opts = config.outputs.mqtt_options(config.device)
    assert isinstance(opts, MqttOptions)
    assert (opts.host, opts.port, opts.tls, opts.topic_prefix, opts.ha_discovery, opts.node_id, opts.device_name) == (
        "broker.lan", 8883, True, "house/kitchen", False, "kitchen_pi_4", "Kitchen Pi 4")
    with_path = load_config(write(tmp_path, """
        device: {name: x}
        outputs: {mqtt: "mqtt://broker.lan/from/url", topic_prefix: ignored}
    """))
    assert with_path.outputs.mqtt_options(with_path.device).topic_prefix == "from/url"


BAD = [
    ("camera: {fps: fast}", "camera.fps: expected a positive number, got 'fast'"),
    ("camera: {fsp: 15}", "camera.fsp: unknown field; expected one of enabled, source, width_px, height_px, fps"),
    ("cameras: {}", "cameras: unknown section"),
    ("audio: {sample_rate_hz: 16k}", "audio.sample_rate_hz: expected an integer in [1, 192000], got '16k'"),
    ("audio: {sample_rate_hz: 16000.0}", "audio.sample_rate_hz: expected an integer"),
    ("audio: {device: -1}", "audio.device: expected null (the default input)"),
    ("model: {num_threads: true}", "model.num_threads: expected an integer in [1, 64], got True"),
    ("model: {delegate: tpu}", "model.delegate: expected one of none, xnnpack, edgetpu, gpu, got 'tpu'"),
    ("model: {delegate: none, delegate_library: libx.so}", "model.delegate_library: expected null"),
    ("commands: {threshold: 1.5}", "commands.threshold: expected a number in [0, 1), got 1.5"),
    ("commands: {minimum_count: 20}", "commands.minimum_count: expected <= 11"),
    ("scenes: {smoothing: median}", "scenes.smoothing: expected one of ema, window, got 'median'"),
    ("scenes: {heartbeat_ms: 0}", "scenes.heartbeat_ms: expected null (no heartbeat) or a positive number, got 0"),
    ("scheduler: {scene_rate_hz: -2}", "scheduler.scene_rate_hz: expected a positive number, got -2"),
    ("audio: {chunk_ms: 200}", "audio.chunk_ms: expected <= scheduler.command_hop_ms (100)"),
    ("outputs: {mqtt: 'http://broker'}", "outputs.mqtt: mqtt url 'http://broker': expected a scheme"),
    ("outputs: {topic_prefix: 'a/#'}", "outputs.topic_prefix: expected an MQTT topic"),
    ("outputs: {events: 3}", "outputs.events: expected '-' (stdout), a file path or null, got 3"),
    ("camera: {enabled: false}\naudio: {enabled: false}", "camera.enabled: expected the camera or the audio"),
    ("camera: 15", "camera: expected a mapping of fields, got 15"),
]


@pytest.mark.parametrize("extra, message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_errors_name_file_and_dotted_field(tmp_path, extra, message):
    path = write(tmp_path, "device: {name: test}\n" + extra + "\n", name="rpi4.yaml")
    with pytest.raises(ValueError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: {message}"), str(info.value)


def test_error_message_matches_the_documented_example(tmp_path, monkeypatch):
    (tmp_path / "firmware_configs").mkdir()
    write(tmp_path / "firmware_configs", "device: {name: rpi4}\ncamera: {fps: fast}\n", name="rpi4.yaml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=re.escape(
            "firmware_configs/rpi4.yaml: camera.fps: expected a positive number, got 'fast'")):
        load_config("firmware_configs/rpi4.yaml")


@pytest.mark.parametrize("text, message", [
    ("camera: {fps: 15}\n", "device: missing required section"),
    ("device: {description: no name}\n", "device.name: missing required field"),
    ("- just\n- a list\n", "expected a mapping of sections, got list"),
    ("device: {name: [unclosed\n", "not valid YAML"),
    ("device: {name: '  '}\n", "device.name: expected a non-empty string"),
])
def test_structural_errors(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=re.escape(f"{path}: {message}")):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
