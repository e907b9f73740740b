"""Device configuration: one YAML file (``firmware_configs/*.yaml``) whose sections are the
options of the loop's components, one definition and one default per field::

    device:    DeviceInfo                 {name, description, device_id}
    model:     runtime.model.ModelOptions {path, num_threads, delegate: none|xnnpack|edgetpu|gpu,
                                           delegate_library}
    camera:    sources.camera.CameraOptions {enabled, source: index | /dev/videoN | GStreamer pipeline,
                                           width_px, height_px, fps, reopen_after_failures,
                                           backoff: {initial_ms, max_ms, multiplier}, stall_timeout_ms}
    audio:     sources.microphone.MicrophoneOptions {enabled, device: index | name | null,
                                           sample_rate_hz, chunk_ms, buffer_ms, read_timeout_ms,
                                           stall_timeout_ms, gain_db}
    scheduler: loop.scheduler.SchedulerOptions {command_hop_ms, scene_rate_hz, embedding_max_age_ms}
    commands:  recognition.commands.CommandRecognizerOptions {threshold, suppression_ms,
                                           average_window_ms, minimum_count, ...}
    vad:       recognition.gate.EnergyGateOptions {enabled, threshold_dbfs, hangover_ms, floor_dbfs}
    scenes:    recognition.scenes.SceneSmootherOptions {smoothing: ema|window, window_ms,
                                           hysteresis_margin, min_hold_ms, heartbeat_ms | null}
    outputs:   sinks.outputs.OutputsOptions {events: "-" | path | null, mqtt: URL | null,
                                           topic_prefix, ha_discovery, mqtt_spool_dir: auto | path | null}
    second_opinion: runtime.second_opinion.SecondOpinionOptions {heads_path: path | null,
                                           student_weight, num_threads}

Every section but ``device`` is optional; every field has a default except ``device.name``.
The file is read by the one strict loader (:mod:`edgesense.schema.yaml`): YAML 1.2 (only
``true``/``false`` are booleans), a duplicate key is an error, and every error names the file
and the line: ``firmware_configs/rpi4.yaml:34: commands.threshold: expected a number, got 'high'``.
A field that was renamed gets an error naming its new name.

**Relative ``model.path`` (and ``second_opinion.heads_path``) resolves against the folder of the
YAML file** (not the working directory), so a config and its model can be moved together: the bundled
``firmware_configs/*.yaml`` say ``../models/edgesense.tflite``, and a deploy bundle with
``config.yaml`` next to ``models/`` can keep the default ``models/edgesense.tflite``. ``~``
is expanded. After :func:`load_config`, ``config.model.path`` is absolute. The outputs' paths
(``outputs.events``, ``outputs.mqtt_spool_dir``) have ``~`` expanded too (it was a folder named
``~`` in the working directory) and are otherwise used as written (relative to the working
directory, as ``edgesense run --events`` is); so is a camera device path.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from edgesense.loop.scheduler import SchedulerOptions
from edgesense.recognition.commands import CommandRecognizerOptions
from edgesense.recognition.gate import EnergyGateOptions
from edgesense.recognition.scenes import SceneSmootherOptions
from edgesense.runtime.model import DEFAULT_MODEL_PATH, ModelOptions
from edgesense.runtime.second_opinion import SecondOpinionOptions
from edgesense.schema.validate import found, from_mapping, to_mapping
from edgesense.schema.yaml import load_yaml_document
from edgesense.sinks.outputs import OutputsOptions
from edgesense.sources.camera import CameraOptions
from edgesense.sources.microphone import MicrophoneOptions

__all__ = ["DeviceInfo", "default_device_id", "DeviceConfig", "SECTIONS", "RENAMED_FIELDS", "load_config"]

#: Fields that moved: the old dotted name -> the new one (an old name is an error naming the new).
RENAMED_FIELDS: Mapping[str, str] = {
    "commands.vad_enabled": "vad.enabled",
    "commands.vad_threshold_dbfs": "vad.threshold_dbfs",
    "commands.vad_hangover_ms": "vad.hangover_ms",
    "camera.reopen_max_ms": "camera.backoff.max_ms",
}
#: (section, field, default) of the paths that resolve against the config's folder.
PATH_FIELDS = (("model", "path", DEFAULT_MODEL_PATH), ("second_opinion", "heads_path", None))
#: (section, field) of the paths used as written but for ``~``, which is expanded.
HOME_PATH_FIELDS = (("outputs", "events"), ("outputs", "mqtt_spool_dir"))
_NODE_ID_INVALID = re.compile(r"[^A-Za-z0-9_-]+")
_DEFAULT_NODE_ID = "edgesense"
MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")
MACHINE_ID_CHARS = 8
_MACHINE_ID = re.compile(r"[0-9a-f]{32}")


def default_device_id() -> str:
    """This machine's id: the host name and the start of systemd's machine id
    (``raspberrypi-3f2a9c1d``), unique even among devices that keep the stock host name; the host
    name alone where there is no machine id."""
    host = socket.gethostname().split(".")[0] or _DEFAULT_NODE_ID
    for path in MACHINE_ID_FILES:
        try:
            machine_id = Path(path).read_text(encoding="ascii").strip().lower()
        except (OSError, UnicodeDecodeError):
            continue
        if _MACHINE_ID.fullmatch(machine_id):
            return f"{host}-{machine_id[:MACHINE_ID_CHARS]}"
    return host


@dataclass(frozen=True, kw_only=True)
class DeviceInfo:
    """Who this device is: ``name`` (required; shown in Home Assistant), a free-text
    ``description`` and ``device_id``, which tells devices apart on the broker (Home Assistant
    node and unique ids, ``{device_id}`` in the topic prefix, the automatic MQTT spool); it
    defaults to :func:`default_device_id`, so two devices with the same stock config differ."""

    name: str
    description: str = ""
    device_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"name: expected a non-empty string, got {self.name!r}")
        if not isinstance(self.description, str):
            raise ValueError(f"description: expected a string, got {self.description!r}")
        if self.device_id is not None and not (isinstance(self.device_id, str)
                                               and _NODE_ID_INVALID.sub("", self.device_id.strip())):
            raise ValueError(f"device_id: expected null (this machine's id) or letters, digits, '_' and '-', "
                             f"got {self.device_id!r}")

    @property
    def node_id(self) -> str:
        """``device_id`` (or this machine's) as an MQTT / Home Assistant node id (letters, digits, '_', '-')."""
        device_id = self.device_id if self.device_id is not None else default_device_id()
        return _NODE_ID_INVALID.sub("_", device_id.strip()).strip("_").lower() or _DEFAULT_NODE_ID


@dataclass(frozen=True, kw_only=True)
class DeviceConfig:
    """A whole device configuration (see the module docstring)."""

    device: DeviceInfo
    model: ModelOptions = field(default_factory=ModelOptions)
    camera: CameraOptions = field(default_factory=CameraOptions)
    audio: MicrophoneOptions = field(default_factory=MicrophoneOptions)
    scheduler: SchedulerOptions = field(default_factory=SchedulerOptions)
    commands: CommandRecognizerOptions = field(default_factory=CommandRecognizerOptions)
    vad: EnergyGateOptions = field(default_factory=EnergyGateOptions)
    scenes: SceneSmootherOptions = field(default_factory=SceneSmootherOptions)
    outputs: OutputsOptions = field(default_factory=OutputsOptions)
    second_opinion: SecondOpinionOptions = field(default_factory=SecondOpinionOptions)
    #: The YAML file it came from (set by :func:`load_config`, never read from the file).
    source_path: str | None = field(default=None, init=False, compare=False)

    def __post_init__(self) -> None:
        for name, kind in SECTIONS.items():
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"{name}: expected {kind.__name__}, got {getattr(self, name)!r}")
        if not (self.camera.enabled or self.audio.enabled):
            raise ValueError("camera.enabled: expected the camera or the audio (or both) enabled, got both disabled")
        # Checked with the microphone disabled too: `run --audio FILE` replays a WAV in audio.chunk_ms chunks through
        # the recognizer whatever audio.enabled says (a camera-only config tuned on a file heard nothing).
        hop, window = self.scheduler.command_hop_ms, self.commands.average_window_ms
        most = int(window // hop) + 1  # results one averaging window can hold
        if window < hop:  # one result never spans the quarter window the recognizer needs
            raise ValueError(f"commands.average_window_ms: expected >= scheduler.command_hop_ms ({hop:g}; a shorter "
                             f"window holds one hop and never fires), got {window:g}")
        if self.commands.minimum_count > most:
            raise ValueError(f"commands.minimum_count: expected <= {most} (average_window_ms {window:g} / "
                             f"scheduler.command_hop_ms {hop:g} + 1), got {found(self.commands.minimum_count)}")
        if self.audio.chunk_ms > hop:
            raise ValueError(f"audio.chunk_ms: expected <= scheduler.command_hop_ms ({hop:g}), "
                             f"got {self.audio.chunk_ms!r}")

    @property
    def model_path(self) -> Path:
        return Path(self.model.path)

    def to_dict(self) -> dict[str, Any]:
        """Sections as plain data (what :meth:`from_dict` reads back)."""
        return to_mapping(self)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<config>", base_dir: str | os.PathLike[str] | None = None,
                  lines: Mapping[str, int] | None = None) -> "DeviceConfig":
        """Validate plain data (parsed YAML). ``base_dir``: where a relative ``model.path`` resolves;
        ``lines``: each dotted key's line, for errors (:class:`edgesense.schema.yaml.YamlDocument`)."""
        lines = lines or {}
        if isinstance(data, Mapping):
            _refuse_renamed(data, source, lines)
            for section, name in HOME_PATH_FIELDS:
                values = data.get(section)
                if isinstance(values, Mapping) and isinstance(values.get(name), str) and values[name].startswith("~"):
                    data = {**data, section: {**values, name: os.path.expanduser(values[name])}}
            if base_dir is not None:
                for section, name, default in PATH_FIELDS:
                    values = {} if data.get(section) is None else data[section]
                    if isinstance(values, Mapping) and isinstance(values.get(name, default), str):
                        data = {**data, section: {**values, name: _resolve(values.get(name, default),
                                                                           Path(base_dir))}}
        return from_mapping(cls, data, source=source, lines=lines)


#: Section name -> the options dataclass it is.
SECTIONS: Mapping[str, type] = types.MappingProxyType(
    {f.name: typing.get_type_hints(DeviceConfig)[f.name] for f in dataclasses.fields(DeviceConfig) if f.init})


def _refuse_renamed(data: Mapping[str, Any], source: str, lines: Mapping[str, int]) -> None:
    for old, new in RENAMED_FIELDS.items():
        section, _, name = old.partition(".")
        values = data.get(section)
        if isinstance(values, Mapping) and name in values:
            line = lines.get(old)
            where = f"{source}:{line}" if line is not None else source
            raise ValueError(f"{where}: {old}: this field is now {new}")


def _resolve(path: str, base_dir: Path) -> str:
    if not path.strip():
        return path  # left for ModelOptions to reject
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else Path(os.path.normpath(base_dir.resolve() / p)))


def load_config(path: str | os.PathLike[str]) -> DeviceConfig:
    """Read and validate a device YAML file (relative ``model.path`` resolves against its folder)."""
    document = load_yaml_document(path)
    config = DeviceConfig.from_dict(document.data, source=str(document.path), base_dir=document.path.parent,
                                    lines=document.lines)
    object.__setattr__(config, "source_path", str(document.path))
    return config
