"""``edgesense record``: labelled camera+microphone pairs, to teach the device your own places.

At the scene rate of the device config (``scheduler.scene_rate_hz``, the rate the loop runs the
image encoder at) it writes one pair: the newest camera frame as ``OUT/LABEL/NAME.jpg`` and the
second of microphone audio that ends at that frame's timestamp as ``OUT/LABEL/NAME.wav`` (16-bit
mono at the model frontend's rate and clip length, :class:`edgesense.frontend.audio.AudioFrontendOptions`:
16 kHz, 1 s). That is the layout ``edgesense train --av OUT`` reads
(:func:`edgesense.train.data.load_av_folder`). Sampling starts once a whole second of audio is
buffered before a frame; ``--seconds`` of sampling then give about ``seconds x scene_rate_hz`` pairs.

``NAME`` is ``LABEL-YYYYmmdd-HHMMSS-0001`` (the session's start, then a count), so sessions never
collide; an existing file is never overwritten. Sources are opened as ``edgesense run`` opens them
(:func:`edgesense.loop.pipeline.open_sources`): the camera and microphone of the config, or with
``--video FILE --audio FILE`` replayed files (in real time unless ``--fast``). Both are needed.

Progress (pairs done / expected, seconds, the audio level in dBFS) goes to stderr; a preview window
shows the camera when a display is there (``--no-preview``: never). SIGINT/SIGTERM (Ctrl-C) stop
cleanly: every pair written so far is kept, the summary is printed, the exit code is 0. A pair that
cannot be written (a full disk) leaves no part of itself behind: the error names its file.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import shlex
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TextIO

from edgesense.app.cli import file_argument, path_argument, say
from edgesense.schema.validate import is_int, is_positive, require
from edgesense.types import label_twin

# numpy, OpenCV and the loop's pieces are imported where they are used: ``edgesense record --help`` does not wait for
# them (seconds on a Raspberry Pi).
if TYPE_CHECKING:
    import numpy as np

    from edgesense.frontend.audio import AudioFrontendOptions
    from edgesense.loop.scheduler import SchedulerOptions
    from edgesense.sources.base import AudioChunk, VideoFrame

__all__ = ["RecordOptions", "PairWriter", "ProgressBar", "Recorder", "RecordResult", "add_arguments", "run"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIX = ".jpg"
AUDIO_SUFFIX = ".wav"
SESSION_TIME_FORMAT = "%Y%m%d-%H%M%S"
INDEX_DIGITS = 4
JPEG_QUALITY = 95
#: The audio history holds this many clips: room for a camera frame that arrives before its audio.
HISTORY_CLIPS = 2
#: A chunk that starts later than this after the previous one's end is a gap in the audio.
GAP_TOLERANCE_MS = 1.0
PROGRESS_BAR_CHARS = 24
PROGRESS_REDRAW_S = 0.2  #: on a terminal, the bar is redrawn at most this often
PROGRESS_LINES = 10  #: elsewhere (a pipe, a log), one line per tenth of the pairs
DEFAULT_CONFIG = "desktop"
#: What the next step names (README "Teach the device your own places").
BUNDLED_MODEL = "models/edgesense.tflite"
README_SECTION = "README.md, 'Teach the device your own places'"
OVERLAY_COLOUR = (40, 40, 230)  # BGR red: recording
OVERLAY_ORIGIN_PX = (10, 30)
OVERLAY_SCALE = 0.8
OVERLAY_THICKNESS = 2
MS_PER_S = 1000.0
SLOT_TOLERANCE = 1e-9  #: seconds x rate within this of a whole number is that number (float rounding)
#: Sampling waits this long (of audio, after the first whole second) for a camera frame before giving up.
FIRST_FRAME_TIMEOUT_S = 10.0
FLAG_NAMES = {"label": "--label", "seconds": "--seconds"}
NAME_MAX_BYTES = 255  #: the longest file name most file systems take (ext4, FAT, exFAT, NTFS in UTF-16 units)
#: What a pair's file name adds to its label: ``-YYYYmmdd-HHMMSS-0001.jpg``.
NAME_TAIL_CHARS = len(f"-{datetime(2000, 1, 1).strftime(SESSION_TIME_FORMAT)}-{1:0{INDEX_DIGITS}d}{IMAGE_SUFFIX}")


def label_problem(label: Any) -> str | None:
    """Why ``label`` cannot name a class folder (None: it can)."""
    if not isinstance(label, str) or not label:
        return "it is empty"
    if "/" in label or "\\" in label:
        return f"it contains a '{'/' if '/' in label else chr(92)}'"
    if ".." in label:
        return "it contains '..'"
    if any(c.isspace() for c in label):
        return "it contains whitespace"
    hidden = next((c for c in label if not c.isprintable()), None)
    if hidden is not None and 0xD800 <= ord(hidden) <= 0xDFFF:  # argv bytes that are not UTF-8 (surrogateescape)
        return "it is not UTF-8 text"
    if hidden is not None:  # "kitchen" + a pasted zero-width space: a second class that looks like the first
        return f"it contains the invisible or control character U+{ord(hidden):04X}"
    if label.startswith("."):
        return "it starts with '.' (a hidden folder, which training skips)"
    if len(label.encode("utf-8", "surrogateescape")) + NAME_TAIL_CHARS > NAME_MAX_BYTES:
        return (f"it is too long: LABEL-YYYYmmdd-HHMMSS-0001.jpg would pass the {NAME_MAX_BYTES}-byte limit of "
                f"a file name")
    return None


@dataclass(frozen=True, kw_only=True)
class RecordOptions:
    """One recording session: ``label`` (the class folder's name: no '/', '..', whitespace, invisible
    characters or leading '.', at most 230 bytes), ``seconds`` of sampling after the first full second of audio,
    the scene rate from ``scheduler`` (a device config's ``scheduler:`` section) and the clip from
    ``frontend``; ``first_frame_timeout_s``: how long sampling waits for a camera frame (a camera
    that opens but delivers none is a RuntimeError then, not a recording that never ends)."""

    label: str
    seconds: float
    scheduler: SchedulerOptions = field(default_factory=lambda: _scheduler_options())
    frontend: AudioFrontendOptions = field(default_factory=lambda: _frontend_options())
    jpeg_quality: int = JPEG_QUALITY
    first_frame_timeout_s: float = FIRST_FRAME_TIMEOUT_S

    def __post_init__(self) -> None:
        from edgesense.frontend.audio import AudioFrontendOptions
        from edgesense.loop.scheduler import SchedulerOptions

        problem = label_problem(self.label)
        require(problem is None, "label", f"a folder name without '/', '..', whitespace, invisible characters or a "
                f"leading '.', of at most {NAME_MAX_BYTES - NAME_TAIL_CHARS} bytes ({problem})", self.label)
        require(is_positive(self.seconds), "seconds", "a finite number of seconds > 0", self.seconds)
        require(isinstance(self.scheduler, SchedulerOptions), "scheduler", "SchedulerOptions", self.scheduler)
        require(isinstance(self.frontend, AudioFrontendOptions), "frontend", "AudioFrontendOptions", self.frontend)
        require(is_int(self.jpeg_quality) and 0 <= self.jpeg_quality <= 100, "jpeg_quality",
                "an integer in [0, 100]", self.jpeg_quality)
        require(is_positive(self.first_frame_timeout_s), "first_frame_timeout_s", "a number of seconds > 0",
                self.first_frame_timeout_s)

    @property
    def expected_pairs(self) -> int:
        """Pairs in ``seconds`` at the scene rate: one at the start and one every period after."""
        return max(1, math.ceil(self.seconds * self.scheduler.scene_rate_hz - SLOT_TOLERANCE))


def _scheduler_options() -> SchedulerOptions:
    from edgesense.loop.scheduler import SchedulerOptions

    return SchedulerOptions()


def _frontend_options() -> AudioFrontendOptions:
    from edgesense.frontend.audio import AudioFrontendOptions

    return AudioFrontendOptions()


# --------------------------------------------------------------------------- files


def session_prefix(folder: Path, label: str, *, now: Callable[[], datetime] = datetime.now,
                   sleep: Callable[[float], None] = time.sleep) -> str:
    """``LABEL-YYYYmmdd-HHMMSS-`` for a session starting now; when a session of the same second
    already wrote into ``folder``, the next second's (waiting for it), so names never collide."""
    while True:
        prefix = f"{label}-{now().strftime(SESSION_TIME_FORMAT)}-"
        if not (folder.is_dir() and any(p.name.startswith(prefix) for p in folder.iterdir())):
            return prefix
        sleep(1.0 - now().microsecond / 1e6)


class PairWriter:
    """Writes ``folder/PREFIX0001.jpg`` + ``.wav``, ``0002``, ...; creates ``folder`` with the first
    pair (a session that writes nothing leaves nothing behind) and never overwrites a file
    (``FileExistsError`` naming it)."""

    def __init__(self, folder: Path, prefix: str, *, sample_rate_hz: int, jpeg_quality: int = JPEG_QUALITY) -> None:
        self.folder = Path(folder)
        self.prefix = prefix
        self.sample_rate_hz = sample_rate_hz
        self.jpeg_quality = jpeg_quality
        self.written = 0

    def name(self, number: int) -> str:
        return f"{self.prefix}{number:0{INDEX_DIGITS}d}"

    def write(self, image: np.ndarray, samples: np.ndarray) -> Path:
        """Write one pair; return the image's path."""
        import cv2

        from edgesense.frontend.wav import write_wav

        name = self.name(self.written + 1)  # not with_suffix: a label may hold a dot ("living.room")
        image_path, audio_path = self.folder / f"{name}{IMAGE_SUFFIX}", self.folder / f"{name}{AUDIO_SUFFIX}"
        for path in (image_path, audio_path):
            if path.exists():
                raise FileExistsError(f"{path}: already exists; edgesense record never overwrites a file")
        ok, encoded = cv2.imencode(IMAGE_SUFFIX, image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            raise RuntimeError(f"{image_path}: OpenCV could not encode the frame as JPEG")
        created: list[Path] = []
        path, new_folder = self.folder, not self.folder.is_dir()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = image_path
            with open(image_path, "xb") as f:  # x: never overwrite, even a file that appeared just now
                created.append(image_path)
                f.write(encoded.tobytes())
            path = audio_path
            created.append(audio_path)  # checked above: missing, so a file there now is this write's
            write_wav(audio_path, samples, self.sample_rate_hz)
        except BaseException as exc:
            for done in created:  # no image without its sound, no half-written file (a full disk)
                done.unlink(missing_ok=True)
            if new_folder and self.folder.is_dir() and not any(self.folder.iterdir()):
                self.folder.rmdir()  # a session that wrote nothing leaves nothing behind
            if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
                raise OSError(f"{path}: cannot write it ({exc.strerror or exc}); the {self.written} pairs "
                              f"written before it are kept") from None
            raise
        self.written += 1
        return image_path


# --------------------------------------------------------------------------- progress


class ProgressBar:
    """``LABEL [#####.....] 12/600 pairs  2.4 s  -31.5 dBFS`` on ``stream``: redrawn in place on a
    terminal (at most every ``PROGRESS_REDRAW_S``), one line per tenth of the pairs elsewhere."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.total = max(1, total)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._clock = clock
        self._drawn_at: float | None = None
        self._step = 0

    def text(self, done: int, elapsed_s: float, level_dbfs: float | None) -> str:
        filled = min(PROGRESS_BAR_CHARS, PROGRESS_BAR_CHARS * done // self.total)
        level = "   - dBFS" if level_dbfs is None else f"{level_dbfs:5.1f} dBFS"
        return (f"{self.label} [{'#' * filled}{'.' * (PROGRESS_BAR_CHARS - filled)}] {done}/{self.total} pairs  "
                f"{elapsed_s:5.1f} s  {level}")

    def update(self, done: int, elapsed_s: float, level_dbfs: float | None) -> None:
        if self.stream is None:  # stderr closed (2>&-): print(file=None) would write to stdout
            return
        if self.tty:
            now = self._clock()
            if self._drawn_at is not None and now - self._drawn_at < PROGRESS_REDRAW_S and done < self.total:
                return
            self._drawn_at = now
            self.stream.write("\r" + self.text(done, elapsed_s, level_dbfs) + "\x1b[K")
            self.stream.flush()
            return
        step = min(PROGRESS_LINES, PROGRESS_LINES * done // self.total)
        if step > self._step:
            self._step = step
            print(self.text(done, elapsed_s, level_dbfs), file=self.stream, flush=True)

    def close(self) -> None:
        if self.tty and self._drawn_at is not None:
            self.stream.write("\n")
            self.stream.flush()


# --------------------------------------------------------------------------- the recorder


@dataclass(frozen=True)
class RecordResult:
    pairs: int
    expected: int
    sampled_s: float  #: stream time from the first sample's slot to the end
    media_ended: bool  #: the audio or the video ended before ``seconds``
    skipped: int  #: frames dropped with less than a whole second of audio before them
    stopped: bool  #: stopped by :meth:`Recorder.stop` (a signal, q in the preview)


class Recorder:
    """Pairs of the newest frame and the second of audio ending at its timestamp (module docstring).

    ``audio``: a source of :class:`AudioChunk` at ``options.frontend.sample_rate_hz`` (a
    microphone or a WAV replay), which sets the clock; ``video``: a live camera (``live_video``:
    read on a thread, newest frame kept) or a replay (aligned to the audio by timestamp). Every
    chunk goes into an :class:`AudioRingBuffer` by its absolute sample index (from its
    timestamp), so a frame's second is cut at the frame's own time; a gap in the audio (samples
    the microphone lost) is not bridged: frames need a whole second after it.
    ``on_frame(frame, recorder)`` sees each new frame (the preview); returning False stops.
    """

    def __init__(self, audio: Any, video: Any, options: RecordOptions, writer: PairWriter, *, live_video: bool,
                 on_frame: Callable[[VideoFrame, "Recorder"], Any] | None = None,
                 progress: ProgressBar | None = None) -> None:
        from edgesense.loop.scheduler import LatestFrameReader, PeriodicSchedule, ReplayVideoAligner
        from edgesense.sources.ringbuffer import AudioRingBuffer, RingBufferOptions

        self.audio = audio
        self.options = options
        self.writer = writer
        self.rate_hz = options.frontend.sample_rate_hz
        self.clip_samples = options.frontend.clip_samples
        self._ring = AudioRingBuffer(RingBufferOptions(capacity_samples=HISTORY_CLIPS * self.clip_samples))
        self._schedule = PeriodicSchedule(options.scheduler.scene_period_ms)
        from edgesense.sources.camera import CameraSource

        self._aligner = None if live_video else ReplayVideoAligner(video)
        # A live camera's frames are decoded only when a pair (or the start of sampling) wants one, unless
        # on_frame (the preview) sees them all: a USB webcam's 30 JPEGs a second for the 5 pairs a second saved.
        on_demand = live_video and on_frame is None and isinstance(video, CameraSource)
        self._reader = LatestFrameReader(video, decode_on_demand=on_demand) if live_video else None
        # ... asked for a camera frame period before it is due, so that it is there in time
        self._frame_lead_ms = MS_PER_S / video.options.fps if on_demand else 0.0
        self._video = video
        self._frames = 0  # frames the video gave
        self._on_frame = on_frame
        self._progress = progress
        self._stop = threading.Event()
        self._t0_ms: float | None = None  # stream time of ring index 0
        self._valid_from = 0  # ring index where the audio after the latest gap starts
        self._start_ms: float | None = None  # the first sample's slot
        self._newest: VideoFrame | None = None  # the newest frame not sampled yet
        self._pending: VideoFrame | None = None  # chosen for a sample, waiting for its audio
        self._audio_outage = False
        self.t_ms = 0.0
        self.level_dbfs: float | None = None  #: the level of the latest pair's audio
        self.skipped = 0

    @property
    def pairs(self) -> int:
        return self.writer.written

    @property
    def sampled_s(self) -> float:
        return 0.0 if self._start_ms is None else (self.t_ms - self._start_ms) / MS_PER_S

    def stop(self) -> None:
        """End after the current chunk (safe from signal handlers and other threads)."""
        self._stop.set()

    def _index(self, t_ms: float) -> int:
        assert self._t0_ms is not None
        return int(round((t_ms - self._t0_ms) * self.rate_hz / MS_PER_S))

    def _push(self, chunk: AudioChunk) -> None:
        import numpy as np

        if chunk.sample_rate_hz != self.rate_hz:
            raise ValueError(f"audio: expected {self.rate_hz} Hz chunks (the model's audio frontend), "
                             f"got {chunk.sample_rate_hz} Hz")
        if self._t0_ms is None:
            self._t0_ms = chunk.t_ms
        start, written = self._index(chunk.t_ms), self._ring.total_written
        if start - written > GAP_TOLERANCE_MS * self.rate_hz / MS_PER_S:
            logger.warning("audio: %.0f ms missing (the microphone lost samples); frames need a whole second "
                           "of audio after it", (start - written) * MS_PER_S / self.rate_hz)
            self._ring.write(np.zeros(start - written, dtype=np.float32))  # keeps index == time
            self._valid_from = start
        self._ring.write(chunk.samples)

    def _new_frame(self, t_ms: float) -> VideoFrame | None:
        if self._aligner is not None:
            frame = self._aligner.frame_at(t_ms)
        else:
            assert self._reader is not None
            frame = self._reader.take()
        if frame is not None:
            self._newest = frame
            self._frames += 1
        return frame

    def _want_frame(self, t_ms: float) -> None:
        """A camera decoding on demand: ask for a frame when none waits and one is needed within a frame period of
        ``t_ms``: one with a whole second of audio before it to start sampling, then one for each pair's slot."""
        if self._reader is None or not self._reader.decode_on_demand or self._pending is not None:
            return
        if self._start_ms is None:
            needed = (not self._starts_a_session()
                      and self._index(t_ms + self._frame_lead_ms) - self._valid_from >= self.clip_samples)
        else:
            next_ms = self._schedule.next_ms
            needed = self._newest is None and (next_ms is None or t_ms + self._frame_lead_ms >= next_ms)
        if needed:
            self._reader.want()

    def _sample(self) -> None:
        """Write the pending frame with its second of audio, once the audio is there."""
        from edgesense.recognition.gate import rms_dbfs

        frame = self._pending
        assert frame is not None
        end = self._index(frame.t_ms)
        start = end - self.clip_samples
        samples = self._ring.peek(start, self.clip_samples) if start >= self._valid_from else None
        if samples is None:
            if start >= self._valid_from and end > self._ring.total_written:
                return  # a live frame ahead of the microphone: wait for its audio
            self.skipped += 1
            logger.debug("frame at %.0f ms: not a whole second of audio before it; skipped", frame.t_ms)
        else:
            self.writer.write(frame.image, samples)
            self.level_dbfs = rms_dbfs(samples)
            if self._progress is not None:
                self._progress.update(self.pairs, self.sampled_s, self.level_dbfs)
        self._pending = None

    def _starts_a_session(self) -> bool:
        """Whether sampling can start: the newest frame has a whole second of audio before it. A frame
        taken before that (one just before the first second's end, as at 29.97 fps or from a live camera)
        waits for the next one instead of being skipped as if the microphone had lost samples."""
        return self._newest is not None and self._index(self._newest.t_ms) - self._valid_from >= self.clip_samples

    def _video_ended(self) -> bool:
        """No frame will come, and none waits for its slot (a frame before sampling started never will)."""
        if self._aligner is not None:
            ended = self._aligner.exhausted
        else:
            assert self._reader is not None
            ended = self._reader.ended
        return ended and self._pending is None and (self._newest is None or self._start_ms is None)

    def _check_first_frame(self, t_ms: float) -> None:
        """RuntimeError when the live camera gave no frame at all in ``first_frame_timeout_s`` of audio
        after the first whole second: sampling would wait for ever."""
        assert self._t0_ms is not None
        waited_s = (t_ms - self._t0_ms) / MS_PER_S - self.clip_samples / self.rate_hz
        if waited_s < self.options.first_frame_timeout_s:
            return
        camera = getattr(self._video, "description", "the camera")
        raise RuntimeError(f"camera: {camera} gave no frame in {self.options.first_frame_timeout_s:g} s while the "
                           "microphone recorded (is it in use by another program, or does it need another "
                           "camera.source or size in the config?); nothing was recorded")

    def run(self) -> RecordResult:
        """Record until ``seconds`` of sampling, the end of the media or :meth:`stop`."""
        from edgesense.sources.base import SourceReadError

        limit_ms = self.options.seconds * MS_PER_S
        media_ended = False
        if self._reader is not None:
            self._reader.start()
        try:
            while not self._stop.is_set():
                try:
                    chunk = self.audio.read()
                except SourceReadError as exc:
                    if not self._audio_outage:
                        self._audio_outage = True
                        logger.warning("%s; retrying", exc)
                    continue
                if chunk is None:
                    media_ended = True
                    break
                self._audio_outage = False
                self._push(chunk)
                self.t_ms = t = chunk.end_t_ms
                frame = self._new_frame(t)
                if (self._start_ms is None and self._index(t) - self._valid_from >= self.clip_samples
                        and self._starts_a_session()):
                    self._start_ms = t  # a whole second is buffered, and a frame has it before it
                    self._schedule.anchor(t)
                if self._start_ms is None and self._reader is not None and not self._frames:
                    self._check_first_frame(t)
                if self._start_ms is not None:
                    if t - self._start_ms >= limit_ms:
                        break
                    if self._pending is None and self._newest is not None and self._schedule.due(t):
                        self._pending, self._newest = self._newest, None
                    if self._pending is not None:
                        self._sample()
                if frame is not None and self._on_frame is not None and self._on_frame(frame, self) is False:
                    self.stop()
                self._want_frame(t)
                if self._video_ended():
                    media_ended = True
                    break
        finally:
            if self._reader is not None:
                self._reader.stop()
            if self._progress is not None:
                self._progress.close()
        return RecordResult(pairs=self.pairs, expected=self.options.expected_pairs, sampled_s=self.sampled_s,
                            media_ended=media_ended, skipped=self.skipped, stopped=self._stop.is_set())


class RecordPreview:
    """The preview: the camera frame (scaled down to fit the window, :func:`edgesense.app.demo.fit_to_window`) with
    ``REC LABEL  12/600  -31.5 dBFS``, a long label cut to keep the count and the level on the frame; q or Esc, or
    closing the window, stops."""

    def __init__(self, window: Any, label: str) -> None:
        self.window = window
        self.label = label

    def __call__(self, frame: VideoFrame, recorder: Recorder) -> bool:
        from edgesense.app.demo import fit_to_window
        from edgesense.app.overlay import fit_text, put_text

        image = fit_to_window(frame.image)
        image = image.copy() if image is frame.image else image
        level = "" if recorder.level_dbfs is None else f"  {recorder.level_dbfs:.1f} dBFS"
        count = f"  {recorder.pairs}/{recorder.options.expected_pairs}{level}"
        width = image.shape[1] - 2 * OVERLAY_ORIGIN_PX[0]
        text = fit_text(f"REC {self.label}", width, OVERLAY_SCALE, OVERLAY_THICKNESS, tail=count)
        put_text(image, text, OVERLAY_ORIGIN_PX, OVERLAY_SCALE, OVERLAY_COLOUR, OVERLAY_THICKNESS)
        return self.window.show(image)

    def close(self) -> None:
        self.window.close()


# --------------------------------------------------------------------------- the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--label", required=True, metavar="NAME",
                        help="the place being recorded: the class folder's name "
                             "(no '/' or '\\', '..', whitespace, invisible characters or leading '.'; at most 230 "
                             "bytes)")
    parser.add_argument("--seconds", required=True, metavar="N",
                        help="seconds of sampling (after the first full second of audio); about N x "
                             "scheduler.scene_rate_hz pairs")
    parser.add_argument("--out", type=path_argument, required=True, metavar="DIR",
                        help="where the pairs go: DIR/LABEL/NAME.jpg + NAME.wav (created when missing; "
                             "earlier sessions' files are kept)")
    parser.add_argument("--config", metavar="YAML", type=file_argument,
                        help="device config: camera, microphone and scene rate (default: the shipped "
                             "firmware_configs/desktop.yaml; on a deployed device pass its /opt/edgesense/config.yaml)")
    parser.add_argument("--video", metavar="FILE", type=file_argument,
                        help="replay this video instead of the camera (needs --audio)")
    parser.add_argument("--audio", metavar="FILE", type=file_argument,
                        help="replay this WAV instead of the microphone (needs --video)")
    parser.add_argument("--fast", action="store_true", help="replay media as fast as possible (not in real time; "
                        "acts only with --video and --audio)")
    parser.add_argument("--no-preview", action="store_true",
                        help="never open a preview window (without it a window is shown when a display is there)")


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"--seconds: expected a finite number of seconds > 0, got {value!r}") from None
    return seconds


def _out_folder(out: Path) -> Path:
    """``--out`` as a folder that is there or can be made: not a file and not inside one (found before a
    device is opened or a pair recorded; an empty value is refused by its argparse type)."""
    from edgesense.app.cli import refuse_file_in_the_way

    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: expected a folder (created when missing), found a file")
    refuse_file_in_the_way("--out", out, expected="a folder (created when missing)")
    return out


def _check_sources(args: argparse.Namespace, config: Any, config_path: Path) -> None:
    """Both modalities are needed: ValueError naming the one that is missing."""
    replay_hint = "or replay files with --video FILE --audio FILE"
    if (args.video is None) != (args.audio is None):
        given, missing = ("--video", "--audio") if args.video is not None else ("--audio", "--video")
        raise ValueError(f"{missing}: expected a file to go with {given} (record needs a camera and a microphone: "
                         f"replay both files, or neither for the live devices), found none")
    if args.video is None:
        for section, device in (("camera", "camera"), ("audio", "microphone")):
            if not getattr(config, section).enabled:
                raise ValueError(f"{config_path}: {section}.enabled: expected true (record needs the {device}), "
                                 f"found false; enable it, {replay_hint}")


def _say(message: str) -> None:
    say(f"edgesense record: {message}")


def _report(result: RecordResult, options: RecordOptions, writer: PairWriter, out: Path) -> None:
    where = writer.folder
    names = "" if not result.pairs else f" ({writer.name(1)} .. {writer.name(result.pairs)})"
    if result.media_ended and not result.stopped:
        _say(f"the media ended after {result.sampled_s:.1f} s of sampling, before the {options.seconds:g} s "
             f"asked (about {result.expected} pairs)")
    elif result.stopped:
        _say(f"stopped after {result.sampled_s:.1f} s of the {options.seconds:g} s asked")
    if result.skipped:
        _say(f"{result.skipped} frames skipped: less than a whole second of audio before them (the microphone "
             f"lost samples, or the camera stalled)")
    _say(f"{result.pairs} pairs written to {where}{names}")
    if result.pairs:
        adapted = shlex.quote(f"models/{out.resolve().name or 'my_places'}.tflite")  # a command to paste as it is
        _say(f"next: record your other places the same way (one run per place, the same --out), copy {out} to "
             f"the desktop and adapt the model to them: edgesense adapt --model {BUNDLED_MODEL} "
             f"--av {shlex.quote(str(out))} --out {adapted} (see {README_SECTION})")


def _case_twin(out: Path, label: str) -> str | None:
    """The class folder of ``out`` whose name is ``label`` but for case or Unicode form (``kitchen`` for
    ``Kitchen``, a decomposed ``küche`` for a composed one), if any."""
    if not out.is_dir():
        return None
    return label_twin(label, (p.name for p in sorted(out.iterdir()) if p.is_dir()))


def run(args: argparse.Namespace) -> int:
    from edgesense.app.cli import stop_on_signals, user_names
    from edgesense.app.run import file_flags
    from edgesense.loop.config import load_config
    from edgesense.loop.pipeline import LiveDeviceError, open_sources
    from edgesense.shipped import config_argument, shipped_config

    with user_names(FLAG_NAMES):
        options = RecordOptions(label=args.label, seconds=_seconds(args.seconds))
    if args.fast and args.video is None and args.audio is None:  # the live devices run in real time: never ignored
        raise ValueError("--fast: acts only with --video and --audio (a replay), which are not given")
    out = _out_folder(args.out)
    folder = out / options.label
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {out}: expected {folder} to be a folder (or missing), found a file")
    twin = _case_twin(out, options.label)
    if twin is not None:  # adapt and train refuse two class folders that read alike: said before recording
        raise ValueError(f"--label {options.label}: expected a place that differs from the places in --out {out} by "
                         f"more than case or Unicode form, got it beside {twin!r} (pass --label {twin} to record "
                         "more of that place)")
    args.config = config_argument(args.config)
    names = file_flags(args)
    config_path = Path(args.config) if args.config else shipped_config(DEFAULT_CONFIG)
    with user_names(names):
        config = load_config(config_path)
    _check_sources(args, config, config_path)
    options = dataclasses.replace(options, scheduler=config.scheduler)
    writer = PairWriter(folder, session_prefix(folder, options.label),
                        sample_rate_hz=options.frontend.sample_rate_hz, jpeg_quality=options.jpeg_quality)
    with stop_on_signals() as stop:
        try:
            with user_names(names):
                audio, video = open_sources(config, sample_rate_hz=options.frontend.sample_rate_hz,
                                            video=args.video, audio=args.audio, fast=args.fast)
        except LiveDeviceError as exc:
            raise RuntimeError(" | ".join(exc.failures) + " | record needs a camera and a microphone: connect "
                               f"them (or name them in {config_path}), or replay files with --video FILE "
                               "--audio FILE") from None
        preview = None
        with audio, video:
            if not args.no_preview:
                from edgesense.app.demo import PreviewWindow, display_available

                shown, why = display_available()
                if shown:
                    preview = RecordPreview(PreviewWindow(title=f"edgesense record: {options.label}"),
                                            options.label)
                else:
                    logger.info("no preview window: %s", why)
            recorder = Recorder(audio, video, options, writer, live_video=args.video is None, on_frame=preview,
                                progress=ProgressBar(options.label, options.expected_pairs))
            stop.attach(recorder)
            if stop.requested:
                recorder.stop()
            try:
                result = recorder.run()
            finally:
                if preview is not None:
                    preview.close()
        _report(result, options, writer, out)
        return 0
