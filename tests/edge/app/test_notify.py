"""systemd's notifications from ``edgesense run`` (``edgesense.app.notify``): a real AF_UNIX datagram socket stands
in for the service manager's ``$NOTIFY_SOCKET``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from edgesense.app.notify import ServiceNotifier

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = ROOT / "samples"


@pytest.fixture
def notify_socket():
    """A bound datagram socket in a short folder (a socket path holds at most 107 bytes)."""
    folder = tempfile.mkdtemp(prefix="es-notify-", dir="/tmp")
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    yield sock, path
    sock.close()
    os.unlink(path)
    os.rmdir(folder)


class Collector:
    """Receives messages on ``sock`` on a thread until :meth:`stop`."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.messages = sock, []
        sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                if self._stop.is_set():
                    return

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(10)
        return self.messages


def test_edgesense_run_says_ready_watchdog_and_stopping(notify_socket, tmp_path):
    """The real ``edgesense run`` on the bundled samples under a stand-in service manager: READY=1 first, then
    WATCHDOG=1 (the period is 20 ms, so the loop pings every 10 ms or so), STOPPING=1 last, each with a STATUS=."""
    sock, path = notify_socket
    collector = Collector(sock)
    events = tmp_path / "events.jsonl"
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="20000")
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.run(
        [sys.executable, "-m", "edgesense.app.cli", "run", "--config", "desktop", "--audio",
         str(SAMPLES / "speech_commands.wav"), "--video", str(SAMPLES / "scene.mp4"), "--fast", "--headless",
         "--events", str(events)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    messages = collector.stop()
    assert proc.returncode == 0, proc.stderr
    assert messages, proc.stderr
    assert messages[0].splitlines()[0] == "READY=1" and messages[0].splitlines()[1].startswith("STATUS=running ")
    assert messages[-1].splitlines()[0] == "STOPPING=1" and "scene events" in messages[-1]
    pings = [m for m in messages[1:-1] if m.splitlines()[0] == "WATCHDOG=1"]
    assert pings and len(pings) == len(messages) - 2
    assert all(m.splitlines()[1].startswith("STATUS=") and "command and" in m for m in pings)
    assert events.read_text().count("\n") >= 1


def test_without_notify_socket_nothing_is_sent():
    notifier = ServiceNotifier.from_environment({"WATCHDOG_USEC": "20000"})
    assert not notifier.enabled and notifier.watchdog_s is None
    notifier.ready("running")  # no socket, no error
    notifier.alive()
    notifier.stopping("stopping")


@pytest.mark.parametrize("pid, usec, expected_s", [
    (None, "30000000", 30.0),  # no WATCHDOG_PID: for this process
    ("self", "30000000", 30.0),
    ("1", "30000000", None),  # another process's watchdog (a child inherited the variables)
    (None, "0", None), (None, "abc", None), (None, "-5", None), ("x", "30000000", None),
])
def test_the_watchdog_follows_sd_watchdog_enabled(pid, usec, expected_s):
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": usec}
    if pid is not None:
        env["WATCHDOG_PID"] = str(os.getpid()) if pid == "self" else pid
    assert ServiceNotifier.from_environment(env).watchdog_s == expected_s


def test_an_abstract_socket_and_the_pings_at_most_every_half_period():
    name = f"edgesense-test-notify-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(5)
    now = [100.0]
    notifier = ServiceNotifier(f"@{name}", watchdog_s=10.0, clock=lambda: now[0])
    try:
        notifier.ready("running kitchen")
        assert sock.recv(4096) == b"READY=1\nSTATUS=running kitchen"
        asked = []
        for t in (101.0, 104.9, 105.0, 106.0, 110.1):  # pings at 105.0 and 110.1 only
            now[0] = t
            notifier.alive(lambda: asked.append(t) or f"at {t}")
        assert asked == [105.0, 110.1]  # the status is made only for a ping
        assert [sock.recv(4096), sock.recv(4096)] == [b"WATCHDOG=1\nSTATUS=at 105.0", b"WATCHDOG=1\nSTATUS=at 110.1"]
        notifier.stopping("stopping:\n2 events")  # one line per assignment
        assert sock.recv(4096) == b"STOPPING=1\nSTATUS=stopping: 2 events"
    finally:
        notifier.close()
        sock.close()


def test_a_socket_that_cannot_be_reached_is_one_warning_and_never_an_error(tmp_path, caplog):
    notifier = ServiceNotifier(str(tmp_path / "nobody-listens"), watchdog_s=0.001)
    try:
        notifier.ready("running")
        for _ in range(5):
            notifier.alive()
        notifier.stopping("stopping")
    finally:  # as edgesense run does: left open, its socket's ResourceWarning came in a later test, failing it
        notifier.close()
    warnings = [r.getMessage() for r in caplog.records if "systemd notification socket" in r.getMessage()]
    assert len(warnings) == 1 and "nobody-listens" in warnings[0]


def test_the_watchdog_s_status_line_copies_no_statistics(notify_socket, tmp_path, monkeypatch):
    """Each WATCHDOG=1's STATUS= line (the loop's own thread, every half period) read ``pipeline.stats`` for its two
    counts: a copy of every stage's latency window, up to 10 000 floats each (3 MB and 4 ms here at every ping).
    Now it reads the two counters: the windows are copied at the end only (the result of Pipeline.run, the
    summary), however many pings there were."""
    from edgesense.app.cli import main
    from edgesense.loop.stats import LatencyWindow

    copied: list[int] = []
    values = LatencyWindow.values

    def counted_values(self):
        copied.append(id(self))
        return values(self)

    monkeypatch.setattr(LatencyWindow, "values", counted_values)
    sock, path = notify_socket
    collector = Collector(sock)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "20000")  # a ping every 10 ms or so
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    rc = main(["run", "--config", "desktop", "--audio", str(SAMPLES / "speech_commands.wav"), "--fast",
               "--headless", "--events", str(tmp_path / "events.jsonl")])
    messages = collector.stop()
    pings = [m for m in messages if m.startswith("WATCHDOG=1\nSTATUS=") and "scene events so far" in m]
    assert rc == 0 and len(pings) >= 5, messages
    windows = set(copied)
    assert len(copied) <= 2 * len(windows), f"{len(copied)} copies of {len(windows)} windows, {len(pings)} pings"
