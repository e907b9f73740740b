"""Log lines about conditions that last or keep coming back on a device that runs for months (a camera that drops
a read every few seconds, a microphone whose driver loses audio, a disk that stays full, a sink that raises): said
when they start, at most once per :data:`LOG_INTERVAL_S` while they last or recur, with a count, and when they end,
never a line per hop, frame or event into the journal of an SD card. Used by the sources, the sinks and the loop."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

__all__ = ["LOG_INTERVAL_S", "Outage", "Paced"]


#: Lines about a condition that lasts or keeps coming back (a camera that drops a read every few seconds, a
#: microphone whose driver loses audio, a sink that fails every other event): at most one per this many seconds,
#: with a count of what it covers (:class:`Paced`, :class:`Outage`). Read when a line is due: tests may shorten it.
LOG_INTERVAL_S = 600.0


class Paced:
    """A recurring condition's log line, at most one per ``interval_s`` (``None``: :data:`LOG_INTERVAL_S`): the
    first at once, the next once the interval has passed since the last one said. :meth:`due` notes one more
    occurrence and says whether its line is due, and how many occurrences it covers (those since the last line,
    this one included; the others go to the debug log). ``clock``: monotonic seconds (``None``: ``time.monotonic``)."""

    def __init__(self, *, interval_s: float | None = None, clock: Callable[[], float] | None = None) -> None:
        self.interval_s = interval_s
        self.occurrences = 0  #: every occurrence noted
        self._clock = clock
        self._said_s: float | None = None  # the clock when the last line was said (None: never)
        self._unsaid = 0  # occurrences since that line

    def due(self, *, new: bool = True) -> int:
        """One more occurrence (``new=False``: none, only whether the unsaid ones' line is due now); the number of
        occurrences the line covers when it is due, else 0."""
        if new:
            self.occurrences += 1
            self._unsaid += 1
        now = time.monotonic() if self._clock is None else self._clock()
        if not self._unsaid or (self._said_s is not None and now - self._said_s < self.effective_interval_s):
            return 0
        covered, self._unsaid, self._said_s = self._unsaid, 0, now
        return covered

    @property
    def effective_interval_s(self) -> float:
        return LOG_INTERVAL_S if self.interval_s is None else self.interval_s

    def say(self, log: logging.Logger, level: int, message: str, *args: Any, what: str = "times") -> None:
        """One more occurrence: ``message % args`` at ``level`` when its line is due, with what it covers
        (:meth:`covering`) after it, else at debug."""
        covered = self.due()
        log.log(level if covered else logging.DEBUG, message + self.covering(covered, what).replace("%", "%%"), *args)

    def covering(self, covered: int, what: str = "times") -> str:
        """What a line that covers ``covered`` occurrences adds to its message: nothing for its own alone."""
        if covered <= 1:
            return ""
        return f" ({covered} {what} since the last such line, said at most every {self.effective_interval_s:g} s)"


class Outage:
    """Failures of one kind (writes to a full disk, a spool that cannot store, a sink that raises, a camera that
    gives no frame), said once per run of them however long it lasts: a warning when it starts, the failures after
    it at debug, and a warning with their count when it ends (:meth:`succeeded`). :attr:`failures` counts them all.

    Outages that keep coming back (a camera that drops a read every few seconds: a short outage each) are paced
    (:class:`Paced`, ``interval_s``): the start of one is said at most once per interval, with how many came since
    the last one said, and only an outage whose start was said has its end said. One that starts within the
    interval is said when the interval has passed, at one of its later failures, if it lasts that long.
    ``debug_each``: the failures not said are debug lines (False: silent; a retry every 100 ms of a camera out for a
    day is no line each, even at debug)."""

    def __init__(self, log: logging.Logger, *, interval_s: float | None = None,
                 clock: Callable[[], float] | None = None, debug_each: bool = True) -> None:
        self.failures = 0
        self._log = log
        self._debug_each = debug_each
        self._starts = Paced(interval_s=interval_s, clock=clock)
        self._before: int | None = None  # failures when the current outage began (None: no outage)
        self._said = False  # the current outage's start was said

    @property
    def outages(self) -> int:
        """Outages so far (the current one included)."""
        return self._starts.occurrences

    def failed(self, message: str, *args: Any) -> None:
        """One more failure; ``message % args`` is a warning if it starts an outage (or an outage not said yet
        whose line is due now), debug otherwise."""
        starts = self._before is None
        if starts:
            self._before, self._said = self.failures, False
        covered = 0 if self._said else self._starts.due(new=starts)
        if covered:
            self._said = True
            self._log.warning(message + self._starts.covering(covered, "outages").replace("%", "%%"), *args)
        elif self._debug_each:
            self._log.debug(message, *args)
        self.failures += 1

    def succeeded(self, message: str, *args: Any) -> None:
        """It works again: if that ends an outage, ``message % (*args, failures of the outage)`` is a warning
        (debug where the outage's start was not said)."""
        if self._before is not None:
            log = self._log.warning if self._said else self._log.debug
            log(message, *args, self.failures - self._before)
            self._before = None
