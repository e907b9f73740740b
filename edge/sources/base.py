"""The source protocol of the device loop and what every source shares: chunks and frames with
monotonic timestamps, counters, read errors, reopen back-off. The sources themselves are
:mod:`.microphone`, :mod:`.camera` and :mod:`.replay` (WAV and video).

Every source has the same small interface (:class:`Source`): ``read()`` returns the
next :class:`AudioChunk` or :class:`VideoFrame`, or ``None`` at the end of the
stream; ``close()`` releases the device; sources are context managers and their
counters are in :attr:`Source.stats`.

Timestamps (``t_ms``) are monotonic milliseconds:

* replayed media: stream time, 0 at the first sample / frame, computed from the
  sample index, or from the frame's presentation time in the video file (the frame
  index and the frame rate where the file has none), never from the wall clock, so
  replays are deterministic and a variable-frame-rate video keeps its timing;
* live devices: ``time.monotonic()`` based. The microphone timestamps each chunk
  from the absolute index of its first sample, anchored at the first callback, so
  chunk timestamps are exactly contiguous even when the ring buffer drops samples.
  When the audio clock falls behind the monotonic clock by more than
  ``CLOCK_RESYNC_TOLERANCE_MS`` and stays behind (a driver stall, audio lost in the
  driver), the clock is re-anchored where the audio resumed (counted in
  :attr:`SourceStats.clock_resyncs`): the later chunks jump forward by the stall and
  stay on the monotonic clock; timestamps never go backwards.

Live-device faults are ``RuntimeError``: :class:`SourceReadError` (a subclass) for a
failed read the loop can survive (a camera that stops delivering frames, a
microphone that stalls). Bad caller input (options, missing or corrupt files) is
``ValueError``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import os
import time
from dataclasses import dataclass
from typing import Any, Generic, Iterator, Protocol, TypeVar, runtime_checkable

import numpy as np

from edgesense.schema.validate import found, is_int, is_number, require

__all__ = ["AudioChunk", "VideoFrame", "SourceStats", "Source", "SourceReadError", "BackoffOptions",
           "ExponentialBackoff", "as_bgr", "opencv_path", "quiet_opencv", "require_stall_timeout_ms", "require_fps",
           "MAX_DEVICE_INDEX"]

logger = logging.getLogger(__name__)

MS_PER_S = 1000.0
#: The shortest ``stall_timeout_ms`` of a live device (the camera's, the microphone's).
MIN_STALL_TIMEOUT_MS = 1000.0
#: The highest device index a live source takes: OpenCV's and PortAudio's indexes are C ints (a larger one raised
#: OverflowError or cv2.error from inside the open, not the ValueError naming the option).
MAX_DEVICE_INDEX = 2**31 - 1
#: The slowest frame rate a camera or a replayed video takes: a frame a day (a time-lapse camera's). Slower, the frame
#: period overflowed to infinity (1000 / 5e-324 ms): an infinite stall timeout, or frame times the loop refused.
MIN_FPS = 1.0 / (24 * 3600)
#: The longest reopen delay a backoff grows to: an hour. A longer one (1e308 ms) never reopened the device again.
MAX_BACKOFF_MS = 3_600_000.0
#: FFmpeg's log level for OpenCV's FFmpeg backend (AV_LOG_QUIET); read once, when FFmpeg starts.
FFMPEG_QUIET = "-8"


def opencv_path(path: str | os.PathLike[str], what: str) -> str:
    """``path`` as OpenCV takes it: the text whose UTF-8 is the name's bytes on disk (OpenCV encodes every path in
    UTF-8, whatever the locale; Python decodes names by the locale: in a C locale without UTF-8 mode ``café.mp4``
    reads as ``caf\\udcc3\\udca9.mp4``). A ``ValueError`` naming it when those bytes are not UTF-8 (a Latin-1
    ``café.mp4`` from an old archive): OpenCV's Python binding crashes the whole process (a segmentation fault, no
    message) on the surrogate escapes Python reads such a name with, instead of failing."""
    text = os.fspath(path)
    try:
        data = os.fsencode(text)  # the name's bytes, as the locale wrote them
    except UnicodeEncodeError:  # characters the locale cannot write (Python cannot open it either): as typed
        data = text.encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        shown = data.decode("utf-8", "backslashreplace")  # Latin-1 é: \xe9, not Python's escape \udce9
        raise ValueError(f"{text}: expected {what} whose name is UTF-8 (OpenCV opens no other), got one whose bytes "
                         f"are not UTF-8 ({shown}): rename it (e.g. convmv -f latin1 -t utf8 --notest NAME)") from None


@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's and FFmpeg's own console output (``[ WARN:0@0.01] ... can't open camera``,
    ``moov atom not found``, assertion dumps) while a device or a file is opened: the caller
    says what went wrong, in one line. With debug logging (``-vv``) nothing is silenced.
    ``OPENCV_FFMPEG_LOGLEVEL`` set by the user wins."""
    if logger.isEnabledFor(logging.DEBUG):
        yield
        return
    import cv2

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", FFMPEG_QUIET)
    api = getattr(getattr(cv2, "utils", None), "logging", None)
    if api is None:  # an OpenCV without the logging API: only FFmpeg is quieted
        yield
        return
    previous = api.getLogLevel()
    api.setLogLevel(api.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        api.setLogLevel(previous)


def monotonic_ms() -> float:
    """The monotonic clock in milliseconds (the live sources' time base)."""
    return time.monotonic_ns() / 1e6


def require_stall_timeout_ms(value: Any) -> None:
    """The check of a live device's ``stall_timeout_ms``: ``None`` (never) or at least :data:`MIN_STALL_TIMEOUT_MS`."""
    require(value is None or (is_number(value) and value >= MIN_STALL_TIMEOUT_MS), "stall_timeout_ms",
            f"null (never) or a number of ms >= {MIN_STALL_TIMEOUT_MS:g}", value)


def require_fps(field: str, value: Any, *, nullable: bool = False) -> None:
    """The check of a frame rate: a number >= :data:`MIN_FPS` (``None`` too where ``nullable``)."""
    if nullable and value is None:
        return
    require(is_number(value) and value > 0, field, f"{'None or ' if nullable else ''}a positive number", value)
    require(value >= MIN_FPS, field, f"a number of frames per second >= {MIN_FPS:.3g} (a frame a day)", value)


# --------------------------------------------------------------------------- items


def _check_t_ms(t_ms: Any) -> None:
    """An item's ``t_ms``: a finite number (numpy's too: times often come from an array), else ``ValueError``
    (math.isfinite raised TypeError for None or a string)."""
    try:
        finite = (not isinstance(t_ms, (bool, np.bool_)) and isinstance(t_ms, numbers.Real)
                  and math.isfinite(t_ms))
    except OverflowError:  # an int past a float's range
        finite = False
    if not finite:
        raise ValueError(f"t_ms: expected a finite number, got {found(t_ms)}")


@dataclass(frozen=True, kw_only=True)
class AudioChunk:
    """Mono float32 samples; ``t_ms`` is the stream time of the first sample."""

    samples: np.ndarray
    t_ms: float
    sample_rate_hz: int

    def __post_init__(self) -> None:
        samples = np.asarray(self.samples)
        if samples.ndim != 1 or samples.dtype != np.float32:
            raise ValueError(f"samples: expected a 1-D float32 array, got shape {samples.shape} dtype {samples.dtype}")
        if not (is_int(self.sample_rate_hz) and self.sample_rate_hz > 0):  # True is no rate of 1 Hz
            raise ValueError(f"sample_rate_hz: expected a positive integer, got {self.sample_rate_hz!r}")
        _check_t_ms(self.t_ms)
        samples.setflags(write=False)
        object.__setattr__(self, "samples", samples)

    @property
    def duration_ms(self) -> float:
        return self.samples.shape[0] * MS_PER_S / self.sample_rate_hz

    @property
    def end_t_ms(self) -> float:
        """Stream time just after the last sample."""
        return self.t_ms + self.duration_ms


@dataclass(frozen=True, kw_only=True)
class VideoFrame:
    """A BGR uint8 image (H, W, 3) captured at ``t_ms``."""

    image: np.ndarray
    t_ms: float

    def __post_init__(self) -> None:
        image = np.asarray(self.image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image: expected a BGR uint8 array (H, W, 3), got shape {image.shape} "
                             f"dtype {image.dtype}")
        _check_t_ms(self.t_ms)
        object.__setattr__(self, "image", image)  # an ndarray, whatever array-like the caller gave

    @property
    def width_px(self) -> int:
        return int(self.image.shape[1])

    @property
    def height_px(self) -> int:
        return int(self.image.shape[0])


def as_bgr(image: np.ndarray) -> np.ndarray | None:
    """An 8-bit frame as OpenCV delivers it, as BGR (H, W, 3): grey (H, W) or (H, W, 1) is expanded and the
    fourth channel of BGRx/BGRA (a GStreamer pipeline ending in ``format=BGRx ! appsink``) dropped;
    ``None`` for anything else (another depth or channel count)."""
    import cv2

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
        return None
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image if channels == 3 else None


@dataclass(frozen=True)
class SourceStats:
    """A snapshot of a source's counters."""

    items: int = 0  #: chunks or frames returned by read()
    overflows: int = 0  #: PortAudio input-overflow callbacks (samples lost in the driver)
    dropped_samples: int = 0  #: samples overwritten in the ring buffer before they were read
    read_failures: int = 0  #: reads that raised SourceReadError
    reopens: int = 0  #: successful device reopenings
    clock_resyncs: int = 0  #: microphone clock re-anchored to the monotonic clock after a stall
    clipped_samples: int = 0  #: samples the microphone delivered at full scale (its converter clipped them)


class SourceReadError(RuntimeError):
    """A live device failed to deliver this read; the source stays usable.

    The device loop catches it, counts it and goes on with its other modality;
    a :class:`CameraSource` reopens itself (with exponential backoff) after
    repeated failures.
    """


@runtime_checkable
class Source(Protocol):
    """What the device loop needs from a media source."""

    @property
    def stats(self) -> SourceStats: ...

    def read(self) -> AudioChunk | VideoFrame | None: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Source": ...

    def __exit__(self, *exc_info: object) -> None: ...


_Item = TypeVar("_Item")  #: what a source's ``read()`` returns: an AudioChunk or a VideoFrame
_Source = TypeVar("_Source", bound="_SourceBase[Any]")


class _SourceBase(Generic[_Item]):
    """Context manager, iteration and counters shared by the sources."""

    def __init__(self) -> None:
        self._items = 0
        self._overflows = 0
        self._read_failures = 0
        self._reopens = 0
        self._clock_resyncs = 0
        self._clipped_samples = 0
        self._closed = False

    def _dropped_samples(self) -> int:
        return 0

    @property
    def stats(self) -> SourceStats:
        return SourceStats(items=self._items, overflows=self._overflows, dropped_samples=self._dropped_samples(),
                           read_failures=self._read_failures, reopens=self._reopens,
                           clock_resyncs=self._clock_resyncs, clipped_samples=self._clipped_samples)

    @property
    def closed(self) -> bool:
        return self._closed

    def read(self) -> _Item | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        self._closed = True

    def __enter__(self: _Source) -> _Source:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[_Item]:
        """Yield items until the end of the stream (``read()`` returns ``None``)."""
        while True:
            item = self.read()
            if item is None:
                return
            yield item


# --------------------------------------------------------------------------- backoff


@dataclass(frozen=True, kw_only=True)
class BackoffOptions:
    """Exponential backoff: ``initial_ms``, then times ``multiplier`` per failure, capped at ``max_ms`` (at most
    :data:`MAX_BACKOFF_MS`, an hour)."""

    initial_ms: float = 250.0
    max_ms: float = 10000.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        require(is_number(self.initial_ms) and self.initial_ms > 0, "initial_ms", "a positive number",
                 self.initial_ms)
        require(is_number(self.max_ms) and self.initial_ms <= self.max_ms <= MAX_BACKOFF_MS, "max_ms",
                f"a number in [initial_ms={self.initial_ms:g}, {MAX_BACKOFF_MS:g}] (an hour)", self.max_ms)
        require(is_number(self.multiplier) and self.multiplier >= 1, "multiplier", "a number >= 1",
                 self.multiplier)


class ExponentialBackoff:
    """Delays between retries: ``next_delay_ms()`` grows after each call, ``reset()`` after a success."""

    def __init__(self, options: BackoffOptions = BackoffOptions()) -> None:
        self.options = options
        self._next_ms = options.initial_ms
        self.failures = 0

    def next_delay_ms(self) -> float:
        delay = self._next_ms
        self._next_ms = min(self.options.max_ms, self._next_ms * self.options.multiplier)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self._next_ms = self.options.initial_ms
        self.failures = 0
