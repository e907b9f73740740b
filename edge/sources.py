"""Media sources for the device loop: live microphone and camera, replayed WAV and video.

Every source has the same small interface (:class:`Source`): ``read()`` returns the
next :class:`AudioChunk` or :class:`VideoFrame`, or ``None`` at the end of the
stream; ``close()`` releases the device; sources are context managers and their
counters are in :attr:`Source.stats`.

Timestamps (``t_ms``) are monotonic milliseconds:

* replayed media: stream time, 0 at the first sample / frame, computed from the
  sample index or the frame index and the file's frame rate (never from the wall
  clock), so replays are deterministic;
* live devices: ``time.monotonic()`` based. The microphone timestamps each chunk
  from the absolute index of its first sample, anchored at the first callback, so
  chunk timestamps are exactly contiguous even when samples are dropped.

Live-device faults are ``RuntimeError``: :class:`SourceReadError` (a subclass) for a
failed read the loop can survive (a camera that stops delivering frames, a
microphone that stalls). Bad caller input (options, missing or corrupt files) is
``ValueError``.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Union, runtime_checkable

import cv2
import numpy as np

from edge.ringbuffer import AudioRingBuffer, RingBufferOptions
from edge.schema import require

__all__ = [
    "AudioChunk",
    "VideoFrame",
    "SourceStats",
    "Source",
    "SourceReadError",
    "BackoffOptions",
    "ExponentialBackoff",
    "MicrophoneOptions",
    "MicrophoneSource",
    "CameraOptions",
    "CameraSource",
    "WavReplayOptions",
    "WavReplaySource",
    "VideoReplayOptions",
    "VideoReplaySource",
    "list_input_devices",
    "is_gstreamer_pipeline",
]

logger = logging.getLogger(__name__)

MS_PER_S = 1000.0
TARGET_SAMPLE_RATE_HZ = 16000
GSTREAMER_LINK = "!"  # elements of a GStreamer launch string are linked with "!"


def monotonic_ms() -> float:
    """The monotonic clock in milliseconds (the live sources' time base)."""
    return time.monotonic_ns() / 1e6


# --------------------------------------------------------------------------- items


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
        if not (isinstance(self.sample_rate_hz, int) and self.sample_rate_hz > 0):
            raise ValueError(f"sample_rate_hz: expected a positive integer, got {self.sample_rate_hz!r}")
        if not math.isfinite(self.t_ms):
            raise ValueError(f"t_ms: expected a finite number, got {self.t_ms!r}")
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
            raise ValueError(f"image: expected a BGR uint8 array (H, W, 3), got shape {image.shape} dtype {image.dtype}")
        if not math.isfinite(self.t_ms):
            raise ValueError(f"t_ms: expected a finite number, got {self.t_ms!r}")

    @property
    def width_px(self) -> int:
        return int(self.image.shape[1])

    @property
    def height_px(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True)
class SourceStats:
    """A snapshot of a source's counters."""

    items: int = 0  #: chunks or frames returned by read()
    overflows: int = 0  #: PortAudio input-overflow callbacks (samples lost in the driver)
    dropped_samples: int = 0  #: samples overwritten in the ring buffer before they were read
    read_failures: int = 0  #: reads that raised SourceReadError
    reopens: int = 0  #: successful device reopenings


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


class _SourceBase:
    """Context manager, iteration and counters shared by the sources."""

    def __init__(self) -> None:
        self._items = 0
        self._overflows = 0
        self._read_failures = 0
        self._reopens = 0
        self._closed = False

    def _dropped_samples(self) -> int:
        return 0

    @property
    def stats(self) -> SourceStats:
        return SourceStats(items=self._items, overflows=self._overflows, dropped_samples=self._dropped_samples(),
                           read_failures=self._read_failures, reopens=self._reopens)

    @property
    def closed(self) -> bool:
        return self._closed

    def read(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Any]:
        """Yield items until the end of the stream (``read()`` returns ``None``)."""
        while True:
            item = self.read()
            if item is None:
                return
            yield item




def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------- backoff


@dataclass(frozen=True, kw_only=True)
class BackoffOptions:
    """Exponential backoff: ``initial_ms``, then times ``multiplier`` per failure, capped at ``max_ms``."""

    initial_ms: float = 250.0
    max_ms: float = 10000.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        require(_is_number(self.initial_ms) and self.initial_ms > 0, "initial_ms", "a positive number",
                 self.initial_ms)
        require(_is_number(self.max_ms) and self.max_ms >= self.initial_ms, "max_ms",
                 f"a number >= initial_ms={self.initial_ms}", self.max_ms)
        require(_is_number(self.multiplier) and self.multiplier >= 1, "multiplier", "a number >= 1",
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


# --------------------------------------------------------------------------- microphone


DeviceSpec = Union[int, str, None]


@dataclass(frozen=True, kw_only=True)
class MicrophoneOptions:
    """A live microphone read through PortAudio (sounddevice).

    ``device``: a PortAudio device index, a (sub)string of its name, or ``None``
    for the default input. ``buffer_ms``: ring-buffer length; when the loop falls
    further behind than that, the oldest audio is dropped and counted.
    ``read_timeout_ms``: how long :meth:`MicrophoneSource.read` waits for a chunk
    before it raises :class:`SourceReadError`.
    """

    device: DeviceSpec = None
    sample_rate_hz: int = TARGET_SAMPLE_RATE_HZ
    chunk_ms: float = 20.0
    buffer_ms: float = 2000.0
    read_timeout_ms: float = 1000.0

    def __post_init__(self) -> None:
        require(self.device is None or isinstance(self.device, str) or (_is_int(self.device) and self.device >= 0),
                 "device", "None, a device index >= 0 or a device name", self.device)
        require(_is_int(self.sample_rate_hz) and self.sample_rate_hz > 0, "sample_rate_hz", "a positive integer",
                 self.sample_rate_hz)
        require(_is_number(self.chunk_ms) and self.chunk_ms > 0, "chunk_ms", "a positive number", self.chunk_ms)
        require(_is_number(self.buffer_ms) and self.buffer_ms >= 2 * self.chunk_ms, "buffer_ms",
                 f"a number >= 2 * chunk_ms = {2 * self.chunk_ms:g}", self.buffer_ms)
        require(_is_number(self.read_timeout_ms) and self.read_timeout_ms > 0, "read_timeout_ms",
                 "a positive number", self.read_timeout_ms)


def _import_sounddevice():
    try:
        import sounddevice
    except OSError as exc:  # the PortAudio shared library is missing
        raise RuntimeError(f"microphone: PortAudio is not available ({exc}); install libportaudio2") from exc
    return sounddevice


def list_input_devices() -> list[dict[str, Any]]:
    """PortAudio's input devices: ``[{"index", "name", "max_input_channels", "default_samplerate"}, ...]``."""
    sd = _import_sounddevice()
    try:
        devices = sd.query_devices()
    except sd.PortAudioError as exc:
        raise RuntimeError(f"microphone: cannot list audio devices: {exc}") from exc
    return [
        {"index": int(d.get("index", i)), "name": str(d["name"]),
         "max_input_channels": int(d["max_input_channels"]),
         "default_samplerate": float(d["default_samplerate"])}
        for i, d in enumerate(devices) if int(d["max_input_channels"]) > 0
    ]


def _describe_inputs(devices: list[dict[str, Any]]) -> str:
    if not devices:
        return "none (is a microphone connected, and is this user in the 'audio' group?)"
    return "; ".join(f"[{d['index']}] {d['name']} ({d['max_input_channels']} ch, {d['default_samplerate']:g} Hz)"
                     for d in devices)


class MicrophoneSource(_SourceBase):
    """Chunks of ``chunk_ms`` from a live microphone, at ``sample_rate_hz``.

    The PortAudio callback only copies into a preallocated :class:`AudioRingBuffer`
    and counts input overflows; :meth:`read` blocks (up to ``read_timeout_ms``) for
    the next chunk. If the device cannot record at ``sample_rate_hz`` it is opened
    at its default rate and each chunk is resampled with
    ``edge.audio_io.resample``.

    Raises ``RuntimeError`` (listing the available input devices) when there is
    no such input device or it cannot be opened.
    """

    def __init__(self, options: MicrophoneOptions = MicrophoneOptions()) -> None:
        super().__init__()
        self.options = options
        sd = _import_sounddevice()
        devices = list_input_devices()
        if not devices:
            raise RuntimeError(f"microphone: no audio input device found; available input devices: "
                               f"{_describe_inputs(devices)}")
        try:
            info = sd.query_devices(options.device, "input")
        except (ValueError, sd.PortAudioError) as exc:
            raise RuntimeError(f"microphone: no input device {options.device!r} ({exc}); available input devices: "
                               f"{_describe_inputs(devices)}") from exc
        self.device_name = str(info["name"])
        try:
            sd.check_input_settings(device=options.device, channels=1, dtype="float32",
                                    samplerate=options.sample_rate_hz)
            self.device_rate_hz = options.sample_rate_hz
        except (ValueError, sd.PortAudioError):
            self.device_rate_hz = int(round(float(info["default_samplerate"])))
            logger.info("microphone %r cannot record at %d Hz; opening it at %d Hz and resampling",
                        self.device_name, options.sample_rate_hz, self.device_rate_hz)
        self._resample: Callable[[np.ndarray, int, int], np.ndarray] | None = None
        if self.device_rate_hz != options.sample_rate_hz:
            from edge.audio_io import resample  # lazily: only devices without native 16 kHz need it

            self._resample = resample
        self._chunk_samples = max(1, int(round(self.device_rate_hz * options.chunk_ms / MS_PER_S)))
        capacity = max(2 * self._chunk_samples, int(round(self.device_rate_hz * options.buffer_ms / MS_PER_S)))
        self._ring = AudioRingBuffer(RingBufferOptions(capacity_samples=capacity))
        self._t0_ms: float | None = None
        try:
            self._stream = sd.InputStream(device=options.device, samplerate=self.device_rate_hz, channels=1,
                                          dtype="float32", callback=self._callback)
            self._stream.start()
        except (ValueError, sd.PortAudioError) as exc:
            raise RuntimeError(f"microphone: cannot open input device {self.device_name!r} at "
                               f"{self.device_rate_hz} Hz: {exc}; available input devices: "
                               f"{_describe_inputs(devices)}") from exc
        logger.info("microphone %r open at %d Hz (chunks of %d samples)", self.device_name, self.device_rate_hz,
                    self._chunk_samples)

    # Runs on PortAudio's thread: copy, count, nothing else.
    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status.input_overflow:
            self._overflows += 1
        if self._t0_ms is None:
            self._t0_ms = monotonic_ms() - frames * MS_PER_S / self.device_rate_hz
        self._ring.write(indata[:, 0])

    def _dropped_samples(self) -> int:
        return self._ring.dropped_samples

    def read(self) -> AudioChunk | None:
        """The next ``chunk_ms`` of audio; ``None`` after :meth:`close`.

        Raises :class:`SourceReadError` when no audio arrives within ``read_timeout_ms``.
        """
        if self._closed:
            return None
        got = self._ring.read(self._chunk_samples, timeout_s=self.options.read_timeout_ms / MS_PER_S)
        if got is None:
            if self._ring.closed:
                return None
            self._read_failures += 1
            raise SourceReadError(f"microphone {self.device_name!r}: no audio for "
                                  f"{self.options.read_timeout_ms:g} ms (device stalled or unplugged?)")
        samples, first_index = got
        assert self._t0_ms is not None  # set by the callback before its first write
        t_ms = self._t0_ms + first_index * MS_PER_S / self.device_rate_hz
        if self._resample is not None:
            samples = np.asarray(self._resample(samples, self.device_rate_hz, self.options.sample_rate_hz),
                                 dtype=np.float32)
        self._items += 1
        return AudioChunk(samples=samples, t_ms=t_ms, sample_rate_hz=self.options.sample_rate_hz)

    def close(self) -> None:
        if self._closed:
            return
        super().close()
        self._ring.close()
        stream = getattr(self, "_stream", None)
        if stream is not None:
            try:
                stream.stop()
                stream.close()
            except Exception as exc:  # noqa: BLE001 - closing a dead device must not mask the caller's error
                logger.warning("microphone: error while closing %r: %s", self.device_name, exc)


# --------------------------------------------------------------------------- camera


CameraSpec = Union[int, str]


def is_gstreamer_pipeline(source: CameraSpec) -> bool:
    """True for a GStreamer launch string such as ``"nvarguscamerasrc ! ... ! appsink"``."""
    return isinstance(source, str) and GSTREAMER_LINK in source


def _opencv_has_gstreamer() -> bool:
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line.split(":", 1)[1]
    return False


CAMERA_REOPEN_MAX_MS = 1000.0


@dataclass(frozen=True, kw_only=True)
class CameraOptions:
    """A live camera through ``cv2.VideoCapture``.

    ``source``: a device index (``0``), a device path (``"/dev/video0"``) or a
    GStreamer pipeline ending in ``appsink`` (Jetson CSI cameras; opened with
    ``cv2.CAP_GSTREAMER``, whose caps then define size and rate). After
    ``reopen_after_failures`` consecutive failed reads the device is closed and
    reopened on later reads, spaced by ``backoff``.
    """

    source: CameraSpec = 0
    width_px: int = 640
    height_px: int = 480
    fps: float = 15.0
    reopen_after_failures: int = 5
    #: Reopen attempts back off to at most once a second, so frames return within about
    #: a second of the camera's return even after a long outage (an attempt is cheap).
    backoff: BackoffOptions = field(default_factory=lambda: BackoffOptions(max_ms=CAMERA_REOPEN_MAX_MS))

    def __post_init__(self) -> None:
        require((_is_int(self.source) and self.source >= 0) or (isinstance(self.source, str) and self.source.strip()),
                 "source", "a device index >= 0, a device path or a GStreamer pipeline", self.source)
        require(_is_int(self.width_px) and self.width_px > 0, "width_px", "a positive integer", self.width_px)
        require(_is_int(self.height_px) and self.height_px > 0, "height_px", "a positive integer", self.height_px)
        require(_is_number(self.fps) and self.fps > 0, "fps", "a positive number", self.fps)
        require(_is_int(self.reopen_after_failures) and self.reopen_after_failures >= 1, "reopen_after_failures",
                 "an integer >= 1", self.reopen_after_failures)
        require(isinstance(self.backoff, BackoffOptions), "backoff", "BackoffOptions", self.backoff)


class CameraSource(_SourceBase):
    """Frames from a live camera, timestamped with the monotonic clock.

    Opening fails with ``RuntimeError``. A failed read raises
    :class:`SourceReadError` (the loop keeps running on audio); after
    ``reopen_after_failures`` in a row the capture is released and reopened
    by later reads, retrying with exponential backoff, or by :meth:`reopen`.
    """

    def __init__(self, options: CameraOptions = CameraOptions(), *,
                 clock_ms: Callable[[], float] = monotonic_ms) -> None:
        super().__init__()
        self.options = options
        self._clock_ms = clock_ms
        self._backoff = ExponentialBackoff(options.backoff)
        self._consecutive_failures = 0
        self._next_attempt_ms = 0.0
        self._cap: cv2.VideoCapture | None = self._open()

    @property
    def description(self) -> str:
        source = self.options.source
        if is_gstreamer_pipeline(source):
            return f"GStreamer pipeline {source!r}"
        return f"camera index {source}" if isinstance(source, int) else f"camera {source!r}"

    @property
    def is_open(self) -> bool:
        return self._cap is not None

    def _open(self) -> cv2.VideoCapture:
        source = self.options.source
        if is_gstreamer_pipeline(source):
            if not _opencv_has_gstreamer():
                raise RuntimeError(f"camera: {self.description} needs OpenCV built with GStreamer, and this "
                                   f"OpenCV {cv2.__version__} has no GStreamer support (on a Jetson use the "
                                   f"system python3-opencv from JetPack)")
            cap = cv2.VideoCapture(source, cv2.CAP_GSTREAMER)
        else:
            cap = cv2.VideoCapture(source)
            if cap.isOpened():
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.options.width_px)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.options.height_px)
                cap.set(cv2.CAP_PROP_FPS, self.options.fps)
        if not cap.isOpened():
            cap.release()
            raise RuntimeError(f"camera: cannot open {self.description} (no such device, busy, or no permission "
                               f"for /dev/video*?)")
        logger.info("camera: opened %s (%dx%d @ %g fps reported)", self.description,
                    int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                    cap.get(cv2.CAP_PROP_FPS))
        return cap

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def reopen(self) -> None:
        """Close and reopen the device now; ``RuntimeError`` if it cannot be opened."""
        if self._closed:
            raise RuntimeError("camera: reopen() after close()")
        self._release()
        self._cap = self._open()
        self._reopens += 1
        self._consecutive_failures = 0
        self._backoff.reset()

    def read(self) -> VideoFrame | None:
        """The next frame; ``None`` after :meth:`close`; :class:`SourceReadError` on a failed read."""
        if self._closed:
            return None
        if self._cap is None:
            now = self._clock_ms()
            if now < self._next_attempt_ms:
                self._read_failures += 1
                raise SourceReadError(f"camera: {self.description} is unavailable; next reopen attempt in "
                                      f"{self._next_attempt_ms - now:.0f} ms")
            try:
                self.reopen()
            except RuntimeError as exc:
                self._read_failures += 1
                self._next_attempt_ms = now + self._backoff.next_delay_ms()
                raise SourceReadError(f"camera: reopening failed ({exc})") from exc
            logger.info("camera: %s reopened", self.description)
        ok, image = self._cap.read()
        if not ok or image is None:
            self._read_failures += 1
            self._consecutive_failures += 1
            if self._consecutive_failures >= self.options.reopen_after_failures:
                logger.warning("camera: %d failed reads in a row from %s; reopening it", self._consecutive_failures,
                               self.description)
                self._release()
                self._next_attempt_ms = self._clock_ms()
            raise SourceReadError(f"camera: failed to read a frame from {self.description}")
        self._consecutive_failures = 0
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        self._items += 1
        return VideoFrame(image=image, t_ms=self._clock_ms())

    def close(self) -> None:
        super().close()
        self._release()


# --------------------------------------------------------------------------- replay


class _Pacer:
    """Sleeps so that stream time ``t_ms`` is reached no earlier than ``t_ms`` after the first item."""

    def __init__(self, realtime: bool) -> None:
        self.realtime = realtime
        self._start_ms: float | None = None

    def wait_until(self, t_ms: float) -> None:
        if not self.realtime:
            return
        now = monotonic_ms()
        if self._start_ms is None:
            self._start_ms = now - t_ms
        delay_ms = self._start_ms + t_ms - now
        if delay_ms > 0:
            time.sleep(delay_ms / MS_PER_S)


@dataclass(frozen=True, kw_only=True)
class WavReplayOptions:
    """Replay a WAV file as chunks of ``chunk_ms`` at ``sample_rate_hz`` (resampled if needed).

    ``realtime``: pace chunks to the stream clock (else as fast as possible).
    ``loop``: start over at the end (stream time keeps increasing).
    """

    sample_rate_hz: int = TARGET_SAMPLE_RATE_HZ
    chunk_ms: float = 20.0
    realtime: bool = False
    loop: bool = False

    def __post_init__(self) -> None:
        require(_is_int(self.sample_rate_hz) and self.sample_rate_hz > 0, "sample_rate_hz", "a positive integer",
                 self.sample_rate_hz)
        require(_is_number(self.chunk_ms) and self.chunk_ms > 0, "chunk_ms", "a positive number", self.chunk_ms)
        require(isinstance(self.realtime, bool), "realtime", "a bool", self.realtime)
        require(isinstance(self.loop, bool), "loop", "a bool", self.loop)


def _read_wav(path: Path, sample_rate_hz: int) -> np.ndarray:
    from edge.audio_io import read_wav  # the shared reader (PCM 8/16/24/32-bit, float; resamples)

    samples = np.asarray(read_wav(path, sample_rate_hz=sample_rate_hz), dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"{path}: expected mono samples after reading, got shape {samples.shape}")
    return samples


class WavReplaySource(_SourceBase):
    """Chunks of a WAV file; ``t_ms`` is stream time (0 at the first sample).

    Every chunk has ``chunk_ms`` of audio except possibly the file's last one,
    which is shorter. A missing or unreadable file is a ``ValueError`` naming it.
    """

    def __init__(self, path: str | os.PathLike[str], options: WavReplayOptions = WavReplayOptions()) -> None:
        super().__init__()
        self.path = Path(path)
        self.options = options
        if not self.path.is_file():
            raise ValueError(f"{self.path}: WAV file not found")
        self._samples = _read_wav(self.path, options.sample_rate_hz)
        if self._samples.size == 0:
            raise ValueError(f"{self.path}: the WAV file has no samples")
        self._chunk_samples = max(1, int(round(options.sample_rate_hz * options.chunk_ms / MS_PER_S)))
        self._position = 0  # within the file
        self._stream_index = 0  # absolute sample index (grows across loops)
        self._pacer = _Pacer(options.realtime)

    @property
    def duration_ms(self) -> float:
        """Length of the file (one pass)."""
        return self._samples.size * MS_PER_S / self.options.sample_rate_hz

    def read(self) -> AudioChunk | None:
        if self._closed:
            return None
        if self._position >= self._samples.size:
            if not self.options.loop:
                return None
            self._position = 0
        end = min(self._position + self._chunk_samples, self._samples.size)
        samples = self._samples[self._position:end].copy()
        t_ms = self._stream_index * MS_PER_S / self.options.sample_rate_hz
        self._position = end
        self._stream_index += samples.size
        self._pacer.wait_until(t_ms)
        self._items += 1
        return AudioChunk(samples=samples, t_ms=t_ms, sample_rate_hz=self.options.sample_rate_hz)


@dataclass(frozen=True, kw_only=True)
class VideoReplayOptions:
    """Replay a video file. ``fps`` overrides the file's frame rate (``None``: use the file's).

    ``realtime``: pace frames to the stream clock (else as fast as possible).
    ``loop``: start over at the end (stream time keeps increasing).
    """

    realtime: bool = False
    loop: bool = False
    fps: float | None = None

    def __post_init__(self) -> None:
        require(isinstance(self.realtime, bool), "realtime", "a bool", self.realtime)
        require(isinstance(self.loop, bool), "loop", "a bool", self.loop)
        require(self.fps is None or (_is_number(self.fps) and self.fps > 0), "fps", "None or a positive number",
                 self.fps)


class VideoReplaySource(_SourceBase):
    """Frames of a video file decoded by OpenCV; frame ``i`` has ``t_ms = i * 1000 / fps``.

    A missing, corrupt or unreadable file (no decodable first frame, no frame
    rate) is a ``ValueError`` naming it.
    """

    def __init__(self, path: str | os.PathLike[str], options: VideoReplayOptions = VideoReplayOptions()) -> None:
        super().__init__()
        self.path = Path(path)
        self.options = options
        if not self.path.is_file():
            raise ValueError(f"{self.path}: video file not found")
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            self._cap.release()
            raise ValueError(f"{self.path}: not a readable video file (OpenCV cannot open it)")
        fps = options.fps if options.fps is not None else float(self._cap.get(cv2.CAP_PROP_FPS))
        if not (math.isfinite(fps) and fps > 0):
            self._cap.release()
            raise ValueError(f"{self.path}: the video has no usable frame rate ({fps!r}); pass fps=")
        self.fps = fps
        ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            raise ValueError(f"{self.path}: not a readable video file (no frame could be decoded)")
        self._pending: np.ndarray | None = first
        self._index = 0  # frames returned so far (grows across loops)
        self._frames_this_pass = 0
        self._pacer = _Pacer(options.realtime)
        self._lock = threading.Lock()

    def _next_image(self) -> np.ndarray | None:
        if self._pending is not None:
            image, self._pending = self._pending, None
            return image
        ok, image = self._cap.read()
        if ok and image is not None:
            return image
        if not self.options.loop or self._frames_this_pass == 0:
            return None
        self._cap.release()
        self._cap = cv2.VideoCapture(str(self.path))
        self._frames_this_pass = 0
        ok, image = self._cap.read()
        return image if ok and image is not None else None

    def read(self) -> VideoFrame | None:
        with self._lock:
            if self._closed:
                return None
            image = self._next_image()
            if image is None:
                return None
            if image.ndim == 2:
                image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
            t_ms = self._index * MS_PER_S / self.fps
            self._index += 1
            self._frames_this_pass += 1
        self._pacer.wait_until(t_ms)
        self._items += 1
        return VideoFrame(image=image, t_ms=t_ms)

    def close(self) -> None:
        with self._lock:
            super().close()
            self._cap.release()
