"""Counters and per-stage timings of a device-loop run, and its one-line summary."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from edgesense.schema.validate import require

__all__ = ["STAGES", "AUDIO_END_TO_EVENT", "AUDIO_END_TO_RESULT", "VIDEO_READ", "SECOND_OPINION_EMBEDDING",
           "SECOND_OPINION_HEADS", "SECOND_OPINION_STAGES", "LatencyWindow", "PipelineStats"]


#: Per-stage latencies every event carries (milliseconds).
STAGES = ("audio_frontend", "audio_encoder", "image_preprocess", "image_encoder", "fusion")
#: Command events: from the end of the audio that triggered it to the event.
AUDIO_END_TO_EVENT = "audio_end_to_event"
#: Stats only: the same for every command inference (event or not).
AUDIO_END_TO_RESULT = "audio_end_to_result"
#: Stats only, when a second opinion runs: its mel frames and embeddings (each audio chunk)...
SECOND_OPINION_EMBEDDING = "second_opinion_embedding"
#: ... and its heads and the blend (each command hop).
SECOND_OPINION_HEADS = "second_opinion_heads"
SECOND_OPINION_STAGES = (SECOND_OPINION_EMBEDDING, SECOND_OPINION_HEADS)
#: Stats only: reading (decoding) replayed video frames inside the loop.
VIDEO_READ = "video_read"
MS_PER_S = 1000.0
PERCENTILES = (50, 95)


class LatencyWindow:
    """The newest ``capacity`` timings (ms) of one stage, in a ring allocated (and written) whole when it is
    made: its memory is the same after the first value and after a month of them. (A deque of Python floats
    grew for as long as it was filling, 32 bytes a value, which on a device whose energy gate stays closed
    most of the day went on for days and read as a leak.)"""

    def __init__(self, capacity: int) -> None:
        require(isinstance(capacity, int) and not isinstance(capacity, bool) and capacity >= 1, "capacity",
                "an integer >= 1", capacity)
        self.capacity = capacity
        self._ring = np.full(capacity, np.nan)  # np.full writes every page now: resident from the start
        self._next = 0
        self.total = 0  #: values appended so far (the window holds the newest ``len(self)`` of them)
        self.sum_ms = 0.0  #: the sum of every value appended, the window's and those it let go

    def append(self, ms: float) -> None:
        self._ring[self._next] = ms
        self._next = (self._next + 1) % self.capacity
        self.total += 1
        self.sum_ms += ms

    def __len__(self) -> int:
        return min(self.total, self.capacity)

    @property
    def nbytes(self) -> int:
        return self._ring.nbytes

    def values(self) -> tuple[float, ...]:
        """The timings in the window, oldest first (read once each: the loop may append meanwhile)."""
        total, start = self.total, self._next
        if total < self.capacity:
            return tuple(self._ring[:total].tolist())
        ring = self._ring.tolist()
        return tuple(ring[start:] + ring[:start])


@dataclass(frozen=True)
class PipelineStats:
    """Counters and timings of a run (``stage_ms``: the most recent ``stats_window`` values per stage, for
    percentiles; ``stage_count`` and ``stage_total_ms``: every value of the run, for shares and rates)."""

    audio_chunks: int = 0
    video_frames: int = 0  #: frames the video source delivered to the loop
    frames_dropped: int = 0  #: delivered frames that never reached the image encoder (stale or between updates)
    audio_inferences: int = 0
    audio_gated: int = 0  #: command hops skipped by the energy gate
    image_inferences: int = 0
    fusions: int = 0
    command_events: int = 0
    scene_events: int = 0
    audio_overflows: int = 0
    audio_dropped_samples: int = 0
    audio_gaps: int = 0  #: gaps in the audio after which the features started afresh (pipeline.AUDIO_GAP_RESET_MS)
    audio_clock_resyncs: int = 0  #: microphone clock re-anchored to the monotonic clock after a driver stall
    audio_clipped_samples: int = 0  #: samples the microphone delivered at full scale (its converter clipped them)
    audio_read_failures: int = 0  #: reads that found no audio (while a live camera goes on, one per idle_wait_ms)
    #: outages of the live microphone (reads finding no audio until it comes back; each warned once); one that
    #: lasts audio.stall_timeout_ms ends the run
    audio_stalls: int = 0
    camera_read_failures: int = 0
    camera_outages: int = 0
    camera_stalls: int = 0  #: live camera reads that hung for half of camera.stall_timeout_ms (each one warned)
    camera_reopens: int = 0
    stream_start_ms: float = 0.0  #: stream time of the first sample or frame (0 for replays)
    stream_ms: float = 0.0  #: media time processed
    wall_ms: float = 0.0  #: wall-clock time of the run
    compute_ms: float = 0.0  #: time spent processing (frontends, model, post-processing), not reading media
    events_lost: int = 0  #: events a sink could neither deliver nor keep for later, or whose emit() raised
    stage_ms: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    stage_count: Mapping[str, int] = field(default_factory=dict)
    stage_total_ms: Mapping[str, float] = field(default_factory=dict)

    @property
    def real_time_factor(self) -> float:
        """Wall time / media time: below 1 is faster than real time (meaningful for ``--fast`` replays)."""
        return self.wall_ms / self.stream_ms if self.stream_ms > 0 else math.nan

    @property
    def compute_load(self) -> float:
        """Compute time / media time: the share of one core the loop needs to keep up."""
        return self.compute_ms / self.stream_ms if self.stream_ms > 0 else math.nan

    def percentile(self, stage: str, q: float) -> float:
        values = self.stage_ms.get(stage, ())
        return float(np.percentile(values, q)) if values else math.nan

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "stage_ms"}
        out["real_time_factor"] = self.real_time_factor
        out["compute_load"] = self.compute_load
        out["latency_ms"] = {
            stage: {"count": len(values), **{f"p{q}": round(self.percentile(stage, q), 3) for q in PERCENTILES}}
            for stage, values in self.stage_ms.items()
        }
        return out

    def summary(self) -> str:
        """One line: events, real-time factor, p50/p95 per stage."""
        stages = " ".join(
            f"{stage}={self.percentile(stage, 50):.2f}/{self.percentile(stage, 95):.2f}"
            for stage in (*STAGES, *SECOND_OPINION_STAGES, AUDIO_END_TO_RESULT) if self.stage_ms.get(stage)
        )
        return (f"events: {self.command_events} command, {self.scene_events} scene | "
                f"{self.stream_ms / MS_PER_S:.1f} s of media in {self.wall_ms / MS_PER_S:.1f} s, "
                f"RTF {_ratio(self.real_time_factor)}, load {_ratio(self.compute_load)} | "
                f"audio {self.audio_chunks} chunks, {self.audio_inferences} inferences, {self.audio_gated} gated | "
                f"video {self.video_frames} frames, {self.image_inferences} encoded, {self.frames_dropped} dropped | "
                f"p50/p95 ms: {stages or '-'}")


def _ratio(value: float) -> str:
    """A ratio of the summary line: ``n/a`` where there was no media to divide by."""
    return f"{value:.3f}" if math.isfinite(value) else "n/a"
