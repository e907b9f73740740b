"""The device loop: audio and video sources -> frontends -> the model -> events.

Scheduling (one loop thread; the clock is the audio's stream time when there is
audio, else the video's):

* **Audio** is read in chunks (``audio.chunk_ms``, 20 ms) and turned into log-mel
  frames incrementally (:class:`edgesense.frontend.audio.StreamingAudioFrontend`); the last
  49 frames (1 s) are kept in a :class:`edgesense.loop.scheduler.FeatureWindow`. Every
  ``command_hop_ms`` (100 ms) of stream time the window goes through
  ``encode_audio``, then ``fuse`` (with the latest image embedding) gives command
  probabilities for :class:`edgesense.recognition.commands.CommandRecognizer`.
* **Video**: the image encoder runs at ``scene_rate_hz`` (5 Hz) on the newest frame
  only; older frames are dropped, never queued. Replayed video is read inside the
  loop and aligned on stream timestamps: at audio time ``t`` the frame used is the
  newest one with ``t_frame <= t`` (:class:`edgesense.loop.scheduler.ReplayVideoAligner`),
  so ``--fast`` replays give the same events as real-time ones. A live camera is
  read on its own thread that keeps only the newest frame
  (:class:`edgesense.loop.scheduler.LatestFrameReader`). Scene probabilities from ``fuse``
  go to :class:`edgesense.recognition.scenes.SceneSmoother`.
* **Second opinion** (optional, ``second_opinion.heads_path``): every chunk also goes to
  :class:`edgesense.runtime.second_opinion.SecondOpinion` (Google's ``speech_embedding`` and a
  file of stream heads); at each command hop the recognizer gets the weighted mean of the fused
  command probabilities and the heads', and no hop is scored before the heads have their context.
* When a command hop and a scene update fall on the same tick, one ``fuse`` call
  serves both. An embedding older than ``embedding_max_age_ms`` counts as absent,
  so ``fuse`` gets ``None`` for a modality whose source is missing, failing or
  (audio) gated.
* **Energy gate** (optional, ``vad.enabled``): command inference is skipped
  while the audio level stays below the threshold (after its hangover). The
  recogniser is fed nothing for gated hops, and it is reset (its window emptied,
  every word re-armed) when the gate closes. Frontend features are still computed on silence,
  so the window is complete the moment the gate opens.

Gaps in the audio (a microphone stall, audio the ring buffer dropped) longer than
``AUDIO_GAP_RESET_MS`` start the features afresh: the frontend, the 1-s window, the second
opinion and the recognizer are reset where the audio resumes, so no window splices audio from
both sides of the gap (training never saw such a window); the next command hop comes once the
window is full again (counted in ``stats.audio_gaps``).

Faults: a failing camera (:class:`edgesense.sources.base.SourceReadError`) is logged once per
outage; the loop runs on audio (scene events pause) while the camera reopens with
backoff, and resumes when frames come back. A live camera's read that does not return at all (wedged in its
driver) is warned about at half of ``camera.stall_timeout_ms`` and ends the run at all of it
(:class:`edgesense.loop.scheduler.CameraStallError`, a ``RuntimeError``): no thread can free it, the process must
exit for its service manager to restart it. A stalled microphone is logged once
and retried; a live camera beside it goes on (scene events from the image alone, the
microphone polled every ``idle_wait_ms`` meanwhile). A microphone from which no audio has come for
``audio.stall_timeout_ms`` while PortAudio still reports its stream active (a wedged driver or sound server) ends
the run (:class:`edgesense.sources.microphone.MicrophoneStallError`, a ``RuntimeError``), as one whose stream
PortAudio stopped does: only a new process opens it afresh. Devices that cannot be opened at start
raise ``RuntimeError``.

Each event's ``latency_ms`` holds the per-stage times (``audio_frontend``: the
chunk that completed the window, ``audio_encoder``, ``image_preprocess``,
``image_encoder``, ``fusion``) of the inputs that produced it (0 for a modality
that was absent), and command events add ``audio_end_to_event``: from the moment
the last chunk of audio was available (its end on the microphone's clock, or when
a replay handed it over) to the event.

Use it as a generator (``for event in pipeline.events(): ...``) or let
:meth:`Pipeline.run` send events to sinks and ``on_event`` callbacks.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, Mapping, Sequence

import numpy as np

from edgesense.frontend.audio import StreamingAudioFrontend
from edgesense.frontend.image import preprocess_frame
from edgesense.loop.config import DeviceConfig, load_config
from edgesense.loop.scheduler import (
    FeatureWindow,
    LatestFrameReader,
    LatestFrameReaderOptions,
    PeriodicSchedule,
    ReplayVideoAligner,
    SchedulerOptions,
)
from edgesense.loop.stats import (
    AUDIO_END_TO_EVENT,
    AUDIO_END_TO_RESULT,
    MS_PER_S,
    SECOND_OPINION_EMBEDDING,
    SECOND_OPINION_HEADS,
    STAGES,
    VIDEO_READ,
    LatencyWindow,
    PipelineStats,
)
from edgesense.pacing import Outage, Paced
from edgesense.recognition.commands import CommandRecognizer, CommandRecognizerOptions
from edgesense.recognition.gate import EnergyGate, EnergyGateOptions, rms_dbfs
from edgesense.recognition.scenes import SceneSmoother, SceneSmootherOptions
from edgesense.runtime.second_opinion import SecondOpinion
from edgesense.runtime.speech_embedding import SpeechEmbeddingUnavailable
from edgesense.schema.validate import is_int, is_positive, require
from edgesense.sinks.base import EventSink, FanOutSink
from edgesense.sinks.jsonl import JsonLinesSink
from edgesense.sources.base import AudioChunk, SourceReadError, SourceStats, VideoFrame, monotonic_ms
from edgesense.sources.camera import CameraSource
from edgesense.sources.microphone import MicrophoneSource
from edgesense.sources.replay import VideoReplayOptions, VideoReplaySource, WavReplayOptions, WavReplaySource
from edgesense.types import CommandEvent, SceneEvent

if TYPE_CHECKING:
    from edgesense.runtime.model import EdgeModel

__all__ = ["AUDIO_GAP_RESET_MS", "PipelineOptions", "PipelineState", "Pipeline", "LiveDeviceError", "open_sources",
           "check_commands_fit", "second_opinion_of"]

logger = logging.getLogger(__name__)


Event = CommandEvent | SceneEvent
#: A gap in the audio longer than this (a stall, audio dropped) starts the features afresh where it resumes: a
#: command hop's worth; shorter ones (a few samples of an overflow) change a frame or two of the window.
AUDIO_GAP_RESET_MS = 100.0


def _elapsed_ms(start_s: float) -> float:
    return (time.perf_counter() - start_s) * MS_PER_S


# --------------------------------------------------------------------------- options

#: The most timings (8-byte values) kept per stage for percentiles: a million, 8 MB a stage, allocated whole when the
#: stage first runs (minutes of a loop at its fastest hop). More failed to allocate (10**30: numpy's "maximum allowed
#: dimension exceeded") when the stage first ran, naming no option.
MAX_STATS_WINDOW = 1_000_000
#: The longest ``idle_wait_ms``: a minute, the longest a camera-only loop goes without seeing that it was asked to
#: stop (and between two polls of a microphone that is out). A longer one (1e30) overflowed the frame wait.
MAX_IDLE_WAIT_MS = 60_000.0


@dataclass(frozen=True, kw_only=True)
class PipelineOptions:
    """Scheduling and post-processing of the device loop.

    ``scheduler``: command hops and scene rate. ``energy_gate``: ``None`` to run command
    inference on every hop.
    ``stats_window``: the most recent timings kept per stage for percentiles (a ring of this many
    8-byte values per stage, allocated whole when the stage first runs).
    ``idle_wait_ms``: with only a live camera, how long the loop waits for a frame
    before it checks whether it was asked to stop; while a live microphone is out beside a
    live camera, how often the microphone is polled between the camera's frames.
    """

    scheduler: SchedulerOptions = field(default_factory=SchedulerOptions)
    recognizer: CommandRecognizerOptions = field(default_factory=CommandRecognizerOptions)
    smoother: SceneSmootherOptions = field(default_factory=SceneSmootherOptions)
    energy_gate: EnergyGateOptions | None = None
    reader: LatestFrameReaderOptions = field(default_factory=LatestFrameReaderOptions)
    stats_window: int = 10000
    idle_wait_ms: float = 200.0

    def __post_init__(self) -> None:
        require(isinstance(self.scheduler, SchedulerOptions), "scheduler", "SchedulerOptions", self.scheduler)
        require(isinstance(self.recognizer, CommandRecognizerOptions), "recognizer", "CommandRecognizerOptions",
                 self.recognizer)
        require(isinstance(self.smoother, SceneSmootherOptions), "smoother", "SceneSmootherOptions", self.smoother)
        require(self.energy_gate is None or isinstance(self.energy_gate, EnergyGateOptions), "energy_gate",
                 "None or EnergyGateOptions", self.energy_gate)
        require(isinstance(self.reader, LatestFrameReaderOptions), "reader", "LatestFrameReaderOptions",
                 self.reader)
        require(is_int(self.stats_window) and 1 <= self.stats_window <= MAX_STATS_WINDOW, "stats_window",
                 f"an integer in [1, {MAX_STATS_WINDOW}]", self.stats_window)
        require(is_positive(self.idle_wait_ms) and self.idle_wait_ms <= MAX_IDLE_WAIT_MS, "idle_wait_ms",
                 f"a positive number up to {MAX_IDLE_WAIT_MS:g} (ms)", self.idle_wait_ms)

    @classmethod
    def from_config(cls, config: DeviceConfig, **overrides: Any) -> "PipelineOptions":
        """The options a :class:`edgesense.loop.config.DeviceConfig` describes (``overrides`` win)."""
        values: dict[str, Any] = dict(scheduler=config.scheduler, recognizer=config.commands,
                                      smoother=config.scenes, energy_gate=config.vad if config.vad.enabled else None)
        values.update(overrides)
        return cls(**values)


def _without_untrained_modalities(model: Any, config: DeviceConfig, *, video: Any, audio: Any
                                  ) -> tuple[DeviceConfig, Any, Any]:
    """``config``, ``video`` and ``audio`` without the modality a speech-only or scenes-only model never
    trained (:attr:`EdgeModel.untrained_encoders`): its camera or microphone stays closed and its file
    unread (said in a warning), so the model fuses ``None`` for it, as in its training, and no events
    come from a head that means nothing. A replay left with no file at all is a ``ValueError``."""
    replay = video is not None or audio is not None
    for key, flag, part, what in (("encode_image", "--video", "camera", "photos"),
                                  ("encode_audio", "--audio", "audio", "speech")):
        if key not in model.untrained_encoders:
            continue
        given = video if key == "encode_image" else audio
        if given is not None or (not replay and getattr(config, part).enabled):
            logger.warning("%s was trained without %s: %s", model.path, what,
                           f"{flag} {given} is not read" if given is not None else f"the {part} stays closed")
        config = dataclasses.replace(config, **{part: dataclasses.replace(getattr(config, part), enabled=False)})
        if key == "encode_image":
            video = None
        else:
            audio = None
    if replay and video is None and audio is None:
        raise ValueError(f"{model.path}: trained on one modality only, expected its file (--audio for a speech "
                         f"model, --video for a scenes model), got only the other")
    return config, video, audio


class LiveDeviceError(RuntimeError):
    """The camera and/or the microphone named in the config could not be opened (``failures``:
    one message per device). The message says how to run without them."""

    def __init__(self, failures: Sequence[str]) -> None:
        self.failures = tuple(failures)
        super().__init__(" | ".join(self.failures) + " | " + LIVE_DEVICE_HINT)


#: How to run without a live device (appended to :class:`LiveDeviceError`).
LIVE_DEVICE_HINT = ("set camera.enabled: false / audio.enabled: false in the config to run without it, "
                    "or replay files instead of the live devices")


def open_sources(config: DeviceConfig, *, sample_rate_hz: int, video: str | os.PathLike[str] | None = None,
                 audio: str | os.PathLike[str] | None = None, fast: bool = False) -> tuple[Any, Any]:
    """``(audio source, video source)`` as a device config describes them (``None`` where absent);
    the caller closes them (each is a context manager).

    ``video`` / ``audio``: replay these files instead of the camera / microphone; **when either is
    given, no live device is opened** and a modality without a file is ``None``. The WAV is read at
    ``sample_rate_hz`` (the model's audio frontend) in chunks of ``audio.chunk_ms``; replays run in
    real time unless ``fast`` (with both files the audio sets the pace, and a video that outlasts the
    audio goes on at it). Without files, the camera
    and the microphone enabled in the config are opened: :class:`LiveDeviceError` names every
    device that cannot be, and a microphone configured at another rate than ``sample_rate_hz`` is
    a ``ValueError``.
    """
    with contextlib.ExitStack() as stack:
        audio_source: Any = None
        video_source: Any = None
        if audio is not None:
            audio_source = stack.enter_context(WavReplaySource(audio, WavReplayOptions(
                sample_rate_hz=sample_rate_hz, chunk_ms=float(config.audio.chunk_ms), realtime=not fast)))
        if video is not None:
            video_source = stack.enter_context(VideoReplaySource(video, VideoReplayOptions(
                realtime=not fast and audio is None)))
        if video is None and audio is None:
            failures: list[str] = []
            if config.audio.enabled:
                if config.audio.sample_rate_hz != sample_rate_hz:
                    raise ValueError(f"{config.source_path or 'the config'}: audio.sample_rate_hz: expected "
                                     f"{sample_rate_hz} (the model's audio frontend), "
                                     f"got {config.audio.sample_rate_hz}")
                try:
                    audio_source = stack.enter_context(MicrophoneSource(config.audio))
                except RuntimeError as exc:
                    failures.append(str(exc))
            if config.camera.enabled:
                try:
                    video_source = stack.enter_context(CameraSource(config.camera))
                except RuntimeError as exc:
                    failures.append(str(exc))
            if failures:  # every device that failed, in one message
                raise LiveDeviceError(failures)
        stack.pop_all()
    return audio_source, video_source


def _load_model(config: DeviceConfig, model_path: str | os.PathLike | None) -> "EdgeModel":
    """The model ``model_path`` names, else the config's ``model.path``; a file that cannot be loaded from the
    config is one line naming the config and the field."""
    from edgesense.runtime.model import EdgeModel

    if model_path is not None:
        return EdgeModel.load(model_path, options=config.model.interpreter_options())
    where, path = config.source_path or "the config", config.model_path
    if not path.is_file():
        found = "a folder" if path.is_dir() else "no such file"
        raise ValueError(f"{where}: model.path: expected a .tflite file, got {path} ({found})")
    try:
        return EdgeModel.load(config.model.path, options=config.model.interpreter_options())
    except (FileNotFoundError, ValueError) as exc:
        raise ValueError(f"{where}: model.path: {exc}") from None


def check_commands_fit(config: DeviceConfig, command_labels: Sequence[str], model: str | os.PathLike[str],
                       where: str | os.PathLike[str] | None = None) -> None:
    """ValueError in one line (the config, ``commands.FIELD``, the model) unless the recognizer the loop builds
    from ``config.commands`` takes the model's ``command_labels``: ``class_thresholds`` naming words it has,
    ``max_context_unknown`` below 1 needing its ``_unknown_``. ``where``: the config as the user named it
    (its file by default)."""
    try:
        CommandRecognizer(command_labels, config.commands)
    except ValueError as exc:
        source = where if where is not None else (config.source_path or "the config")
        raise ValueError(f"{source}: commands.{exc} (model {model})") from None


def second_opinion_of(config: DeviceConfig, model: "EdgeModel") -> SecondOpinion | None:
    """The second audio model ``config`` asks for beside ``model`` (``None`` without one). Without the
    wheel that holds ``speech_embedding``, the one-line error names the config and the way out."""
    if not config.second_opinion.enabled:
        return None
    try:
        second = SecondOpinion(config.second_opinion, labels=model.command_labels,
                               sample_rate_hz=model.audio_frontend.sample_rate_hz,
                               hop_ms=config.scheduler.command_hop_ms)  # the mel blocks the bench computes
    except SpeechEmbeddingUnavailable as exc:  # the config asks for it: say which, and the way out
        raise SpeechEmbeddingUnavailable(
            f"{config.source_path or 'the config'}: second_opinion: {exc} (or delete the "
            f"second_opinion: section to run the model alone)") from None
    except ValueError as exc:  # the heads file, or a model it does not fit: say which config asks for it
        raise ValueError(f"{config.source_path or 'the config'}: {exc} (or delete the second_opinion: section "
                         "to run the model alone)") from None
    logger.info("second opinion: %s", second.describe())
    return second


# --------------------------------------------------------------------------- state and stats


@dataclass(frozen=True)
class PipelineState:
    """What an overlay shows: a snapshot after the latest tick."""

    t_ms: float
    scene_label: str | None  #: the smoothed top scene (None before the first scene update)
    scene_score: float
    last_command: CommandEvent | None
    level_dbfs: float | None  #: level of the latest audio chunk (None without audio)
    gate_open: bool
    stage_ms: Mapping[str, float]  #: the latest time of each stage
    #: The latest scene event: what the events say (hysteresis and hold), which the smoothed
    #: top scene can run ahead of. None before the first scene event.
    last_scene: SceneEvent | None = None
    gate_threshold_dbfs: float | None = None  #: the energy gate's threshold (None: no gate)

    def command_age_ms(self) -> float | None:
        return None if self.last_command is None else self.t_ms - self.last_command.t_ms


# --------------------------------------------------------------------------- pipeline


@dataclass(frozen=True)
class _SourceCounts:
    """A snapshot of the sources' counters (:attr:`Pipeline.stats`)."""

    audio: SourceStats | None
    video: SourceStats | None
    camera_outages: int


@dataclass
class _Tick:
    t_ms: float
    chunk: AudioChunk | None = None
    chunk_arrival_ms: float = 0.0
    frame: VideoFrame | None = None


FrameHook = Callable[[VideoFrame, PipelineState], Any]
EventCallback = Callable[[Event], Any]


class Pipeline:
    """The device loop over one audio and/or one video source (see the module docstring).

    ``audio``: an :class:`edgesense.sources.microphone.MicrophoneSource` (live, read in the loop; its
    PortAudio callback only fills the ring buffer) or a :class:`WavReplaySource`.
    ``video``: a :class:`CameraSource` (live: read on a thread) or a
    :class:`VideoReplaySource` (read in the loop, aligned to the audio). ``live_video``
    overrides the live/replay choice made from the source's type. ``sinks`` and
    ``on_event`` callbacks receive events in :meth:`run`. ``on_frame(frame, state)``
    is called in the loop thread for every frame the loop receives; returning
    ``False`` stops the loop. ``on_progress()`` is called in the loop thread after every round of the loop (a
    tick of media or an idle round): a sign that the loop is alive (``edgesense run``'s systemd watchdog).
    ``second_opinion``: a second audio model whose posteriors are blended
    into every command hop's (:meth:`from_config` builds it from the config's ``second_opinion``
    section). The pipeline owns the sources and sinks: :meth:`close`
    (or the ``with`` block) releases them.
    """

    def __init__(self, model: Any, options: PipelineOptions = PipelineOptions(), *,
                 audio: Any = None, video: Any = None, sinks: Sequence[EventSink] = (),
                 on_event: EventCallback | Sequence[EventCallback] | None = None,
                 on_frame: FrameHook | None = None, live_video: bool | None = None,
                 wall_time: Callable[[], float] = time.time, second_opinion: SecondOpinion | None = None,
                 on_progress: Callable[[], Any] | None = None) -> None:
        if audio is None and video is None:
            raise ValueError("audio, video: expected at least one source, got neither")
        require(isinstance(options, PipelineOptions), "options", "PipelineOptions", options)
        require(not isinstance(model, (str, bytes, os.PathLike)) and hasattr(model, "fuse"), "model",
                "a loaded model (EdgeModel.load(path), or Pipeline.from_config with model_path)", model)
        for name, source in (("audio", audio), ("video", video)):
            require(source is None or callable(getattr(source, "read", None)), name,
                    "None or a source with read() (WavReplaySource(path), MicrophoneSource(), ...)", source)
        self.model = model
        self.options = options
        self.audio = audio
        self.video = video
        self.live_audio = isinstance(audio, MicrophoneSource)
        self.live_video = isinstance(video, CameraSource) if live_video is None else bool(live_video)
        self._sink = FanOutSink(sinks)
        callbacks = [] if on_event is None else [on_event] if callable(on_event) else on_event
        require(isinstance(callbacks, Sequence) and not isinstance(callbacks, (str, bytes))
                and all(callable(c) for c in callbacks), "on_event",
                "None, a callable or a sequence of callables", on_event)
        require(on_frame is None or callable(on_frame), "on_frame", "None or a callable", on_frame)
        require(on_progress is None or callable(on_progress), "on_progress", "None or a callable", on_progress)
        self._callbacks: list[EventCallback] = list(callbacks)
        self._on_frame = on_frame
        self._on_progress = on_progress
        self._wall_time = wall_time

        frontend = model.audio_frontend
        self._frontend = StreamingAudioFrontend(frontend)
        frames, bins = frontend.feature_shape
        self._window = FeatureWindow(frames, bins)
        self._recognizer = CommandRecognizer(model.command_labels, options.recognizer, wall_time=wall_time)
        self._smoother = SceneSmoother(model.scene_labels, options.smoother, wall_time=wall_time)
        self._gate = EnergyGate(options.energy_gate) if options.energy_gate is not None else None
        self._second = second_opinion
        self._hop = PeriodicSchedule(options.scheduler.command_hop_ms)
        self._scene = PeriodicSchedule(options.scheduler.scene_period_ms)
        self._aligner = ReplayVideoAligner(video) if video is not None and not self.live_video else None
        # A replayed file is read in this thread and never stalls so; a live camera's read may never return.
        stall_ms = video.options.effective_stall_timeout_ms if isinstance(video, CameraSource) else None
        # A live camera's frames are decoded only when a scene update wants one, unless on_frame sees them all.
        self._reader = (LatestFrameReader(video, options.reader, with_audio=audio is not None,
                                          stall_timeout_ms=stall_ms,
                                          decode_on_demand=isinstance(video, CameraSource) and on_frame is None)
                        if video is not None and self.live_video else None)
        # ... asked for a camera frame period before the update, so that it is there for it
        self._frame_lead_ms = MS_PER_S / video.options.fps if isinstance(video, CameraSource) else 0.0

        self._stop = threading.Event()
        self._running = False
        self._closed = False
        self._dispatch_thread: int | None = None  # the thread whose run() delivers events (None: no run())
        self._close_after_run = False  # close() came from run()'s own sink or callback: run() closes at its end
        self._stage_lock = threading.Lock()  # a stage's first timing, a run's end: while stats may read them
        self._audio_ended = audio is None
        self._audio_outage = False
        # What lasts or keeps coming back is said at most every LOG_INTERVAL_S, with a count (edgesense.pacing):
        # a microphone that stalls or loses audio every minute, a callback that fails at every event.
        self._audio_outage_lines = Outage(logger, debug_each=False)  # polled every idle_wait_ms
        self._gap_lines = Paced()
        self._callback_failures = [Outage(logger) for _ in self._callbacks]
        self._audio_end_ms: float | None = None  # the end of the last chunk, where the next one should start
        # latest results
        self._audio_embedding: np.ndarray | None = None
        self._audio_embedding_t = -math.inf
        self._audio_stage = {"audio_frontend": 0.0, "audio_encoder": 0.0}
        self._image_embedding: np.ndarray | None = None
        self._image_embedding_t = -math.inf
        self._image_stage = {"image_preprocess": 0.0, "image_encoder": 0.0}
        self._new_frame: VideoFrame | None = None
        self._last_command: CommandEvent | None = None
        self._last_scene: SceneEvent | None = None
        self._level_dbfs: float | None = None
        self._gate_open = True
        self._latest_stage: dict[str, float] = {}
        self._t_ms = 0.0
        # counters
        self._counts: collections.Counter[str] = collections.Counter()
        self._stage_ms: dict[str, LatencyWindow] = {}
        self._t_first: float | None = None
        self._t_last: float | None = None
        self._wall_ms = 0.0  # the runs that ended
        self._run_start_s: float | None = None  # perf_counter() when the run going on began (None: none)
        # The sources' counters when the latest run ended (None: a run goes on, or none ran yet): a live camera's
        # reader thread and a microphone's callback go on until close(), after the sinks' flush (up to
        # publish_timeout_s for an MQTT broker that is away), and what they count then is no part of a run.
        self._sources_at_end: _SourceCounts | None = None
        self._compute_ms = 0.0

    # ------------------------------------------------------------------ construction from a config

    @classmethod
    def from_config(cls, path_or_config: str | os.PathLike[str] | DeviceConfig, *,
                    model_path: str | os.PathLike[str] | None = None,
                    video: str | os.PathLike[str] | None = None, audio: str | os.PathLike[str] | None = None,
                    fast: bool = False, events: str | os.PathLike[str] | Literal[False] | None = None,
                    mqtt: str | Literal[False] | None = None,
                    on_event: EventCallback | Sequence[EventCallback] | None = None,
                    on_frame: FrameHook | None = None,
                    options: PipelineOptions | None = None,
                    on_progress: Callable[[], Any] | None = None) -> "Pipeline":
        """Model, sources and sinks as a device config describes them.

        ``video`` / ``audio``: replay these files instead of the camera / microphone.
        **When either is given, no live device is opened**: the other modality is
        absent (the model fuses ``None`` for it). Replays run in real time unless
        ``fast``; with both files, the audio sets the pace and the video follows it
        by timestamp (a video longer than the audio goes on at that pace). Without files, the
        camera and the microphone are opened when enabled in the config (:class:`LiveDeviceError`,
        a ``RuntimeError`` naming every device that cannot be opened).
        ``events`` / ``mqtt``: override ``outputs.events`` / ``outputs.mqtt``
        (``None``: the config's; ``False``: off). ``on_frame`` sees every frame with the
        loop's state (the app's preview window is one such hook); ``on_progress()`` is called after every round
        of the loop. ``options`` replaces the scheduling options derived from the config.
        """
        require(isinstance(fast, bool), "fast", "true or false", fast)
        require(events is None or events is False or isinstance(events, (str, os.PathLike)), "events",
                "None (the config's outputs.events), False (off), '-' or a path", events)
        require(mqtt is None or mqtt is False or isinstance(mqtt, str), "mqtt",
                "None (the config's outputs.mqtt), False (off) or an mqtt:// URL", mqtt)
        config = path_or_config if isinstance(path_or_config, DeviceConfig) else load_config(path_or_config)
        model = _load_model(config, model_path)
        check_commands_fit(config, model.command_labels, model.path)  # before any device is opened
        config, video, audio = _without_untrained_modalities(model, config, video=video, audio=audio)
        with contextlib.ExitStack() as stack:
            audio_source, video_source = open_sources(config, sample_rate_hz=model.audio_frontend.sample_rate_hz,
                                                      video=video, audio=audio, fast=fast)
            for source in (audio_source, video_source):
                if source is not None:
                    stack.enter_context(source)
            sinks: list[EventSink] = []
            target = config.outputs.events if events is None else events
            if target is not None and target is not False:
                sinks.append(stack.enter_context(JsonLinesSink(os.fspath(target))))
            url = config.outputs.mqtt if mqtt is None else mqtt
            if url not in (None, False):
                from edgesense.sinks.outputs import open_mqtt_sink

                outputs = dataclasses.replace(config.outputs, mqtt=str(url))
                words = tuple(x for x in model.command_labels if x not in config.commands.ignored_labels)
                sinks.append(stack.enter_context(open_mqtt_sink(outputs, node_id=config.device.node_id,
                                                                device_name=config.device.name,
                                                                source=config.source_path, command_labels=words)))
            second = second_opinion_of(config, model) if audio_source is not None else None
            pipeline = cls(model, options or PipelineOptions.from_config(config), audio=audio_source,
                           video=video_source, sinks=sinks, on_event=on_event, on_frame=on_frame,
                           second_opinion=second, on_progress=on_progress)
            stack.pop_all()
        return pipeline

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def stop(self) -> None:
        """Ask the loop to end after the current tick (safe from signal handlers and other threads)."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        """Stop, release the sources, flush and close the sinks. Idempotent. Called by a sink or an ``on_event``
        callback of :meth:`run`, it takes effect when the run ends, after the events of the current tick have
        been delivered (the sinks stay open for them)."""
        if self._closed:
            return
        if self._dispatch_thread == threading.get_ident():  # from inside run(): it closes the pipeline at its end
            self._close_after_run = True
            self._stop.set()
            return
        self._closed = True
        self._stop.set()
        if self._reader is not None:
            self._reader.stop()
        for source in (self.audio, self.video):
            if source is not None:
                try:
                    source.close()
                except Exception as exc:  # noqa: BLE001 - releasing one device must not block the others
                    logger.warning("closing %s failed: %s", type(source).__name__, exc)
        self._sink.flush()
        self._sink.close()
        close = getattr(self._on_frame, "close", None)
        if callable(close):
            close()

    @property
    def state(self) -> PipelineState:
        smoothed = self._smoother.smoothed
        label, score = None, 0.0
        if smoothed is not None:
            top = int(np.argmax(smoothed))
            label, score = self._smoother.labels[top], float(smoothed[top])
        gate = self.options.energy_gate
        return PipelineState(t_ms=self._t_ms, scene_label=label, scene_score=score,
                             last_command=self._last_command, level_dbfs=self._level_dbfs,
                             gate_open=self._gate_open, stage_ms=dict(self._latest_stage),
                             last_scene=self._last_scene,
                             gate_threshold_dbfs=None if gate is None else gate.threshold_dbfs)

    @property
    def events_so_far(self) -> tuple[int, int]:
        """``(command events, scene events)`` so far: what :attr:`stats` counts, without its copy of every stage's
        latency window (up to ``stats_window`` floats each: megabytes), for a status line asked for as the loop
        goes round (``edgesense run``'s watchdog pings)."""
        return self._counts["command_events"], self._counts["scene_events"]

    def _source_counts(self) -> _SourceCounts:
        """The sources' counters now, or as they were when the latest run ended while no run goes on."""
        at_end = self._sources_at_end
        if at_end is not None:
            return at_end
        return _SourceCounts(audio=self.audio.stats if self.audio is not None else None,
                             video=self.video.stats if self.video is not None else None,
                             camera_outages=self._reader.outages if self._reader is not None else 0)

    @property
    def stats(self) -> PipelineStats:
        """The counters and timings of the runs so far, the one going on included (its wall time up to now)."""
        sources = self._source_counts()
        audio_stats, video_stats = sources.audio, sources.video
        frames = video_stats.items if video_stats is not None else 0
        if self._aligner is not None:  # the replay's look-ahead frame past the stop never reached the loop
            frames -= self._aligner.read_ahead
        stream_ms = 0.0 if self._t_first is None or self._t_last is None else self._t_last - self._t_first
        with self._stage_lock:  # the loop may add a stage or end its run meanwhile (stats read from another thread)
            stages = list(self._stage_ms.items())
            wall_ms = self._wall_ms + (0.0 if self._run_start_s is None else _elapsed_ms(self._run_start_s))
        return PipelineStats(
            audio_chunks=self._counts["audio_chunks"],
            video_frames=frames,
            frames_dropped=max(0, frames - self._counts["image_inferences"]),
            audio_inferences=self._counts["audio_inferences"],
            audio_gated=self._counts["audio_gated"],
            image_inferences=self._counts["image_inferences"],
            fusions=self._counts["fusions"],
            command_events=self._counts["command_events"],
            scene_events=self._counts["scene_events"],
            audio_overflows=audio_stats.overflows if audio_stats else 0,
            audio_dropped_samples=audio_stats.dropped_samples if audio_stats else 0,
            audio_gaps=self._counts["audio_gaps"],
            audio_clock_resyncs=audio_stats.clock_resyncs if audio_stats else 0,
            audio_clipped_samples=audio_stats.clipped_samples if audio_stats else 0,
            audio_read_failures=self._counts["audio_read_failures"],
            audio_stalls=self._counts["audio_stalls"],
            camera_read_failures=video_stats.read_failures if video_stats else 0,
            camera_outages=sources.camera_outages,
            camera_stalls=self._reader.stalls if self._reader is not None else 0,
            camera_reopens=video_stats.reopens if video_stats else 0,
            stream_start_ms=self._t_first or 0.0,
            stream_ms=stream_ms,
            wall_ms=wall_ms,
            compute_ms=self._compute_ms,
            events_lost=self._sink.lost_events,
            stage_ms={stage: window.values() for stage, window in stages},
            stage_count={stage: window.total for stage, window in stages},
            stage_total_ms={stage: window.sum_ms for stage, window in stages},
        )

    # ------------------------------------------------------------------ running

    def run(self, *, duration_s: float | None = None) -> PipelineStats:
        """Run until the media ends, :meth:`stop` or ``duration_s`` of media; events go to the
        sinks and callbacks (a failing sink or callback is logged, not fatal). Sinks are flushed. A callback may
        call :meth:`stop` or :meth:`close`: the run ends after the current tick's events (then closes). From another
        thread, :meth:`stop` ends the run; a :meth:`close` there ends it too, without the rest of that tick."""
        outer = self._dispatch_thread
        self._dispatch_thread = threading.get_ident()
        try:
            for event in self.events(duration_s=duration_s):
                if self._closed:  # close() from another thread: its sinks are closed, the run is over
                    break
                self._sink.emit(event)
                for callback, failures in zip(self._callbacks, self._callback_failures):
                    try:
                        callback(event)
                    except Exception as exc:  # noqa: BLE001 - a user callback must not stop the device
                        failures.failed("on_event callback %r failed: %s", callback, exc)
                        continue
                    failures.succeeded("on_event callback %r works again; it failed for %d event(s)", callback)
        finally:
            self._dispatch_thread = outer
            if self._close_after_run and outer is None:
                self.close()  # flushes and closes the sinks
            elif not self._closed:
                self._sink.flush()
        return self.stats

    def events(self, *, duration_s: float | None = None) -> Iterator[Event]:
        """Yield events as they happen until the media ends, :meth:`stop` or ``duration_s`` of media since the
        stream began (over every call; a live device's clock, which runs on while it delivers nothing)."""
        if duration_s is not None:
            require(is_positive(duration_s), "duration_s", "None or a positive number", duration_s)
        if self._closed:
            raise RuntimeError("pipeline: events() after close()")
        if self._running:
            raise RuntimeError("pipeline: events() is already running")
        self._running = True
        if self._reader is not None:
            self._reader.start()
        self._sources_at_end = None
        start_s = self._run_start_s = time.perf_counter()
        media_at_ms = monotonic_ms()  # when the latest media arrived (or this call began)
        try:
            while not self._stop.is_set():
                if self._reader is not None:
                    self._reader.check_stall()  # a read that never returns: here, in the loop's thread
                tick = self._next_tick()
                if tick is None:
                    break
                if isinstance(tick, _Tick):
                    media_at_ms = monotonic_ms()
                    yield from self._process(tick)
                if self._on_progress is not None:
                    self._on_progress()
                if duration_s is not None and self._stream_ms(idle_since_ms=None if isinstance(tick, _Tick)
                                                              else media_at_ms) >= duration_s * MS_PER_S:
                    break
        finally:
            self._sources_at_end = self._source_counts()
            with self._stage_lock:  # the run's time moves from the one going on to those that ended, at once
                self._wall_ms += _elapsed_ms(start_s)
                self._run_start_s = None
            self._running = False

    def _say_if_no_command_could_be_heard(self) -> None:
        """One warning when the audio ended before the detector ever had what it needs to score a hop (a whole
        window, and the second opinion's context): a replayed WAV shorter than that gave no event and no word why."""
        if not self._counts["audio_chunks"] or self._counts["audio_inferences"] or self._counts["audio_gated"]:
            return
        needs = f"{self.model.audio_frontend.clip_duration_ms:g} ms window"
        if self._second is not None:
            needs += " and the second opinion's context"
        logger.warning("audio: it ended after %.0f ms, before the command detector had its first %s: no command "
                       "could be recognized", self._audio_end_ms or 0.0, needs)

    def _stream_ms(self, *, idle_since_ms: float | None) -> float:
        """Stream time since the first sample or frame, for ``duration_s``. On an idle round (a live camera or
        microphone delivering nothing since ``idle_since_ms`` on the monotonic clock) the time without media
        counts too: a live device's stream time is its clock, and a run of ``duration_s`` must end while the
        device is out (a camera that opens but gives no frame would otherwise hold the run for ever)."""
        media_ms = 0.0 if self._t_first is None or self._t_last is None else self._t_last - self._t_first
        if idle_since_ms is None:
            return media_ms
        return media_ms + max(0.0, monotonic_ms() - idle_since_ms)

    # ------------------------------------------------------------------ the loop

    def _next_tick(self) -> _Tick | bool | None:
        """The next unit of work; ``True`` for an idle round, ``None`` at the end of the media."""
        if not self._audio_ended:
            try:
                chunk = self._read_audio()
            except SourceReadError as exc:
                self._counts["audio_read_failures"] += 1
                if not self._audio_outage:
                    self._audio_outage = True
                    self._counts["audio_stalls"] += 1
                self._audio_outage_lines.failed("%s; retrying%s", exc,
                                                ", scene events go on" if self._reader is not None else "")
                return self._frame_while_audio_is_out()
            if chunk is not None:
                if self._audio_outage:
                    self._audio_outage = False
                    self._audio_outage_lines.succeeded("microphone: audio is flowing again (%d read(s) found none)")
                arrival = chunk.end_t_ms if self.live_audio else monotonic_ms()
                return _Tick(t_ms=chunk.end_t_ms, chunk=chunk, chunk_arrival_ms=arrival)
            self._audio_ended = True
            self._say_if_no_command_could_be_heard()
            if self.audio is not None and (self._aligner is None or self._aligner.exhausted):
                return None  # the audio ended the session (a live camera never does)
        if self._aligner is not None:
            frame = self._aligner.next_frame()
            if frame is None:
                return None
            if isinstance(self.audio, WavReplaySource):  # the video outlasts the audio: it keeps the audio's pace
                self.audio.wait_until(frame.t_ms)
            return _Tick(t_ms=frame.t_ms, frame=frame)
        if self._reader is not None:
            if self._reader.decode_on_demand:  # the frames are the clock: the first at the next scene update's time
                self._reader.want(after_ms=self._scene.next_ms)
            frame = self._reader.take(timeout_s=self.options.idle_wait_ms / MS_PER_S)
            if frame is None:
                return None if self._reader.ended else True
            return _Tick(t_ms=frame.t_ms, frame=frame)
        return None

    def _read_audio(self) -> AudioChunk | None:
        """The audio source's next chunk. While a live microphone is out beside a live camera it is polled every
        ``idle_wait_ms`` rather than waited for ``read_timeout_ms``, so the camera's frames keep their pace."""
        if self._audio_outage and self._reader is not None and self.live_audio:
            return self.audio.read(timeout_ms=min(self.options.idle_wait_ms, self.audio.options.read_timeout_ms))
        return self.audio.read()

    def _frame_while_audio_is_out(self) -> _Tick | bool:
        """A live camera's newest frame while the microphone delivers nothing (scene events go on, fused
        without the audio once its embedding is stale); ``True`` (an idle round) when there is none."""
        if self._reader is not None and self._reader.decode_on_demand:
            self._reader.want()
        frame = self._reader.take() if self._reader is not None else None
        return True if frame is None else _Tick(t_ms=frame.t_ms, frame=frame)

    def _want_frame_for_scene(self, t_ms: float) -> None:
        """A camera decoding on demand: ask for a frame when the next scene update is within a frame period of
        ``t_ms`` and no frame waits for it (one decoded per update, not every frame the camera delivers)."""
        if self._reader is None or not self._reader.decode_on_demand or self._new_frame is not None:
            return
        next_ms = self._scene.next_ms
        if next_ms is None or t_ms + self._frame_lead_ms >= next_ms:
            self._reader.want()

    def _timed(self, stage: str, ms: float) -> float:
        window = self._stage_ms.get(stage)
        if window is None:
            window = LatencyWindow(self.options.stats_window)
            with self._stage_lock:  # stats, read from another thread, may be going over the stages
                self._stage_ms[stage] = window
        window.append(ms)
        self._latest_stage[stage] = ms
        return ms

    def _fresh(self, t_embedding: float, t_ms: float) -> bool:
        return t_ms - t_embedding <= self.options.scheduler.max_embedding_age_ms

    def _start_features_afresh(self, gap_ms: float) -> None:
        """After a gap in the audio: features, window, second opinion and recognizer start where it resumes."""
        self._counts["audio_gaps"] += 1
        # a microphone that loses audio every few seconds: not a line each
        self._gap_lines.say(logger, logging.INFO, "audio: a gap of %.0f ms; the features start afresh where it "
                            "resumes", gap_ms, what="gaps")
        self._frontend.reset()
        self._window.reset()
        if self._second is not None:
            self._second.reset()
        self._recognizer.reset()

    def _process(self, tick: _Tick) -> Iterator[Event]:
        start_s = time.perf_counter()
        t = tick.t_ms
        if self._t_last is not None and t < self._t_last:  # a live camera's clock vs a replay's: keep order
            t = self._t_last
        if self._t_first is None:
            self._t_first = tick.chunk.t_ms if tick.chunk is not None else t
            self._hop.anchor(self._t_first)  # one grid: command hops and scene updates coincide
            self._scene.anchor(self._t_first)
        self._t_last = self._t_ms = t
        out: list[Event] = []
        model = self.model

        # audio: features, level, gate
        chunk = tick.chunk
        frontend_ms = 0.0
        if chunk is not None:
            if chunk.sample_rate_hz != self._frontend.options.sample_rate_hz:
                raise ValueError(f"audio: expected {self._frontend.options.sample_rate_hz} Hz chunks (the model's "
                                 f"audio frontend), got {chunk.sample_rate_hz} Hz")
            self._counts["audio_chunks"] += 1
            if self._audio_end_ms is not None and chunk.t_ms - self._audio_end_ms > AUDIO_GAP_RESET_MS:
                self._start_features_afresh(chunk.t_ms - self._audio_end_ms)
            self._audio_end_ms = chunk.end_t_ms
            s = time.perf_counter()
            self._window.push(self._frontend.push(chunk.samples))
            frontend_ms = self._timed("audio_frontend", _elapsed_ms(s))
            if self._second is not None:
                s = time.perf_counter()
                self._second.push(chunk.samples)
                self._timed(SECOND_OPINION_EMBEDDING, _elapsed_ms(s))
            self._level_dbfs = rms_dbfs(chunk.samples)
            if self._gate is not None:
                was_open = self._gate_open
                self._gate_open = self._gate.update(chunk.samples, t)
                if was_open and not self._gate_open:
                    self._recognizer.reset()  # silence re-arms the recogniser (see the module docstring)

        # video: the newest frame at t
        frame = tick.frame
        read_ms = 0.0
        if frame is None and chunk is not None:
            if self._aligner is not None:
                s = time.perf_counter()
                frame = self._aligner.frame_at(t)  # decodes replayed frames: media I/O, not compute
                read_ms = self._timed(VIDEO_READ, _elapsed_ms(s))
            elif self._reader is not None:
                self._want_frame_for_scene(t)
                frame = self._reader.take()
        if frame is not None:
            self._new_frame = frame

        command_due = (chunk is not None and self._window.full and (self._second is None or self._second.ready)
                       and self._hop.due(t))
        if command_due and not self._gate_open:
            self._counts["audio_gated"] += 1
            command_due = False
        scene_due = self._new_frame is not None and self._scene.due(t)

        if command_due:
            s = time.perf_counter()
            self._audio_embedding = model.encode_audio(self._window.view())
            self._audio_embedding_t = t
            self._audio_stage = {"audio_frontend": frontend_ms,
                                 "audio_encoder": self._timed("audio_encoder", _elapsed_ms(s))}
            self._counts["audio_inferences"] += 1
        if scene_due:
            image = self._new_frame.image  # type: ignore[union-attr]
            self._new_frame = None
            s = time.perf_counter()
            pixels = preprocess_frame(image, model.image_frontend)
            preprocess_ms = self._timed("image_preprocess", _elapsed_ms(s))
            s = time.perf_counter()
            self._image_embedding = model.encode_image(pixels)
            self._image_embedding_t = t
            self._image_stage = {"image_preprocess": preprocess_ms,
                                 "image_encoder": self._timed("image_encoder", _elapsed_ms(s))}
            self._counts["image_inferences"] += 1

        if command_due or scene_due:
            audio_used = self._audio_embedding is not None and self._fresh(self._audio_embedding_t, t)
            image_used = self._image_embedding is not None and self._fresh(self._image_embedding_t, t)
            s = time.perf_counter()
            command_probs, scene_probs = model.fuse(self._audio_embedding if audio_used else None,
                                                    self._image_embedding if image_used else None)
            fusion_ms = self._timed("fusion", _elapsed_ms(s))
            self._counts["fusions"] += 1
            latency = {stage: 0.0 for stage in STAGES}
            if audio_used:
                latency.update(self._audio_stage)
            if image_used:
                latency.update(self._image_stage)
            latency["fusion"] = fusion_ms
            if command_due:
                # max(0): the microphone's clock is anchored at its first callback, a little late
                if self._second is not None:
                    s = time.perf_counter()
                    command_probs = self._second.blend(command_probs)
                    self._timed(SECOND_OPINION_HEADS, _elapsed_ms(s))
                latency[AUDIO_END_TO_EVENT] = max(0.0, monotonic_ms() - tick.chunk_arrival_ms)
                event = self._recognizer.process(command_probs, t, latency_ms=latency)
                self._timed(AUDIO_END_TO_RESULT, max(0.0, monotonic_ms() - tick.chunk_arrival_ms))
                if event is not None:
                    self._last_command = event
                    self._counts["command_events"] += 1
                    out.append(event)
                del latency[AUDIO_END_TO_EVENT]
            if scene_due:
                scene_event = self._smoother.update(scene_probs, t, latency_ms=latency)
                if scene_event is not None:
                    self._last_scene = scene_event
                    self._counts["scene_events"] += 1
                    out.append(scene_event)

        self._compute_ms += _elapsed_ms(start_s) - read_ms
        yield from out  # first: a hook that raises must not take this tick's events with it
        if frame is not None and self._on_frame is not None:
            if self._on_frame(frame, self.state) is False:
                self._stop.set()
