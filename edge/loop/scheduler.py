"""Timing pieces of the device loop (:mod:`edgesense.loop.pipeline`): periodic schedules, the
rolling feature window, replayed-video alignment and the live-camera reader thread.

* :class:`PeriodicSchedule`: "is it time again?" on a fixed grid of stream times
  (command hops every ``command_hop_ms``, scene updates at ``scene_rate_hz``).
* :class:`FeatureWindow`: the last ``frames`` log-mel frames (1 s of audio), fed
  with whatever :class:`edgesense.frontend.audio.StreamingAudioFrontend` completes.
* :class:`ReplayVideoAligner`: replayed video read inside the loop. At stream time
  ``t`` it hands out the newest frame with ``t_frame <= t`` (one frame of
  look-ahead, no queue); older unread frames are dropped and counted.
* :class:`LatestFrameReader`: a live camera read on its own thread, keeping only the
  newest frame. A failed read is logged once per outage (outages that keep coming back at most once per
  :data:`edgesense.pacing.LOG_INTERVAL_S`, with their count) and retried (the
  :class:`edgesense.sources.camera.CameraSource` reopens itself with exponential backoff).
  A read that never returns (a capture wedged in its driver) is seen by the loop's thread
  (:meth:`LatestFrameReader.check_stall`), which ends the run: no thread can free it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesense.pacing import Outage
from edgesense.schema.validate import is_number, is_positive, require
from edgesense.sources.base import MAX_BACKOFF_MS, SourceReadError, VideoFrame

__all__ = ["SchedulerOptions", "PeriodicSchedule", "FeatureWindow", "ReplayVideoAligner", "LatestFrameReaderOptions",
           "LatestFrameReader", "CameraStallError"]

logger = logging.getLogger(__name__)


MS_PER_S = 1000.0
EMBEDDING_AGE_PERIODS = 2  #: an embedding counts as present for this many periods of the slower schedule
#: The periods a schedule may have (``command_hop_ms``, ``1000 / scene_rate_hz``): from a millisecond (the unit of
#: stream times, far above :attr:`PeriodicSchedule.TOLERANCE_MS`) to an hour.
MIN_PERIOD_MS = 1.0
MAX_PERIOD_MS = 3_600_000.0
#: The longest pause (ms) of the frame reader after a failed read: an hour, the longest a camera's backoff puts off
#: its reopen (:data:`edgesense.sources.base.MAX_BACKOFF_MS`), past which a retry only waits for nothing. A longer
#: one (1e30) raised OverflowError from the reader thread's wait, naming no option.
MAX_READ_RETRY_MS = MAX_BACKOFF_MS
#: The longest wait (ms) for the frame reader's thread when it stops: a minute. The thread is a daemon, left behind
#: if it has not ended by then; a longer wait only holds up the loop's exit (and 1e30 raised OverflowError in it).
MAX_READER_JOIN_MS = 60_000.0


@dataclass(frozen=True, kw_only=True)
class SchedulerOptions:
    """When the loop runs what (the ``scheduler:`` section of a device config).

    ``command_hop_ms``: stream time between command inferences. ``scene_rate_hz``:
    image-encoder rate. ``embedding_max_age_ms``: an embedding older than this is fused
    as absent (``None``: two periods of the slower of the two schedules).
    """

    command_hop_ms: float = 100.0
    scene_rate_hz: float = 5.0
    embedding_max_age_ms: float | None = None

    def __post_init__(self) -> None:
        require(is_number(self.command_hop_ms) and MIN_PERIOD_MS <= self.command_hop_ms <= MAX_PERIOD_MS,
                "command_hop_ms", f"a number in [{MIN_PERIOD_MS:g}, {MAX_PERIOD_MS:g}] (ms)", self.command_hop_ms)
        require(is_number(self.scene_rate_hz)
                and MS_PER_S / MAX_PERIOD_MS <= self.scene_rate_hz <= MS_PER_S / MIN_PERIOD_MS, "scene_rate_hz",
                f"a number in [{MS_PER_S / MAX_PERIOD_MS:g}, {MS_PER_S / MIN_PERIOD_MS:g}] (Hz)", self.scene_rate_hz)
        require(self.embedding_max_age_ms is None or is_positive(self.embedding_max_age_ms), "embedding_max_age_ms",
                 "null or a positive number", self.embedding_max_age_ms)

    @property
    def scene_period_ms(self) -> float:
        return MS_PER_S / self.scene_rate_hz

    @property
    def max_embedding_age_ms(self) -> float:
        """The effective ``embedding_max_age_ms``."""
        if self.embedding_max_age_ms is not None:
            return float(self.embedding_max_age_ms)
        return EMBEDDING_AGE_PERIODS * max(self.command_hop_ms, self.scene_period_ms)


class PeriodicSchedule:
    """Due once per ``period_ms`` on a fixed grid of stream times.

    The grid starts at ``origin_ms`` (set with :meth:`anchor`; without one, at the
    first time asked). Schedules anchored at the same origin fall due on the same
    ticks, so the loop can serve several of them with one model call. ``due(t_ms)``
    is True at most once per grid cell; when the caller skips cells (a stall), the
    grid jumps forward instead of firing a burst to catch up.
    """

    #: Stream times within this much of a grid time count as on it (float rounding of live clocks).
    TOLERANCE_MS = 1e-6

    def __init__(self, period_ms: float) -> None:
        require(is_positive(period_ms), "period_ms", "a positive number", period_ms)
        self.period_ms = float(period_ms)
        # The grid is origin + tick * period, computed afresh each time: adding an inexact period
        # (1000/3 ms) tick after tick drifts, and after about 3 hours a 3-Hz schedule leaves the grid
        # of a 100-ms one it shared.
        self._origin_ms: float | None = None
        self._tick = 0

    @property
    def next_ms(self) -> float | None:
        return None if self._origin_ms is None else self._origin_ms + self._tick * self.period_ms

    def anchor(self, origin_ms: float) -> None:
        """Put the grid at ``origin_ms + k * period_ms``; the next due time is the origin."""
        self._origin_ms, self._tick = float(origin_ms), 0

    def reset(self) -> None:
        self._origin_ms, self._tick = None, 0

    def due(self, t_ms: float) -> bool:
        """True (and advance the grid past ``t_ms``) when ``t_ms`` reached the next grid time."""
        if self._origin_ms is None:
            self.anchor(t_ms)
        assert self._origin_ms is not None  # anchored above
        next_ms = self._origin_ms + self._tick * self.period_ms
        if t_ms < next_ms - self.TOLERANCE_MS:
            return False
        missed = math.floor((t_ms - next_ms + self.TOLERANCE_MS) / self.period_ms)
        self._tick += missed + 1
        return True


class FeatureWindow:
    """The newest ``frames`` rows of log-mel features, in time order (a preallocated ring)."""

    def __init__(self, frames: int, bins: int) -> None:
        require(isinstance(frames, int) and frames >= 1, "frames", "an integer >= 1", frames)
        require(isinstance(bins, int) and bins >= 1, "bins", "an integer >= 1", bins)
        self._buffer = np.zeros((2 * frames, bins), dtype=np.float32)  # doubled: contiguous reads
        self._frames = frames
        self._count = 0
        self._end = frames  # window = buffer[end - frames:end]

    @property
    def full(self) -> bool:
        return self._count >= self._frames

    @property
    def count(self) -> int:
        """Frames pushed so far (saturates at the window length)."""
        return min(self._count, self._frames)

    def reset(self) -> None:
        self._buffer[:] = 0.0
        self._count = 0
        self._end = self._frames

    def push(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self._buffer.shape[1]:
            raise ValueError(f"rows: expected shape (n, {self._buffer.shape[1]}), got {rows.shape}")
        if rows.shape[0] > self._frames:
            rows = rows[-self._frames:]
        n = rows.shape[0]
        if n == 0:
            return
        if self._end + n > self._buffer.shape[0]:  # slide the live window back to the start
            keep = self._frames - n
            self._buffer[:keep] = self._buffer[self._end - keep:self._end]
            self._end = keep
        self._buffer[self._end:self._end + n] = rows
        self._end += n
        self._count += n

    def view(self) -> np.ndarray:
        """The window (frames, bins): a read-only view, valid until the next :meth:`push`."""
        out = self._buffer[self._end - self._frames:self._end]
        out.flags.writeable = False
        return out


class ReplayVideoAligner:
    """Replayed video aligned to the audio's stream time, read in the caller's thread.

    :meth:`frame_at` returns the newest not-yet-returned frame with ``t_ms <= t``
    (or None); the frames it skipped over are counted in :attr:`dropped`. A source's
    :class:`SourceReadError` (a camera read here, ``live_video=False``) is counted in :attr:`read_failures` and
    said once per outage, with its end (:class:`edgesense.pacing.Outage`), not a line per loop round: it is
    read again at every audio chunk.
    """

    def __init__(self, source: Any) -> None:
        self.source = source
        self._pending: VideoFrame | None = None
        self.ended = False
        self.dropped = 0
        self.read_failures = 0
        self._outage = Outage(logger, debug_each=False)  # read again every round (audio chunk): no line each

    def _next(self) -> VideoFrame | None:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        if self.ended:
            return None
        try:
            frame = self.source.read()
        except SourceReadError as exc:
            self.read_failures += 1
            self._outage.failed("video: %s; no new frames until it recovers", exc)
            return None
        if frame is None:
            self.ended = True
        else:
            self._outage.succeeded("video: recovered, frames resume (%d failed read(s))")
        return frame

    def frame_at(self, t_ms: float) -> VideoFrame | None:
        newest: VideoFrame | None = None
        while True:
            frame = self._next()
            if frame is None:
                break
            if frame.t_ms > t_ms:
                self._pending = frame
                break
            if newest is not None:
                self.dropped += 1
            newest = frame
        return newest

    def next_frame(self) -> VideoFrame | None:
        """The next frame whatever its time (video-only replay drives the clock with it)."""
        return self._next()

    @property
    def exhausted(self) -> bool:
        return self.ended and self._pending is None

    @property
    def read_ahead(self) -> int:
        """Frames read from the source but not handed out yet (0 or 1: the look-ahead past ``t``)."""
        return int(self._pending is not None)


@dataclass(frozen=True, kw_only=True)
class LatestFrameReaderOptions:
    """``retry_ms``: pause after a failed read before trying again (the camera's own
    backoff decides when it actually reopens; a camera that is away is next read when that reopen is due,
    its ``reopen_in_ms``, where that is later); ``join_timeout_ms``: how long
    :meth:`LatestFrameReader.stop` waits for the thread."""

    retry_ms: float = 100.0
    join_timeout_ms: float = 2000.0

    def __post_init__(self) -> None:
        require(is_positive(self.retry_ms) and self.retry_ms <= MAX_READ_RETRY_MS, "retry_ms",
                f"a positive number up to {MAX_READ_RETRY_MS:g} (ms)", self.retry_ms)
        require(is_positive(self.join_timeout_ms) and self.join_timeout_ms <= MAX_READER_JOIN_MS, "join_timeout_ms",
                f"a positive number up to {MAX_READER_JOIN_MS:g} (ms)", self.join_timeout_ms)


class CameraStallError(RuntimeError):
    """A read of the live camera has not returned for its ``stall_timeout_ms``: it is blocked inside the capture
    (a driver, a GStreamer source), where no thread can interrupt it nor the camera be reopened. The process
    must exit for it to be freed (the service manager then restarts it)."""


class LatestFrameReader:
    """Reads a live video source on a daemon thread and keeps only the newest frame.

    :meth:`take` returns the newest frame not taken yet (or None); frames that were
    replaced before anyone took them are counted in :attr:`dropped`. The source's
    :class:`SourceReadError` is survivable: the outage is logged once (and its end; a camera whose outages keep
    coming back, a failed read every few seconds, at most once per :data:`edgesense.pacing.LOG_INTERVAL_S`
    with their count: :class:`edgesense.pacing.Outage`), counted, and the read retried after ``retry_ms``.
    Any other exception ends the thread and is re-raised by :meth:`take`. ``with_audio``: whether audio goes on
    beside the camera (the outage's log line says so; a camera-only loop has none to go on with).

    ``stall_timeout_ms`` (``None``: never): :meth:`check_stall`, called from the loop's thread, warns once
    when the read in progress has not returned for half of it and raises :class:`CameraStallError` when it has
    not for all of it (counted in :attr:`stalls`, the reads that hung past the warning).

    ``decode_on_demand`` (a source with ``grab()`` and ``retrieve()``: a live camera): every frame the camera
    delivers is grabbed (the driver's queue never holds stale frames), and only one the loop asked for with
    :meth:`want` is decoded; the others are counted in :attr:`skipped`. A USB webcam's frame is a JPEG: decoding
    all 15 or 30 a second for the 2 to 5 the image encoder takes cost a Pi's core several ms each.
    """

    def __init__(self, source: Any, options: LatestFrameReaderOptions = LatestFrameReaderOptions(), *,
                 with_audio: bool = True, stall_timeout_ms: float | None = None,
                 decode_on_demand: bool = False) -> None:
        require(stall_timeout_ms is None or is_positive(stall_timeout_ms), "stall_timeout_ms",
                "None or a positive number", stall_timeout_ms)
        require(not decode_on_demand or all(callable(getattr(source, name, None)) for name in ("grab", "retrieve")),
                "decode_on_demand", "False for a source without grab() and retrieve()", decode_on_demand)
        self.decode_on_demand = bool(decode_on_demand)
        self._wanted = False  # decode_on_demand: the loop asked for a frame (want()) and has not got it yet
        self._want_after_ms: float | None = None  # ... one grabbed at or after this time of the source's clock
        self.skipped = 0  #: decode_on_demand: frames grabbed and never decoded (none was wanted)
        self.source = source
        self.options = options
        self.with_audio = bool(with_audio)
        self.stall_timeout_ms = stall_timeout_ms
        self._read_since_s: float | None = None  # monotonic start of the read in progress (None: none)
        self._warned_since_s: float | None = None  # the read whose hang was warned about
        self.stalls = 0
        self.stalled = False  # a read hung past stall_timeout_ms: the thread cannot be stopped
        self._cond = threading.Condition()
        self._frame: VideoFrame | None = None
        self._seq = 0
        self._taken_seq = 0
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self.dropped = 0
        self.read_failures = 0
        self.ended = False
        self._outage = Outage(logger, debug_each=False)  # retried every retry_ms, or at the camera's reopen
        self._thread = threading.Thread(target=self._loop, name="edgesense-camera", daemon=True)

    @property
    def outages(self) -> int:
        """Outages of the camera so far (runs of failed reads)."""
        return self._outage.outages

    def start(self) -> "LatestFrameReader":
        """Start reading; a reader already started goes on (a pipeline's second ``events()`` starts it again)."""
        if self._thread.ident is None:
            self._thread.start()
        return self

    def want(self, after_ms: float | None = None) -> None:
        """``decode_on_demand``: decode the next frame the source delivers (``after_ms``: the first delivered at or
        after that time of its clock), for :meth:`take`; a frame already decoded and not taken stays. Asking again
        before it came replaces the time. Without ``decode_on_demand`` every frame is decoded anyway."""
        with self._cond:
            self._wanted, self._want_after_ms = True, after_ms

    def _read(self) -> VideoFrame | bool | None:
        """The source's next frame, with the start of the read kept for :meth:`check_stall`; with
        ``decode_on_demand``, a frame grabbed and not wanted is skipped: ``False``."""
        if not self.decode_on_demand:
            return self._device(self.source.read)
        t_ms = self._device(self.source.grab)
        if t_ms is None:
            return None
        with self._cond:
            due = self._wanted and (self._want_after_ms is None
                                    or t_ms >= self._want_after_ms - PeriodicSchedule.TOLERANCE_MS)
        if not due:
            self.skipped += 1
            return False
        return self._device(self.source.retrieve)

    def _device(self, call: Any) -> Any:
        """``call()`` (a read of the device), with its start kept for :meth:`check_stall`."""
        since = self._read_since_s = time.monotonic()
        try:
            return call()
        finally:
            self._read_since_s = None
            if self._warned_since_s == since:
                logger.warning("camera: the read returned after %.1f s", time.monotonic() - since)

    def check_stall(self) -> None:
        """From the loop's thread: one warning when the read in progress has hung for half of
        ``stall_timeout_ms``, :class:`CameraStallError` when it has hung for all of it."""
        since, timeout_ms = self._read_since_s, self.stall_timeout_ms
        if since is None or timeout_ms is None:
            return
        hung_ms = (time.monotonic() - since) * MS_PER_S
        if hung_ms < timeout_ms / 2:
            return
        if self._warned_since_s != since:
            self._warned_since_s = since
            self.stalls += 1
            logger.warning("camera: a read from %s has not returned for %.1f s (stalled in its driver?); scene "
                           "events wait for it, and the run ends if it has not returned after %.1f s "
                           "(camera.stall_timeout_ms)", self._describe(), hung_ms / MS_PER_S, timeout_ms / MS_PER_S)
        if hung_ms >= timeout_ms:
            self.stalled = True
            raise CameraStallError(
                f"camera: a read from {self._describe()} has not returned for {hung_ms / MS_PER_S:.1f} s "
                f"(camera.stall_timeout_ms: {timeout_ms:g}): the capture is wedged in its driver or pipeline and "
                "cannot be freed or reopened in this process: the process exits, for its service manager to restart it")

    def _describe(self) -> str:
        return str(getattr(self.source, "description", type(self.source).__name__))

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    frame = self._read()
                except SourceReadError as exc:
                    self.read_failures += 1
                    self._outage.failed("%s; %sscene events paused until it recovers", exc,
                                        "going on with audio only, " if self.with_audio else "")
                    # a camera that is away fails every read until its next reopen attempt: no read before it
                    retry_ms = max(self.options.retry_ms, float(getattr(self.source, "reopen_in_ms", 0.0)))
                    self._stop.wait(retry_ms / MS_PER_S)
                    continue
                if frame is None:
                    break
                self._outage.succeeded("camera: recovered, scene events resume (%d failed read(s))")
                if isinstance(frame, bool):  # grabbed, not wanted: not decoded
                    continue
                with self._cond:
                    if self._seq > self._taken_seq:
                        self.dropped += 1
                    self._frame = frame
                    self._seq += 1
                    self._wanted = False
                    self._cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - handed to the loop's thread by take()
            self._error = exc
        finally:
            with self._cond:
                self.ended = True
                self._cond.notify_all()

    def take(self, timeout_s: float | None = None) -> VideoFrame | None:
        """The newest frame not taken yet; waits up to ``timeout_s`` for one (None: don't wait)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while self._seq == self._taken_seq and not self.ended and deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if self._seq == self._taken_seq:
                return None
            self._taken_seq = self._seq
            return self._frame

    def stop(self) -> None:
        self._stop.set()
        if self.stalled:  # blocked inside the capture: joining would only wait join_timeout_ms for nothing
            logger.debug("camera: the reader thread is left in its stalled read")
            return
        if self._thread.is_alive():
            self._thread.join(self.options.join_timeout_ms / MS_PER_S)
            if self._thread.is_alive():
                logger.warning("camera: the reader thread did not stop within %g ms",
                               self.options.join_timeout_ms)
