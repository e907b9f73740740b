"""``edgesense run`` as a systemd service logs to the journal: each line at its own priority."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_as_a_service(tmp_path: Path, *args: str) -> tuple[int, list[str]]:
    """``edgesense ARGS`` with stderr on a file that ``JOURNAL_STREAM`` names, as systemd starts a unit whose
    stderr is the journal; its exit code and stderr's lines."""
    log = tmp_path / "journal-stream"
    with log.open("w") as stderr:
        info = os.fstat(stderr.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}", "XDG_STATE_HOME": str(tmp_path / "st")}
        env.pop("STATE_DIRECTORY", None)
        proc = subprocess.run([sys.executable, "-m", "edgesense.app.cli", *args], stdout=subprocess.DEVNULL,
                              stderr=stderr, env=env, cwd=REPO, timeout=300, check=False)
    return proc.returncode, log.read_text().splitlines()


def test_under_systemd_each_log_line_carries_its_priority_for_the_journal(tmp_path):
    """Under systemd stderr goes to the journal, which stored every line at priority "info": the service's
    warnings (a broker away) and its errors were not there for ``journalctl -p warning``, and every line held a
    second time stamp. Now each line starts with its syslog priority (``<4>`` a warning, ``<6>`` info), which the
    journal takes and removes."""
    code, lines = run_as_a_service(tmp_path, "run", "--config", "firmware_configs/desktop.yaml", "--audio",
                                   "samples/commands.wav", "--fast", "--headless", "--duration-s", "2", "--events",
                                   str(tmp_path / "events.jsonl"), "--mqtt", f"mqtt://127.0.0.1:{free_port()}")
    ours = [line for line in lines if "edgesense." in line]
    assert code == 0 and ours, lines
    unreachable = next(line for line in ours if "unreachable" in line)
    assert unreachable.startswith("<4>WARNING edgesense.sinks.mqtt: mqtt: broker 127.0.0.1:"), unreachable
    assert all(re.match(r"<[2-7]>(DEBUG|INFO|WARNING|ERROR|CRITICAL) edgesense\.", line) for line in ours), ours


def test_under_systemd_the_error_that_ends_the_run_is_an_error_in_the_journal(tmp_path):
    code, lines = run_as_a_service(tmp_path, "run", "--config", str(tmp_path / "missing.yaml"))
    assert code == 2 and lines[-1].startswith("<3>edgesense: error: "), lines


def test_outside_systemd_lines_are_as_before(tmp_path):
    env = {**os.environ}
    env.pop("JOURNAL_STREAM", None)
    proc = subprocess.run([sys.executable, "-m", "edgesense.app.cli", "run", "--config", str(tmp_path / "no.yaml")],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("edgesense: error: "), proc.stderr


def test_under_systemd_a_usage_error_is_an_error_in_the_journal(tmp_path):
    """A unit whose command line is wrong (a flag an upgrade renamed, no command) said so at priority "info"."""
    code, lines = run_as_a_service(tmp_path, "run", "--no-such-flag")
    assert code == 2 and re.match(r"<3>edgesense run: error: ", lines[-1]), lines
    code, lines = run_as_a_service(tmp_path)
    assert code == 2 and lines[-1].startswith("<3>edgesense: error: expected a COMMAND"), lines
