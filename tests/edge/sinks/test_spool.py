"""At-least-once MQTT delivery: the on-disk spool alone, then MqttSink + spool against a real mosquitto.

The broker tests stop mosquitto for ``OUTAGE_S`` seconds (``EDGESENSE_OUTAGE_S``
overrides it; ``scripts/soak.py``-style runs may use 60) while events keep coming,
start it again on the same port, and check that a subscriber with a persistent
session got every event exactly in emission order (duplicates allowed: at least
once). A second test SIGKILLs the EdgeSense process with events still spooled and
lets a new process deliver them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from brokers import WAIT_S, Broker

import edgesense.sinks.spool as spool_module
from edgesense.sinks.mqtt import MqttOptions, MqttSink
from edgesense.sinks.spool import DeliveryOptions, EventSpool, SpoolOptions
from edgesense.types import CommandEvent

OUTAGE_S = float(os.environ.get("EDGESENSE_OUTAGE_S", "3"))
REPO = Path(__file__).resolve().parents[3]


def command(i: int) -> CommandEvent:
    return CommandEvent(label="yes", score=0.9, t_ms=float(i), wall_time=1_700_000_000.0 + i)


# --------------------------------------------------------------------------- the spool alone


def test_spool_keeps_order_and_survives_reopen(tmp_path):
    with EventSpool(tmp_path / "s", SpoolOptions(sync="off")) as spool:
        seqs = [spool.append("command", f'{{"i": {i}}}') for i in range(5)]
        assert seqs == sorted(seqs) and len(spool) == 5
        assert [json.loads(e.payload)["i"] for e in spool.read()] == [0, 1, 2, 3, 4]
        assert spool.remove([seqs[0], seqs[2], 999]) == 2
        assert [e.seq for e in spool.read(after_seq=seqs[0], limit=2)] == [seqs[1], seqs[3]]
    with EventSpool(tmp_path / "s") as again:  # a new process opening the same folder
        assert [json.loads(e.payload)["i"] for e in again.read()] == [1, 3, 4]
        assert again.size_bytes == sum(len(e.payload) for e in again.read())
        assert again.append("scene", "{}") > seqs[-1]  # seq keeps growing: order across restarts


def test_spool_bounds_drop_oldest_and_count_persistently(tmp_path):
    with EventSpool(tmp_path, SpoolOptions(max_events=3, sync="off")) as spool:
        for i in range(5):
            spool.append("command", str(i))
        assert [e.payload for e in spool.read()] == ["2", "3", "4"] and spool.dropped == 2
    with EventSpool(tmp_path, SpoolOptions(max_events=100, max_bytes=4, sync="off")) as spool:
        assert spool.dropped == 2  # the count survives a restart
        spool.append("command", "ab")  # 3 stored bytes + 2 > 4: drop the oldest until it fits
        assert [e.payload for e in spool.read()] == ["3", "4", "ab"] and spool.dropped == 3
        assert spool.append("command", "x" * 5) == -1  # larger than the whole spool: only it is dropped
        assert spool.dropped == 4 and [e.payload for e in spool.read()] == ["3", "4", "ab"]


def test_a_spool_that_stays_full_warns_once_not_at_every_event(tmp_path, caplog, monkeypatch):
    """A broker away for days fills the spool, which then drops an event at every event: one warning each filled
    the device's logs. The first drop is said at once, later ones at most every DROP_WARNING_INTERVAL_S (with how
    many since the last), and what is left unsaid when the spool closes."""
    caplog.set_level(logging.WARNING, logger="edgesense.sinks.spool")
    with EventSpool(tmp_path, SpoolOptions(max_events=10, sync="off")) as spool:
        for i in range(2000):
            spool.append("command", str(i))
        assert spool.dropped == 1990 and len(spool) == 10
        warnings = [r.getMessage() for r in caplog.records]
        assert len(warnings) == 1 and "dropped the 1 oldest undelivered event(s) since the last warning" in warnings[0]
        monkeypatch.setattr(spool_module, "DROP_WARNING_INTERVAL_S", 0.0)  # the interval has passed
        spool.append("command", "next")
        assert "dropped the 1990 oldest undelivered event(s) since the last warning, 1991 dropped in all" in \
            caplog.records[-1].getMessage()
        monkeypatch.setattr(spool_module, "DROP_WARNING_INTERVAL_S", 600.0)
        for i in range(5):
            spool.append("command", str(i))
        assert len(caplog.records) == 2
    assert len(caplog.records) == 3 and "dropped the 5 oldest" in caplog.records[-1].getMessage()  # said at close


def test_an_event_larger_than_the_spool_is_said_to_be_too_large_not_the_oldest_dropped(tmp_path, caplog):
    """max_bytes smaller than one event: the new event is dropped on arrival and the stored ones are kept, but the
    warning said the spool was full and it had "dropped the 1 oldest undelivered event(s)"."""
    caplog.set_level(logging.WARNING, logger="edgesense.sinks.spool")
    with EventSpool(tmp_path, SpoolOptions(max_bytes=100, sync="off")) as spool:
        spool.append("command", "x" * 20)
        assert spool.append("command", "y" * 500) == -1
        assert [e.payload for e in spool.read()] == ["x" * 20] and spool.dropped == 1
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["spool: 1 new event(s) larger than the whole spool (max_bytes=100, the largest 500 bytes) "
                        "dropped on arrival since the last warning, the stored ones kept; 1 dropped in all "
                        "(said at most every 600 s)"]


def test_spool_folder_is_locked_while_open(tmp_path):
    spool = EventSpool(tmp_path)
    with pytest.raises(RuntimeError) as info:
        EventSpool(tmp_path)
    assert str(info.value) == (f"spool_dir: expected a folder no other spool holds, got {str(tmp_path)!r}: it is "
                               "in use by another EdgeSense process (or another sink in this one)")
    spool.close()
    EventSpool(tmp_path).close()  # released by close()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="spool_dir"):
        EventSpool(tmp_path / "file")


def test_spool_lock_is_released_when_the_process_dies(tmp_path):
    code = (f"from edgesense.sinks.spool import EventSpool; s = EventSpool({str(tmp_path)!r}); "
            "s.append('command', '1'); print('ready', flush=True); import time; time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        with pytest.raises(RuntimeError, match="in use"):
            EventSpool(tmp_path)
    finally:
        child.kill()
        child.wait()
    with EventSpool(tmp_path) as spool:
        assert [e.payload for e in spool.read()] == ["1"]  # fsync'ed before append() returned


def _fsyncs_of_the_wal(tmp_path: Path, code: str) -> dict[str, int]:
    """Run ``code`` (a spool ``spool`` in ``tmp_path / 's'``, ``mark(name)`` between its phases) under strace; the
    fsync/fdatasync calls on the spool's WAL in each phase."""
    if shutil.which("strace") is None or subprocess.run(["strace", "-f", "-o", os.devnull, "true"],
                                                         capture_output=True, check=False).returncode != 0:
        pytest.skip("strace is not installed (or may not trace here): fsyncs cannot be counted")
    program = textwrap.dedent(f"""
        import os
        from edgesense.sinks.spool import EventSpool, SpoolOptions
        def mark(name):
            os.write(2, ("MARK " + name + chr(10)).encode())
        spool = EventSpool({str(tmp_path / "s")!r}, SpoolOptions(sync="full"))
    """) + textwrap.dedent(code) + "\nmark('end')\nspool.close()\n"
    trace = tmp_path / "trace"
    subprocess.run(["strace", "-f", "-y", "-s", "64", "-o", str(trace), "-e", "trace=fsync,fdatasync,write",
                    sys.executable, "-c", program], cwd=REPO, check=True, capture_output=True)
    counts: dict[str, int] = {}
    phase = None
    for line in trace.read_text().splitlines():
        if "MARK " in line and "write(2" in line:
            phase = line.split("MARK ", 1)[1].split("\\n", 1)[0]
            counts.setdefault(phase, 0)
        elif phase and "sync(" in line and "spool.sqlite3-wal>" in line:
            counts[phase] += 1
    return counts


def test_a_delivered_event_costs_the_sd_card_no_fsync_of_its_own_and_every_append_keeps_its_fsync(tmp_path):
    # A live device: one event every ~10 s, acknowledged by the broker before the next one comes. Every append
    # is fsync'ed before it returns (sync=full); each removal was an fsync too: two per event on the SD card.
    counts = _fsyncs_of_the_wal(tmp_path, """
        for i in range(20):
            mark("append")
            seq = spool.append("scene", '{"i": %d}' % i)
            mark("remove")
            spool.remove([seq])
        mark("append-only")
        for i in range(10):
            spool.append("scene", '{"i": %d}' % i)
    """)
    assert counts["append"] == 20 and counts["append-only"] == 10  # one fsync per append, as documented
    assert counts["remove"] == 0
    with EventSpool(tmp_path / "s") as spool:  # the removals were written (a kill keeps them)
        assert [json.loads(e.payload)["i"] for e in spool.read()] == list(range(10))


def test_corrupt_spool_is_set_aside_not_fatal(tmp_path, caplog):
    (tmp_path / "spool.sqlite3").write_bytes(b"this is not a database" * 100)
    with EventSpool(tmp_path) as spool:
        assert len(spool) == 0
        spool.append("command", "{}")
    assert list(tmp_path.glob("spool.sqlite3.corrupt-*")), "the corrupt file is kept for inspection"
    said = [r for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "ERROR", caplog.text  # an error, as docs/RELIABILITY.md says


def test_a_corrupt_spool_set_aside_at_the_same_wall_clock_second_as_an_earlier_one_does_not_overwrite_it(
        tmp_path, monkeypatch):
    """A Raspberry Pi has no real-time clock: after each power cut (what corrupts an SD card) it boots at the time
    fake-hwclock saved, so the second corrupt spool was named corrupt-<the same second> and renamed over the first
    one set aside, with the undelivered events it held."""
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)  # the wall clock only; never the monotonic one
    for payload in (b"first corrupt spool", b"second corrupt spool"):
        (tmp_path / "spool.sqlite3").write_bytes(payload * 100)
        EventSpool(tmp_path, SpoolOptions(sync="off")).close()
    kept = sorted(p.read_bytes() for p in tmp_path.glob("spool.sqlite3.corrupt-*"))
    assert kept == [b"first corrupt spool" * 100, b"second corrupt spool" * 100]


_EVENTS = ("CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, payload TEXT NOT NULL, "
           "size_bytes INTEGER NOT NULL, created_s REAL NOT NULL)")


@pytest.mark.parametrize("tables, found", [
    (("CREATE TABLE events (id INTEGER PRIMARY KEY, name TEXT)",),
     "a table events that has no column created_s, kind, payload, seq, size_bytes"),
    (("CREATE TABLE photos (path TEXT)", "CREATE TABLE meta (key TEXT, value INTEGER)"), "the table(s) photos"),
    # the old spool read seq 'x' at every delivery step: a ValueError each time, no event after it ever sent
    (("CREATE TABLE events (seq, kind, payload, size_bytes, created_s)",
      "INSERT INTO events VALUES ('x', NULL, X'00', 'big', NULL)"),
     "a table events whose column seq is (no type), not INTEGER PRIMARY KEY"),
    (("CREATE TABLE meta (key TEXT PRIMARY KEY, value)", "INSERT INTO meta VALUES ('dropped', NULL)"),  # TypeError
     "a table meta whose column value is (no type), not INTEGER NOT NULL"),
    (("CREATE VIEW events AS SELECT 1 AS seq",), "the view events"),  # sqlite3.OperationalError, a traceback
    ((_EVENTS, "CREATE TRIGGER forget AFTER INSERT ON events BEGIN DELETE FROM events; END"),  # every event lost
     "the trigger forget"),
    ((_EVENTS.replace("created_s REAL NOT NULL", "created_s REAL NOT NULL, camera TEXT NOT NULL"),),
     "a table events with a column camera, which a spool has not"),
])
def test_someone_elses_sqlite_file_in_the_spool_folder_is_refused_in_one_line_and_left_as_it_was(tmp_path, tables,
                                                                                               found):
    path = tmp_path / "spool.sqlite3"
    with sqlite3.connect(path) as db:
        for statement in tables:
            db.execute(statement)
    db.close()
    before = path.read_bytes()
    with pytest.raises(ValueError) as info:
        EventSpool(tmp_path)
    assert str(info.value) == (f"spool_dir: expected {path} to be an EdgeSense spool, got a SQLite database with "
                               f"{found}; move that file away or name another folder")
    assert path.read_bytes() == before and not list(tmp_path.glob("*corrupt*"))  # not changed, not moved
    path.unlink()
    with EventSpool(tmp_path) as spool:  # the folder was released: usable once the file is gone
        spool.append("command", "{}")


def test_stored_rows_that_are_no_event_are_dropped_at_open_and_wrong_sizes_corrected(tmp_path, caplog):
    """A blob payload went out as "b'...'", a dropped count that is no number was a bare ValueError (int('lots')),
    and a stored size of 10^18 made the next append drop an event of a spool holding 3 of its 1000 bytes."""
    options = SpoolOptions(sync="off", max_bytes=1000)
    with EventSpool(tmp_path, options) as spool:
        for i in range(4):
            spool.append("command", json.dumps({"i": i}))
    with sqlite3.connect(tmp_path / "spool.sqlite3") as db:
        db.execute("UPDATE events SET payload = CAST(payload AS BLOB) WHERE seq = 1")
        db.execute("UPDATE events SET size_bytes = 1000000000000000000 WHERE seq = 2")
        db.execute("UPDATE events SET size_bytes = -5000 WHERE seq = 3")
        db.execute("INSERT INTO meta VALUES ('dropped', 'lots')")
    db.close()
    with caplog.at_level(logging.WARNING, logger="edgesense.sinks.spool"), EventSpool(tmp_path, options) as spool:
        assert [e.seq for e in spool.read()] == [2, 3, 4]
        assert spool.dropped == 1 and spool.size_bytes == 3 * len('{"i": 0}')
        spool.append("command", json.dumps({"i": 4}))
        assert [json.loads(e.payload)["i"] for e in spool.read()] == [1, 2, 3, 4]  # nothing dropped to make room
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2 and "'lots', not a count" in errors[0] and "dropped 1 stored row(s)" in errors[1]
    assert any("corrected the stored size of 2 event(s)" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("kwargs, field", [
    ({"max_events": 0}, "max_events"), ({"max_bytes": -1}, "max_bytes"), ({"sync": "sometimes"}, "sync"),
    ({"max_events": True}, "max_events"),
])
def test_spool_options_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SpoolOptions(**kwargs)


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e300, True, 0, -1.0])
@pytest.mark.parametrize("field", ["resend_after_s", "idle_wait_s"])
def test_delivery_waits_are_positive_numbers_threading_can_wait(field, value):
    """``inf`` passed as "a positive number", and the worker's Condition.wait raised OverflowError on it."""
    with pytest.raises(ValueError, match=field):
        DeliveryOptions(**{field: value})


@pytest.mark.parametrize("value", [float("inf"), 1e300, True, 0, float("nan")])
@pytest.mark.parametrize("field", ["connect_timeout_s", "publish_timeout_s"])
def test_mqtt_timeouts_are_positive_numbers_threading_can_wait(field, value):
    """``connect_timeout_s=inf`` passed, and opening the sink raised OverflowError waiting for the broker's answer;
    ``True`` passed as a second."""
    with pytest.raises(ValueError, match=field):
        MqttOptions(host="h", **{field: value})
    assert getattr(MqttOptions(host="h", **{field: 2}), field) == 2


def test_mqtt_options_spool_validation(tmp_path):
    with pytest.raises(ValueError, match="qos"):
        MqttOptions(host="h", qos=0, spool_dir=str(tmp_path))
    with pytest.raises(ValueError, match="spool_dir"):
        MqttOptions(host="h", spool_dir="  ")


def test_events_the_broker_refuses_stay_spooled_are_offered_again_per_resend_after_s_and_block_no_other(tmp_path):
    """A refusal (MQTT 5's PUBACK "Not authorized") was no concern of the delivery: an answer was an
    acknowledgement, and the event left the spool. Now a refused event stays and is offered again once per
    resend_after_s (no busy loop), and the events after it go on meanwhile: a broker whose ACL refuses scene events
    still gets every command (a first version offered the oldest refused event alone, again and again, and
    nothing behind it was ever delivered). The refused are offered again together, in their order."""
    offers: list[tuple[float, int]] = []
    mids = iter(range(1, 10_000))
    refusing = True

    def publish(event):
        mid = next(mids)
        offers.append((time.monotonic(), event.seq))
        refused = refusing and event.kind == "scene"
        (delivery.refused if refused else delivery.acknowledged)(mid)  # the answer comes at once
        return [mid]

    with EventSpool(tmp_path / "spool", SpoolOptions(sync="off")) as spool:
        spool.append("scene", '{"i": 0}')
        delivery = spool_module.SpoolDelivery(spool, publish, DeliveryOptions(resend_after_s=0.3, idle_wait_s=0.02))
        delivery.connected()
        time.sleep(0.1)  # the scene was offered and refused, alone
        for i in range(1, 30):  # more than a window of commands behind it, and another scene
            spool.append("scene" if i == 3 else "command", f'{{"i": {i}}}')
        delivery.wake()
        time.sleep(1.0)
        assert {e.seq for e in spool.read()} == {1, 4}  # every command delivered, the refused scenes kept
        refusing = False
        assert delivery.wait_delivered(30, WAIT_S)
        delivery.stop()
    for seq in (1, 4):
        times = [at for at, s in offers if s == seq]
        assert 3 <= len(times) <= 1.2 / 0.3 + 2  # offered again while refused, once per resend_after_s
        again = times[1:]  # offered again together, once per resend_after_s: no busy loop
        assert min(b - a for a, b in zip(again, again[1:])) >= 0.29
    assert sorted(seq for _, seq in offers if seq not in (1, 4)) == [s for s in range(1, 31) if s not in (1, 4)]
    assert [seq for _, seq in offers if seq in (1, 4)][-2:] == [1, 4]  # the refused, again in their order
    assert delivery.delivered == 30 and len(spool) == 0


def _wait_for(condition, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_events_behind_many_refused_ones_go_on_after_a_reconnection_without_waiting_for_their_next_offer(tmp_path):
    """After a reconnection's resend the delivery reads the spool from its start again, past the events the broker
    refuses (each read a window of them, offering none). It polled, so the events behind them went on within a few
    idle_wait_s; sleeping until news or its next due time, it read one window of refused events per resend_after_s
    (12 refused, a window of 2: the command behind them 6 resend_after_s late; with the defaults and a day of refused
    scene events spooled, hours). Now a step reads on past them."""
    mids = iter(range(1, 10_000))
    answering = True
    acked: dict[int, float] = {}
    offered: list[str] = []

    def publish(event):
        mid = next(mids)
        offered.append(event.kind)
        if event.kind == "scene":
            delivery.refused(mid)  # the broker's ACL refuses scene events
        elif answering:
            acked[event.seq] = time.monotonic()
            delivery.acknowledged(mid)
        return [mid]

    resend_s = 1.0
    with EventSpool(tmp_path / "spool", SpoolOptions(sync="off")) as spool:
        for i in range(12):
            spool.append("scene", f'{{"i": {i}}}')
        delivery = spool_module.SpoolDelivery(spool, publish, DeliveryOptions(window_events=2,
                                                                               resend_after_s=resend_s))
        delivery.connected()
        _wait_for(lambda: offered.count("scene") >= 12)  # every scene offered and refused
        answering = False
        seq = spool.append("command", '{"c": 1}')
        delivery.wake()
        _wait_for(lambda: "command" in offered)  # offered, and left in flight: the connection went
        answering = True
        delivery.connected()  # reconnected: the command is published again resend_after_s later
        reconnected = time.monotonic()
        deadline = reconnected + 6 * resend_s + WAIT_S
        while seq not in acked and time.monotonic() < deadline:
            time.sleep(0.01)
        delivery.stop()
    assert seq in acked and acked[seq] - reconnected < 2.5 * resend_s, acked.get(seq, 0.0) - reconnected


def test_an_idle_delivery_never_polls_the_spool_and_still_wakes_for_its_due_times(tmp_path):
    """The delivery thread woke every idle_wait_s (0.5 s) for as long as the device ran and, while connected,
    queried the spool at each wake with nothing to deliver: two wakeups and two SQLite reads a second, for weeks.
    Now it sleeps until news (an event, an answer, a connection) or its next due time: none while idle, and the
    resend of events left in flight by a reconnection still comes resend_after_s later without any news."""
    reads: list[dict] = []

    class CountingSpool(EventSpool):
        def read(self, **kwargs):
            reads.append(kwargs)
            return super().read(**kwargs)

    offers: list[tuple[float, int]] = []
    mids = iter(range(1, 10_000))
    answering = True

    def publish(event):
        mid = next(mids)
        offers.append((time.monotonic(), event.seq))
        if answering:
            delivery.acknowledged(mid)
        return [mid]

    with CountingSpool(tmp_path / "spool", SpoolOptions(sync="off")) as spool:
        delivery = spool_module.SpoolDelivery(spool, publish, DeliveryOptions(resend_after_s=0.5, idle_wait_s=0.01))
        delivery.connected()
        spool.append("command", '{"i": 0}')
        delivery.wake()
        assert delivery.wait_delivered(1, WAIT_S)
        time.sleep(0.2)  # the step after the last answer
        before = len(reads)
        time.sleep(1.0)
        idle_reads = len(reads) - before
        answering = False
        spool.append("command", '{"i": 1}')
        delivery.wake()  # news: offered at once, and left in flight (no answer)
        time.sleep(0.2)
        delivery.connected()  # a reconnection: the in-flight event is resent resend_after_s later, without news
        reconnected = time.monotonic()
        time.sleep(1.0)
        answering = True
        delivery.connected()
        assert delivery.wait_delivered(2, WAIT_S)
        delivery.stop()
    assert idle_reads == 0  # idle_wait_s 0.01: about 100 reads in that second before
    resends = [at - reconnected for at, seq in offers if seq == 2 and at > reconnected]
    assert resends and 0.45 <= resends[0] <= 0.9, resends


# --------------------------------------------------------------------------- a real broker


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker", ("allow_anonymous true",))
    yield b
    b.stop()


class PersistentSubscriber:
    """A QoS 1 subscriber with a persistent session (clean_session=False) on ``{prefix}/command``."""

    def __init__(self, broker: Broker, topic: str = "edgesense/command", client_id: str = "test-sub") -> None:
        import paho.mqtt.client as mqtt

        self.payloads: list[dict] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        assert subscribed.wait(WAIT_S), "no SUBACK"

    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic.endswith("/status"):
            return  # "online" / "offline", not an event
        with self._lock:
            self.payloads.append(json.loads(msg.payload))

    def first_occurrences(self) -> list[float]:
        """t_ms of each distinct event in arrival order (at-least-once may repeat one)."""
        seen, out = set(), []
        with self._lock:
            for p in self.payloads:
                if p["t_ms"] not in seen:
                    seen.add(p["t_ms"])
                    out.append(p["t_ms"])
        return out

    def wait_for(self, count: int, timeout_s: float = 30.0) -> list[float]:
        deadline = time.monotonic() + timeout_s
        while len(self.first_occurrences()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.first_occurrences()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _sink(broker: Broker, spool_dir: Path, **overrides) -> MqttSink:
    options = MqttOptions(host=broker.host, port=broker.port, qos=1, ha_discovery=False, spool_dir=str(spool_dir),
                          reconnect_max_delay_s=1, keepalive_s=5, publish_timeout_s=5.0, **overrides)
    return MqttSink(options, spool_options=SpoolOptions(sync="normal"),
                    delivery_options=DeliveryOptions(resend_after_s=3.0))


def test_broker_outage_loses_nothing_and_keeps_order(broker, tmp_path, outage_s=OUTAGE_S):
    subscriber = PersistentSubscriber(broker)
    sink = _sink(broker, tmp_path / "spool")
    try:
        emitted = 0
        for _ in range(20):  # before the outage
            sink.emit(command(emitted))
            emitted += 1
        sink.flush()
        assert subscriber.wait_for(emitted) == [float(i) for i in range(emitted)]

        broker.stop()
        deadline = time.monotonic() + outage_s
        while time.monotonic() < deadline:  # the device keeps emitting: ~50 events/s
            sink.emit(command(emitted))
            emitted += 1
            time.sleep(0.02)
        assert not sink.connected
        assert len(sink.spool) > 0, "events of the outage are on disk"
        broker.start()
        for _ in range(20):  # right after the broker is back, maybe before the sink reconnected
            sink.emit(command(emitted))
            emitted += 1
        got = subscriber.wait_for(emitted, timeout_s=30 + outage_s)
        assert got == [float(i) for i in range(emitted)], f"lost or reordered: {len(got)} of {emitted}"
        sink.flush()
        assert len(sink.spool) == 0 and sink.spool.dropped == 0
        assert sink.delivery.delivered == emitted
    finally:
        sink.close()
        subscriber.close()


def test_restart_without_flush_delivers_the_rest(broker, tmp_path):
    """close() while the broker is down: the events stay on disk and the next sink sends them first."""
    subscriber = PersistentSubscriber(broker)
    spool_dir = tmp_path / "spool"
    first = _sink(broker, spool_dir)
    first.emit(command(0))
    first.flush()
    broker.stop()
    for i in range(1, 30):
        first.emit(command(i))
    first.close()
    broker.start()
    second = _sink(broker, spool_dir)
    try:
        second.emit(command(30))  # new events queue behind the replayed ones
        assert subscriber.wait_for(31) == [float(i) for i in range(31)]
    finally:
        second.close()
        subscriber.close()


_CHILD = textwrap.dedent("""
    import sys, time
    from edgesense.sinks.mqtt import MqttOptions, MqttSink
    from edgesense.sinks.spool import SpoolOptions
    from edgesense.types import CommandEvent, SceneEvent
    host, port, spool_dir, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    sink = MqttSink(MqttOptions(host=host, port=port, qos=1, ha_discovery=False, spool_dir=spool_dir,
                                reconnect_max_delay_s=1), spool_options=SpoolOptions(sync="full"))
    print("connected", flush=True)
    sys.stdin.readline()  # the broker is stopped now
    for i in range(count):
        sink.emit(CommandEvent(label="go", score=0.8, t_ms=float(i), wall_time=0.0))
    sink.emit(SceneEvent(label="indoor", score=0.7, t_ms=float(count), wall_time=0.0))
    print("emitted", flush=True)
    time.sleep(60)  # killed here, never closed
""")


def test_killed_process_events_are_delivered_by_the_next_process(broker, tmp_path):
    subscriber = PersistentSubscriber(broker, topic="edgesense/#")
    spool_dir = tmp_path / "spool"
    count = 25
    child = subprocess.Popen([sys.executable, "-c", _CHILD, broker.host, str(broker.port), str(spool_dir),
                              str(count)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "connected"
        broker.stop()
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "emitted"
        child.send_signal(signal.SIGKILL)
        child.wait(WAIT_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    rows = sqlite3.connect(spool_dir / "spool.sqlite3").execute("SELECT COUNT(*) FROM events").fetchone()[0]
    assert rows == count + 1, "every event was on disk when the process died"
    broker.start()
    nxt = _sink(broker, spool_dir)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with subscriber._lock:
                events = [p for p in subscriber.payloads if "label" in p]
            commands = [p["t_ms"] for p in events if p["type"] == "command"]
            if len(dict.fromkeys(commands)) >= count and any(p["type"] == "scene" for p in events):
                break
            time.sleep(0.05)
        assert list(dict.fromkeys(commands)) == [float(i) for i in range(count)]
        assert any(p["type"] == "scene" and p["label"] == "indoor" for p in events)
        nxt.flush()
        assert len(nxt.spool) == 0
    finally:
        nxt.close()
        subscriber.close()


def test_spool_full_during_outage_drops_oldest_and_counts(broker, tmp_path):
    subscriber = PersistentSubscriber(broker)
    options = MqttOptions(host=broker.host, port=broker.port, qos=1, ha_discovery=False,
                          spool_dir=str(tmp_path / "spool"), reconnect_max_delay_s=1)
    sink = MqttSink(options, spool_options=SpoolOptions(max_events=10, sync="off"))
    try:
        broker.stop()
        for i in range(25):
            sink.emit(command(i))
        assert len(sink.spool) == 10 and sink.spool.dropped == 15
        broker.start()
        assert subscriber.wait_for(10) == [float(i) for i in range(15, 25)]  # the newest 10, in order
    finally:
        sink.close()
        subscriber.close()


def test_a_delivery_step_that_keeps_failing_is_not_a_warning_at_every_retry(tmp_path, caplog):
    """A step that fails every time (a failing card under the spool, a publisher that raises) warned at every
    retry, every idle_wait_s: thousands of lines an hour into the journal. Now the first at once, the next at most
    once per LOG_INTERVAL_S with how many it covers."""
    def publish(event):
        raise OSError(5, "Input/output error")

    with caplog.at_level(logging.DEBUG, logger="edgesense.sinks.spool"):
        with EventSpool(tmp_path / "spool", SpoolOptions(sync="off")) as spool:
            spool.append("command", '{"i": 0}')
            delivery = spool_module.SpoolDelivery(spool, publish, DeliveryOptions(idle_wait_s=0.01))
            delivery.connected()
            time.sleep(1.0)
            delivery.stop()
    failed = [r for r in caplog.records if "delivery step failed" in r.getMessage()]
    assert len(failed) > 20  # it kept retrying
    assert [r.levelname for r in failed if r.levelno >= logging.WARNING] == ["WARNING"], caplog.text
