"""Replay sources: WAV and video files, in real time or as fast as possible, with media timestamps."""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgesense.schema.validate import is_int, is_number, require
from edgesense.sources.base import (
    MS_PER_S,
    AudioChunk,
    VideoFrame,
    _SourceBase,
    monotonic_ms,
    quiet_opencv,
)
from edgesense.sources.microphone import TARGET_SAMPLE_RATE_HZ

__all__ = ["WavReplayOptions", "WavReplaySource", "VideoReplayOptions", "VideoReplaySource"]

#: A video decodes to at least this many frames; fewer is a still image.
MIN_VIDEO_FRAMES = 2


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
        require(is_int(self.sample_rate_hz) and self.sample_rate_hz > 0, "sample_rate_hz", "a positive integer",
                 self.sample_rate_hz)
        require(is_number(self.chunk_ms) and self.chunk_ms > 0, "chunk_ms", "a positive number", self.chunk_ms)
        require(isinstance(self.realtime, bool), "realtime", "a bool", self.realtime)
        require(isinstance(self.loop, bool), "loop", "a bool", self.loop)


def _read_wav(path: Path, sample_rate_hz: int) -> np.ndarray:
    from edgesense.frontend.wav import read_wav  # the shared reader (PCM 8/16/24/32-bit, float; resamples)

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
        if self.path.is_dir():
            raise ValueError(f"{self.path}: is a folder; expected a WAV file")
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

    def wait_until(self, t_ms: float) -> None:
        """Hold the caller until stream time ``t_ms`` on this replay's clock (at once unless ``realtime``):
        what keeps a replayed video that outlasts the audio in real time."""
        self._pacer.wait_until(t_ms)

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
        require(self.fps is None or (is_number(self.fps) and self.fps > 0), "fps", "None or a positive number",
                 self.fps)


class VideoReplaySource(_SourceBase):
    """Frames of a video file decoded by OpenCV; frame ``i`` has ``t_ms = i * 1000 / fps``.

    A missing, corrupt or unreadable file (no decodable first frame, no frame
    rate) and a still image (one frame only) are a ``ValueError`` naming it.
    OpenCV's and FFmpeg's own messages are silenced while the file is probed.
    """

    def __init__(self, path: str | os.PathLike[str], options: VideoReplayOptions = VideoReplayOptions()) -> None:
        super().__init__()
        self.path = Path(path)
        self.options = options
        if self.path.is_dir():
            raise ValueError(f"{self.path}: is a folder; expected a video file")
        if not self.path.is_file():
            raise ValueError(f"{self.path}: video file not found")
        with quiet_opencv():
            self._cap = cv2.VideoCapture(str(self.path))
            try:
                self.fps, self._pending = self._probe(options)
            except ValueError:
                self._cap.release()
                raise
        self._index = 0  # frames returned so far (grows across loops)
        self._frames_this_pass = 0
        self._pacer = _Pacer(options.realtime)
        self._lock = threading.Lock()

    def _probe(self, options: VideoReplayOptions) -> tuple[float, list[np.ndarray]]:
        """The frame rate and the first two frames (a video has at least two; a still image one)."""
        if not self._cap.isOpened():
            raise ValueError(f"{self.path}: not a readable video file (OpenCV cannot open it)")
        fps = options.fps if options.fps is not None else float(self._cap.get(cv2.CAP_PROP_FPS))
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"{self.path}: the video has no usable frame rate ({fps!r}); pass fps=")
        frames = []
        for _ in range(MIN_VIDEO_FRAMES):
            ok, image = self._cap.read()
            if not ok or image is None:
                break
            frames.append(image)
        if not frames:
            raise ValueError(f"{self.path}: not a readable video file (no frame could be decoded)")
        if len(frames) < MIN_VIDEO_FRAMES:
            raise ValueError(f"{self.path}: a still image, not a video (only one frame could be decoded); "
                             f"expected a video file such as .mp4")
        return fps, frames

    def _next_image(self) -> np.ndarray | None:
        if self._pending:
            return self._pending.pop(0)
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
