"""MQTT events (paho-mqtt) with Home Assistant discovery, TLS and a URL form for the command line.

Topics (``prefix``: :attr:`MqttOptions.topic_prefix`; ``node``: :attr:`MqttOptions.node_id`)::

    {prefix}/status                     "online" / "offline", retained; "offline" is also the last will
    {prefix}/{type}                     every event as JSON (type: command, scene), not retained
    {prefix}/{type}/state               the latest event of that type, retained
    homeassistant/sensor/{node}/last_command/config    Home Assistant discovery (all retained): the last word,
    homeassistant/sensor/{node}/scene/config           the current scene,
    homeassistant/event/{node}/command/config          and every command as it is said (with command_labels)

Home Assistant's ``event`` entity is what an automation on a spoken word triggers on: the ``Last command``
sensor keeps its state when the same word comes again (a state trigger ``to: "yes"`` does not fire for the
second "yes"), and it comes back with its last word when the device is online again (``unavailable`` ->
``yes``: the same trigger fires for a word nobody said). The event entity reads ``{prefix}/command``, which is not
retained (and Home Assistant discards replayed retained messages for events).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeGuard

from edgesense import __version__, extra_hint
from edgesense.pacing import Outage, Paced
from edgesense.schema.validate import is_int, is_positive, one_line, require
from edgesense.sinks.base import Event, _ClosableSink, event_to_json

__all__ = ["MqttOptions", "MqttSink", "mqtt_options_from_url", "is_valid_topic_prefix"]

logger = logging.getLogger(__name__)


DEFAULT_TOPIC_PREFIX = "edgesense"
DEFAULT_DISCOVERY_PREFIX = "homeassistant"
MQTT_PORT = 1883
MQTTS_PORT = 8883
STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"
_NODE_ID = re.compile(r"^[A-Za-z0-9_-]+$")
#: The Home Assistant event entity's payload, from an event's JSON: ``event_type`` (one of ``event_types``) is the
#: word, the rest its attributes.
_COMMAND_EVENT_TEMPLATE = ("{{ {'event_type': value_json.label, 'score': value_json.score, 't_ms': value_json.t_ms, "
                           "'wall_time': value_json.wall_time} | to_json }}")


# --------------------------------------------------------------------------- MQTT


def is_valid_topic_prefix(prefix: Any) -> TypeGuard[str]:
    """A publishable topic prefix: non-empty, no wildcards, no leading or trailing '/'."""
    return (isinstance(prefix, str) and bool(prefix) and not prefix.startswith("/") and not prefix.endswith("/")
            and not any(c in prefix for c in "+#\0"))


def _is_topic_level(kind: Any) -> bool:
    """An event type paho can publish under (``{prefix}/{type}``): non-empty, no wildcard, no NUL (which the MQTT
    specification forbids in a topic) and text that UTF-8 can encode (not a lone surrogate)."""
    if not (isinstance(kind, str) and bool(kind) and not any(c in kind for c in "+#\0")):
        return False
    try:
        kind.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True, kw_only=True)
class MqttOptions:
    """Connection and topic settings of :class:`MqttSink` (see the module docstring for topics)."""

    host: str
    port: int = MQTT_PORT
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    qos: int = 1
    client_id: str = ""  #: empty: the client library makes a random one
    username: str | None = None
    password: str | None = field(default=None, repr=False)  #: never shown in repr/logs
    tls: bool = False
    ca_certs: str | None = None  #: CA bundle; None: the system's trust store
    certfile: str | None = None  #: client certificate (mutual TLS)
    keyfile: str | None = None
    keepalive_s: int = 60
    connect_timeout_s: float = 10.0
    publish_timeout_s: float = 5.0
    ha_discovery: bool = True
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX
    node_id: str = "edgesense"
    device_name: str = "EdgeSense"
    spool_dir: str | None = None  #: on-disk spool for at-least-once delivery (None: in memory only)
    reconnect_max_delay_s: int = 30  #: paho retries 1 s, 2 s, 4 s, ... capped here (paho's default: 120)
    #: the words that can fire (the model's, less the ignored ones): the ``event_types`` of the Home Assistant
    #: event entity of commands; empty: no event entity
    command_labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        require(isinstance(self.host, str) and bool(self.host.strip()), "host", "a host name", self.host)
        require(isinstance(self.port, int) and not isinstance(self.port, bool) and 0 < self.port < 65536, "port",
                 "an integer in [1, 65535]", self.port)
        require(is_valid_topic_prefix(self.topic_prefix), "topic_prefix",
                 "a topic without wildcards or leading/trailing '/'", self.topic_prefix)
        require(is_int(self.qos) and self.qos in (0, 1, 2), "qos", "0, 1 or 2", self.qos)
        require(isinstance(self.client_id, str), "client_id", "a string", self.client_id)
        require(self.username is None or isinstance(self.username, str), "username", "None or a string",
                 self.username)
        require(self.password is None or isinstance(self.password, str), "password", "None or a string",
                 "(not shown)")  # never shown, like its repr
        require(self.password is None or self.username is not None, "username",
                 "a user name when a password is given", self.username)
        require(isinstance(self.tls, bool), "tls", "a bool", self.tls)
        for name in ("ca_certs", "certfile", "keyfile"):
            value = getattr(self, name)
            require(value is None or (self.tls and os.path.isfile(value)), name,
                     "None, or an existing file with tls=True", value)
        require(self.keyfile is None or self.certfile is not None, "certfile", "a file when keyfile is given",
                 self.certfile)
        require(isinstance(self.keepalive_s, int) and not isinstance(self.keepalive_s, bool)
                 and self.keepalive_s >= 5, "keepalive_s", "an integer >= 5", self.keepalive_s)
        for name in ("connect_timeout_s", "publish_timeout_s"):  # waited for: inf was an OverflowError there
            value = getattr(self, name)
            require(is_positive(value) and value <= threading.TIMEOUT_MAX, name,
                    f"a positive number up to {threading.TIMEOUT_MAX:g} (threading's longest wait)", value)
        require(isinstance(self.ha_discovery, bool), "ha_discovery", "a bool", self.ha_discovery)
        require(is_valid_topic_prefix(self.discovery_prefix), "discovery_prefix", "a topic without wildcards",
                 self.discovery_prefix)
        require(isinstance(self.device_name, str), "device_name", "a string", self.device_name)
        require(isinstance(self.node_id, str) and bool(_NODE_ID.match(self.node_id)), "node_id",
                 "letters, digits, '_' and '-' only", self.node_id)
        require(self.spool_dir is None or (isinstance(self.spool_dir, str) and bool(self.spool_dir.strip())),
                 "spool_dir", "None or a folder path", self.spool_dir)
        require(isinstance(self.reconnect_max_delay_s, int) and not isinstance(self.reconnect_max_delay_s, bool)
                 and self.reconnect_max_delay_s >= 1, "reconnect_max_delay_s", "an integer >= 1",
                 self.reconnect_max_delay_s)
        require(self.spool_dir is None or self.qos >= 1, "qos", "1 or 2 with spool_dir (acknowledged delivery)",
                 self.qos)
        require(isinstance(self.command_labels, tuple) and all(isinstance(x, str) and x.strip()
                                                                for x in self.command_labels)
                 and len(set(self.command_labels)) == len(self.command_labels), "command_labels",
                 "a tuple of distinct non-empty words", self.command_labels)

    @property
    def status_topic(self) -> str:
        return f"{self.topic_prefix}/status"

    def event_topic(self, event_type: str) -> str:
        return f"{self.topic_prefix}/{event_type}"

    def state_topic(self, event_type: str) -> str:
        return f"{self.topic_prefix}/{event_type}/state"

    def discovery_topic(self, object_id: str, component: str = "sensor") -> str:
        return f"{self.discovery_prefix}/{component}/{self.node_id}/{object_id}/config"


_URL_SCHEMES = {"mqtt": (False, MQTT_PORT), "tcp": (False, MQTT_PORT), "mqtts": (True, MQTTS_PORT),
                "ssl": (True, MQTTS_PORT)}
_URL_QUERY = {"qos": int, "client_id": str, "keepalive_s": int, "ca_certs": str, "certfile": str, "keyfile": str,
              "node_id": str}


#: ``scheme://user:`` and the password after it, up to the URL's last '@': read on the raw text, so that a
#: password holding a '/', '?', '#' or '[' that was not percent-encoded (which urlsplit would take for the
#: start of the path, query, fragment or an IPv6 address) is masked all the same.
_USER_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\[\]]*:)(.*)@", re.DOTALL)
_URL_DELIMITERS = "/?#[]"


def _redact(url: str) -> str:
    """``url`` with its password shown as ``***`` (a topic prefix holding an '@' may be masked too)."""
    return _USER_PASSWORD.sub(r"\1***@", url, count=1)


def _unencoded_in_password(url: str) -> str:
    """The URL delimiters ('/', '?', '#', '[', ']') a password holds not percent-encoded ('' when none)."""
    match = _USER_PASSWORD.match(url)
    if match is None:
        return ""
    password = match.group(2)
    head = re.split(r"[/?#\[\]]", password, maxsplit=1)[0]
    if head.isdigit():  # host:PORT/prefix@...: a port and a topic prefix with an '@', not a password
        return ""
    return "".join(c for c in _URL_DELIMITERS if c in password)


def mqtt_options_from_url(url: str, **overrides: Any) -> MqttOptions:
    """``mqtt://[user[:password]@]host[:port][/topic/prefix][?qos=1&client_id=..&ca_certs=..]``.

    ``mqtts://`` (or ``ssl://``) turns TLS on (default port 8883). User name and
    password are percent-decoded. ``overrides`` are :class:`MqttOptions` fields
    that win over the URL (e.g. ``ha_discovery=False``). Bad URLs are
    ``ValueError`` (with the password masked).
    """
    if not isinstance(url, str):
        raise ValueError(f"mqtt url: expected a string, got {url!r}")
    shown = _redact(url)
    unencoded = _unencoded_in_password(url)
    if unencoded:  # urlsplit would read the rest of the password as the port, path or query, and show it
        raise ValueError(f"mqtt url {shown!r}: expected a password with its URL delimiters percent-encoded "
                         f"({', '.join(f'{c} as %{ord(c):02X}' for c in unencoded)}), got one holding "
                         f"{' and '.join(repr(c) for c in unencoded)}")
    if "#" in url:  # urlsplit would take it for a fragment and silently drop what follows
        raise ValueError(f"mqtt url {shown!r}: expected no '#' (an MQTT wildcard; percent-encoded too) in the "
                         f"topic prefix, got one")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL"
        raise ValueError(f"mqtt url {shown!r}: expected mqtt[s]://host[:port][/prefix], got a URL that cannot "
                         f"be read ({exc})") from None
    if parts.scheme not in _URL_SCHEMES:
        raise ValueError(f"mqtt url {shown!r}: expected a scheme of {', '.join(_URL_SCHEMES)}, got {parts.scheme!r}")
    tls, default_port = _URL_SCHEMES[parts.scheme]
    try:
        port = default_port if parts.port is None else parts.port
    except ValueError as exc:
        raise ValueError(f"mqtt url {shown!r}: bad port ({exc})") from exc
    if port == 0:
        raise ValueError(f"mqtt url {shown!r}: expected a port in [1, 65535], got 0")
    if not parts.hostname:
        raise ValueError(f"mqtt url {shown!r}: expected a host name")
    values: dict[str, Any] = {"host": parts.hostname, "port": port, "tls": tls}
    if parts.username is not None:
        values["username"] = urllib.parse.unquote(parts.username)
    if parts.password is not None:
        values["password"] = urllib.parse.unquote(parts.password)
    prefix = parts.path.strip("/")
    if prefix:
        values["topic_prefix"] = urllib.parse.unquote(prefix)
    for key, raw in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key not in _URL_QUERY:
            raise ValueError(f"mqtt url {shown!r}: unknown query parameter {key!r}; expected some of "
                             f"{', '.join(_URL_QUERY)}")
        try:
            values[key] = _URL_QUERY[key](raw)
        except ValueError as exc:
            raise ValueError(f"mqtt url {shown!r}: {key}: expected {_URL_QUERY[key].__name__}, got {raw!r}") from exc
    values.update(overrides)
    try:
        return MqttOptions(**values)
    except TypeError as exc:  # an unknown override
        raise ValueError(f"mqtt options: {exc}") from exc


#: paho's MQTTErrorCode values that :func:`_published` and :func:`_undelivered` read (paho is imported lazily).
_ERR_CONN_LOST = 7  # a QoS 0 message paho dropped unsent when the connection was lost (and marked "published")
_ERR_QUEUE_SIZE = 15  # never queued: paho's queue was full


def _published(info: Any) -> bool:
    """Whether paho saw the broker acknowledge a message (False while it cannot know).

    A QoS 1/2 message published while the connection was down keeps the ``MQTT_ERR_NO_CONN`` that
    ``publish`` returned after paho sent it on reconnecting, so ``is_published()`` raises for it for ever;
    paho still records the broker's acknowledgement on the same object (its ``_published`` flag, which
    ``is_published`` reads). Taken for never acknowledged, every event of an outage was kept until the end
    of the run and then counted as lost (exit 1), though the broker had it. A QoS 0 message that paho
    dropped unsent when the connection was lost (``MQTT_ERR_CONN_LOST``) carries the same flag, set only
    to end ``wait_for_publish``: it was never published."""
    try:
        return bool(info.is_published())
    except ValueError:  # never queued (paho's queue was full)
        return False
    except RuntimeError:  # NO_CONN: queued and sent after reconnecting (QoS 1/2); CONN_LOST: dropped (QoS 0)
        return info.rc != _ERR_CONN_LOST and bool(getattr(info, "_published", False))


def _undelivered(info: Any) -> str | None:
    """Why a message that is not published never will be (None while it still may be)."""
    if info.rc == _ERR_CONN_LOST:
        return "the connection was lost before it was sent (QoS 0: not kept for later)"
    if info.rc == _ERR_QUEUE_SIZE:
        return "the client's queue was full"
    return None


#: A CONNACK's "Unsupported protocol version": a broker that speaks MQTT 3.1.1 only answers an MQTT 5 CONNECT with
#: 3.1.1's refusal 1 (unacceptable protocol version), which paho reads as this MQTT 5 reason code.
_UNSUPPORTED_PROTOCOL = 0x84
#: Refused messages (MQTT 5) whose paho MQTTMessageInfo the sink may still look for, at most (the oldest go first):
#: only those published by MqttSink._publish (events without the spool) are looked for, the rest (status,
#: discovery, the spool's) must not pile up.
_REFUSED_KEPT = 1024


#: What a disconnect line adds when the connection keeps dropping: the likeliest cause on a fleet of devices.
_DROPPED_AGAIN_AND_AGAIN = ("; a connection dropped again and again is often another client of the same client id "
                            "taking it over (device.device_id: by default the host name and /etc/machine-id, which "
                            "a cloned SD card keeps)")


def _sent_message(client: Any, mid: int) -> Any:
    """paho's message ``mid`` from inside ``on_publish`` (paho pops it only afterwards, and holds its lock while
    it calls): its topic and MQTTMessageInfo, which ``on_publish`` is not given; None where paho keeps them
    elsewhere."""
    messages = getattr(client, "_out_messages", None)
    return messages.get(mid) if isinstance(messages, dict) else None


def _wait_published(info: Any, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for :func:`_published`; never raises (``wait_for_publish`` raises at once
    for NO_CONN, and at its end for a QoS 0 message lost with the connection)."""
    if info.rc == 0:
        try:
            info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError):  # its rc changed while it waited (CONN_LOST)
            pass
        return _published(info)
    deadline = time.monotonic() + timeout_s
    while not _published(info) and _undelivered(info) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return _published(info)


#: Signals that stop a run (edgesense.app.cli): one that comes while the sink waits for the broker's answer ends
#: that wait at once, so that stopping a device whose broker hangs does not take connect_timeout_s.
_STOP_SIGNALS = tuple(sig for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None))  # none: Windows
                      if sig is not None)


@contextlib.contextmanager
def _stop_signals_call(action: Callable[[], None]) -> Iterator[list[int]]:
    """While inside, SIGINT, SIGTERM and SIGHUP also call ``action`` (it only sets flags), before the Python handler
    that was there, which still runs and comes back on exit; yields the signals that came. Only signals with
    a Python handler are touched (a default or ignored disposition stays as it is), on the main thread only."""
    came: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield came
        return
    previous: dict[int, Callable[..., Any]] = {}

    def on_signal(signum: int, frame: Any) -> None:
        came.append(signum)
        action()
        previous[signum](signum, frame)

    for sig in _STOP_SIGNALS:
        handler = signal.getsignal(sig)
        if callable(handler):
            previous[sig] = handler
            signal.signal(sig, on_signal)
    try:
        yield came
    finally:
        for signum, handler in previous.items():
            if signal.getsignal(signum) is on_signal:
                signal.signal(signum, handler)


def _tls_error(options: MqttOptions, exc: Exception) -> ValueError:
    """``tls_set``'s failure as one line naming the file (URL parameter) that could not be loaded."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for name in ("certfile", "ca_certs"):  # both must hold certificates in PEM form
        path = getattr(options, name)
        if path is not None:
            try:
                context.load_verify_locations(path)
            except (ssl.SSLError, OSError) as error:
                return ValueError(f"mqtt: {name}={path}: expected a PEM file with certificates, got one that "
                                  f"cannot be loaded ({one_line(error)})")
    if options.certfile is not None:
        key = f"keyfile={options.keyfile}" if options.keyfile is not None else f"certfile={options.certfile}"
        return ValueError(f"mqtt: {key}: expected a PEM file with the private key of certfile={options.certfile}, "
                          f"got one that cannot be loaded ({one_line(exc)})")
    return ValueError(f"mqtt: TLS: expected PEM files for ca_certs/certfile/keyfile, got an error ({one_line(exc)})")


def _import_paho():
    try:
        import paho.mqtt.client as mqtt
    except ModuleNotFoundError as exc:
        raise RuntimeError(f"MQTT output needs paho-mqtt >= 2: {extra_hint('mqtt')}") from exc
    return mqtt


class MqttSink(_ClosableSink):
    """Publishes events to an MQTT broker, with Home Assistant discovery and availability.

    Connecting happens in the constructor: ``RuntimeError`` if the broker refuses
    the connection within ``connect_timeout_s``; a broker that cannot be reached is
    a warning and is tried again in the background. A SIGINT or SIGTERM while it waits for the
    broker's answer (on the main thread) ends that wait: the run is stopping, and :meth:`close`
    ends the tries. Later disconnections are retried
    by paho in the background, and so is a broker that refuses the connection after
    the start (an error is logged; e.g. a password file being reloaded);
    availability and discovery are re-published on every (re)connection. An outage is a warning when it starts
    (a connection that drops again and again: paced, and said once the pacing interval has passed if it lasts) and
    one when it ends, with how long it lasted and the events that waited for it.

    It speaks MQTT 5, whose acknowledgement says when the broker refuses a message (e.g. its ACL: "Not
    authorized"; under MQTT 3.1.1 that reads as a delivery): a refused event stays in the spool, offered again
    every ``resend_after_s`` (:class:`edgesense.sinks.spool.SpoolDelivery`), or without a spool is counted in
    ``lost_events``; one error while the refusals last, one warning when they end (:attr:`refused` counts the
    refused messages). A broker that refuses MQTT 5 ("Unsupported protocol version": it speaks 3.1.1 only) is
    spoken to in MQTT 3.1.1 from the next try on, with one info line.

    With ``options.spool_dir`` events go through an :class:`edgesense.sinks.spool.EventSpool`
    (``spool_options``: its bounds and fsync policy) and a delivery thread
    (:class:`edgesense.sinks.spool.SpoolDelivery`) publishes them, oldest first, removing each
    when the broker acknowledges it. Should the spool fail to store an event (disk
    full), that event is published directly (at most once) and counted in
    ``spool_failures`` (one warning when the spool starts failing, one when it stores events again).
    """

    def __init__(self, options: MqttOptions, *, spool_options: Any = None, delivery_options: Any = None) -> None:
        super().__init__()
        self.options = options
        mqtt = _import_paho()
        self._spool: Any = None
        self._delivery: Any = None
        self._last_seq = 0
        self._flushed_seq = 0  # the last seq a flush waited for
        self._spool_outage = Outage(logger)  # events the spool could not store (published without it)
        self._mqtt = mqtt
        self._connected = threading.Event()
        self._connack = threading.Event()
        self._refused: str | None = None
        self._starting = True  #: in the constructor: a refusal is its RuntimeError, later ones are retried
        self._pending: list[Any] = []
        self._unanswered = False  #: the last flush that waited for the broker timed out (it may hang, or be gone)
        self._lock = threading.Lock()
        self.failed = 0
        self._lost = 0  #: events lost here (the spool counts those it dropped); see lost_events
        self._refused_infos: dict[int, Any] = {}  #: id -> paho's MQTTMessageInfo the broker refused (MQTT 5)
        self._refused_lock = threading.Lock()  # a leaf lock: paho's thread takes it holding paho's own locks
        self._refusing: set[str] = set()  #: topics the broker refused since the last refusal began (paho's thread)
        self._refusal_reason: str | None = None  #: why it refuses them (None: it does not)
        self._refused_in_outage = 0
        self._refused_other: set[str] = set()  #: topics of no event (status, discovery) the broker refused, said once
        self.refused = 0  #: messages the broker answered with a refusal (MQTT 5; e.g. its ACL)
        self._falling_back = False  #: the broker does not speak MQTT 5: the next connection uses 3.1.1
        self._disconnect_lines = Paced()
        self._down_since_s: float | None = None  #: monotonic seconds when the broker was lost (None: connected)
        self._down_said = False  #: that loss was a warning: its end is one too
        self._emitted_while_down = 0  #: events emitted since it was lost
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=options.client_id,
                             protocol=mqtt.MQTTv5)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_publish = self._on_publish
        client.reconnect_delay_set(min_delay=1, max_delay=options.reconnect_max_delay_s)
        if options.tls:  # before the spool opens: a bad file leaves nothing to release
            try:
                client.tls_set(ca_certs=options.ca_certs, certfile=options.certfile, keyfile=options.keyfile)
            except (ssl.SSLError, OSError) as exc:
                raise _tls_error(options, exc) from None
        if options.spool_dir is not None:
            from edgesense.sinks.spool import DeliveryOptions, EventSpool, SpoolDelivery, SpoolOptions

            delivery_options = delivery_options or DeliveryOptions()
            self._spool = EventSpool(options.spool_dir, spool_options or SpoolOptions())
            self._delivery = SpoolDelivery(self._spool, self._publish_spooled, delivery_options)
            client.max_inflight_messages_set(2 * delivery_options.window_events + 8)  # + status and discovery
        client.will_set(options.status_topic, STATUS_OFFLINE, qos=options.qos, retain=True)
        if options.username is not None:
            client.username_pw_set(options.username, options.password)
        self._client = client
        where = f"{options.host}:{options.port}"
        keeping = self._keeping()
        try:
            client.connect(options.host, options.port, keepalive=options.keepalive_s, clean_start=True)
        except ValueError as exc:  # not an address paho can use
            self._release_client()
            self._close_spool()
            raise RuntimeError(f"mqtt: cannot connect to {where}: {exc}") from exc
        except OSError as exc:  # the broker is away: start anyway, paho keeps trying in the background
            logger.warning("mqtt: broker %s unreachable (%s); %s until it answers", where, exc, keeping)
            self._went_down(said=True)
            self._starting = False
            client.connect_async(options.host, options.port, keepalive=options.keepalive_s, clean_start=True)
            client.loop_start()
            return
        client.loop_start()
        with _stop_signals_call(self._connack.set) as stop_signals:
            self._connack.wait(options.connect_timeout_s)
        with self._lock:
            self._starting = False
        if self._refused is not None:
            client.loop_stop()
            client.disconnect()
            self._release_client()
            self._close_spool()
            raise RuntimeError(f"mqtt: broker {where} refused the connection: {self._refused}")
        if not self._connected.is_set() and stop_signals:  # the run is stopping: close() ends the tries
            logger.info("mqtt: stopped while waiting for broker %s to answer; %s until it does", where, keeping)
            return
        if not self._connected.is_set():
            logger.warning("mqtt: broker %s gave no answer within %g s; %s until it does", where,
                           options.connect_timeout_s, keeping)
            self._went_down(said=True)
            if self._connected.is_set():  # it answered meanwhile, before the outage was noted: no end to say
                self._down_since_s = None
            return
        logger.info("mqtt: connected to %s, publishing under %s/", where, options.topic_prefix)

    # paho's network thread ------------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure and getattr(reason_code, "value", None) == _UNSUPPORTED_PROTOCOL \
                and self._fall_back(client, reason_code):
            return  # paho connects again (1 s), with MQTT 3.1.1; the constructor waits for that answer
        self._falling_back = False
        if reason_code.is_failure:
            with self._lock:
                starting = self._starting
                first = self._refused is None
                self._refused = str(reason_code)
            if starting:
                client.disconnect()  # the constructor raises: do not retry with bad credentials
            elif first:  # after the start paho tries again (1 s, 2 s, ... at most reconnect_max_delay_s)
                logger.error("mqtt: broker %s:%d refused the connection: %s; %s, trying again (fix the user name, "
                             "password or ACL on the broker)", self.options.host, self.options.port, reason_code,
                             self._keeping())
            self._connack.set()
            return
        if self._refused is not None:
            logger.info("mqtt: broker %s:%d accepts the connection again", self.options.host, self.options.port)
            self._refused = None
        self._connected.set()
        self._came_back()  # after the flag: the constructor's check in _went_down reads it
        self._connack.set()
        opts = self.options
        client.publish(opts.status_topic, STATUS_ONLINE, qos=opts.qos, retain=True)
        if opts.ha_discovery:
            for topic, payload in self.discovery_payloads().items():
                client.publish(topic, json.dumps(payload), qos=opts.qos, retain=True)
        if self._delivery is not None:
            self._delivery.connected()  # replays the spool, oldest first

    def _fall_back(self, client: Any, reason_code: Any) -> bool:
        """Speak MQTT 3.1.1 from the next connection on, to a broker that refused MQTT 5 (once: False if the client
        already speaks 3.1.1). paho has no public way to change a client's protocol; it changes the same attribute
        itself to fall back from 3.1.1 to 3.1. A new client instead would drop what paho holds for the broker."""
        mqtt = self._mqtt
        if getattr(client, "_protocol", None) != mqtt.MQTTv5:
            return False
        client._protocol = mqtt.MQTTv311
        client._clean_session = True  # what paho's constructor sets for 3.1.1 (MQTT 5 has clean_start instead)
        self._falling_back = True
        logger.info("mqtt: broker %s:%d does not speak MQTT 5 (%s); speaking MQTT 3.1.1 to it, where a message the "
                    "broker refuses (its ACL) cannot be told from one it keeps", self.options.host, self.options.port,
                    reason_code)
        return True

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._connected.clear()
        if self._delivery is not None:
            self._delivery.disconnected()
        if self._falling_back:  # the MQTT 5 refusal that led to MQTT 3.1.1 was said once, as such
            self._falling_back = False
            return
        if not self._closed and self._refused is None:  # a refusal was logged once, not at every try
            covered = self._disconnect_lines.due()  # a connection dropped again and again: not a line each time
            log = logger.warning if covered else logger.debug
            log("mqtt: disconnected from %s:%d (%s); reconnecting%s%s", self.options.host, self.options.port,
                reason_code, self._disconnect_lines.covering(covered, "disconnects"),
                _DROPPED_AGAIN_AND_AGAIN if covered > 1 else "")
            self._went_down(said=bool(covered))

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        """A try to reconnect failed (paho's thread, every ``reconnect_max_delay_s`` at most). An outage whose start
        went to the debug log (a connection that dropped again within :data:`edgesense.pacing.LOG_INTERVAL_S` of the
        last line) is a warning once that interval has passed: a long outage is never silent, and its end is said."""
        since = self._down_since_s  # read once: the constructor's thread may forget the outage meanwhile
        if since is None or self._down_said or self._closed:
            return
        covered = self._disconnect_lines.due(new=False)
        if covered:
            self._down_said = True
            logger.warning("mqtt: no connection to %s:%d for %.0f s; %s until it comes back%s", self.options.host,
                           self.options.port, time.monotonic() - since, self._keeping(),
                           self._disconnect_lines.covering(covered, "disconnects"))

    def _went_down(self, *, said: bool) -> None:
        """The broker is lost from now (kept where it already was); ``said``: that was a warning, so the end of
        the outage is one too (:meth:`_came_back`)."""
        if self._down_since_s is None:
            self._down_since_s, self._down_said, self._emitted_while_down = time.monotonic(), said, 0

    def _came_back(self) -> None:
        """The broker answers again (paho's thread): the outage's end, how long it lasted and what became of the
        events emitted meanwhile, at the level its start was said at (a journal held "disconnected" and nothing
        after it, however soon the broker was back)."""
        since = self._down_since_s  # read once: the constructor (its thread) may set it to None meanwhile
        if since is None:
            return
        down_s, emitted = time.monotonic() - since, self._emitted_while_down
        if self._spool is not None:
            then = f"{len(self._spool)} event(s) wait in the spool {self.options.spool_dir}, sent now, oldest first"
        elif self.options.qos == 0:
            then = f"{emitted} event(s) emitted meanwhile were lost (QoS 0 keeps none)"
        else:
            then = f"{emitted} event(s) emitted meanwhile, kept in memory, are sent now"
        log = logger.warning if self._down_said else logger.debug
        log("mqtt: connected to %s:%d again after %.0f s without it; %s", self.options.host, self.options.port,
            down_s, then)
        self._down_since_s = None

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        """The broker's answer to message ``mid`` (paho holds its message lock here: only note it). Under MQTT 5 a
        reason code >= 0x80 (e.g. 0x87 "Not authorized" from an ACL) is a refusal: the message was not kept. Under
        3.1.1 every acknowledgement reads "Success"."""
        message = _sent_message(client, mid)
        topic = getattr(message, "topic", None) or "a topic"
        if reason_code.is_failure:
            self._note_refused(topic, reason_code, getattr(message, "info", None))
            if self._delivery is not None:  # it knows the ids of its events' messages only
                self._delivery.refused(mid)
            return
        if topic in self._refusing:  # publishing works again (a message to a topic it refused)
            logger.warning("mqtt: broker %s:%d accepts messages to %s again; it refused %d message(s) meanwhile",
                           self.options.host, self.options.port, topic, self._refused_in_outage)
            self._refusing = set()
            self._refusal_reason = None
        if self._delivery is not None:
            self._delivery.acknowledged(mid)

    def _note_refused(self, topic: str, reason_code: Any, info: Any) -> None:
        """Count a refused message, keep its MQTTMessageInfo for :meth:`_was_refused`, and say so once per run of
        refusals (paho's thread)."""
        self.refused += 1
        if info is not None:
            with self._refused_lock:
                self._refused_infos[id(info)] = info  # held: its id is not reused while it is here
                while len(self._refused_infos) > _REFUSED_KEPT:
                    del self._refused_infos[next(iter(self._refused_infos))]
        if not self._is_event_topic(topic):  # availability or Home Assistant discovery: no event is refused
            if topic not in self._refused_other:
                self._refused_other.add(topic)
                logger.error("mqtt: broker %s:%d refuses messages to %s: %s (said once for this topic; events "
                             "are not concerned: fix the broker's ACL for this user and topic)", self.options.host,
                             self.options.port, topic, reason_code)
            return
        self._refusing.add(topic)
        if self._refusal_reason is not None:
            self._refused_in_outage += 1
            logger.debug("mqtt: broker refused a message to %s: %s", topic, reason_code)
            return
        self._refusal_reason = str(reason_code)
        self._refused_in_outage = 1
        if self._delivery is not None:
            then = (f"refused events wait in the spool {self.options.spool_dir} and are offered again every "
                    f"{self._delivery.options.resend_after_s:g} s")
        else:
            then = "each event it refuses is lost (no spool)"
        logger.error("mqtt: broker %s:%d refuses messages to %s: %s; %s (said once while it lasts: fix the broker's "
                     "ACL for this user and topic prefix)", self.options.host, self.options.port, topic, reason_code,
                     then)

    def _is_event_topic(self, topic: str) -> bool:
        """Whether ``topic`` carries events (``{prefix}/{type}`` and its ``/state``), not availability or discovery."""
        return topic.startswith(f"{self.options.topic_prefix}/") and topic != self.options.status_topic

    def _was_refused(self, info: Any) -> bool:
        """Whether the broker refused the message of ``info`` (MQTT 5), which paho marks published all the same;
        asked once per message."""
        with self._refused_lock:
            return self._refused_infos.pop(id(info), None) is info

    def _keeping(self) -> str:
        return (f"events wait in the spool {self.options.spool_dir}" if self.options.spool_dir is not None
                else "events are kept in memory only (no spool)")

    # spool --------------------------------------------------------------------

    def _publish_spooled(self, event: Any) -> list[int]:
        """Queue a spooled event's two messages with paho (delivery thread); their message ids."""
        mids = []
        for topic, retain in ((self.options.event_topic(event.kind), False),
                              (self.options.state_topic(event.kind), True)):
            info = self._client.publish(topic, event.payload, qos=self.options.qos, retain=retain)
            # NO_CONN: paho keeps the message and sends it after reconnecting.
            if info.rc not in (self._mqtt.MQTT_ERR_SUCCESS, self._mqtt.MQTT_ERR_NO_CONN):
                raise RuntimeError(f"mqtt: publishing to {topic} failed: {self._mqtt.error_string(info.rc)}")
            mids.append(info.mid)
        return mids

    def _release_client(self) -> None:
        """Stop paho's network thread and close its sockets now. paho closes the socket pair that wakes its
        thread only when the client is collected, and the client's callbacks (this sink's methods) make a cycle
        that only the cyclic collector frees: every closed sink held two descriptors until then."""
        self._client.loop_stop()
        reset = getattr(self._client, "_reset_sockets", None)  # what paho's __del__ calls; it has no public one
        if callable(reset):
            reset()

    def _close_spool(self) -> None:
        if self._delivery is not None:
            self._delivery.stop()
        if self._spool is not None:
            self._spool.close()

    @property
    def spool(self) -> Any:
        """The :class:`edgesense.sinks.spool.EventSpool` (None without ``spool_dir``)."""
        return self._spool

    @property
    def delivery(self) -> Any:
        """The :class:`edgesense.sinks.spool.SpoolDelivery` (None without ``spool_dir``)."""
        return self._delivery

    # ----------------------------------------------------------------------------

    @property
    def spool_failures(self) -> int:
        """Events the spool could not store (a full card), published without it (at most once)."""
        return self._spool_outage.failures

    @property
    def lost_events(self) -> int:
        """Events neither acknowledged by the broker nor kept in the spool: lost here, or dropped by
        the spool (full, or one event larger than it) since it was opened."""
        dropped = self._spool.dropped_since_open if self._spool is not None else 0
        return self._lost + dropped

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def discovery_payloads(self) -> dict[str, dict[str, Any]]:
        """Home Assistant MQTT discovery configs, by discovery topic (the module docstring lists them)."""
        opts = self.options
        device = {"identifiers": [opts.node_id], "name": opts.device_name, "manufacturer": "EdgeSense",
                  "model": "EdgeSense audio+vision", "sw_version": __version__}
        common = {"availability_topic": opts.status_topic, "payload_available": STATUS_ONLINE,
                  "payload_not_available": STATUS_OFFLINE, "device": device}
        label = {"value_template": "{{ value_json.label }}"}
        configs = {
            opts.discovery_topic("last_command"): {
                "name": "Last command", "unique_id": f"{opts.node_id}_last_command",
                "state_topic": opts.state_topic("command"), "json_attributes_topic": opts.state_topic("command"),
                "icon": "mdi:microphone-message", **label, **common},
            opts.discovery_topic("scene"): {
                "name": "Scene", "unique_id": f"{opts.node_id}_scene", "state_topic": opts.state_topic("scene"),
                "json_attributes_topic": opts.state_topic("scene"), "icon": "mdi:image-filter-center-focus",
                **label, **common},
        }
        if opts.command_labels:  # every word as it is said: what automations trigger on
            configs[opts.discovery_topic("command", "event")] = {
                "name": "Command", "unique_id": f"{opts.node_id}_command", "state_topic": opts.event_topic("command"),
                "event_types": list(opts.command_labels), "value_template": _COMMAND_EVENT_TEMPLATE,
                "icon": "mdi:account-voice", **common}
        return configs

    def _publish(self, topic: str, payload: str, retain: bool, *, event: bool = False) -> None:
        """Queue one message with paho; ``event``: it carries an event (counted in ``lost_events``
        when it never reaches the broker)."""
        info = self._client.publish(topic, payload, qos=self.options.qos, retain=retain)
        if info.rc not in (self._mqtt.MQTT_ERR_SUCCESS, self._mqtt.MQTT_ERR_NO_CONN):
            self.failed += 1
            self._lost += event
            logger.warning("mqtt: publishing to %s failed: %s", topic, self._mqtt.error_string(info.rc))
            return
        if info.rc == self._mqtt.MQTT_ERR_NO_CONN and self.options.qos == 0:  # paho keeps no QoS 0 message
            self.failed += 1
            self._lost += event
            logger.debug("mqtt: not connected; the QoS 0 message to %s is lost", topic)
            return
        with self._lock:
            kept = []
            for sent, carries_event in self._pending:
                if _published(sent):
                    if self._was_refused(sent):  # said by _note_refused, once while the broker refuses
                        self.failed += 1
                        self._lost += carries_event
                    continue
                why = _undelivered(sent)
                if why is None:
                    kept.append((sent, carries_event))
                    continue
                self.failed += 1
                self._lost += carries_event
                logger.debug("mqtt: message %s not delivered: %s", sent.mid, why)
            self._pending = kept
            self._pending.append((info, event))

    def emit(self, event: Event) -> None:
        """Publish ``event`` to ``{prefix}/{type}`` and (retained) ``{prefix}/{type}/state``."""
        self._check_open()
        # Checked before it is spooled: paho refuses the topic of a type with a wildcard, and such an event, stored,
        # stopped every event after it from being delivered, in this run and the next, with a warning a second.
        require(_is_topic_level(event.type), "event type", "a non-empty string without '+', '#' or NUL (it names "
                 "the event's MQTT topics)", event.type)
        payload = event_to_json(event)
        if self._down_since_s is not None:
            self._emitted_while_down += 1
        if self._spool is not None:
            try:
                seq = self._spool.append(event.type, payload)
            except RuntimeError as exc:  # said once per outage: a failing card failed every event, one line each
                self._spool_outage.failed("mqtt: %s; publishing events without the spool while this lasts", exc)
            else:
                self._spool_outage.succeeded("mqtt: the spool %s stores events again; %d event(s) were published "
                                             "without it", self.options.spool_dir)
                # seq < 0: too large for the spool, dropped (and counted in the spool's dropped events)
                self._last_seq = max(self._last_seq, seq)
                self._delivery.wake()
                return
        self._publish(self.options.event_topic(event.type), payload, retain=False, event=True)
        self._publish(self.options.state_topic(event.type), payload, retain=True)

    def flush(self) -> None:
        """Wait (up to ``publish_timeout_s`` in all) until emitted messages reached the broker.

        With a spool: up to ``publish_timeout_s`` in all for every event emitted so far
        to be acknowledged; what is not stays spooled (and is logged). A flush with nothing emitted
        since the last one returns at once (a stop flushes more than once: it waited for each).
        Without a spool, each message still not acknowledged is counted (an event: in ``lost_events``)
        and said in one line.
        """
        waited = unanswered = False
        if self._spool is not None and not self._spool.closed:
            target = self._last_seq
            if target > self._flushed_seq:  # events emitted since the last flush, which already waited
                self._flushed_seq = target
                waited = True
                if not self._delivery.wait_delivered(target, self.options.publish_timeout_s):
                    refusal = self._refusal_reason
                    unanswered = refusal is None  # a broker that refuses them answers
                    answer = "acknowledged" if refusal is None else f"accepted (the broker refuses them: {refusal})"
                    logger.warning("mqtt: %d events not %s within %g s; they stay in the spool %s",
                                   len(self._spool), answer, self.options.publish_timeout_s, self.options.spool_dir)
        with self._lock:
            pending, self._pending = self._pending, []
        deadline = time.monotonic() + self.options.publish_timeout_s
        for info, event in pending:
            waited = True
            if _wait_published(info, max(0.0, deadline - time.monotonic())):
                if self._was_refused(info):  # said by _note_refused, once while the broker refuses
                    self.failed += 1
                    self._lost += event
                continue
            self.failed += 1
            self._lost += event
            why = _undelivered(info)
            if why is not None:
                logger.warning("mqtt: message %s not delivered: %s", info.mid, why)
            else:
                unanswered = True
                logger.warning("mqtt: message %s not acknowledged within %g s%s", info.mid,
                               self.options.publish_timeout_s, "" if self.connected else " (not connected)")
        if waited:
            self._unanswered = unanswered

    def close(self) -> None:
        """Publish ``offline`` (retained), deliver what is pending, disconnect.

        A broker that left the last flush unanswered (it hangs, or its host is gone while the connection still
        looks open) is not waited for again for ``offline``, which is sent all the same (the broker publishes the
        same last will when it lets the connection go): a stop waits ``publish_timeout_s`` once, not twice."""
        if self._closed:
            return
        if self._connected.is_set():
            if self._unanswered:  # sent, not waited for: waiting once more would only add publish_timeout_s
                self._client.publish(self.options.status_topic, STATUS_OFFLINE, qos=self.options.qos, retain=True)
            else:
                self._publish(self.options.status_topic, STATUS_OFFLINE, retain=True)
            self.flush()  # what was emitted since the last flush (nothing at the end of a run: it returns at once)
        else:  # never (re)connected: what paho still holds in memory goes with the process
            with self._lock:
                pending, self._pending = self._pending, []
            unsent = [info for info, event in pending if event and (not _published(info) or self._was_refused(info))]
            self._lost += len(unsent)
        if self._spool is not None and not self._spool.closed and len(self._spool):
            logger.info("mqtt: %d events wait in the spool %s for the broker", len(self._spool),
                        self.options.spool_dir)
        self._closed = True
        self._client.disconnect()
        self._release_client()
        self._close_spool()
