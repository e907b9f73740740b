"""systemd's service notifications (``sd_notify(3)``) for ``edgesense run``, in the standard library only.

Under a unit with ``Type=notify`` the service manager passes a datagram socket in ``$NOTIFY_SOCKET`` (a path, or
an abstract name starting with ``@``) and, with ``WatchdogSec=``, the watchdog period in ``$WATCHDOG_USEC`` (for
the process ``$WATCHDOG_PID``, when set). :class:`ServiceNotifier` says ``READY=1`` when the loop starts,
``WATCHDOG=1`` as the loop goes round (at most every half period, as ``sd_watchdog_enabled(3)`` recommends: the
loop's own thread calls :meth:`ServiceNotifier.alive`, so a loop that hangs stops the pings and is restarted) and
``STOPPING=1`` when it ends, each with a short ``STATUS=`` line. Without ``$NOTIFY_SOCKET`` it does nothing.
A message that cannot be sent is one warning, never an error: the device goes on.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable, Mapping

__all__ = ["ServiceNotifier"]

logger = logging.getLogger(__name__)

US_PER_S = 1_000_000
#: How long a message waits for room in the service manager's queue (busy at boot: every service shares it)
#: before it is given up, with a warning: bounded, so that the loop's thread never hangs on it.
SEND_TIMEOUT_S = 1.0


class ServiceNotifier:
    """``sd_notify`` over ``socket_path`` (``None``: every call does nothing). ``watchdog_s``: the watchdog
    period (``None``: no watchdog); ``clock``: monotonic seconds."""

    def __init__(self, socket_path: str | None, *, watchdog_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._address: str | bytes | None = None
        if socket_path:
            if socket_path.startswith("@"):  # an abstract socket: a NUL byte before the name
                self._address = b"\0" + socket_path[1:].encode()
            elif socket_path.startswith("/"):
                self._address = socket_path
            else:  # e.g. vsock:..., which this minimal client does not speak
                logger.warning("NOTIFY_SOCKET %r: expected a path or an @abstract name; systemd is not notified",
                               socket_path)
        self.watchdog_s = watchdog_s if self._address is not None else None
        self._clock = clock
        self._socket: socket.socket | None = None
        self._last_ping_s: float | None = None
        self._failing = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> "ServiceNotifier":
        """The notifier the service manager asks for: ``$NOTIFY_SOCKET``, and the watchdog when
        ``$WATCHDOG_USEC`` is a positive integer and ``$WATCHDOG_PID`` unset or this process."""
        env = os.environ if environ is None else environ
        watchdog_s = None
        usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
        if usec is not None and usec.isdigit() and int(usec) > 0:
            if pid is None or (pid.isdigit() and int(pid) == os.getpid()):
                watchdog_s = int(usec) / US_PER_S
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog_s=watchdog_s)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *assignments: str) -> None:
        """Send ``assignments`` (``"READY=1"``, ``"STATUS=..."``) as one message."""
        if self._address is None:
            return
        message = "\n".join(a.replace("\n", " ") for a in assignments).encode("utf-8", "replace")
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.settimeout(SEND_TIMEOUT_S)
            self._socket.sendto(message, self._address)
        except OSError as exc:
            if not self._failing:
                self._failing = True
                logger.warning("systemd notification socket %r: %s; the service manager may take the service for "
                               "hung and restart it", self._address, exc.strerror or exc)
            return
        if self._failing:
            self._failing = False
            logger.warning("systemd notification socket %r: notifications go through again", self._address)

    def ready(self, status: str) -> None:
        """``READY=1``: start-up is over (the watchdog period counts from here)."""
        self.notify("READY=1", f"STATUS={status}")
        self._last_ping_s = self._clock()

    def alive(self, status: Callable[[], str] | None = None) -> None:
        """``WATCHDOG=1`` when half the watchdog period has gone since the last (cheap otherwise: call it from the
        loop's own thread, every round); ``status()`` is asked for its ``STATUS=`` line only then."""
        if self.watchdog_s is None:
            return
        now = self._clock()
        if self._last_ping_s is not None and now - self._last_ping_s < self.watchdog_s / 2:
            return
        self._last_ping_s = now
        self.notify("WATCHDOG=1", *(() if status is None else (f"STATUS={status()}",)))

    def stopping(self, status: str) -> None:
        """``STOPPING=1``: the run is over, the process cleans up and exits."""
        self.notify("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
