"""What the log says about a broker outage: when it started, how long it lasted, that it ended, and what became of
the events emitted meanwhile (a real mosquitto broker that goes away and comes back)."""

from __future__ import annotations

import logging
import os
import re
import time

import pytest
from brokers import MOSQUITTO, WAIT_S, Broker, free_port

from edgesense.sinks.mqtt import MqttOptions, MqttSink
from edgesense.types import CommandEvent

LOGGER = "edgesense.sinks.mqtt"


def command(t_ms: float) -> CommandEvent:
    return CommandEvent(label="yes", score=0.9, t_ms=t_ms, wall_time=1_700_000_000.0)


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.fixture
def broker(tmp_path):
    if not os.path.exists(MOSQUITTO):
        pytest.skip(f"{MOSQUITTO} is not installed")
    broker = Broker(tmp_path / "broker", ("allow_anonymous true",))
    yield broker
    broker.stop()


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("spooled", [True, False], ids=["spool", "in-memory"])
def test_a_broker_that_comes_back_is_said_with_how_long_it_was_away_and_what_waited(broker, tmp_path, caplog,
                                                                                      spooled):
    """The broker restarts in the middle of a run: the journal said "disconnected ...; reconnecting" and nothing
    after it, however soon it was back: an operator could not tell that the outage had ended, nor when. Now its end
    is a warning too, with how long it lasted and the events that waited for it."""
    spool = str(tmp_path / "spool") if spooled else None
    caplog.set_level(logging.INFO, logger=LOGGER)
    sink = MqttSink(MqttOptions(host=broker.host, port=broker.port, ha_discovery=False, reconnect_max_delay_s=1,
                                spool_dir=spool))
    try:
        sink.emit(command(1.0))
        sink.flush()
        broker.stop()
        wait_for(lambda: not sink.connected, "no disconnect seen")
        for i in range(3):
            sink.emit(command(10.0 + i))
        broker.start()
        wait_for(lambda: sink.connected, "no reconnection")
        wait_for(lambda: len(warnings_of(caplog)) >= 2, f"no line about the reconnection: {caplog.text}")
    finally:
        sink.close()
    said = warnings_of(caplog)
    assert "disconnected from" in said[0] and len(said) == 2, said
    back = said[1]
    assert re.search(rf"connected to {broker.host}:{broker.port} again after \d+ s", back), back
    if spooled:
        assert f"3 event(s) wait in the spool {spool}" in back, back
    else:
        assert "3 event(s) emitted meanwhile" in back, back
    assert sink.lost_events == 0


def test_a_broker_away_at_the_start_is_said_when_it_answers_at_last(tmp_path, caplog):
    """A device that boots before its broker: "unreachable ...; events wait in the spool until it answers", then
    nothing once it answered."""
    if not os.path.exists(MOSQUITTO):
        pytest.skip(f"{MOSQUITTO} is not installed")
    port = free_port()
    caplog.set_level(logging.INFO, logger=LOGGER)
    sink = MqttSink(MqttOptions(host="127.0.0.1", port=port, ha_discovery=False, reconnect_max_delay_s=1,
                                spool_dir=str(tmp_path / "spool")))
    broker = None
    try:
        sink.emit(command(1.0))
        broker = Broker(tmp_path / "broker", ("allow_anonymous true",), port=port)
        wait_for(lambda: sink.connected, "no connection")
        wait_for(lambda: len(warnings_of(caplog)) >= 2, f"no line about the connection: {caplog.text}")
    finally:
        sink.close()
        if broker is not None:
            broker.stop()
    said = warnings_of(caplog)
    assert "unreachable" in said[0] and "again after" in said[1] and "1 event(s) wait in the spool" in said[1], said


def test_an_outage_whose_start_went_to_the_debug_log_ends_there_too(broker, monkeypatch, caplog):
    """A connection dropped again and again (paced: one warning per LOG_INTERVAL_S): the reconnection that ends
    an outage whose start was not said is not a warning either (no pair of lines per drop)."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    sink = MqttSink(MqttOptions(host=broker.host, port=broker.port, ha_discovery=False, reconnect_max_delay_s=1,
                                qos=0))
    try:
        for round_ in range(2):
            broker.stop()
            wait_for(lambda: not sink.connected, "no disconnect seen")
            sink.emit(command(float(round_)))
            broker.start()
            wait_for(lambda: sink.connected, "no reconnection")
        wait_for(lambda: sum("again after" in r.getMessage() for r in caplog.records) >= 2, caplog.text)
    finally:
        sink.close()
    back = [r for r in caplog.records if "again after" in r.getMessage()]
    assert [r.levelno for r in back] == [logging.WARNING, logging.DEBUG], caplog.text
    assert "1 event(s) emitted meanwhile were lost (QoS 0 keeps none)" in back[0].getMessage()


def test_an_outage_that_starts_soon_after_another_is_said_once_the_pacing_interval_has_passed(broker, monkeypatch,
                                                                                             caplog):
    """The broker restarts, then goes away again a few minutes later for hours: the second disconnect came within
    LOG_INTERVAL_S of the first line, so it went to the debug log, and nothing said the long outage. Now it is a
    warning once the interval has passed (3 s here), at a failed try to reconnect, and its end is one too."""
    import edgesense.pacing as pacing

    monkeypatch.setattr(pacing, "LOG_INTERVAL_S", 3.0)
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    sink = MqttSink(MqttOptions(host=broker.host, port=broker.port, ha_discovery=False, reconnect_max_delay_s=1,
                                spool_dir=str(tmp_path_of(broker) / "spool")))
    try:
        broker.stop()
        wait_for(lambda: not sink.connected, "no disconnect seen")
        broker.start()
        wait_for(lambda: sink.connected, "no reconnection")
        broker.stop()  # within the interval: its start goes to the debug log
        wait_for(lambda: not sink.connected, "no second disconnect seen")
        wait_for(lambda: any("no connection to" in m for m in warnings_of(caplog)), f"never said: {caplog.text}")
        broker.start()
        wait_for(lambda: sink.connected, "no second reconnection")
        wait_for(lambda: len(warnings_of(caplog)) >= 4, f"its end not said: {caplog.text}")
    finally:
        sink.close()
    said = warnings_of(caplog)
    assert ["disconnected from" in said[0], "again after" in said[1], "no connection to" in said[2],
            "again after" in said[3]] == [True] * 4, said


def tmp_path_of(broker: Broker):
    return broker.conf.parent.parent


def test_the_end_of_an_outage_said_while_the_constructor_forgets_it_does_not_raise_in_paho_s_thread(caplog,
                                                                                                     monkeypatch):
    """A broker that answers just after connect_timeout_s: the constructor notes the outage and, seeing the
    connection up, forgets it (``_down_since_s = None``) while paho's thread says its end. Read twice there, the
    start was None the second time: a TypeError in on_connect, which paho re-raises, ending its network thread
    (no reconnection, ever, for the rest of the run)."""
    import edgesense.sinks.mqtt as mqtt_module

    sink = MqttSink.__new__(MqttSink)  # only what the outage's story reads
    sink.options = MqttOptions(host="broker", ha_discovery=False)
    sink._spool, sink._emitted_while_down, sink._down_said = None, 2, True
    sink._down_since_s = 100.0

    def monotonic():  # the constructor's thread runs here, between the check and the subtraction
        sink._down_since_s = None
        return 103.0

    monkeypatch.setattr(mqtt_module, "time", type("Clock", (), {"monotonic": staticmethod(monotonic)}))
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    sink._came_back()
    assert sink._down_since_s is None
    assert warnings_of(caplog) == ["mqtt: connected to broker:1883 again after 3 s without it; 2 event(s) emitted "
                                   "meanwhile, kept in memory, are sent now"]
