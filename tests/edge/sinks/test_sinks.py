"""Event sinks: JSON Lines on real files and pipes, MQTT against a real mosquitto broker."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import getpass
import grp
import gzip
import io
import json
import os
import logging
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from brokers import MOSQUITTO, WAIT_S, Broker, Mqtt311Only, free_port, make_tls_files

from edgesense.sinks.base import CallbackSink, EventSink, FanOutSink
from edgesense.sinks.jsonl import JsonLinesSink
import edgesense.sinks.mqtt as mqtt_module
from edgesense.sinks.mqtt import MqttOptions, MqttSink, mqtt_options_from_url
from edgesense.sinks.spool import DeliveryOptions, EventSpool
from edgesense.types import CommandEvent, SceneEvent


def command(label: str = "yes", t_ms: float = 1200.0) -> CommandEvent:
    return CommandEvent(label=label, score=0.91234, t_ms=t_ms, wall_time=1_700_000_000.25,
                        latency_ms={"features": 1.5, "inference": 3.25})


def scene(label: str = "kitchen", reason: str = "change") -> SceneEvent:
    return SceneEvent(label=label, score=0.8, t_ms=5000.0, wall_time=1_700_000_004.0, reason=reason,
                      previous="office" if reason == "change" else None)


# --------------------------------------------------------------------------- JSON Lines


def test_json_lines_file_one_parseable_line_per_event(tmp_path):
    path = tmp_path / "events.jsonl"
    with JsonLinesSink(path) as sink:
        assert isinstance(sink, EventSink)
        sink.emit(command())
        # Flushed on every event: another reader sees the line before close().
        assert path.read_text(encoding="utf-8").count("\n") == 1
        sink.emit(scene())
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [command().to_dict(), scene().to_dict()]
    with JsonLinesSink(path) as sink:  # appends
        sink.emit(command("no"))
    assert len(path.read_text().splitlines()) == 3
    with pytest.raises(ValueError, match="closed"):
        sink.emit(command())


def test_json_lines_concurrent_writers_never_tear_lines(tmp_path):
    path = tmp_path / "shared.jsonl"
    sinks = [JsonLinesSink(path) for _ in range(4)]
    long_label = "x" * 3000  # lines longer than a pipe/stdio buffer chunk

    def writer(sink: JsonLinesSink, k: int) -> None:
        for i in range(50):
            sink.emit(command(f"{long_label}{k}", t_ms=float(i)))

    threads = [threading.Thread(target=writer, args=(s, k)) for k, s in enumerate(sinks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in sinks:
        s.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 200
    parsed = [json.loads(line) for line in lines]  # raises on any torn or interleaved line
    assert sorted(p["label"][-1] for p in parsed) == sorted("0123" * 50)


def test_json_lines_stdout_and_streams(capsys):
    sink = JsonLinesSink("-")
    sink.emit(scene(reason="heartbeat"))
    sink.close()
    out = capsys.readouterr().out
    assert out.endswith("\n") and json.loads(out)["reason"] == "heartbeat"
    buffer = io.StringIO()
    with JsonLinesSink(buffer) as sink:
        sink.emit(command())
    assert json.loads(buffer.getvalue())["label"] == "yes"


def test_json_lines_to_a_stream_that_is_not_utf8_loses_no_event_and_writes_utf8(tmp_path):
    # A Latin-1 locale (or PYTHONIOENCODING=latin-1): a place of your own named 北京 could not be encoded and
    # its events were lost from stdout (a warning each, exit 0); café went out as Latin-1 bytes, not UTF-8.
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="latin-1", write_through=True)
    with JsonLinesSink(stream) as sink:
        for label in ("北京", "café", "sea"):
            sink.emit(scene(label))
    assert sink.lost_events == 0
    lines = raw.getvalue().decode("utf-8").splitlines()
    assert [json.loads(line)["label"] for line in lines] == ["北京", "café", "sea"]
    script = ("from edgesense.sinks.jsonl import JsonLinesSink; from edgesense.types import SceneEvent; "
              "sink = JsonLinesSink('-'); sink.emit(SceneEvent(label='\\u5317\\u4eac', score=0.8, t_ms=0.0, "
              "wall_time=0.0)); sink.close()")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True,
                          env={**os.environ, "PYTHONIOENCODING": "latin-1", "PYTHONUTF8": "0"}, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert json.loads(proc.stdout.decode("utf-8"))["label"] == "北京"
    with JsonLinesSink(tmp_path / "events.jsonl") as sink:  # a file stays UTF-8 as it is: no escapes
        sink.emit(scene("北京"))
    assert "北京" in (tmp_path / "events.jsonl").read_text(encoding="utf-8")


def test_json_lines_rejects_nan_without_writing(tmp_path):
    path = tmp_path / "e.jsonl"
    with JsonLinesSink(path) as sink:
        with pytest.raises(ValueError, match="JSON"):
            sink.emit(CommandEvent(label="yes", score=float("nan"), t_ms=0.0, wall_time=0.0))
    assert path.read_text() == ""


def test_json_lines_closed_pipe_disables_sink(tmp_path):
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    stream = os.fdopen(write_fd, "w")
    sink = JsonLinesSink(stream)
    sink.emit(command())  # EPIPE: logged, not raised
    sink.emit(command())
    assert sink.lines_written == 0
    sink.close()
    try:
        stream.close()
    except BrokenPipeError:
        pass


def test_json_lines_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        JsonLinesSink(tmp_path / "nope" / "events.jsonl")


def test_json_lines_write_errors_count_lost_events_and_a_closed_pipe_does_not():
    sink = JsonLinesSink("/dev/full")  # every write: ENOSPC
    fan = FanOutSink([sink])
    fan.emit(command())
    fan.emit(scene())
    assert (sink.lost_events, sink.lines_written, fan.lost_events, fan.failures) == (2, 0, 2, 0)
    fan.close()
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    with os.fdopen(write_fd, "w") as stream, JsonLinesSink(stream) as piped:
        piped.emit(command())  # the reader went away on purpose (| head): not a loss
        assert piped.lost_events == 0
        with contextlib.suppress(BrokenPipeError):
            stream.close()


def test_json_lines_a_disk_that_fills_mid_line_spoils_no_later_event(tmp_path):
    """RLIMIT_FSIZE is a disk that fills at a byte of our choosing: the write stops in the middle of a line."""
    path = tmp_path / "events.jsonl"
    script = f"""
import json, os, resource, signal
from edgesense.sinks.jsonl import JsonLinesSink
from edgesense.types import CommandEvent
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a core dump
event = lambda i: CommandEvent(label="yes", score=0.9, t_ms=float(i), wall_time=1.7e9 + i)
line = len(json.dumps(event(0).to_dict())) + 1
resource.setrlimit(resource.RLIMIT_FSIZE, (int(line * 2.5), resource.RLIM_INFINITY))
sink = JsonLinesSink({str(path)!r})
for i in range(3):
    sink.emit(event(i))
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))  # space freed
sink.emit(event(3))
sink.emit(event(4))
size = os.path.getsize({str(path)!r})
resource.setrlimit(resource.RLIMIT_FSIZE, (size + line // 2, resource.RLIM_INFINITY))
sink.emit(event(5))  # the last event of the run tears too
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
sink.close()
print(sink.lost_events, sink.lines_written)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["2", "4"]
    lines = path.read_text().splitlines()
    parsed = []
    for line in lines:
        with contextlib.suppress(ValueError):
            parsed.append(json.loads(line)["t_ms"])
    assert parsed == [0.0, 1.0, 3.0, 4.0]  # events 2 and 5 are lost (fragments on lines of their own)
    assert len(lines) == 6 and path.read_text().endswith("\n")  # close() ended the last fragment


def test_json_lines_after_a_run_cut_off_mid_line_the_next_run_starts_on_a_new_line(tmp_path, caplog):
    """A power cut (or SIGKILL) in the middle of a write leaves the events file ending in a partial line: the next
    run appended its first event to that fragment, and that event was lost to every reader of the file."""
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(command("yes").to_dict()) + "\n" + '{"type": "comm')  # the earlier run's last line
    with caplog.at_level(logging.WARNING, logger="edgesense.sinks.jsonl"):
        with JsonLinesSink(path) as sink:
            sink.emit(command("no"))
    lines = path.read_text().splitlines()
    assert lines[1] == '{"type": "comm'  # the fragment stays, on a line of its own
    assert [json.loads(line)["label"] for line in (lines[0], lines[2])] == ["yes", "no"] and len(lines) == 3
    assert "ends in a partial line" in caplog.text
    # A file that ends with a whole line, or an empty one, gets no blank line.
    for text in ("", json.dumps(command("yes").to_dict()) + "\n"):
        path.write_text(text)
        with JsonLinesSink(path) as sink:
            sink.emit(command("go"))
        assert path.read_text() == text + json.dumps(command("go").to_dict()) + "\n"


def test_json_lines_follows_its_path_when_the_file_is_moved_away_or_removed(tmp_path, caplog):
    """A service that appends for months, its file rotated by renaming (logrotate's usual way) or removed by hand: the
    sink wrote on into the moved file, or into the removed one, where every later event was lost."""
    path = tmp_path / "events.jsonl"
    with caplog.at_level(logging.INFO, logger="edgesense.sinks.jsonl"), JsonLinesSink(path) as sink:
        sink.emit(command("yes", 1.0))
        path.rename(tmp_path / "events.jsonl.1")
        sink.emit(command("no", 2.0))
        path.unlink()
        sink.emit(command("up", 3.0))
        sink.emit(command("down", 4.0))
        (tmp_path / "elsewhere").write_text('{"type": "comm')  # a file put there, ending mid-line
        os.replace(tmp_path / "elsewhere", path)
        sink.emit(command("go", 5.0))
    assert [json.loads(line)["label"] for line in (tmp_path / "events.jsonl.1").read_text().splitlines()] == ["yes"]
    assert path.read_text().splitlines()[0] == '{"type": "comm'
    assert [json.loads(line)["label"] for line in path.read_text().splitlines()[1:]] == ["go"]
    assert sink.lines_written == 5 and sink.lost_events == 0
    assert caplog.text.count("was moved away or removed (rotated?)") == 3


def test_json_lines_to_a_fifo_or_a_device_is_not_reopened(tmp_path):
    with JsonLinesSink(os.devnull) as sink:  # a character device: its path is not followed
        sink.emit(command())
        assert sink._path is None and sink.lines_written == 1


def test_the_deploy_logrotate_rule_on_a_live_sink_loses_no_event_and_copies_nothing(tmp_path):
    """The bundle's rule, run for real three times while the sink writes: every event is in the files, once each,
    and each rotated file is the file the sink wrote (renamed), not a copy (copytruncate wrote the whole file
    again, 10 MB on the card per rotation, and lost the lines written between its copy and its truncation)."""
    if shutil.which("logrotate") is None:
        pytest.skip("logrotate is not installed")
    events = tmp_path / "events.jsonl"
    template = Path(__file__).resolve().parents[3] / "deploy" / "templates" / "edgesense.logrotate.in"
    rule = template.read_text()
    for key, value in (("EVENTS", str(events)), ("ROTATE_SIZE", "1"), ("ROTATE_COUNT", "10"),
                       ("TARGET_DESCRIPTION", "test")):
        rule = rule.replace(f"@@{key}@@", value)
    rule = rule.replace("su @@USER@@ @@USER@@", f"su {getpass.getuser()} {grp.getgrgid(os.getgid()).gr_name}")
    (tmp_path / "rule").write_text(rule)
    inodes = []
    with JsonLinesSink(events) as sink:
        for rotation in range(3):
            for i in range(5):
                sink.emit(command("yes", float(rotation * 5 + i)))
            inodes.append(events.stat().st_ino)
            done = subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "state"), str(tmp_path / "rule")],
                                  capture_output=True, text=True, check=False)
            assert done.returncode == 0, done.stderr
        sink.emit(command("yes", 15.0))
    assert (tmp_path / "events.jsonl.1").stat().st_ino == inodes[-1]  # renamed, not copied
    seen = []
    for f in tmp_path.glob("events.jsonl*"):
        data = gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes()
        seen += [json.loads(line)["t_ms"] for line in data.decode().splitlines()]
    assert sorted(seen) == [float(i) for i in range(16)]


def test_json_lines_says_every_outage_of_a_disk_that_fills_again_and_when_it_is_over(tmp_path):
    """A device that runs for weeks: its disk fills, logrotate frees it, and it fills again a week later. Only the
    first outage of the run was said (every later one went to the debug log): each is now one warning when it
    starts and one when writing works again, with the events it lost. (Outages that keep coming back within
    LOG_INTERVAL_S are paced: test_a_sink_that_fails_every_other_event_is_not_two_lines_per_event.)"""
    path = tmp_path / "events.jsonl"
    script = f"""
import logging, os, resource, signal
import edgesense.pacing
from edgesense.sinks.jsonl import JsonLinesSink
from edgesense.types import CommandEvent
logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(message)s")
edgesense.pacing.LOG_INTERVAL_S = 0.0  # a week between the outages: far longer than the interval
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a core dump
sink = JsonLinesSink({str(path)!r})
i = 0
for lost in (3, 4, 2):
    sink.emit(CommandEvent(label="yes", score=0.9, t_ms=float(i), wall_time=1.7e9)); i += 1
    resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize({str(path)!r}), resource.RLIM_INFINITY))  # full
    for _ in range(lost):
        sink.emit(CommandEvent(label="yes", score=0.9, t_ms=float(i), wall_time=1.7e9)); i += 1
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))  # freed
sink.close()
print(sink.lost_events, sink.lines_written)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["9", "3"]
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING")]
    assert [w.split(";")[0].split(" (")[0] for w in warnings] == [
        f"WARNING events: cannot write to {path}", f"WARNING events: writing to {path} again",
        f"WARNING events: cannot write to {path}", f"WARNING events: writing to {path} again",
        f"WARNING events: cannot write to {path}"], done.stderr
    assert [w.split("; ")[1] for w in warnings[1::2]] == ["3 event(s) lost while it failed",
                                                          "4 event(s) lost while it failed"]


def test_json_lines_to_a_fifo_needs_its_reader_and_never_waits_for_one(tmp_path):
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    done = subprocess.run([sys.executable, "-c", f"from edgesense.sinks.jsonl import JsonLinesSink\n"
                           f"JsonLinesSink({str(fifo)!r})"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and f"ValueError: {fifo}: expected a file, or a FIFO with its reader running; " \
                                   f"got a FIFO that no process reads (start the reader first)" in done.stderr
    received = tmp_path / "received.jsonl"
    with received.open("w") as out:
        reader = subprocess.Popen(["cat", str(fifo)], stdout=out)
    try:
        deadline = time.monotonic() + WAIT_S
        while True:  # until cat has opened its end
            try:
                sink = JsonLinesSink(fifo)
                break
            except ValueError:
                assert time.monotonic() < deadline, "cat never opened the FIFO"
                time.sleep(0.02)
        with sink:
            for i in range(600):  # 300 KB, more than a pipe buffer holds: writes wait for cat, never fail
                sink.emit(command("x" * 500, t_ms=float(i)))
        reader.wait(WAIT_S)  # cat ends when the sink closes the FIFO
    finally:
        reader.kill()
    assert [json.loads(line)["t_ms"] for line in received.read_text().splitlines()] == [float(i) for i in range(600)]
    assert sink.lost_events == 0


@pytest.mark.parametrize("target, match", [("", "events path '': expected a JSON Lines file or -"),
                                           (None, "is a folder; expected a JSON Lines file or -")])
def test_json_lines_refuses_a_folder_and_an_empty_path(tmp_path, target, match):
    with pytest.raises(ValueError, match=match) as info:
        JsonLinesSink(tmp_path if target is None else target)
    assert "\n" not in str(info.value)


def test_json_lines_that_cannot_be_opened_or_a_closed_stdout_are_one_line(monkeypatch):
    unwritable = Path("/sys/edgesense-events.jsonl")  # sysfs takes no new files, not even from root
    with pytest.raises(ValueError) as info:
        JsonLinesSink(unwritable)
    assert str(info.value).startswith(f"{unwritable}: cannot open the events file for appending (")
    monkeypatch.setattr(sys, "stdout", None)  # what Python makes of a closed standard output
    with pytest.raises(ValueError, match="events -: expected an open standard output, found it closed"):
        JsonLinesSink("-")


def test_json_lines_to_a_binary_stream_is_refused_where_every_event_was_lost(tmp_path):
    """``JsonLinesSink(open(path, "wb"))`` (or ``sys.stdout.buffer``) took the stream and then failed every event
    (``a bytes-like object is required``): a warning per event, none written, none counted lost."""
    with open(tmp_path / "e.jsonl", "wb") as binary, open(tmp_path / "raw.jsonl", "wb", buffering=0) as raw:
        for stream in (binary, raw, io.BytesIO()):
            with pytest.raises(ValueError, match=r"^target: expected '-', a path or a text stream, got a binary "
                                                 r"stream .* \(open it in text mode\)$"):
                JsonLinesSink(stream)
    text = io.StringIO()
    with JsonLinesSink(text) as sink:
        sink.emit(command())
    assert json.loads(text.getvalue())["label"] == "yes"


def test_callback_and_fan_out_sinks(tmp_path):
    got = []
    broken_calls = []

    def broken(event):
        broken_calls.append(event)
        raise OSError("disk full")

    fan = FanOutSink([CallbackSink(broken), CallbackSink(got.append), JsonLinesSink(tmp_path / "e.jsonl")])
    fan.emit(command())
    fan.emit(scene())
    fan.close()
    assert [e.type for e in got] == ["command", "scene"] and len(broken_calls) == 2 and fan.failures == 2
    assert len((tmp_path / "e.jsonl").read_text().splitlines()) == 2
    with pytest.raises(ValueError, match="callback"):
        CallbackSink("not callable")


def test_events_a_sink_refuses_are_counted_lost_and_said_once_per_outage(tmp_path, caplog):
    """A sink whose emit() raised (its owner closed it mid-run, a custom sink whose disk is gone) lost every event
    with ``lost_events`` 0 (the run's ``events_lost`` too, so ``edgesense run`` exited 0) and one warning each."""
    jsonl = JsonLinesSink(tmp_path / "e.jsonl")
    down = threading.Event()

    def flaky(event):
        if down.is_set():
            raise OSError("disk gone")

    fan = FanOutSink([jsonl, CallbackSink(flaky)])
    fan.emit(command())
    jsonl.close()  # closed by its owner while the fan-out still sends to it
    down.set()
    with caplog.at_level(logging.WARNING, logger="edgesense.sinks.base"):
        for _ in range(5):
            fan.emit(command())
        down.clear()
        fan.emit(command())
    assert fan.lost_events == 5 + 6 and fan.failures == 11
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 3, said  # each sink's outage said when it starts; the callback's also when it ends
    assert "JsonLinesSink.emit failed" in said[0] and "disk gone" in said[1]
    assert "CallbackSink takes events again; 5 event(s) lost" in said[2]
    assert len((tmp_path / "e.jsonl").read_text().splitlines()) == 1


def test_a_sink_that_fails_every_other_event_is_not_two_lines_per_event(monkeypatch, caplog):
    """A custom sink that raises for scene events only (a bug with one event type): every scene event began an
    outage and the command after it ended one, two warnings per event for as long as the device ran. Outages that
    keep coming back are said at most once per LOG_INTERVAL_S, the next one said with how many there were."""
    import edgesense.pacing as pacing

    def scenes_fail(event):
        if event.type == "scene":
            raise ValueError("no table for scene events")

    fan = FanOutSink([CallbackSink(scenes_fail)])
    with caplog.at_level(logging.DEBUG, logger="edgesense.sinks.base"):
        for _ in range(50):
            fan.emit(scene())
            fan.emit(command())
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert said == ["events: CallbackSink.emit failed: no table for scene events; its events are lost while "
                        "this lasts", "events: CallbackSink takes events again; 1 event(s) lost while it failed"]
        assert fan.lost_events == 50
        monkeypatch.setattr(pacing, "LOG_INTERVAL_S", 0.0)  # the interval has passed: the next one is said
        fan.emit(scene())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING][-1] == (
        "events: CallbackSink.emit failed: no table for scene events; its events are lost while this lasts (50 "
        "outages since the last such line, said at most every 0 s)")


def test_one_sink_none_or_a_path_where_a_sequence_of_sinks_goes_is_one_line_naming_sinks(tmp_path):
    """``Pipeline(model, sinks=JsonLinesSink(...))`` said ``'JsonLinesSink' object is not iterable``."""
    with JsonLinesSink(tmp_path / "e.jsonl") as one:
        for bad in (one, None, str(tmp_path / "e.jsonl")):
            with pytest.raises(ValueError, match=r"^sinks: expected a sequence of EventSink objects \(one sink: "
                                                 r"\[sink\]\), got"):
                FanOutSink(bad)
        assert FanOutSink([one]).sinks == (one,) and FanOutSink(()).sinks == ()


# --------------------------------------------------------------------------- URL parsing


def test_mqtt_url_parsing():
    opts = mqtt_options_from_url("mqtt://user:p%40ss@broker.local:1884/home/edge?qos=2&client_id=pi4")
    assert (opts.host, opts.port, opts.username, opts.password, opts.topic_prefix, opts.qos, opts.client_id,
            opts.tls) == ("broker.local", 1884, "user", "p@ss", "home/edge", 2, "pi4", False)
    assert "p@ss" not in repr(opts)
    tls = mqtt_options_from_url("mqtts://broker.example.com", ha_discovery=False)
    assert (tls.port, tls.tls, tls.topic_prefix, tls.ha_discovery, tls.username) == (
        8883, True, "edgesense", False, None)
    assert mqtt_options_from_url("mqtt://10.0.0.2").port == 1883


@pytest.mark.parametrize("url, match", [
    ("http://host", "scheme"), ("mqtt://", "host"), ("mqtt://host:99999", "port"),
    ("mqtt://host?retain=1", "unknown query parameter 'retain'"), ("mqtt://host?qos=high", "qos"),
    ("mqtt://host?qos=3", "qos"), ("mqtt://host/a/+/b", "topic_prefix"),
    ("mqtt://host/home/#", "expected no '#'"), ("mqtt://host/home#x", "expected no '#'"),
    ("mqtt://host:0", r"mqtt url 'mqtt://host:0': expected a port in \[1, 65535\], got 0"),
    ("mqtts://host:0", "got 0"), ("mqtt://[::1", r"mqtt url 'mqtt://\[::1': .*Invalid IPv6 URL"),
])
def test_mqtt_url_errors(url, match):
    with pytest.raises(ValueError, match=match):
        mqtt_options_from_url(url)


def test_mqtt_url_errors_mask_the_password():
    with pytest.raises(ValueError) as info:
        mqtt_options_from_url("mqtt://bob:hunter2@host:notaport")
    assert "hunter2" not in str(info.value) and "***" in str(info.value)
    with pytest.raises(ValueError, match="Invalid IPv6") as info:
        mqtt_options_from_url("mqtt://bob:hunter2@[::1")
    assert "hunter2" not in str(info.value) and "***" in str(info.value)


@pytest.mark.parametrize("password, encoded", [("s3cr#t99", "%23"), ("s3cr?t99", "%3F"), ("s3/cr3t99", "%2F"),
                                               ("s3cr[t99", "%5B")])
def test_a_password_with_a_url_delimiter_is_never_shown_and_the_error_says_to_encode_it(password, encoded):
    url = f"mqtt://edge:{password}@broker.lan/home"
    with pytest.raises(ValueError, match=f"'mqtt://edge:\\*\\*\\*@broker.lan/home': expected a password .*"
                                         f"{encoded}") as info:
        mqtt_options_from_url(url)
    assert "cr" not in str(info.value) and "t99" not in str(info.value)
    # percent-encoded it works; an '@' in a topic prefix after a port is not taken for a password
    assert mqtt_options_from_url(url.replace(password, password.replace(
        {"%23": "#", "%3F": "?", "%2F": "/", "%5B": "["}[encoded], encoded))).password == password
    assert mqtt_options_from_url("mqtt://host:1883/home/a@b").topic_prefix == "home/a@b"


@pytest.mark.parametrize("param", ["certfile", "ca_certs"])
def test_a_tls_file_that_is_not_pem_is_one_line_naming_the_parameter_and_opens_no_spool(tmp_path, param):
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("not a certificate\n")
    spool = tmp_path / "spool"
    options = mqtt_options_from_url(f"mqtts://127.0.0.1:{free_port()}?{param}={not_pem}", spool_dir=str(spool))
    with pytest.raises(ValueError, match=f"^mqtt: {param}={not_pem}: expected a PEM file") as info:
        MqttSink(options)
    assert "\n" not in str(info.value)
    assert not spool.exists()  # nothing was opened before the refusal


def test_a_key_that_is_not_pem_names_the_keyfile(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    _, cert, _ = make_tls_files(tmp_path)
    not_pem = tmp_path / "key.txt"
    not_pem.write_text("not a key\n")
    url = f"mqtts://127.0.0.1:{free_port()}?certfile={cert}&keyfile={not_pem}"
    with pytest.raises(ValueError, match=f"^mqtt: keyfile={not_pem}: expected a PEM file with the private key"):
        MqttSink(mqtt_options_from_url(url))


# --------------------------------------------------------------------------- real broker


@pytest.fixture
def start_broker(tmp_path):
    if not os.path.exists(MOSQUITTO):
        pytest.skip(f"{MOSQUITTO} is not installed")
    brokers: list[Broker] = []

    def start(*extra: str) -> Broker:
        brokers.append(Broker(tmp_path / f"broker{len(brokers)}", tuple(extra)))
        return brokers[-1]

    yield start
    for broker in brokers:
        broker.stop()


@pytest.fixture
def broker(start_broker) -> Broker:
    return start_broker("allow_anonymous true")


class Subscriber:
    """A plain paho client that records every message it receives."""

    def __init__(self, broker: Broker, *topics: str, qos: int = 2, auth: tuple[str, str] | None = None) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        if auth is not None:
            self.client.username_pw_set(*auth)
        subscribed = threading.Event()
        self.client.on_message = lambda c, u, msg: self.messages.put(msg)
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe([(t, qos) for t in topics])
        assert subscribed.wait(WAIT_S), "no SUBACK"

    def collect(self, count: int) -> dict[str, list[mqtt.MQTTMessage]]:
        by_topic: dict[str, list[mqtt.MQTTMessage]] = {}
        for _ in range(count):
            msg = self.messages.get(timeout=WAIT_S)
            by_topic.setdefault(msg.topic, []).append(msg)
        return by_topic

    def assert_quiet(self, seconds: float = 0.2) -> None:
        time.sleep(seconds)
        assert self.messages.empty(), [m.topic for m in list(self.messages.queue)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_mqtt_publishes_events_state_status_and_discovery(broker):
    live = Subscriber(broker, "edgesense/#", "homeassistant/#")
    sink = MqttSink(MqttOptions(host=broker.host, port=broker.port, qos=1, node_id="pi4_kitchen",
                                device_name="Kitchen Pi"))
    assert isinstance(sink, EventSink) and sink.connected
    sink.emit(command())
    sink.emit(scene())
    sink.flush()
    got = live.collect(7)  # status + 2 discovery configs + 2 x (event, state)
    live.assert_quiet()
    assert [m.payload for m in got["edgesense/status"]] == [b"online"]
    for topic, event in (("edgesense/command", command()), ("edgesense/scene", scene())):
        for t in (topic, f"{topic}/state"):
            (msg,) = got[t]
            assert json.loads(msg.payload) == event.to_dict()
            assert msg.qos == 1  # published with QoS 1 (the subscription allows 2)
    config = json.loads(got["homeassistant/sensor/pi4_kitchen/last_command/config"][0].payload)
    assert config["state_topic"] == "edgesense/command/state"
    assert config["availability_topic"] == "edgesense/status"
    assert (config["payload_available"], config["payload_not_available"]) == ("online", "offline")
    assert config["value_template"] == "{{ value_json.label }}"
    assert config["unique_id"] == "pi4_kitchen_last_command"
    assert config["device"]["identifiers"] == ["pi4_kitchen"] and config["device"]["name"] == "Kitchen Pi"
    scene_config = json.loads(got["homeassistant/sensor/pi4_kitchen/scene/config"][0].payload)
    assert scene_config["state_topic"] == "edgesense/scene/state"
    sink.close()
    assert live.collect(1)["edgesense/status"][0].payload == b"offline"
    live.close()

    # A client that connects later gets the retained state, status and discovery only.
    late = Subscriber(broker, "edgesense/#", "homeassistant/#")
    retained = late.collect(5)
    late.assert_quiet()
    assert set(retained) == {"edgesense/status", "edgesense/command/state", "edgesense/scene/state",
                             "homeassistant/sensor/pi4_kitchen/last_command/config",
                             "homeassistant/sensor/pi4_kitchen/scene/config"}
    assert all(m.retain for msgs in retained.values() for m in msgs)
    assert retained["edgesense/status"][0].payload == b"offline"
    assert json.loads(retained["edgesense/command/state"][0].payload)["label"] == "yes"
    late.close()


def test_commands_are_a_home_assistant_event_entity_that_fires_for_every_word_and_never_replays(broker):
    """Commands were only the ``Last command`` sensor (retained state): Home Assistant changes no state for the
    second "yes" (a trigger ``to: "yes"`` missed it) and brings the last word back whenever the device is online
    again (``unavailable`` -> ``yes``: the trigger fired for a word nobody said). An ``event`` entity on the event
    topic, which is not retained, fires for every word (Home Assistant's MQTT event: ``event_types`` required, the
    payload a JSON object whose ``event_type`` is one of them)."""
    live = Subscriber(broker, "#")
    sink = MqttSink(MqttOptions(host=broker.host, port=broker.port, node_id="pi4_kitchen", device_name="Kitchen Pi",
                                command_labels=("yes", "no")))
    sink.emit(command("yes"))
    sink.emit(command("yes", t_ms=9000.0))
    sink.flush()
    got = live.collect(1 + 3 + 2 * 2)  # status, 3 discovery configs, 2 x (event, state)
    live.assert_quiet()
    config = json.loads(got["homeassistant/event/pi4_kitchen/command/config"][0].payload)
    sensor = json.loads(got["homeassistant/sensor/pi4_kitchen/last_command/config"][0].payload)
    assert config["state_topic"] == "edgesense/command" and config["event_types"] == ["yes", "no"]
    assert config["unique_id"] == "pi4_kitchen_command" != sensor["unique_id"]
    for key in ("availability_topic", "payload_available", "payload_not_available", "device"):
        assert config[key] == sensor[key]
    # The template turns each event's JSON into Home Assistant's: event_type = the word, the rest attributes.
    template = config["value_template"]
    assert template.startswith("{{ {") and template.endswith("} | to_json }}")
    fields = dict(item.split(": ") for item in template[len("{{ {"):-len("} | to_json }}")].split(", "))
    assert fields == {"'event_type'": "value_json.label", "'score'": "value_json.score", "'t_ms'": "value_json.t_ms",
                      "'wall_time'": "value_json.wall_time"}
    said = [json.loads(m.payload) for m in got["edgesense/command"]]
    assert [e["label"] for e in said] == ["yes", "yes"] and all(set(e) >= {"score", "t_ms", "wall_time"} for e in said)
    sink.close()
    live.close()
    late = Subscriber(broker, "#")  # what Home Assistant gets when it (re)subscribes: never a past word to fire
    retained = late.collect(1 + 3 + 1)
    late.assert_quiet()
    assert "edgesense/command" not in retained and "homeassistant/event/pi4_kitchen/command/config" in retained
    late.close()

    # Without command_labels (a sink made in Python without the model's words): no event entity, as before.
    bare = MqttSink(MqttOptions(host=broker.host, port=broker.port, node_id="bare"))
    assert [t for t in bare.discovery_payloads() if "/event/" in t] == []
    bare.close()
    with pytest.raises(ValueError, match="command_labels"):
        MqttOptions(host="h", command_labels=("yes", "yes"))
    with pytest.raises(ValueError, match="command_labels"):
        MqttOptions(host="h", command_labels=["yes"])


def test_a_run_names_the_model_s_words_that_can_fire_as_the_event_types(broker, tmp_path):
    """``edgesense run`` gives the sink the bundled model's words, less the ones that never fire (``_silence_``,
    ``_unknown_`` and commands.ignored_labels): a word missing from ``event_types`` is refused by Home Assistant."""
    from edgesense.loop.pipeline import Pipeline

    repo = Path(__file__).resolve().parents[3]
    config = tmp_path / "device.yaml"
    config.write_text(f"device: {{name: Kitchen, device_id: kitchen}}\n"
                      f"model: {{path: {repo / 'models' / 'edgesense.tflite'}}}\n"
                      f"commands: {{ignored_labels: [_silence_, _unknown_, off]}}\n"
                      f"outputs: {{events: null, mqtt_spool_dir: null, ha_discovery: true}}\n", encoding="utf-8")
    live = Subscriber(broker, "homeassistant/event/#")
    with Pipeline.from_config(config, audio=repo / "samples" / "commands.wav", fast=True,
                              mqtt=f"mqtt://{broker.host}:{broker.port}"):
        payload = json.loads(live.collect(1)["homeassistant/event/kitchen/command/config"][0].payload)
    assert payload["event_types"] == ["yes", "no", "up", "down", "left", "right", "on", "stop", "go"]
    live.close()


def test_mqtt_custom_prefix_qos0_without_discovery(broker):
    live = Subscriber(broker, "#")
    sink = MqttSink(mqtt_options_from_url(f"mqtt://{broker.host}:{broker.port}/home/edge1?qos=0",
                                          ha_discovery=False))
    sink.emit(command("stop"))
    sink.flush()
    got = live.collect(3)
    live.assert_quiet()
    assert set(got) == {"home/edge1/status", "home/edge1/command", "home/edge1/command/state"}
    assert got["home/edge1/command"][0].qos == 0
    assert json.loads(got["home/edge1/command"][0].payload)["label"] == "stop"
    sink.close()
    live.close()


def test_a_closed_mqtt_sink_holds_no_file_descriptor(broker):
    """close() releases every socket (paho's wake-up socket pair too), whether the broker answered or was away:
    a program that keeps its closed pipelines (or restarts one) must not gain descriptors with each."""
    def open_fds() -> set[str]:
        return set(os.listdir("/proc/self/fd"))

    kept = []  # closed sinks the program still holds, as a closed Pipeline holds its sinks
    before = open_fds()
    for _ in range(3):
        sink = MqttSink(MqttOptions(host=broker.host, port=broker.port, ha_discovery=False))
        assert sink.connected
        sink.emit(command("go"))
        sink.close()
        kept.append(sink)
        away = MqttSink(MqttOptions(host=broker.host, port=free_port(), ha_discovery=False))  # nothing listens
        away.close()
        kept.append(away)
    assert open_fds() - before == set(), [os.readlink(f"/proc/self/fd/{fd}") for fd in open_fds() - before]


def test_the_test_broker_closes_its_own_copy_of_its_log(tmp_path):
    """tests/brokers.py opened mosquitto's log for each start and left it to the garbage collector: a
    ResourceWarning per broker start, which buried the leaks a run under -W error::ResourceWarning looks for."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        broker = Broker(tmp_path / "broker", ("allow_anonymous true",))
        try:
            broker.stop()
            broker.start()
        finally:
            broker.stop()
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_mqtt_last_will_marks_the_device_offline(broker):
    sink = MqttSink(MqttOptions(host=broker.host, port=broker.port, ha_discovery=False, keepalive_s=5))
    live = Subscriber(broker, "edgesense/status")
    assert live.collect(1)["edgesense/status"][0].payload == b"online"  # retained
    # Crash: the network thread stops and the socket drops without a DISCONNECT.
    sink._client.loop_stop()
    sink._client.socket().close()
    assert live.collect(1)["edgesense/status"][0].payload == b"offline"
    live.close()


def test_a_broker_away_at_start_gets_the_spooled_events_in_order_when_it_comes(tmp_path, caplog):
    if not os.path.exists(MOSQUITTO):
        pytest.skip(f"{MOSQUITTO} is not installed")
    port = free_port()  # nothing listens there yet
    options = MqttOptions(host="127.0.0.1", port=port, qos=1, spool_dir=str(tmp_path / "spool"),
                          reconnect_max_delay_s=1)
    with caplog.at_level("WARNING", logger="edgesense.sinks.mqtt"):
        sink = MqttSink(options)  # starts anyway
    assert not sink.connected and "unreachable" in caplog.text and "spool" in caplog.text
    for i in range(5):
        sink.emit(command(label=f"w{i}", t_ms=float(i)))
    assert len(sink.spool) == 5
    broker = Broker(tmp_path / "broker", ("allow_anonymous true",), port=port)
    try:
        live = Subscriber(broker, "edgesense/command")
        got = [json.loads(m.payload)["label"] for m in live.collect(5)["edgesense/command"]]
        assert got == [f"w{i}" for i in range(5)]  # every event, oldest first
        sink.close()
        assert sink.lost_events == 0 and len(sink.spool or []) == 0
        live.close()
    finally:
        broker.stop()


def test_without_a_spool_events_that_never_reach_the_broker_are_counted_as_lost():
    sink = MqttSink(MqttOptions(host="127.0.0.1", port=free_port(), publish_timeout_s=0.2))
    sink.emit(command())
    sink.emit(scene())
    sink.close()
    assert sink.lost_events == 2


def test_a_stop_while_the_broker_is_away_waits_one_publish_timeout_not_one_per_flush(tmp_path, caplog):
    """edgesense run stopped (SIGTERM) while the broker is unreachable: the loop flushes its sinks at the end of
    run() and again in close(); each flush waited publish_timeout_s for the same spooled events (10 s in all with
    the default 5 s), though they stay spooled either way. A flush with nothing new emitted returns at once."""
    caplog.set_level(logging.WARNING, logger="edgesense.sinks.mqtt")
    sink = MqttSink(MqttOptions(host="127.0.0.1", port=free_port(), ha_discovery=False, publish_timeout_s=1.0,
                                spool_dir=str(tmp_path / "spool")))
    sink.emit(command())
    started = time.monotonic()
    sink.flush()  # Pipeline.run's end
    first_s = time.monotonic() - started
    sink.flush()  # Pipeline.close
    second_s = time.monotonic() - started - first_s
    sink.close()  # paho's thread sleeps up to 1 s between connection tries: close() waits for it to end
    assert 0.9 <= first_s < 1.5 and second_s < 0.2 and time.monotonic() - started < first_s + 1.5
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w for w in warnings if "not acknowledged" in w] == [
        f"mqtt: 1 events not acknowledged within 1 s; they stay in the spool {tmp_path / 'spool'}"]
    assert sink.lost_events == 0
    with EventSpool(tmp_path / "spool") as spool:
        assert len(spool) == 1  # kept for the broker's return


@pytest.mark.parametrize("spooled", [True, False], ids=["spool", "no-spool"])
def test_a_stop_while_the_broker_hangs_waits_one_publish_timeout_not_two(start_broker, tmp_path, caplog, spooled):
    """The broker's host loses power or its network: the connection still looks open until keepalive gives up on
    it. The stop's flush waited publish_timeout_s for the events, then close() waited publish_timeout_s again for
    its retained "offline" (10 s in all with the default 5 s, and a second "not acknowledged" line). Now close()
    sends "offline" without waiting for a broker that left the last flush unanswered."""
    caplog.set_level(logging.WARNING, logger="edgesense.sinks.mqtt")
    broker = start_broker("allow_anonymous true")
    spool = str(tmp_path / "spool") if spooled else None
    sink = MqttSink(MqttOptions(host=broker.host, port=broker.port, ha_discovery=False, publish_timeout_s=1.0,
                                spool_dir=spool))
    assert sink.connected
    os.kill(broker.process.pid, signal.SIGSTOP)
    try:
        sink.emit(command())
        started = time.monotonic()
        sink.flush()  # Pipeline.run's end
        flush_s = time.monotonic() - started
        sink.flush()  # Pipeline.close
        sink.close()
        close_s = time.monotonic() - started - flush_s
    finally:
        os.kill(broker.process.pid, signal.SIGCONT)
    assert 0.9 <= flush_s < 1.5 and close_s < 0.5, (flush_s, close_s)
    unanswered = [r.getMessage() for r in caplog.records if "not acknowledged" in r.getMessage()]
    assert len(unanswered) == (1 if spooled else 2), unanswered  # the flush's, not one more for "offline"
    assert sink.lost_events == (0 if spooled else 1)
    if spooled:
        with EventSpool(spool) as kept:
            assert len(kept) == 1  # kept for the broker's return


def test_a_stop_with_the_broker_answering_still_waits_for_its_offline_status(broker):
    sink = MqttSink(MqttOptions(host=broker.host, port=broker.port, ha_discovery=False))
    sink.emit(command())
    sink.flush()
    sink.close()
    late = Subscriber(broker, "edgesense/status")
    assert late.collect(1)["edgesense/status"][0].payload == b"offline"
    late.close()


def test_qos0_messages_paho_drops_when_a_hung_broker_is_let_go_are_counted_as_lost(start_broker):
    """QoS 0 without a spool, and the broker hangs (stopped, not gone): paho queues messages on a socket that no
    longer drains and, when keepalive gives up on it, drops them unsent, marking them lost (MQTT_ERR_CONN_LOST)
    and "published" to end any wait_for_publish. The sink read that flag and took them for delivered: events
    never sent were not counted in lost_events (the run could end with exit 0). Now each is counted."""
    broker = start_broker("allow_anonymous true")
    sink = MqttSink(MqttOptions(host=broker.host, port=broker.port, qos=0, ha_discovery=False, keepalive_s=5,
                                reconnect_max_delay_s=1, publish_timeout_s=0.5))
    sent = []
    publish = sink._client.publish

    def recording(topic, *args, **kwargs):  # the real publish; only keeps what it returned
        info = publish(topic, *args, **kwargs)
        sent.append((topic, info))
        return info

    sink._client.publish = recording
    os.kill(broker.process.pid, signal.SIGSTOP)
    try:
        label = "x" * 20_000  # fills the socket's buffers in a few hundred events
        deadline = time.monotonic() + 4 * WAIT_S
        t_ms = 0.0
        while not any(info.rc == mqtt.MQTT_ERR_CONN_LOST for _, info in sent) and time.monotonic() < deadline:
            for _ in range(20):
                sink.emit(command(label=label, t_ms=t_ms))
                t_ms += 1.0
            time.sleep(0.05)
        sink.flush()
    finally:
        os.kill(broker.process.pid, signal.SIGCONT)
        sink.close()
    events = [info for topic, info in sent if topic == "edgesense/command"]
    dropped = sum(info.rc == mqtt.MQTT_ERR_CONN_LOST for info in events)
    never_sent = sum(info.rc != mqtt.MQTT_ERR_SUCCESS or not info._published for info in events)
    assert dropped > 0 and sink.lost_events == never_sent


def test_without_a_spool_events_sent_after_an_outage_are_not_kept_nor_counted_as_lost(broker):
    """mqtt_spool_dir: null, and the broker restarts in the middle of a long run: paho sends the events it kept
    once it reconnects, but the sink took them for never acknowledged (their publish() said NO_CONN), kept them
    until the end of the run (each later event scanned them all) and then counted them as lost: exit 1 and a
    warning pair per message, though the broker had every one."""
    sink = MqttSink(MqttOptions(host=broker.host, port=broker.port, qos=1, ha_discovery=False, keepalive_s=5,
                                reconnect_max_delay_s=1, publish_timeout_s=5.0))
    try:
        sink.emit(command(t_ms=1.0))
        broker.stop()
        deadline = time.monotonic() + WAIT_S
        while sink.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        for i in range(10, 15):
            sink.emit(command(t_ms=float(i)))  # paho keeps them in memory
        broker.start()
        late = Subscriber(broker, "edgesense/command/state", qos=1)
        state = [json.loads(late.collect(1)["edgesense/command/state"][0].payload)["t_ms"]]
        while state[-1] != 14.0 and time.monotonic() < deadline + WAIT_S:  # the retained state: the newest event
            state.append(json.loads(late.messages.get(timeout=WAIT_S).payload)["t_ms"])
        late.close()
        assert state[-1] == 14.0  # delivered after the reconnection
        while time.monotonic() < deadline + 2 * WAIT_S and not all(mqtt_module._published(info)
                                                                   for info, _ in sink._pending):
            time.sleep(0.05)  # the PUBACKs follow the broker's fan-out to the subscriber
        sink.emit(command(t_ms=20.0))
        assert len(sink._pending) <= 2  # the outage's messages were let go, not kept for the rest of the run
        started = time.monotonic()
        sink.flush()
        assert time.monotonic() - started < 2.0 and (sink.lost_events, sink.failed) == (0, 0)
    finally:
        sink.close()
    assert sink.lost_events == 0
    # QoS 0 keeps nothing while disconnected: such an event is lost at once, and not kept either.
    sink = MqttSink(MqttOptions(host="127.0.0.1", port=free_port(), qos=0, ha_discovery=False))
    sink.emit(command())
    assert sink.lost_events == 1 and sink._pending == []
    sink.close()
    assert sink.lost_events == 1


def test_events_dropped_by_a_full_spool_are_counted_as_lost_once(tmp_path):
    from edgesense.sinks.spool import SpoolOptions

    options = mqtt_options_from_url(f"mqtt://127.0.0.1:{free_port()}", spool_dir=str(tmp_path / "spool"),
                                    publish_timeout_s=0.2)
    sink = MqttSink(options, spool_options=SpoolOptions(max_events=2, max_bytes=400, sync="off"))
    fan = FanOutSink([sink])
    for i in range(5):
        fan.emit(command(t_ms=float(i)))
    assert sink.spool.dropped_since_open == 3 and fan.lost_events == 3
    fan.emit(command(label="x" * 500))  # larger than the whole spool: dropped on arrival, counted once
    assert sink.spool.dropped_since_open == 4 and fan.lost_events == 4
    fan.close()
    assert fan.lost_events == 4  # the two kept in the spool are not lost
    reopened = MqttSink(options)  # the next run: earlier drops are not this run's losses
    assert reopened.lost_events == 0
    reopened.close()


@dataclasses.dataclass
class _OwnEvent:
    """An event of a custom integration (the sinks take anything with a ``type`` and a ``to_dict()``)."""

    type: str

    def to_dict(self) -> dict:
        return {"type": self.type}


def test_an_event_type_that_cannot_name_a_topic_is_refused_and_never_blocks_the_spool(broker, tmp_path, caplog):
    """A type with an MQTT wildcard was spooled, then paho refused its topic at every try: a warning a second, and
    no event after it was ever delivered, in that run or the next (it stays first in the spool)."""
    sink = MqttSink(MqttOptions(host=broker.host, port=broker.port, spool_dir=str(tmp_path / "spool"),
                                ha_discovery=False, publish_timeout_s=2.0))
    try:
        for kind in ("door+window", "alarm/#", "", "nul\0"):
            with pytest.raises(ValueError, match="^event type: expected a non-empty string without '[+]', '#'"):
                sink.emit(_OwnEvent(kind))
        sink.emit(command("go"))
        sink.flush()
        assert len(sink.spool) == 0 and sink.delivery.delivered == 1
        assert "delivery step failed" not in caplog.text
    finally:
        sink.close()


def test_a_spool_that_cannot_store_events_is_one_warning_per_outage_not_one_per_event(tmp_path):
    """A full or failing card: every event the spool cannot store is published without it. That was one warning
    per event for as long as it lasted; now one when it starts, and one when the spool stores events again."""
    script = f"""
import logging, os, resource, signal
from edgesense.sinks.mqtt import MqttOptions, MqttSink
from edgesense.types import CommandEvent
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a core dump
sink = MqttSink(MqttOptions(host="127.0.0.1", port={free_port()}, spool_dir={str(tmp_path)!r}, ha_discovery=False))
event = lambda i: CommandEvent(label="yes", score=0.9, t_ms=float(i), wall_time=1.7e9)
sink.emit(event(0))
largest = max(os.path.getsize(os.path.join({str(tmp_path)!r}, f)) for f in os.listdir({str(tmp_path)!r}))
resource.setrlimit(resource.RLIMIT_FSIZE, (largest, resource.RLIM_INFINITY))  # the card is full
for i in range(1, 41):
    sink.emit(event(i))
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))  # freed
sink.emit(event(41))
sink.emit(event(42))  # stored too: "stores events again" is said once, not at every event stored after
print(sink.spool_failures, len(sink.spool))
os._exit(0)  # the broker never came: what paho holds in memory is not this test's subject
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["40", "3"], done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING") and "unreachable" not in line]
    assert len(warnings) == 2, done.stderr
    assert "cannot store an event" in warnings[0] and "publishing events without the spool while this lasts" in \
        warnings[0]
    assert warnings[1] == f"WARNING mqtt: the spool {tmp_path} stores events again; 40 event(s) were published " \
        "without it"


def test_mqtt_username_password(start_broker, tmp_path):
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd is not installed")
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "edge", "s3cret:/@"], check=True)
    broker = start_broker("allow_anonymous false", f"password_file {passwords}")
    with pytest.raises(RuntimeError, match="refused.*[Nn]ot authori[sz]ed"):
        MqttSink(mqtt_options_from_url(f"mqtt://edge:wrong@{broker.host}:{broker.port}"))
    sink = MqttSink(mqtt_options_from_url(f"mqtt://edge:s3cret%3A%2F%40@{broker.host}:{broker.port}/auth",
                                          ha_discovery=False))
    assert sink.connected
    sink.close()


def test_a_broker_that_refuses_after_the_start_is_an_error_and_is_tried_again_until_it_accepts(tmp_path, caplog):
    """The device starts while the broker is away; the broker comes back refusing its password (a password
    file not set up yet), then accepts it: one error that says so, no false "reconnecting", events delivered."""
    if shutil.which("mosquitto_passwd") is None or not os.path.exists(MOSQUITTO):
        pytest.skip("mosquitto and mosquitto_passwd are needed")
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "edge", "other"], check=True)
    port = free_port()
    options = mqtt_options_from_url(f"mqtt://edge:s3cret@127.0.0.1:{port}", spool_dir=str(tmp_path / "spool"),
                                    ha_discovery=False, reconnect_max_delay_s=1)
    with caplog.at_level("INFO", logger="edgesense.sinks.mqtt"):
        sink = MqttSink(options)
        sink.emit(command("w0"))
        broker = Broker(tmp_path / "broker", ("allow_anonymous false", f"password_file {passwords}"), port=port)
        try:
            deadline = time.monotonic() + WAIT_S
            while "refused the connection" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(2.5)  # paho tries again meanwhile
            refusals = [r for r in caplog.records if "refused the connection" in r.getMessage()]
            assert len(refusals) == 1 and refusals[0].levelname == "ERROR", caplog.text
            assert "Not authori" in refusals[0].getMessage() and "trying again" in refusals[0].getMessage()
            assert "s3cret" not in caplog.text and "reconnecting" not in caplog.text
            broker.stop()
            subprocess.run(["mosquitto_passwd", "-b", str(passwords), "edge", "s3cret"], check=True)
            broker.start()  # the password is right now
            deadline = time.monotonic() + WAIT_S
            while not sink.connected and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sink.connected and "accepts the connection again" in caplog.text
            sink.emit(command("w1"))
            sink.flush()
            assert len(sink.spool) == 0 and sink.delivery.delivered == 2  # w0 (spooled while refused) and w1
            sink.close()
            assert sink.lost_events == 0
        finally:
            broker.stop()


def _acl_broker(start_broker, tmp_path: Path) -> tuple[Broker, Path]:
    """mosquitto with users ``edge`` (password ``s3cret``), which its ACL lets publish ``edgesense/status`` alone,
    and ``reader`` (``r3ader``), which may read ``edgesense/#``; the ACL file, to be rewritten and reloaded."""
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd is not installed")
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "edge", "s3cret"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwords), "reader", "r3ader"], check=True)
    acl = tmp_path / "acl"
    acl.write_text("user edge\ntopic readwrite edgesense/status\n\nuser reader\ntopic read edgesense/#\n")
    broker = start_broker("allow_anonymous false", f"password_file {passwords}", f"acl_file {acl}")
    return broker, acl


def test_events_a_broker_s_acl_refuses_stay_spooled_are_said_once_and_are_delivered_once_it_allows_them(
        start_broker, tmp_path, caplog):
    """A broker that accepts the connection and whose ACL refuses the event topics: under MQTT 3.1.1 it
    acknowledged each refused publish as one it kept, the events left the spool, counted delivered, and nothing
    said so (lost in silence). Under MQTT 5 its PUBACK says "Not authorized": the events stay spooled, are
    offered again every resend_after_s (not in a busy loop), one error says so, and they go out once the ACL
    allows them."""
    broker, acl = _acl_broker(start_broker, tmp_path)
    live = Subscriber(broker, "edgesense/command", qos=1, auth=("reader", "r3ader"))
    options = mqtt_options_from_url(f"mqtt://edge:s3cret@{broker.host}:{broker.port}", ha_discovery=False,
                                    spool_dir=str(tmp_path / "spool"), publish_timeout_s=1.0)
    with caplog.at_level("INFO", logger="edgesense.sinks"):
        sink = MqttSink(options, delivery_options=DeliveryOptions(resend_after_s=0.5, idle_wait_s=0.1))
        try:
            sink.emit(command("w0", t_ms=1.0))
            sink.emit(command("w1", t_ms=2.0))
            sink.flush()
            assert (len(sink.spool), sink.delivery.delivered, sink.lost_events) == (2, 0, 0)
            started = time.monotonic()
            time.sleep(2.0)
            assert len(sink.spool) == 2
            elapsed = time.monotonic() - started + options.publish_timeout_s
            # 2 events x (event, state) refused at every offer: more than once, and once per resend_after_s
            assert 4 < sink.refused <= 4 * (elapsed / 0.5 + 2), sink.refused
            errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
            assert len(errors) == 1, caplog.text
            assert f"broker {broker.host}:{broker.port}" in errors[0] and "edgesense/command" in errors[0]
            assert "Not authorized" in errors[0] and str(tmp_path / "spool") in errors[0], errors[0]
            assert "s3cret" not in caplog.text
            live.assert_quiet()

            acl.write_text("user edge\ntopic readwrite edgesense/#\n\nuser reader\ntopic read edgesense/#\n")
            broker.process.send_signal(signal.SIGHUP)  # mosquitto reloads its ACL; the connection stays
            assert sink.delivery.wait_delivered(2, WAIT_S), caplog.text
            got = [json.loads(live.messages.get(timeout=WAIT_S).payload)["label"] for _ in range(2)]
            while not live.messages.empty():  # at least once: an offer in flight at the reload may come twice
                got.append(json.loads(live.messages.get_nowait().payload)["label"])
            # both, each at least once; in their order but where the ACL changed between the two offers of a
            # retry (w0 refused just before the reload, w1 accepted just after: w0 comes with the next retry)
            assert sorted(set(got)) == ["w0", "w1"]
            again = [r for r in caplog.records if "accepts messages to" in r.getMessage()]
            assert len(again) == 1 and "edgesense/command" in again[0].getMessage(), caplog.text
            assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1
            assert (len(sink.spool), sink.delivery.delivered) == (0, 2)
        finally:
            sink.close()
            live.close()
    assert sink.lost_events == 0


def test_a_broker_that_refuses_discovery_alone_is_said_once_per_topic_and_no_event_is_taken_for_refused(
        start_broker, tmp_path, caplog):
    """An ACL that lets the device publish its own topics and not Home Assistant's (a common one): the refused
    discovery configs were taken for refused events ("refused events wait in the spool"), and from then on a
    broker that hangs read as one that refuses the events. Now each refused discovery topic is one error saying
    that events are not concerned, and the events go out as before."""
    broker, acl = _acl_broker(start_broker, tmp_path)
    acl.write_text("user edge\ntopic readwrite edgesense/#\n\nuser reader\ntopic read edgesense/#\n")
    broker.process.send_signal(signal.SIGHUP)  # mosquitto reloads its ACL
    time.sleep(0.5)
    options = mqtt_options_from_url(f"mqtt://edge:s3cret@{broker.host}:{broker.port}", ha_discovery=True,
                                    spool_dir=str(tmp_path / "spool"), publish_timeout_s=2.0)
    with caplog.at_level("INFO", logger="edgesense.sinks"):
        sink = MqttSink(options)
        try:
            sink.emit(command("w0"))
            sink.flush()
            assert sink.delivery.wait_delivered(1, WAIT_S)
            assert sink.refused > 0 and sink._refusal_reason is None
        finally:
            sink.close()
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors and all("homeassistant/" in e and "events are not concerned" in e for e in errors), caplog.text
    assert len(errors) == len(set(errors)) and "refused events wait" not in caplog.text
    assert sink.lost_events == 0


def test_a_connection_taken_over_again_and_again_is_not_a_warning_each_time(broker, monkeypatch, caplog):
    """Two devices of one client id (a cloned SD card keeps the host name and /etc/machine-id the default id comes
    from) take the broker's connection from each other every second or two: each disconnect was a warning, some
    forty thousand lines a day a device. Now the first at once, the next at most once per LOG_INTERVAL_S (3 s here)
    with how many it covers and the likeliest cause."""
    import edgesense.pacing as pacing

    monkeypatch.setattr(pacing, "LOG_INTERVAL_S", 3.0)
    options = dataclasses.replace(mqtt_options_from_url(f"mqtt://{broker.host}:{broker.port}", ha_discovery=False,
                                                        spool_dir=None), client_id="edgesense-raspberrypi")
    with caplog.at_level(logging.DEBUG, logger="edgesense.sinks.mqtt"):
        one, two = MqttSink(options), MqttSink(options)
        try:
            time.sleep(7.0)
        finally:
            one.close()
            two.close()
    dropped = [r for r in caplog.records if "disconnected from" in r.getMessage()]
    warned = [r.getMessage() for r in dropped if r.levelno >= logging.WARNING]
    assert len(dropped) >= 5 and 2 <= len(warned) <= 6, caplog.text  # one and two: at most 3 lines each
    assert any("disconnects since the last such line" in w and "same client id" in w for w in warned), warned


def test_without_a_spool_events_a_broker_s_acl_refuses_are_counted_lost_and_said_once(start_broker, tmp_path,
                                                                                       caplog):
    """Without a spool a refused event is gone: it is counted in lost_events (``edgesense run`` exits 1), with
    one error line for the outage, not one per message; under MQTT 3.1.1 it was counted delivered."""
    broker, _ = _acl_broker(start_broker, tmp_path)
    with caplog.at_level("INFO", logger="edgesense.sinks"):
        sink = MqttSink(mqtt_options_from_url(f"mqtt://edge:s3cret@{broker.host}:{broker.port}",
                                              ha_discovery=False, publish_timeout_s=2.0))
        try:
            sink.emit(command("w0"))
            sink.emit(command("w1"))
            sink.flush()
            assert sink.lost_events == 2
            assert (sink.failed, sink.refused) == (4, 4)  # the /state messages are no events
        finally:
            sink.close()
    assert sink.lost_events == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "Not authorized" in errors[0] and "edgesense/command" in errors[0], caplog.text
    assert "lost" in errors[0]


@pytest.mark.parametrize("spooled", [False, True], ids=["memory", "spool"])
def test_a_broker_that_speaks_mqtt_3_1_1_only_is_spoken_to_in_3_1_1_after_one_info_line(broker, tmp_path, caplog,
                                                                                        spooled):
    """The sink speaks MQTT 5 (its PUBACK says when the broker refuses a message); a broker that speaks 3.1.1 only
    refuses an MQTT 5 CONNECT ("Unsupported protocol version"): the sink falls back to 3.1.1 once, says so in one
    info line, and works as before, reconnections included. (The 3.1.1-only broker is a stand-in at the socket:
    mosquitto cannot be told to refuse MQTT 5; past the CONNECT it relays to a real mosquitto.)"""
    stand_in = Mqtt311Only(broker)
    live = Subscriber(broker, "edgesense/#")
    options = MqttOptions(host=stand_in.host, port=stand_in.port, ha_discovery=False, reconnect_max_delay_s=1,
                          spool_dir=str(tmp_path / "spool") if spooled else None)
    try:
        with caplog.at_level("INFO", logger="edgesense.sinks"):
            started = time.monotonic()
            sink = MqttSink(options)
            assert sink.connected and time.monotonic() - started < 5.0  # paho's next try, 1 s later, in 3.1.1
            sink.emit(command("w0"))
            sink.flush()
            got = live.collect(3)  # online, the event and its state
            assert [json.loads(m.payload)["label"] for m in got["edgesense/command"]] == ["w0"]
            stand_in.drop_connections()  # the broker restarts: the next connection is 3.1.1 at once
            deadline = time.monotonic() + WAIT_S
            while sink.connected and time.monotonic() < deadline:
                time.sleep(0.02)
            while not sink.connected and time.monotonic() < deadline:
                time.sleep(0.02)
            assert sink.connected
            sink.emit(command("w1"))
            sink.flush()
            sink.close()
        assert (stand_in.refused, stand_in.relayed) == (1, 2)
        assert (sink.lost_events, sink.failed) == (0, 0)
        labels = [json.loads(m.payload)["label"] for m in live.collect(4)["edgesense/command"]]  # + online, offline
        assert labels == ["w1"]
        falls = [r for r in caplog.records if "does not speak MQTT 5" in r.getMessage()]
        assert len(falls) == 1 and falls[0].levelname == "INFO", caplog.text
        assert "Unsupported protocol version" in falls[0].getMessage() and "3.1.1" in falls[0].getMessage()
        assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
        assert "refused the connection" not in caplog.text and caplog.text.count("disconnected") == 1, caplog.text
    finally:
        live.close()
        stand_in.stop()


def test_mqtts_with_a_private_ca(start_broker, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    ca, cert, key = make_tls_files(tmp_path)
    broker = start_broker("allow_anonymous true", f"cafile {ca}", f"certfile {cert}", f"keyfile {key}")
    sink = MqttSink(mqtt_options_from_url(f"mqtts://{broker.host}:{broker.port}/tls?ca_certs={ca}",
                                          ha_discovery=False))
    sink.emit(command("go"))
    sink.flush()
    assert sink.connected and sink.failed == 0
    sink.close()
    # Without trusting the private CA the handshake fails.
    with pytest.raises(RuntimeError, match="cannot connect"):
        MqttSink(mqtt_options_from_url(f"mqtts://{broker.host}:{broker.port}"))


def test_mqtt_options_validation(tmp_path):
    with pytest.raises(ValueError, match="node_id"):
        MqttOptions(host="h", node_id="has space")
    with pytest.raises(ValueError, match="ca_certs"):
        MqttOptions(host="h", tls=True, ca_certs=str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="username"):
        MqttOptions(host="h", password="x")


def test_two_devices_with_the_same_config_keep_their_own_topics_and_entities(broker):
    """Two Pis with the stock config: their device ids (host name + machine id) keep them apart."""
    from edgesense.sinks.outputs import OutputsOptions

    outputs = OutputsOptions(mqtt=f"mqtt://{broker.host}:{broker.port}", mqtt_spool_dir=None)
    live = Subscriber(broker, "homeassistant/#", "edgesense/#")
    sinks = [MqttSink(outputs.mqtt_options(node_id=node, device_name="rpi5"))
             for node in ("raspberrypi-3d1219c7", "raspberrypi-77e0c1d2")]
    for sink in sinks:
        sink.emit(command())
        sink.flush()
    got = live.collect(2 * (1 + 2 + 2))  # per device: status, 2 discovery configs, event and state
    configs = {topic: json.loads(msgs[0].payload) for topic, msgs in got.items() if topic.startswith("homeassistant/")}
    assert len(configs) == 4
    assert len({c["unique_id"] for c in configs.values()}) == 4
    assert {tuple(c["device"]["identifiers"]) for c in configs.values()} == {("raspberrypi-3d1219c7",),
                                                                            ("raspberrypi-77e0c1d2",)}
    assert {"edgesense/raspberrypi-3d1219c7/command", "edgesense/raspberrypi-77e0c1d2/command"} <= set(got)
    for sink in sinks:
        sink.close()
    live.close()


def test_a_misspelt_device_id_placeholder_in_the_url_is_refused_as_in_topic_prefix():
    from edgesense.sinks.outputs import OutputsOptions

    with pytest.raises(ValueError, match=r"^mqtt: the URL's topic prefix: expected \{device_id\} as the only "
                                         r"placeholder, got 'home/\{devce_id\}'$"):
        OutputsOptions(mqtt="mqtt://broker.lan/home/{devce_id}")
    with pytest.raises(ValueError, match="topic_prefix"):
        OutputsOptions(topic_prefix="home/{devce_id}")  # the same mistake in topic_prefix, as before
    url = OutputsOptions(mqtt="mqtt://broker.lan/home/{device_id}")
    assert url.mqtt_options(node_id="pi", device_name="Pi").topic_prefix == "home/pi"


def test_a_node_id_in_the_url_is_used_not_silently_replaced_by_the_device_id(tmp_path, monkeypatch):
    """`--mqtt 'mqtt://broker/?node_id=kitchen'` was accepted (node_id is one of the URL's parameters) and then
    replaced by the device id: Home Assistant's node, the entities' ids and the topics kept the device id."""
    from edgesense.sinks.outputs import OutputsOptions

    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    options = OutputsOptions(mqtt="mqtt://broker.lan?node_id=kitchen&qos=2").mqtt_options(
        node_id="raspberrypi-3d1219c7", device_name="Pi")
    assert (options.node_id, options.qos, options.topic_prefix) == ("kitchen", 2, "edgesense/kitchen")
    assert options.discovery_topic("scene") == "homeassistant/sensor/kitchen/scene/config"
    assert options.spool_dir == str(tmp_path / "edgesense" / "spool" / "kitchen")
    # Without one in the URL the device id names them, as before.
    plain = OutputsOptions(mqtt="mqtt://broker.lan").mqtt_options(node_id="raspberrypi-3d1219c7", device_name="Pi")
    assert (plain.node_id, plain.topic_prefix) == ("raspberrypi-3d1219c7", "edgesense/raspberrypi-3d1219c7")
    with pytest.raises(ValueError, match=r"^mqtt: node_id: expected letters, digits"):
        OutputsOptions(mqtt="mqtt://broker.lan?node_id=my%20kitchen")
