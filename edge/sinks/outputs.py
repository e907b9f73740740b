"""Which sinks the device loop opens (the ``outputs:`` section of a device config)."""

from __future__ import annotations

import dataclasses
import logging
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesense.sinks.base import STDOUT
from edgesense.sinks.mqtt import DEFAULT_TOPIC_PREFIX, MqttOptions, is_valid_topic_prefix, mqtt_options_from_url

__all__ = ["AUTO_SPOOL", "DEVICE_ID_PLACEHOLDER", "OutputsOptions", "default_spool_dir", "open_mqtt_sink"]

#: ``mqtt_spool_dir: auto``: a per-device spool in the service's or the user's state folder.
AUTO_SPOOL = "auto"
#: Replaced by the device id in ``topic_prefix`` (and in a topic prefix given in the URL).
DEVICE_ID_PLACEHOLDER = "{device_id}"
DEVICE_TOPIC_PREFIX = f"{DEFAULT_TOPIC_PREFIX}/{DEVICE_ID_PLACEHOLDER}"  #: one topic tree per device
_SPOOL_SUBDIR = ("edgesense", "spool")
_AT_MOST_ONCE_QOS = 0

logger = logging.getLogger(__name__)


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _prefix_ok(prefix: object) -> bool:
    """A topic prefix whose only placeholder is ``{device_id}``."""
    return (is_valid_topic_prefix(prefix) and "{" not in prefix.replace(DEVICE_ID_PLACEHOLDER, "")
            and "}" not in prefix.replace(DEVICE_ID_PLACEHOLDER, ""))


def default_spool_dir(device_id: str) -> Path:
    """Where ``mqtt_spool_dir: auto`` spools: ``$STATE_DIRECTORY/spool`` under systemd (the bundle's
    unit sets ``StateDirectory=``), else ``$XDG_STATE_HOME/edgesense/spool/DEVICE_ID`` (default
    ``~/.local/state/...``). A relative ``XDG_STATE_HOME`` is ignored, as the XDG Base Directory rules say:
    the spool would follow the current folder, and a run started from another would never send what an earlier
    one spooled."""
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state) / "spool"
    base = os.environ.get("XDG_STATE_HOME", "")
    if base and not os.path.isabs(base):
        logger.warning("XDG_STATE_HOME=%s: expected an absolute path (the XDG Base Directory rules); ignored, the "
                       "spool goes to ~/.local/state", base)
        base = ""
    return Path(base or Path.home() / ".local" / "state").joinpath(*_SPOOL_SUBDIR, device_id)


@dataclass(frozen=True, kw_only=True)
class OutputsOptions:
    """``events``: JSON Lines to ``"-"`` (stdout), a file, or nowhere (``None``). ``mqtt``: a
    broker URL (``mqtt://user:pass@host:1883/prefix``, ``mqtts://...`` for TLS) or ``None``.
    ``topic_prefix``: topics start with it, ``{device_id}`` replaced by the device's id (a prefix
    in the URL's path wins; so does a ``node_id`` in its query over the device's id).
    ``ha_discovery``: publish Home Assistant discovery configs.
    ``mqtt_spool_dir``: the on-disk spool that makes MQTT delivery at-least-once across broker
    outages and restarts (:mod:`edgesense.sinks.spool`): ``auto`` (a per-device folder, see
    :func:`default_spool_dir`; off with ``qos=0`` in the URL), a folder, or ``None`` (events wait
    in memory only and are lost if the run ends before the broker is back)."""

    events: str | None = STDOUT
    mqtt: str | None = None
    topic_prefix: str = DEVICE_TOPIC_PREFIX
    ha_discovery: bool = True
    mqtt_spool_dir: str | None = AUTO_SPOOL

    def __post_init__(self) -> None:
        checks = (
            ("events", self.events is None or _text(self.events), "'-' (stdout), a file path or null"),
            ("mqtt", self.mqtt is None or _text(self.mqtt), "null or a URL like mqtt://user:pass@host:1883/prefix"),
            ("topic_prefix", _prefix_ok(self.topic_prefix),
             f"an MQTT topic without wildcards or leading/trailing '/' ({DEVICE_ID_PLACEHOLDER} allowed)"),
            ("ha_discovery", isinstance(self.ha_discovery, bool), "true or false"),
            ("mqtt_spool_dir", self.mqtt_spool_dir is None or _text(self.mqtt_spool_dir),
             f"{AUTO_SPOOL}, a folder path or null"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"{name}: expected {expected}, got {getattr(self, name)!r}")
        if self.mqtt is not None:
            try:  # the URL, and a named spool folder against the URL's qos
                from_url = mqtt_options_from_url(self.mqtt, spool_dir=None if self.mqtt_spool_dir == AUTO_SPOOL
                                                 else self.mqtt_spool_dir)
            except ValueError as exc:
                raise ValueError(f"mqtt: {exc}") from None
            if not _prefix_ok(from_url.topic_prefix):  # e.g. a misspelt {device_id}, published as it is
                raise ValueError(f"mqtt: the URL's topic prefix: expected {DEVICE_ID_PLACEHOLDER} as the only "
                                 f"placeholder, got {from_url.topic_prefix!r}")

    def mqtt_options(self, *, node_id: str, device_name: str,
                     command_labels: tuple[str, ...] = ()) -> MqttOptions | None:
        """Options for :class:`edgesense.sinks.mqtt.MqttSink`, or None without ``mqtt``.

        ``node_id`` (the device id, as MQTT allows it) names the Home Assistant node, the
        entities' unique ids, the ``{device_id}`` of the topic prefix and the automatic spool; a
        ``node_id`` in the URL's query wins over it (it was silently replaced by the device id).
        ``command_labels``: the words that can fire, the ``event_types`` of Home Assistant's event entity.
        """
        if self.mqtt is None:
            return None
        from_url = mqtt_options_from_url(self.mqtt)
        parts = urllib.parse.urlsplit(self.mqtt)
        if any(key == "node_id" for key, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)):
            node_id = from_url.node_id
        has_path = bool(parts.path.strip("/"))
        prefix = (from_url.topic_prefix if has_path else self.topic_prefix).replace(DEVICE_ID_PLACEHOLDER, node_id)
        spool_dir = self.mqtt_spool_dir
        if spool_dir == AUTO_SPOOL:
            spool_dir = None if from_url.qos == _AT_MOST_ONCE_QOS else str(default_spool_dir(node_id))
        return dataclasses.replace(from_url, topic_prefix=prefix, ha_discovery=self.ha_discovery, node_id=node_id,
                                   device_name=device_name, spool_dir=spool_dir, command_labels=command_labels)


_SPOOL_FIELD = "spool_dir: "  #: how the spool's errors about its folder begin (edgesense.sinks.spool)


def open_mqtt_sink(outputs: OutputsOptions, *, node_id: str, device_name: str, source: str | None = None,
                   command_labels: tuple[str, ...] = ()) -> Any:
    """The :class:`edgesense.sinks.mqtt.MqttSink` that ``outputs`` describes (``outputs.mqtt`` set);
    ``command_labels``: the words that can fire (Home Assistant's event entity, with ``ha_discovery``).

    An error about the spool folder (another process holds it, a file stands there, ...) names the
    config field, ``outputs.mqtt_spool_dir``, and ``source`` (the config file) when given, instead of
    the sink's own ``spool_dir``: the user never typed that name."""
    from edgesense.sinks.mqtt import MqttSink

    options = outputs.mqtt_options(node_id=node_id, device_name=device_name, command_labels=command_labels)
    if options is None:
        raise ValueError("mqtt: expected a broker URL, got null")
    try:
        return MqttSink(options)
    except (ValueError, RuntimeError) as exc:
        text = str(exc)
        if not text.startswith(_SPOOL_FIELD):
            raise
        where = f"{source}: " if source else ""
        auto = f" ({AUTO_SPOOL})" if outputs.mqtt_spool_dir == AUTO_SPOOL else ""
        raise type(exc)(f"{where}outputs.mqtt_spool_dir{auto}: {text[len(_SPOOL_FIELD):]}") from exc
