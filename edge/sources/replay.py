"""Replay sources: WAV and video files, in real time or as fast as possible, with media timestamps."""

from __future__ import annotations

import dataclasses
import logging
import math
import mmap
import os
import stat
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgesense.frontend.audio import MAX_SAMPLE_RATE_HZ
from edgesense.frontend.resample import StreamingResampler
from edgesense.schema.validate import is_int, is_number, require
from edgesense.sources.base import (
    MS_PER_S,
    AudioChunk,
    VideoFrame,
    _SourceBase,
    as_bgr,
    monotonic_ms,
    opencv_path,
    quiet_opencv,
    require_fps,
)
from edgesense.sources.microphone import MAX_BUFFER_MS, TARGET_SAMPLE_RATE_HZ

__all__ = ["WavReplayOptions", "WavReplaySource", "VideoReplayOptions", "VideoReplaySource"]

logger = logging.getLogger(__name__)

#: A video decodes to at least this many frames; fewer is a still image.
MIN_VIDEO_FRAMES = 2
#: A frame whose presentation time is this close to ``index * 1000 / fps`` is stamped with the latter (a
#: constant-rate video's timestamps do not depend on how its container rounds them).
MEDIA_TIME_SNAP_MS = 1.0
#: The most failed reads in a row taken for a damaged stretch of the file (frames that do not decode, skipped) and
#: not for its end; fewer where the file says how many frames it has (none after its last frame).
MAX_UNDECODABLE_FRAMES = 1000
#: A replayed WAV is decoded this many samples (of all its channels) at a time: 2 MB as float32, 33 s of 16-kHz mono.
WAV_BLOCK_SAMPLES = 2**19
#: The longest chunk a replayed WAV is cut in: the longest a microphone takes (half its longest buffer, 30 s), what
#: ``audio.chunk_ms`` passes on. A longer one (1e308 ms) overflowed to an infinite sample count when the file opened.
MAX_CHUNK_MS = MAX_BUFFER_MS / 2


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
        require(is_int(self.sample_rate_hz) and 0 < self.sample_rate_hz <= MAX_SAMPLE_RATE_HZ, "sample_rate_hz",
                f"an integer in [1, {MAX_SAMPLE_RATE_HZ}]", self.sample_rate_hz)
        require(is_number(self.chunk_ms) and 0 < self.chunk_ms <= MAX_CHUNK_MS, "chunk_ms",
                f"a number in (0, {MAX_CHUNK_MS:g}]", self.chunk_ms)
        require(isinstance(self.realtime, bool), "realtime", "a bool", self.realtime)
        require(isinstance(self.loop, bool), "loop", "a bool", self.loop)


def _check_media_path(path: Path, what: str) -> None:
    """A ``ValueError`` naming ``path`` unless it is a file or a pipe (``/dev/stdin``, ``<(...)``) to read ``what``
    from: a folder, nothing, or a device (a terminal as ``/dev/stdin``, which would wait for typing) is refused."""
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; expected {what}")
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ValueError(f"{path}: {what.split(' ', 1)[1]} not found") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it ({exc.strerror or exc}); expected {what}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        found = "a terminal (nothing is piped in)" if _is_terminal(path) else "a device"
        raise ValueError(f"{path}: expected {what} or a pipe, found {found}")


def _is_terminal(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.isatty(fd)
    finally:
        os.close(fd)


def _open_wav(path: Path) -> Any:
    """The WAV file's bytes, without reading them into memory where it can: a regular file is mapped (an hour of
    48-kHz stereo is 700 MB), anything else (a pipe: ``--audio /dev/stdin``, ``<(...)``) is read to its end."""
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            if stat.S_ISREG(info.st_mode) and info.st_size > 0:
                return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            return f.read()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the WAV file ({exc.strerror or exc})") from None


class WavReplaySource(_SourceBase[AudioChunk]):
    """Chunks of a WAV file; ``t_ms`` is stream time (0 at the first sample).

    Every chunk has ``chunk_ms`` of audio except possibly the file's last one,
    which is shorter. A missing or unreadable file is a ``ValueError`` naming it.
    The file is decoded, mixed to mono and resampled a block at a time as it is replayed (the samples
    are those of :func:`edgesense.frontend.wav.read_wav`), so a recording of hours needs no more memory
    than one of seconds; a pipe (``/dev/stdin``) is read to its end first.
    """

    def __init__(self, path: str | os.PathLike[str], options: WavReplayOptions = WavReplayOptions()) -> None:
        from edgesense.frontend import wav

        super().__init__()
        require(isinstance(path, (str, os.PathLike)), "path", "a path to a WAV file", path)
        require(isinstance(options, WavReplayOptions), "options", "WavReplayOptions", options)
        self.path = Path(path)
        self.options = options
        _check_media_path(self.path, "a WAV file")
        self._raw = _open_wav(self.path)  # the file's mapping (an open descriptor) until close()
        try:
            self._wav = wav._parse(self.path, self._raw)  # the shared parser (PCM 8/16/24/32-bit, float)
            info = self._wav.info
            if info.num_frames == 0:
                raise wav._bad(self.path, "at least one audio frame", "an empty data chunk")
            self._block_bytes = max(1, WAV_BLOCK_SAMPLES // info.channels) * info.channels * self._wav.sample_bytes
            if info.format == "float":  # a NaN anywhere is refused now, not in the middle of the replay
                peak, clipped = 0.0, 0
                for start in range(0, len(self._wav.data), self._block_bytes):
                    # the file's own floats, checked as decoding checks them, not decoded (they are once, as they play)
                    block_peak, block_clipped = wav._checked_floats(self.path, wav._float_samples(
                        self._wav, self._wav.data[start:start + self._block_bytes]))
                    peak, clipped = max(peak, block_peak), clipped + block_clipped
                wav._say_clipped(self.path, peak, clipped, info.num_frames * info.channels)  # once, not per block
        except ValueError:
            self._release_file()
            raise
        self._num_samples = info.num_frames
        if info.sample_rate_hz != options.sample_rate_hz:
            ratio = Fraction(options.sample_rate_hz, info.sample_rate_hz)
            self._num_samples = -(-info.num_frames * ratio.numerator // ratio.denominator)
        self._chunk_samples = max(1, int(round(options.sample_rate_hz * options.chunk_ms / MS_PER_S)))
        self._rewind()
        self._stream_index = 0  # absolute sample index (grows across loops)
        self._pacer = _Pacer(options.realtime)

    @property
    def duration_ms(self) -> float:
        """Length of the file (one pass)."""
        return self._num_samples * MS_PER_S / self.options.sample_rate_hz

    def _rewind(self) -> None:
        """Decode from the file's first sample again."""
        rate = self._wav.info.sample_rate_hz
        self._resampler = (StreamingResampler(rate, self.options.sample_rate_hz)
                           if rate != self.options.sample_rate_hz else None)
        self._byte_position = 0  # within the data chunk
        self._decoded = np.zeros(0, dtype=np.float32)  # samples decoded but not yet returned

    def _decode_more(self) -> bool:
        """Decode the file's next block into :attr:`_decoded`; False at the end of the file."""
        from edgesense.frontend import wav

        data = self._wav.data
        if self._byte_position >= len(data):
            return False
        block = data[self._byte_position:self._byte_position + self._block_bytes]
        self._byte_position += len(block)
        frames = wav._decode(dataclasses.replace(self._wav, data=block), say_clipped=False)  # said at the open
        mono = frames[:, 0] if frames.shape[1] == 1 else frames.mean(axis=1, dtype=np.float32)
        if self._resampler is not None:
            mono = self._resampler.push(mono)
            if self._byte_position >= len(data):
                mono = np.concatenate([mono, self._resampler.flush()])
            mono = np.clip(mono, -1.0, 1.0)
        self._decoded = np.concatenate([self._decoded, mono.astype(np.float32, copy=False)])
        return True

    def _next_samples(self) -> np.ndarray:
        """The next chunk's samples (fewer at the end of the file; none after it)."""
        while self._decoded.size < self._chunk_samples and self._decode_more():
            pass
        samples, self._decoded = self._decoded[:self._chunk_samples].copy(), self._decoded[self._chunk_samples:]
        return samples

    def wait_until(self, t_ms: float) -> None:
        """Hold the caller until stream time ``t_ms`` on this replay's clock (at once unless ``realtime``):
        what keeps a replayed video that outlasts the audio in real time."""
        self._pacer.wait_until(t_ms)

    def read(self) -> AudioChunk | None:
        if self._closed:
            return None
        samples = self._next_samples()
        if samples.size == 0:
            if not self.options.loop:
                return None
            self._rewind()
            samples = self._next_samples()
        t_ms = self._stream_index * MS_PER_S / self.options.sample_rate_hz
        self._stream_index += samples.size
        self._pacer.wait_until(t_ms)
        self._items += 1
        return AudioChunk(samples=samples, t_ms=t_ms, sample_rate_hz=self.options.sample_rate_hz)

    def _release_file(self) -> None:
        """Unmap the file and close its descriptor (a pipe's bytes, read into memory, are dropped)."""
        raw, self._raw = self._raw, b""
        try:
            wav_data = getattr(getattr(self, "_wav", None), "data", None)
            if isinstance(wav_data, memoryview):
                wav_data.release()  # the parsed data chunk: a view into the file's bytes
            if isinstance(raw, mmap.mmap):
                raw.close()
        except BufferError:  # a view of it is still held elsewhere: it is unmapped when that goes
            logger.debug("%s: the WAV file's mapping is still in use; it is released when that ends", self.path)

    def close(self) -> None:
        """End the replay and release the file now (its mapping and descriptor), not when the source is collected:
        a program that replays many files, and keeps the sources it closed, would run out of descriptors."""
        if self._closed:
            return
        super().close()
        self._decoded = np.zeros(0, dtype=np.float32)
        self._release_file()


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
        require_fps("fps", self.fps, nullable=True)


class VideoReplaySource(_SourceBase[VideoFrame]):
    """Frames of a video file decoded by OpenCV, stamped with their presentation time in the file
    (0 at the first frame), so a variable-frame-rate video (phones record them) keeps its timing.
    Where the file has no usable presentation times, or ``fps`` is given, frame ``i`` has
    ``t_ms = i * 1000 / fps``. Timestamps always increase (across loops too).

    A missing, corrupt or unreadable file (no decodable first frame, no frame
    rate) and a still image (one frame only) are a ``ValueError`` naming it.
    OpenCV's and FFmpeg's own messages are silenced while the file is probed.
    Frames that do not decode (a damaged stretch of the file, at its start too) are skipped with a
    warning, counted in :attr:`skipped_frames`; the frames after them keep their times.
    """

    def __init__(self, path: str | os.PathLike[str], options: VideoReplayOptions = VideoReplayOptions()) -> None:
        super().__init__()
        require(isinstance(path, (str, os.PathLike)), "path", "a path to a video file", path)
        require(isinstance(options, VideoReplayOptions), "options", "VideoReplayOptions", options)
        self.path = Path(path)
        self.options = options
        _check_media_path(self.path, "a video file")
        self._opencv_path = opencv_path(self.path, "a video file")
        self._index = 0  # frames of the file returned or skipped before the next one returned (grows across loops)
        self._frames_this_pass = 0  # frames returned this pass
        self._pass_first_index = 0  # _index at this pass's frame 0
        self._grabs_this_pass = 0  # frames decoded or failed this pass: the file's position
        self._pass_start_ms = 0.0  # stream time of this pass's first frame
        self._first_media_ms: float | None = None  # presentation time of this pass's frame 0 (first frame's less
        # the frames skipped before it)
        self._last_t_ms: float | None = None
        self._skipped_frames = 0
        with quiet_opencv():
            self._cap = cv2.VideoCapture(self._opencv_path)
            try:
                self.fps, self._pending = self._probe(options)
            except ValueError:
                self._cap.release()
                raise
        self._frame_ms = MS_PER_S / self.fps
        self._pacer = _Pacer(options.realtime)
        self._lock = threading.Lock()

    @property
    def skipped_frames(self) -> int:
        """Frames that could not be decoded (a damaged file), skipped since the replay started."""
        return self._skipped_frames

    def _grab(self) -> tuple[np.ndarray, float] | None:
        """The next decoded frame and its presentation time in ms (NaN when OpenCV has none)."""
        ok, image = self._cap.read()
        self._grabs_this_pass += 1
        if not ok or image is None:
            return None
        return image, float(self._cap.get(cv2.CAP_PROP_POS_MSEC))

    def _grab_past_damage(self) -> tuple[np.ndarray, float, int] | None:
        """The next frame that decodes and how many did not before it (OpenCV's read fails, and a later one
        succeeds: skipped, counted and said); ``None`` at the end of the file."""
        frame = self._grab()
        failed = 0
        if frame is None:
            declared = float(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
            position = self._grabs_this_pass - 1  # the frame that just failed
            later = declared - position - 1 if math.isfinite(declared) and declared > 0 else MAX_UNDECODABLE_FRAMES
            while frame is None and failed < min(later, MAX_UNDECODABLE_FRAMES):
                failed += 1
                frame = self._grab()
        if frame is None:
            return None
        if failed:
            first = self._grabs_this_pass - failed  # counted from 1
            self._skipped_frames += failed
            frames = f"frame {first}" if failed == 1 else f"frames {first} to {first + failed - 1}"
            logger.warning("%s: %s could not be decoded (a damaged file?) and %s skipped; the replay goes on",
                           self.path, frames, "was" if failed == 1 else "were")
        return frame[0], frame[1], failed

    def _probe(self, options: VideoReplayOptions) -> tuple[float, list[tuple[np.ndarray, float, int]]]:
        """The frame rate and the first two frames (a video has at least two; a still image one)."""
        if not self._cap.isOpened():
            raise ValueError(f"{self.path}: not a readable video file (OpenCV cannot open it)")
        fps = options.fps if options.fps is not None else float(self._cap.get(cv2.CAP_PROP_FPS))
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"{self.path}: the video has no usable frame rate ({fps!r}); expected a video with one "
                             f"(re-encode it, e.g. ffmpeg -i IN -r 30 OUT.mp4, or give VideoReplayOptions.fps)")
        frames = []
        for _ in range(MIN_VIDEO_FRAMES):
            frame = self._grab_past_damage()
            if frame is None:
                break
            frames.append(frame)
        if not frames:
            raise ValueError(f"{self.path}: not a readable video file (no frame could be decoded)")
        if len(frames) < MIN_VIDEO_FRAMES:
            raise ValueError(f"{self.path}: a still image, not a video (only one frame could be decoded); "
                             f"expected a video file such as .mp4")
        return fps, frames

    def _next_frame(self) -> tuple[np.ndarray, float, int] | None:
        if self._pending:
            return self._pending.pop(0)
        frame = self._grab_past_damage()
        if frame is not None:
            return frame
        if not self.options.loop or self._frames_this_pass == 0:
            return None
        self._cap.release()
        with quiet_opencv():
            self._cap = cv2.VideoCapture(self._opencv_path)
        self._frames_this_pass = 0
        self._grabs_this_pass = 0
        self._first_media_ms = None
        self._pass_first_index = self._index
        assert self._last_t_ms is not None
        self._pass_start_ms = self._last_t_ms + self._frame_ms
        return self._grab_past_damage()

    def _stamp(self, media_ms: float) -> float:
        """Stream time of the frame just decoded: its presentation time in the file, counted from the pass's
        first frame; the frame index and the frame rate where that is missing, goes back or ``fps`` is given."""
        if self.options.fps is not None:
            return self._index * self._frame_ms
        if self._first_media_ms is None and math.isfinite(media_ms):
            frame_in_pass = self._index - self._pass_first_index  # > 0 after a damaged start
            self._first_media_ms = media_ms - frame_in_pass * self._frame_ms
        t_ms = math.nan
        if self._first_media_ms is not None and math.isfinite(media_ms):
            t_ms = self._pass_start_ms + media_ms - self._first_media_ms
        if self._last_t_ms is None:
            return self._index * self._frame_ms  # 0, or the time of the frames skipped before it
        if not (math.isfinite(t_ms) and t_ms > self._last_t_ms):
            return self._last_t_ms + self._frame_ms
        on_grid_ms = self._index * self._frame_ms  # a constant-rate video: exactly as the frame rate says
        if abs(t_ms - on_grid_ms) <= MEDIA_TIME_SNAP_MS and on_grid_ms > self._last_t_ms:
            return on_grid_ms
        return t_ms

    def read(self) -> VideoFrame | None:
        with self._lock:
            if self._closed:
                return None
            frame = self._next_frame()
            if frame is None:
                return None
            image, media_ms, skipped = frame
            self._index += skipped  # frame i of the file keeps its time i / fps
            bgr = as_bgr(image)
            if bgr is None:
                raise ValueError(f"{self.path}: expected 8-bit colour or grey frames, found shape {image.shape} "
                                 f"dtype {image.dtype}")
            image = bgr
            t_ms = self._stamp(media_ms)
            self._last_t_ms = t_ms
            self._index += 1
            self._frames_this_pass += 1
        self._pacer.wait_until(t_ms)
        self._items += 1
        return VideoFrame(image=image, t_ms=t_ms)

    def close(self) -> None:
        with self._lock:
            super().close()
            self._cap.release()
