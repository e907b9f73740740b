"""The event-sink protocol, callbacks and fan-out; JSON Lines (:mod:`.jsonl`), MQTT (:mod:`.mqtt`)
and the spool (:mod:`.spool`) live beside it.

Every sink follows :class:`EventSink`: ``emit(event)`` takes anything with a
``type`` and a ``to_dict()`` (:class:`edgesense.types.CommandEvent`,
:class:`edgesense.types.SceneEvent`), ``flush()`` waits until what was emitted has
left, ``close()`` releases the sink (emitting afterwards is a ``ValueError``, as
for a closed file).

MQTT layout (``prefix``: ``outputs.topic_prefix``, by default ``edgesense/{device_id}``)::

    {prefix}/status            "online" / "offline", retained; "offline" is also the last will
    {prefix}/{type}            every event as JSON (type: command, scene)
    {prefix}/{type}/state      the latest event of that type, retained
    homeassistant/sensor/{node_id}/last_command/config   Home Assistant discovery, retained
    homeassistant/sensor/{node_id}/scene/config
    homeassistant/event/{node_id}/command/config         every word as it is said (edgesense.sinks.mqtt)

At-least-once delivery: with ``MqttOptions.spool_dir`` every event is first
stored in an on-disk spool (:mod:`edgesense.sinks.spool`) and removed only when the broker
has acknowledged it (QoS 1 or 2); events the broker never acknowledged (broker
down, EdgeSense killed) are published again, in order, after the reconnection or
by the next process that opens the same folder.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Iterable, Protocol, TypeVar, runtime_checkable

from edgesense.pacing import Outage

__all__ = ["Event", "EventSink", "CallbackSink", "FanOutSink", "Outage", "event_to_json"]

logger = logging.getLogger(__name__)


STDOUT = "-"

_Sink = TypeVar("_Sink", bound="_ClosableSink")


@runtime_checkable
class Event(Protocol):
    type: str

    def to_dict(self) -> dict[str, Any]: ...


@runtime_checkable
class EventSink(Protocol):
    def emit(self, event: Event) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def event_to_json(event: Event, *, ascii_only: bool = False) -> str:
    """One event as a single-line JSON object (``ValueError`` for NaN/inf or non-JSON values); ``ascii_only``:
    characters outside ASCII written as ``\\uXXXX`` escapes (the same JSON, for a stream that is not UTF-8)."""
    try:
        return json.dumps(event.to_dict(), ensure_ascii=ascii_only, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"event: cannot serialise {event!r} as JSON: {exc}") from exc


class _ClosableSink:
    def __init__(self) -> None:
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{type(self).__name__}: emit() on a closed sink")

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self: _Sink) -> _Sink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class CallbackSink(_ClosableSink):
    """Calls ``callback(event)`` for every event (tests, GUIs, custom integrations)."""

    def __init__(self, callback: Callable[[Event], None]) -> None:
        super().__init__()
        if not callable(callback):
            raise ValueError(f"callback: expected a callable, got {callback!r}")
        self._callback = callback

    def emit(self, event: Event) -> None:
        self._check_open()
        self._callback(event)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._closed = True


class FanOutSink(_ClosableSink):
    """Sends each event to several sinks; one failing sink is logged and does not stop the others. An event a
    sink's ``emit`` raises for is lost to that sink: counted in :attr:`lost_events`, and each such outage of a
    sink is one warning when it starts and one, with the events it lost, when the sink takes events again."""

    def __init__(self, sinks: Iterable[EventSink]) -> None:
        super().__init__()
        if isinstance(sinks, (EventSink, str, bytes)) or not isinstance(sinks, Iterable):  # Pipeline(sinks=one_sink)
            raise ValueError(f"sinks: expected a sequence of EventSink objects (one sink: [sink]), got {sinks!r}")
        self.sinks = tuple(sinks)
        for sink in self.sinks:
            if not isinstance(sink, EventSink):
                raise ValueError(f"sinks: expected EventSink objects, got {sink!r}")
        self.failures = 0
        self._refused = [Outage(logger) for _ in self.sinks]  # per sink: the events its emit() raised for

    def _each(self, action: str, *args: Any) -> None:
        for sink in self.sinks:
            try:
                getattr(sink, action)(*args)
            except Exception as exc:  # noqa: BLE001 - isolate sinks from one another
                self.failures += 1
                logger.warning("events: %s.%s failed: %s", type(sink).__name__, action, exc)

    def emit(self, event: Event) -> None:
        self._check_open()
        for i, sink in enumerate(self.sinks):
            name = type(sink).__name__
            try:
                sink.emit(event)
            except Exception as exc:  # noqa: BLE001 - isolate sinks from one another
                self.failures += 1
                self._refused[i].failed("events: %s.emit failed: %s; its events are lost while this lasts", name, exc)
                continue
            self._refused[i].succeeded("events: %s takes events again; %d event(s) lost while it failed", name)

    def flush(self) -> None:
        self._each("flush")

    @property
    def lost_events(self) -> int:
        """Events that sinks counted as lost (neither delivered nor kept for later), and those a sink's ``emit``
        raised for."""
        return sum(getattr(sink, "lost_events", 0) for sink in self.sinks) + sum(o.failures for o in self._refused)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._each("close")
