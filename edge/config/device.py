"""Device configuration: a frozen dataclass tree loaded from YAML (``firmware_configs/*.yaml``).

Layout (every section but ``device`` is optional; every field has a default
except ``device.name``)::

    device:    {name, description}
    model:     {path, num_threads, delegate: none|xnnpack|edgetpu|gpu, delegate_library}
    camera:    {enabled, source: index | /dev/videoN | GStreamer pipeline, width_px, height_px, fps}
    audio:     {enabled, device: index | name | null, sample_rate_hz, chunk_ms}
    scheduler: {command_hop_ms, scene_rate_hz}
    commands:  {threshold, suppression_ms, average_window_ms, minimum_count,
                vad_enabled, vad_threshold_dbfs, vad_hangover_ms}
    scenes:    {smoothing: ema|window, window_ms, hysteresis_margin, min_hold_ms, heartbeat_ms | null}
    outputs:   {events: "-" | path | null, mqtt: URL | null, topic_prefix, ha_discovery, mqtt_spool_dir: path | null}

**Relative ``model.path`` resolves against the folder of the YAML file** (not the
working directory), so a config and its model can be moved together: the bundled
``firmware_configs/*.yaml`` say ``../models/edgesense.tflite``, and a deploy bundle
with ``config.yaml`` next to ``models/`` can keep the default
``models/edgesense.tflite``. ``~`` is expanded. After :func:`load_config`,
``config.model.path`` is absolute. Other paths (``outputs.events``, a camera
device path) are used as written.

Any problem (unknown section or key, wrong type, missing required field, value
out of range) is a ``ValueError`` naming the file and the dotted field, e.g.
``firmware_configs/rpi4.yaml: camera.fps: expected a positive number, got 'fast'``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from edgesense.recognition.commands import CommandRecognizerOptions
from edgesense.recognition.gate import EnergyGateOptions
from edgesense.recognition.scenes import SMOOTHING_METHODS, SceneSmootherOptions
from edgesense.sinks.mqtt import MqttOptions, is_valid_topic_prefix, mqtt_options_from_url
from edgesense.sources.base import BackoffOptions
from edgesense.sources.camera import CAMERA_REOPEN_MAX_MS, CameraOptions
from edgesense.sources.microphone import MicrophoneOptions

__all__ = ["DEFAULT_MODEL_PATH", "DELEGATE_NAMES", "DeviceInfo", "ModelConfig", "CameraConfig", "AudioConfig", "SchedulerConfig", "CommandsConfig", "ScenesConfig", "OutputsConfig", "DeviceConfig", "load_config"]


DEFAULT_MODEL_PATH = "models/edgesense.tflite"
DELEGATE_NAMES = ("none", "xnnpack", "edgetpu", "gpu")
MAX_THREADS = 64
MAX_FRAME_PX = 8192
MAX_SAMPLE_RATE_HZ = 192000
STDOUT = "-"


# --------------------------------------------------------------------------- checks


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(obj: Any, name: str, ok: Callable[[Any], bool], expected: str) -> None:
    value = getattr(obj, name)
    if not ok(value):
        raise ValueError(f"{name}: expected {expected}, got {value!r}")


def _positive(v: Any) -> bool:
    return _number(v) and v > 0


def _non_negative(v: Any) -> bool:
    return _number(v) and v >= 0


def _text(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True, kw_only=True)
class DeviceInfo:
    name: str
    description: str = ""

    def __post_init__(self) -> None:
        _check(self, "name", _text, "a non-empty string")
        _check(self, "description", lambda v: isinstance(v, str), "a string")

    @property
    def node_id(self) -> str:
        """``name`` as an MQTT / Home Assistant node id (letters, digits, '_' and '-')."""
        return re.sub(r"[^A-Za-z0-9_-]+", "_", self.name.strip()).strip("_").lower() or "edgesense"


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    path: str = DEFAULT_MODEL_PATH
    num_threads: int = 1
    delegate: str = "none"
    delegate_library: str | None = None

    def __post_init__(self) -> None:
        _check(self, "path", _text, "a path to a .tflite file")
        _check(self, "num_threads", lambda v: _int(v) and 1 <= v <= MAX_THREADS, f"an integer in [1, {MAX_THREADS}]")
        _check(self, "delegate", lambda v: v in DELEGATE_NAMES, f"one of {', '.join(DELEGATE_NAMES)}")
        _check(self, "delegate_library", lambda v: v is None or _text(v), "null or a library path")
        if self.delegate_library is not None and self.delegate == "none":
            raise ValueError(f"delegate_library: expected null when delegate is 'none', got {self.delegate_library!r}")

    def interpreter_options(self):
        """The ``edge.interpreter.InterpreterOptions`` for this model section."""
        from edgesense.runtime.interpreter import InterpreterOptions

        return InterpreterOptions(num_threads=self.num_threads,
                                  delegate=None if self.delegate == "none" else self.delegate,
                                  delegate_library=self.delegate_library)


@dataclass(frozen=True, kw_only=True)
class CameraConfig:
    enabled: bool = True
    source: int | str = 0
    width_px: int = 640
    height_px: int = 480
    fps: float = 15.0
    reopen_max_ms: float = CAMERA_REOPEN_MAX_MS

    def __post_init__(self) -> None:
        _check(self, "enabled", _bool, "true or false")
        _check(self, "reopen_max_ms", _positive, "a positive number (longest wait between reopen attempts)")
        _check(self, "source", lambda v: (_int(v) and v >= 0) or _text(v),
               "a device index >= 0, a device path or a GStreamer pipeline")
        _check(self, "width_px", lambda v: _int(v) and 0 < v <= MAX_FRAME_PX, f"an integer in [1, {MAX_FRAME_PX}]")
        _check(self, "height_px", lambda v: _int(v) and 0 < v <= MAX_FRAME_PX, f"an integer in [1, {MAX_FRAME_PX}]")
        _check(self, "fps", _positive, "a positive number")

    def camera_options(self) -> CameraOptions:
        backoff = BackoffOptions(initial_ms=min(BackoffOptions().initial_ms, float(self.reopen_max_ms)),
                                 max_ms=float(self.reopen_max_ms))
        return CameraOptions(source=self.source, width_px=self.width_px, height_px=self.height_px,
                             fps=float(self.fps), backoff=backoff)


@dataclass(frozen=True, kw_only=True)
class AudioConfig:
    enabled: bool = True
    device: int | str | None = None
    sample_rate_hz: int = 16000
    chunk_ms: float = 20.0

    def __post_init__(self) -> None:
        _check(self, "enabled", _bool, "true or false")
        _check(self, "device", lambda v: v is None or (_int(v) and v >= 0) or _text(v),
               "null (the default input), a device index >= 0 or a device name")
        _check(self, "sample_rate_hz", lambda v: _int(v) and 0 < v <= MAX_SAMPLE_RATE_HZ,
               f"an integer in [1, {MAX_SAMPLE_RATE_HZ}]")
        _check(self, "chunk_ms", _positive, "a positive number")

    def microphone_options(self) -> MicrophoneOptions:
        return MicrophoneOptions(device=self.device, sample_rate_hz=self.sample_rate_hz,
                                 chunk_ms=float(self.chunk_ms))


@dataclass(frozen=True, kw_only=True)
class SchedulerConfig:
    command_hop_ms: float = 100.0
    scene_rate_hz: float = 5.0

    def __post_init__(self) -> None:
        _check(self, "command_hop_ms", _positive, "a positive number")
        _check(self, "scene_rate_hz", _positive, "a positive number")

    @property
    def scene_period_ms(self) -> float:
        return 1000.0 / self.scene_rate_hz


@dataclass(frozen=True, kw_only=True)
class CommandsConfig:
    threshold: float = 0.7
    suppression_ms: float = 750.0
    average_window_ms: float = 1000.0
    minimum_count: int = 3
    vad_enabled: bool = False
    vad_threshold_dbfs: float = -50.0
    vad_hangover_ms: float = 500.0

    def __post_init__(self) -> None:
        _check(self, "threshold", lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)")
        _check(self, "suppression_ms", _non_negative, "a number >= 0")
        _check(self, "average_window_ms", _positive, "a positive number")
        _check(self, "minimum_count", lambda v: _int(v) and v >= 1, "an integer >= 1")
        _check(self, "vad_enabled", _bool, "true or false")
        _check(self, "vad_threshold_dbfs", lambda v: _number(v) and -120 < v <= 0, "a number in (-120, 0]")
        _check(self, "vad_hangover_ms", _non_negative, "a number >= 0")

    def recognizer_options(self) -> CommandRecognizerOptions:
        return CommandRecognizerOptions(average_window_ms=float(self.average_window_ms),
                                        threshold=float(self.threshold),
                                        suppression_ms=float(self.suppression_ms), minimum_count=self.minimum_count)

    def energy_gate_options(self) -> EnergyGateOptions | None:
        """The VAD gate's options, or None when ``vad_enabled`` is false."""
        if not self.vad_enabled:
            return None
        return EnergyGateOptions(threshold_dbfs=float(self.vad_threshold_dbfs),
                                 hangover_ms=float(self.vad_hangover_ms))


@dataclass(frozen=True, kw_only=True)
class ScenesConfig:
    smoothing: str = "ema"
    window_ms: float = 2000.0
    hysteresis_margin: float = 0.1
    min_hold_ms: float = 1000.0
    heartbeat_ms: float | None = 10000.0

    def __post_init__(self) -> None:
        _check(self, "smoothing", lambda v: v in SMOOTHING_METHODS, f"one of {', '.join(SMOOTHING_METHODS)}")
        _check(self, "window_ms", _positive, "a positive number")
        _check(self, "hysteresis_margin", lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)")
        _check(self, "min_hold_ms", _non_negative, "a number >= 0")
        _check(self, "heartbeat_ms", lambda v: v is None or _positive(v), "null (no heartbeat) or a positive number")

    def smoother_options(self) -> SceneSmootherOptions:
        return SceneSmootherOptions(smoothing=self.smoothing, window_ms=float(self.window_ms),
                                    hysteresis_margin=float(self.hysteresis_margin),
                                    min_hold_ms=float(self.min_hold_ms),
                                    heartbeat_ms=None if self.heartbeat_ms is None else float(self.heartbeat_ms))


@dataclass(frozen=True, kw_only=True)
class OutputsConfig:
    events: str | None = STDOUT
    mqtt: str | None = None
    topic_prefix: str = "edgesense"
    ha_discovery: bool = True
    mqtt_spool_dir: str | None = None  #: on-disk spool for at-least-once MQTT delivery (edge.spool)

    def __post_init__(self) -> None:
        _check(self, "mqtt_spool_dir", lambda v: v is None or _text(v), "null or a folder path")
        _check(self, "events", lambda v: v is None or _text(v), "'-' (stdout), a file path or null")
        _check(self, "topic_prefix", is_valid_topic_prefix, "an MQTT topic without wildcards or leading/trailing '/'")
        _check(self, "ha_discovery", _bool, "true or false")
        _check(self, "mqtt", lambda v: v is None or _text(v), "null or a URL like mqtt://user:pass@host:1883/prefix")
        if self.mqtt is not None:
            try:
                mqtt_options_from_url(self.mqtt, spool_dir=self.mqtt_spool_dir)
            except ValueError as exc:
                raise ValueError(f"mqtt: {exc}") from None

    def mqtt_options(self, device: DeviceInfo) -> MqttOptions | None:
        """Options for :class:`edge.outputs.MqttSink`, or None without ``mqtt``.

        A topic prefix in the URL's path wins over ``topic_prefix``.
        """
        if self.mqtt is None:
            return None
        from_url = mqtt_options_from_url(self.mqtt)
        has_path = bool(urllib.parse.urlsplit(self.mqtt).path.strip("/"))
        return dataclasses.replace(from_url, topic_prefix=from_url.topic_prefix if has_path else self.topic_prefix,
                                   ha_discovery=self.ha_discovery, node_id=device.node_id, device_name=device.name,
                                   spool_dir=self.mqtt_spool_dir)


SECTIONS: dict[str, type] = {
    "device": DeviceInfo,
    "model": ModelConfig,
    "camera": CameraConfig,
    "audio": AudioConfig,
    "scheduler": SchedulerConfig,
    "commands": CommandsConfig,
    "scenes": ScenesConfig,
    "outputs": OutputsConfig,
}
REQUIRED_SECTIONS = ("device",)


@dataclass(frozen=True, kw_only=True)
class DeviceConfig:
    """A whole device configuration (see the module docstring)."""

    device: DeviceInfo
    model: ModelConfig = field(default_factory=ModelConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    commands: CommandsConfig = field(default_factory=CommandsConfig)
    scenes: ScenesConfig = field(default_factory=ScenesConfig)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)
    source_path: str | None = None  #: the YAML file it came from

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise ValueError(f"{name}: expected {cls.__name__}, got {getattr(self, name)!r}")
        if not (self.camera.enabled or self.audio.enabled):
            raise ValueError("camera.enabled: expected the camera or the audio (or both) enabled, got both disabled")
        hop, window = self.scheduler.command_hop_ms, self.commands.average_window_ms
        most = int(window // hop) + 1  # results one averaging window can hold
        if self.audio.enabled and self.commands.minimum_count > most:
            raise ValueError(f"commands.minimum_count: expected <= {most} (average_window_ms {window:g} / "
                             f"scheduler.command_hop_ms {hop:g} + 1), got {self.commands.minimum_count}")
        if self.audio.enabled and self.audio.chunk_ms > hop:
            raise ValueError(f"audio.chunk_ms: expected <= scheduler.command_hop_ms ({hop:g}), "
                             f"got {self.audio.chunk_ms!r}")

    @property
    def model_path(self) -> Path:
        return Path(self.model.path)

    def to_dict(self) -> dict[str, Any]:
        """Sections as plain data (what :meth:`from_dict` reads back)."""
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<config>", base_dir: str | os.PathLike[str] | None = None
                  ) -> "DeviceConfig":
        """Validate plain data (parsed YAML). ``base_dir``: where a relative ``model.path`` resolves."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
        unknown = [str(k) for k in data if k not in SECTIONS]
        if unknown:
            raise ValueError(f"{source}: {unknown[0]}: unknown section; expected some of {', '.join(SECTIONS)}")
        sections: dict[str, Any] = {}
        for name, section_cls in SECTIONS.items():
            raw = data.get(name)
            if raw is None:
                if name in REQUIRED_SECTIONS:
                    raise ValueError(f"{source}: {name}: missing required section")
                raw = {}
            if not isinstance(raw, Mapping):
                raise ValueError(f"{source}: {name}: expected a mapping of fields, got {raw!r}")
            fields = {f.name: f for f in dataclasses.fields(section_cls)}
            for key in raw:
                if key not in fields:
                    raise ValueError(f"{source}: {name}.{key}: unknown field; expected one of {', '.join(fields)}")
            for fname, f in fields.items():
                if fname not in raw and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ValueError(f"{source}: {name}.{fname}: missing required field")
            values = dict(raw)
            if name == "model" and base_dir is not None and isinstance(values.get("path", DEFAULT_MODEL_PATH), str):
                values["path"] = _resolve(values.get("path", DEFAULT_MODEL_PATH), Path(base_dir))
            try:
                sections[name] = section_cls(**values)
            except ValueError as exc:
                raise ValueError(f"{source}: {name}.{exc}") from None
        try:
            return cls(**sections, source_path=None if source == "<config>" else source)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None


def _resolve(path: str, base_dir: Path) -> str:
    if not path.strip():
        return path  # left for ModelConfig to reject
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else Path(os.path.normpath(base_dir.resolve() / p)))


def load_config(path: str | os.PathLike[str]) -> DeviceConfig:
    """Read and validate a device YAML file (relative ``model.path`` resolves against its folder)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a UTF-8 text file ({exc})") from None
    return DeviceConfig.from_dict(data, source=str(path), base_dir=path.parent)
