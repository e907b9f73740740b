"""The camera source: OpenCV capture (device index, path or GStreamer string) with reopen back-off."""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Callable, NoReturn, Union

import cv2
import numpy as np

from edgesense.pacing import Paced
from edgesense.schema.validate import is_int, require
from edgesense.sources.base import (
    MAX_DEVICE_INDEX,
    MS_PER_S,
    BackoffOptions,
    ExponentialBackoff,
    SourceReadError,
    VideoFrame,
    _SourceBase,
    as_bgr,
    monotonic_ms,
    quiet_opencv,
    require_fps,
    require_stall_timeout_ms,
)

__all__ = ["CameraOptions", "CameraSource", "is_gstreamer_pipeline"]

logger = logging.getLogger(__name__)


GSTREAMER_LINK = "!"  # elements of a GStreamer launch string are linked with "!"


# --------------------------------------------------------------------------- camera


CameraSpec = Union[int, str]


def is_gstreamer_pipeline(source: CameraSpec) -> bool:
    """True for a GStreamer launch string such as ``"nvarguscamerasrc ! ... ! appsink"``."""
    return isinstance(source, str) and GSTREAMER_LINK in source


#: Planar YUV 4:2:0 formats, which OpenCV's appsink hands over unconverted as one 8-bit plane of height * 3 / 2 rows
#: (the luma, then the chroma), and their conversions to BGR.
YUV420_TO_BGR = {"I420": cv2.COLOR_YUV2BGR_I420, "YV12": cv2.COLOR_YUV2BGR_YV12, "NV12": cv2.COLOR_YUV2BGR_NV12,
                 "NV21": cv2.COLOR_YUV2BGR_NV21}
_CAPS_FORMAT = re.compile(r"\bformat\s*=\s*(?:\(string\)\s*)?\"?([A-Za-z0-9_]+)")


def _pipeline_format(pipeline: str) -> str | None:
    """The last ``format=`` a GStreamer launch string names (upper case): the appsink's where it is given;
    ``None`` where there is none."""
    formats = _CAPS_FORMAT.findall(pipeline)
    return formats[-1].upper() if formats else None


def _opencv_has_gstreamer() -> bool:
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line.split(":", 1)[1]
    return False


CAMERA_REOPEN_MAX_MS = 1000.0
MAX_FRAME_PX = 8192
#: ``stall_timeout_ms``'s default: far above a slow camera's frame period, a GStreamer pipeline's start (a second or
#: two for nvarguscamerasrc) and a reopen, and short enough that a wedged camera is restarted within seconds.
CAMERA_STALL_TIMEOUT_MS = 10_000.0
#: A read is taken for stalled only after this many frame periods at ``fps`` too (a time-lapse camera's frames).
STALL_FRAME_PERIODS = 3
#: OpenCV's V4L2 backend (a device index or ``/dev/videoN``) waits up to this many seconds (its ``select()``;
#: ``$OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT``) for a frame of a camera that delivers none, then fails the read.
V4L2_SELECT_TIMEOUT_ENV = "OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT"
V4L2_SELECT_TIMEOUT_S = 10
#: A V4L2 read that reopens the camera waits twice (OpenCV skips the first frame after opening), after the open:
#: a read is taken for stalled only after that long too, or every such failed read, which the camera answers by
#: reopening itself, would end the run.
V4L2_FAILED_READ_WAITS = 2
V4L2_OPEN_MS = 1000.0


def v4l2_failed_read_ms() -> float:
    """How long a read of a V4L2 camera that delivers no frame may take before OpenCV fails it (a reopen
    included): :data:`V4L2_FAILED_READ_WAITS` of its ``select()`` timeout, and :data:`V4L2_OPEN_MS`."""
    value = os.environ.get(V4L2_SELECT_TIMEOUT_ENV, "").strip()
    select_s = int(value) if value.isdigit() else V4L2_SELECT_TIMEOUT_S
    return V4L2_FAILED_READ_WAITS * select_s * MS_PER_S + V4L2_OPEN_MS


#: How long :meth:`CameraSource.close` waits for a read in progress before it leaves the release to
#: that read (a stalled device must not hang the loop's shutdown).
CLOSE_WAIT_S = 1.0


@dataclass(frozen=True, kw_only=True)
class CameraOptions:
    """A live camera through ``cv2.VideoCapture``.

    ``source``: a device index (``0``), a device path (``"/dev/video0"``) or a
    GStreamer pipeline ending in ``appsink`` (Jetson CSI cameras; opened with
    ``cv2.CAP_GSTREAMER``, whose caps then define size and rate; BGR, BGRx, GRAY8 and, where the pipeline names
    it before the appsink, RGBA/RGBx and planar YUV 4:2:0 such as ``libcamerasrc``'s ``format=NV12`` are taken).
    After ``reopen_after_failures`` consecutive failed reads the device is closed and
    reopened on later reads, spaced by ``backoff``. ``enabled``: whether the device loop
    opens the camera (the ``camera:`` section of a device config).

    ``stall_timeout_ms``: a read (a frame, or a reopen) of the live camera that has not returned after this long
    ends the device loop with a ``RuntimeError`` (a warning comes at half of it): a capture wedged in its driver,
    or a GStreamer source that stalled (nvarguscamerasrc when nvargus-daemon dies), blocks inside OpenCV and
    cannot be freed or reopened in the process, so the process exits and its service manager restarts it.
    ``None``: never (a read that hangs then stops scene events for good). A read that fails (no frame) is not a
    stall: the camera reopens itself with ``backoff``. A camera slower than a frame in a third of it (a time-lapse
    ``fps``) has :data:`STALL_FRAME_PERIODS` frame periods instead, and a V4L2 camera (not a GStreamer pipeline)
    at least the time OpenCV takes to fail a read that reopens it (:func:`v4l2_failed_read_ms`, 21 s: a camera
    that stops delivering frames fails each read after 10 s, more after a reopen) (:attr:`effective_stall_timeout_ms`).
    """

    enabled: bool = True
    source: CameraSpec = 0
    width_px: int = 640
    height_px: int = 480
    fps: float = 15.0
    reopen_after_failures: int = 5
    #: Reopen attempts back off to at most once a second, so frames return within about
    #: a second of the camera's return even after a long outage (an attempt is cheap).
    backoff: BackoffOptions = field(default_factory=lambda: BackoffOptions(max_ms=CAMERA_REOPEN_MAX_MS))
    stall_timeout_ms: float | None = CAMERA_STALL_TIMEOUT_MS

    def __post_init__(self) -> None:
        require(isinstance(self.enabled, bool), "enabled", "true or false", self.enabled)
        require((is_int(self.source) and 0 <= self.source <= MAX_DEVICE_INDEX)
                or (isinstance(self.source, str) and self.source.strip() != ""),
                "source", f"a device index in [0, {MAX_DEVICE_INDEX}], a device path or a GStreamer pipeline",
                self.source)
        require(is_int(self.width_px) and 0 < self.width_px <= MAX_FRAME_PX, "width_px",
                 f"an integer in [1, {MAX_FRAME_PX}]", self.width_px)
        require(is_int(self.height_px) and 0 < self.height_px <= MAX_FRAME_PX, "height_px",
                 f"an integer in [1, {MAX_FRAME_PX}]", self.height_px)
        require_fps("fps", self.fps)
        require(is_int(self.reopen_after_failures) and self.reopen_after_failures >= 1, "reopen_after_failures",
                 "an integer >= 1", self.reopen_after_failures)
        require(isinstance(self.backoff, BackoffOptions), "backoff", "BackoffOptions", self.backoff)
        require_stall_timeout_ms(self.stall_timeout_ms)

    @property
    def effective_stall_timeout_ms(self) -> float | None:
        """``stall_timeout_ms``, or :data:`STALL_FRAME_PERIODS` frame periods at ``fps`` where that is longer (a
        time-lapse camera at ``fps: 0.25`` waits 4 s for each frame: its default 10 s would take a frame for a
        stall), or for a V4L2 camera :func:`v4l2_failed_read_ms` where that is longer (a read that fails, which the
        camera answers by reopening itself, is no stall); ``None``: never."""
        if self.stall_timeout_ms is None:
            return None
        timeout_ms = max(float(self.stall_timeout_ms), STALL_FRAME_PERIODS * MS_PER_S / self.fps)
        if not is_gstreamer_pipeline(self.source):
            timeout_ms = max(timeout_ms, v4l2_failed_read_ms())
        return timeout_ms


class CameraSource(_SourceBase):
    """Frames from a live camera, timestamped with the monotonic clock.

    Opening fails with ``RuntimeError``. A failed read raises
    :class:`SourceReadError` (the loop keeps running on audio); after
    ``reopen_after_failures`` in a row the capture is released and reopened
    by later reads, retrying with exponential backoff, or by :meth:`reopen`.

    :meth:`read` runs on the loop's reader thread and :meth:`close` on another: the capture is
    never released under a read in progress (OpenCV would crash), so a read that was under way
    when the source closed releases it on its way out.
    """

    def __init__(self, options: CameraOptions = CameraOptions(), *,
                 clock_ms: Callable[[], float] = monotonic_ms) -> None:
        super().__init__()
        require(isinstance(options, CameraOptions), "options", "CameraOptions", options)
        self.options = options
        self._clock_ms = clock_ms
        self._backoff = ExponentialBackoff(options.backoff)
        self._consecutive_failures = 0
        self._frames_since_open = 0
        self._next_attempt_ms = 0.0
        # A camera that keeps failing (one that opens but gives no frame is reopened every second or so): its reopen
        # lines at most once per LOG_INTERVAL_S each, with how many they cover; the first open is always said.
        self._opened_before = False
        self._reopen_lines = Paced()
        self._reopened_lines = Paced()
        self._lock = threading.RLock()  # held by a read (which may reopen), and by close() as it releases
        self._grabbed_t_ms: float | None = None  # the time of the frame grab() took and retrieve() has not decoded
        self._failed_decodes = 0  # retrieve() failures in a row (each grab() before them starts _consecutive afresh)
        self._decoded = 0
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

    @property
    def reopen_in_ms(self) -> float:
        """How long until a read of this camera tries the device again: 0 while it is open (or its next reopen is
        due), else the rest of its back-off (at most ``backoff.max_ms``), in which every read fails at once. The
        loop's reader waits that long after such a read, not its own ``retry_ms``: a camera unplugged for a day
        was read ten times a second for its one reopen attempt a second."""
        if self._cap is not None or self._closed:
            return 0.0
        return min(max(0.0, self._next_attempt_ms - self._clock_ms()), self.options.backoff.max_ms)

    def _open(self) -> cv2.VideoCapture:
        with quiet_opencv():  # OpenCV's V4L2/FFmpeg warnings would precede our one line
            return self._open_quietly()

    def _open_quietly(self) -> cv2.VideoCapture:
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
        log = logger.debug if self._opened_before else logger.info  # a reopen has its own (paced) line
        self._opened_before = True
        log("camera: opened %s (%dx%d @ %g fps reported)", self.description, int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), cap.get(cv2.CAP_PROP_FPS))
        return cap

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def reopen(self) -> None:
        """Close and reopen the device now; ``RuntimeError`` if it cannot be opened."""
        with self._lock:
            if self._closed:
                raise RuntimeError("camera: reopen() after close()")
            self._release()
            self._cap = self._open()
            self._reopens += 1
            self._consecutive_failures = 0
            self._frames_since_open = 0
            self._grabbed_t_ms = None
            self._failed_decodes = 0

    def read(self) -> VideoFrame | None:
        """The next frame; ``None`` after :meth:`close`; :class:`SourceReadError` on a failed read."""
        with self._lock:
            if self._closed:
                return None
            try:
                frame = self._read_locked()
            finally:
                if self._closed:  # closed during this read: close() left the release to us
                    self._release()
            return None if self._closed else frame

    def grab(self) -> float | None:
        """Take the next frame off the device without decoding it (``cv2.VideoCapture.grab``: a USB webcam's JPEG
        is decoded by :meth:`retrieve` only), and return its time; ``None`` after :meth:`close`;
        :class:`SourceReadError` on a failed read. Counted, failed or reopened as :meth:`read` is. Grabbing every
        frame keeps the driver's queue empty, so the frame retrieved is the newest, not one queued before it."""
        with self._lock:
            if self._closed:
                return None
            try:
                self._open_for_read()
                assert self._cap is not None  # opened above, or it raised
                if not self._cap.grab():
                    self._failed_read()
                self._took_frame()  # delivered for the back-off once decoded (retrieve)
                self._grabbed_t_ms = t_ms = self._clock_ms()
            finally:
                if self._closed:
                    self._release()
            return None if self._closed else t_ms

    def retrieve(self) -> VideoFrame | None:
        """The frame :meth:`grab` took last, decoded, with the time it was grabbed (each grabbed frame at most
        once); ``None`` after :meth:`close`; :class:`SourceReadError` when it cannot be decoded, or no frame was
        grabbed since the last retrieve or (re)open."""
        with self._lock:
            if self._closed:
                return None
            try:
                t_ms, self._grabbed_t_ms = self._grabbed_t_ms, None
                if self._cap is None or t_ms is None:
                    self._read_failures += 1
                    raise SourceReadError(f"camera: no frame of {self.description} was grabbed to decode")
                ok, image = self._cap.retrieve()
                if not ok or image is None:
                    # the grab before it counted as delivered: the decodes that failed in a row are the failures in
                    # a row, so a camera none of whose frames decodes is reopened as one whose reads all fail
                    self._failed_decodes += 1
                    self._consecutive_failures = max(self._consecutive_failures, self._failed_decodes - 1)
                    self._failed_read()
                self._failed_decodes = 0
                frame = VideoFrame(image=self._checked_bgr(image), t_ms=t_ms)
                self._decoded_frame()
            finally:
                if self._closed:
                    self._release()
            return None if self._closed else frame

    @property
    def decoded(self) -> int:
        """Frames decoded so far: each :meth:`read`, and each :meth:`retrieve` of a grabbed frame."""
        return self._decoded

    def _read_locked(self) -> VideoFrame:
        self._open_for_read()
        assert self._cap is not None  # opened above, or it raised
        ok, image = self._cap.read()
        if not ok or image is None:
            self._failed_read()
        image = self._checked_bgr(image)
        self._delivered()
        return VideoFrame(image=image, t_ms=self._clock_ms())

    def _open_for_read(self) -> None:
        """The capture, reopened first where it was closed after failed reads and its back-off is over; else
        :class:`SourceReadError`."""
        if self._cap is not None:
            return
        self._grabbed_t_ms = None
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
        self._reopened_lines.say(logger, logging.INFO, "camera: %s reopened", self.description)

    def _failed_read(self) -> NoReturn:
        """A read (or grab, or retrieve) that gave no frame: counted, and after ``reopen_after_failures`` in a row
        the capture is released for a later read to reopen."""
        self._read_failures += 1
        self._consecutive_failures += 1
        if self._consecutive_failures >= self.options.reopen_after_failures:
            self._release()
            if self._frames_since_open:  # it was delivering: reopen at once
                self._reopen_lines.say(logger, logging.WARNING, "camera: %d failed reads in a row from %s; "
                                       "reopening it", self._consecutive_failures, self.description)
                self._next_attempt_ms = self._clock_ms()
            else:  # it opens but delivers nothing: reopening is a failure too, and backs off
                delay_ms = self._backoff.next_delay_ms()
                logger.debug("camera: %s opened but delivered no frame; next reopen in %.0f ms",
                             self.description, delay_ms)
                self._next_attempt_ms = self._clock_ms() + delay_ms
        raise SourceReadError(f"camera: failed to read a frame from {self.description}")

    def _delivered(self) -> None:
        """A frame came off the device and was decoded: the failures in a row and the back-off start afresh."""
        self._took_frame()
        self._decoded_frame()

    def _took_frame(self) -> None:
        """A frame came off the device (:meth:`read`, :meth:`grab`): counted; the failures in a row start afresh."""
        self._consecutive_failures = 0
        self._items += 1

    def _decoded_frame(self) -> None:
        """A frame decoded: the camera delivers, so a failure now reopens it at once and the back-off starts afresh
        (a camera whose frames grab but never decode backs off as one whose reads all fail)."""
        self._decoded += 1
        self._frames_since_open += 1
        self._backoff.reset()

    def _checked_bgr(self, image: np.ndarray) -> np.ndarray:
        image = self._appsink_as_bgr(image)
        bgr = as_bgr(image)
        if bgr is None:  # the device (or the pipeline's caps) delivers a format the models cannot take
            raise RuntimeError(f"camera: {self.description} delivers frames of shape {image.shape} dtype "
                               f"{image.dtype}; expected 8-bit BGR, BGRx or grey (end a GStreamer pipeline with "
                               f"'videoconvert ! video/x-raw, format=BGR ! appsink')")
        return bgr

    def _appsink_as_bgr(self, image: np.ndarray) -> np.ndarray:
        """A GStreamer pipeline's frame in a format OpenCV's appsink hands over unconverted, as BGR: RGBA/RGBx
        (``nvvidconv ! video/x-raw, format=RGBA ! appsink``), which would pass for BGRx with red and blue swapped,
        and planar YUV 4:2:0 (``libcamerasrc``'s NV12, ``format=I420``), one 8-bit plane of height * 3 / 2 rows,
        which would pass for a grey image with the chroma under it. The format is the one the pipeline names last; a
        4:2:0 frame of a pipeline that names none is a ``RuntimeError``. Any other frame is returned as it is."""
        source = self.options.source
        if not is_gstreamer_pipeline(source) or image.dtype != np.uint8:
            return image
        assert self._cap is not None and isinstance(source, str)
        named = _pipeline_format(source) or ""
        if image.ndim == 3 and image.shape[2] == 4:
            return cv2.cvtColor(image, cv2.COLOR_RGBA2BGR) if named in ("RGBA", "RGBX") else image
        if image.ndim != 2:
            return image
        height, width = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        if not (height > 0 and height % 2 == 0 and image.shape == (height * 3 // 2, width) and width % 2 == 0):
            return image  # GRAY8: as tall as the frame
        if named not in YUV420_TO_BGR:
            raise RuntimeError(f"camera: {self.description} delivers {width}x{height} frames as {height * 3 // 2} "
                               f"rows of planar YUV 4:2:0 and the pipeline names no such format; expected 8-bit BGR: "
                               f"end it with 'videoconvert ! video/x-raw, format=BGR ! appsink', or name the format "
                               f"before the appsink ({', '.join(f'format={name}' for name in YUV420_TO_BGR)})")
        return cv2.cvtColor(image, YUV420_TO_BGR[named])

    def close(self) -> None:
        super().close()
        if self._lock.acquire(timeout=CLOSE_WAIT_S):
            try:
                self._release()
            finally:
                self._lock.release()
        else:
            logger.warning("camera: a read from %s is still in progress; it releases the camera when it returns",
                           self.description)
