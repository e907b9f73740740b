"""Running ``edgesense`` as a user does: in a subprocess, reading what it prints."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping

ERROR_PREFIX = "edgesense: error:"
#: A line of our own logging (edge/app/cli.py's format), e.g. "2026-01-01 10:00:00,123 INFO edgesense...: ...".
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING) edgesense")
#: The one line LiteRT prints itself when its CPU delegate starts.
LITERT_LINE = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


def hang_up_as_a_shell_would() -> None:
    """A child's SIGHUP at its default action, as a shell starts a command (a ``preexec_fn``): the tests' own process
    may ignore it (pytest under ``nohup``), and the child would inherit that."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def edgesense(*args: object, cwd: str | os.PathLike[str] | None = None, env: Mapping[str, str | None] | None = None,
              timeout: float = 300, python: str = sys.executable) -> subprocess.CompletedProcess:
    """``python -m edgesense.app.cli ARGS`` (``env`` is added to this process's environment; None unsets)."""
    full = {**os.environ, **(env or {})}
    return subprocess.run([python, "-m", "edgesense.app.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={k: v for k, v in full.items() if v is not None}, timeout=timeout, check=False)


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one error line of a run that failed with exit 2; nothing else in stderr but our own log
    lines before it (no traceback, no OpenCV/FFmpeg chatter, no TensorFlow start-up logs)."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith(ERROR_PREFIX), proc.stderr
    others = [line for line in lines[:-1] if not (LOG_LINE.match(line) or line == LITERT_LINE)]
    assert not others, proc.stderr
    return lines[-1]


def only_line(proc: subprocess.CompletedProcess) -> str:
    """Like :func:`error_line`, and stderr holds nothing else at all."""
    line = error_line(proc)
    assert proc.stderr.strip() == line, proc.stderr
    return line


def folder_files(path: Path) -> list[str]:
    return sorted(p.name for p in Path(path).iterdir())


def interrupted_once_a_wav_is_under(argv: list[str], out: Path, *, timeout_s: float = 120.0,
                                    sig: signal.Signals = signal.SIGINT) -> tuple[int, str]:
    """Run ``edgesense ARGV`` as a terminal does and press Ctrl-C (SIGINT to its process group) once
    a WAV is under ``out``; its exit code and stderr. ``sig=signal.SIGTERM``: stopped as ``kill`` or
    ``timeout`` does instead."""
    proc = subprocess.Popen([sys.executable, "-m", "edgesense.app.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while not any(out.rglob("*.wav")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=timeout_s)
    return proc.returncode, err
