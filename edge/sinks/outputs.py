"""Which sinks the device loop opens (the ``outputs:`` section of a device config)."""

from __future__ import annotations

import dataclasses
import urllib.parse
from dataclasses import dataclass

from edgesense.sinks.base import STDOUT
from edgesense.sinks.mqtt import DEFAULT_TOPIC_PREFIX, MqttOptions, is_valid_topic_prefix, mqtt_options_from_url

__all__ = ["OutputsOptions"]


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


@dataclass(frozen=True, kw_only=True)
class OutputsOptions:
    """``events``: JSON Lines to ``"-"`` (stdout), a file, or nowhere (``None``). ``mqtt``: a
    broker URL (``mqtt://user:pass@host:1883/prefix``, ``mqtts://...`` for TLS) or ``None``.
    ``topic_prefix``: topics start with it (a prefix in the URL's path wins). ``ha_discovery``:
    publish Home Assistant discovery configs. ``mqtt_spool_dir``: an on-disk spool for
    at-least-once MQTT delivery (:mod:`edgesense.sinks.spool`)."""

    events: str | None = STDOUT
    mqtt: str | None = None
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    ha_discovery: bool = True
    mqtt_spool_dir: str | None = None

    def __post_init__(self) -> None:
        checks = (
            ("events", self.events is None or _text(self.events), "'-' (stdout), a file path or null"),
            ("mqtt", self.mqtt is None or _text(self.mqtt), "null or a URL like mqtt://user:pass@host:1883/prefix"),
            ("topic_prefix", is_valid_topic_prefix(self.topic_prefix),
             "an MQTT topic without wildcards or leading/trailing '/'"),
            ("ha_discovery", isinstance(self.ha_discovery, bool), "true or false"),
            ("mqtt_spool_dir", self.mqtt_spool_dir is None or _text(self.mqtt_spool_dir), "null or a folder path"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"{name}: expected {expected}, got {getattr(self, name)!r}")
        if self.mqtt is not None:
            try:
                mqtt_options_from_url(self.mqtt, spool_dir=self.mqtt_spool_dir)
            except ValueError as exc:
                raise ValueError(f"mqtt: {exc}") from None

    def mqtt_options(self, *, node_id: str, device_name: str) -> MqttOptions | None:
        """Options for :class:`edgesense.sinks.mqtt.MqttSink`, or None without ``mqtt``."""
        if self.mqtt is None:
            return None
        from_url = mqtt_options_from_url(self.mqtt)
        has_path = bool(urllib.parse.urlsplit(self.mqtt).path.strip("/"))
        return dataclasses.replace(from_url, topic_prefix=from_url.topic_prefix if has_path else self.topic_prefix,
                                   ha_discovery=self.ha_discovery, node_id=node_id, device_name=device_name,
                                   spool_dir=self.mqtt_spool_dir)
