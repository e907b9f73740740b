"""ReplayVideoAligner: a source that keeps failing is said once per outage, not a line per loop round."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
from media import UnpluggedCapture, tone_wav

from edgesense.loop.pipeline import Pipeline
from edgesense.loop.scheduler import ReplayVideoAligner
from edgesense.runtime.model import EdgeModel
from edgesense.sources.base import BackoffOptions, SourceReadError, VideoFrame
from edgesense.sources.camera import CameraOptions, CameraSource
from edgesense.sources.replay import WavReplayOptions, WavReplaySource

SCHEDULER = "edgesense.loop.scheduler"


def _lines(caplog, name: str = SCHEDULER) -> list[str]:
    return [f"{r.levelname} {r.getMessage()}" for r in caplog.records if r.name == name]


class FailingThenFrames:
    """A video source whose first ``failures`` reads raise :class:`SourceReadError`, then frames 100 ms apart."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.reads = 0

    def read(self) -> VideoFrame:
        self.reads += 1
        if self.reads <= self.failures:
            raise SourceReadError("camera: camera index 0 is unavailable; next reopen attempt in 500 ms")
        return VideoFrame(image=np.zeros((4, 4, 3), np.uint8), t_ms=(self.reads - self.failures - 1) * 100.0)


def test_a_video_source_that_keeps_failing_is_one_line_per_outage_not_one_per_round(caplog):
    """A camera read by the aligner (``live_video=False``) while it is away: every round (audio chunk) read it and
    said so at debug, 50 lines a second for as long as it was away. Now its outage is one warning, and its end
    one with the count; the failures are still counted."""
    source = FailingThenFrames(failures=500)
    aligner = ReplayVideoAligner(source)
    with caplog.at_level(logging.DEBUG, logger=SCHEDULER):
        for k in range(500):  # 10 s of 20-ms chunks while the camera is away
            assert aligner.frame_at(k * 20.0) is None
        assert aligner.read_failures == 500 and not aligner.ended
        said = _lines(caplog)
        assert said == ["WARNING video: camera: camera index 0 is unavailable; next reopen attempt in 500 ms; "
                        "no new frames until it recovers"], said[:3]
        frame = aligner.frame_at(10_000.0)  # back: frames again
    assert frame is not None and aligner.read_failures == 500
    assert _lines(caplog)[1:] == ["WARNING video: recovered, frames resume (500 failed read(s))"]


@pytest.fixture
def model(tiny_model_path) -> EdgeModel:
    return EdgeModel.load(tiny_model_path)


def test_a_camera_read_in_the_loop_that_is_away_is_not_a_debug_line_per_round(model, tmp_path, monkeypatch, caplog):
    """``-v`` with a camera read in the loop's thread (``live_video=False``) that is unplugged for 3 s of audio:
    the loop said 'video: ...' at every round, 150 lines; now one (the camera's own lines are paced already)."""
    monkeypatch.setattr(cv2, "VideoCapture", UnpluggedCapture)
    monkeypatch.setattr(UnpluggedCapture, "opens", 0)
    camera = CameraSource(CameraOptions(source=0, reopen_after_failures=1,
                                        backoff=BackoffOptions(initial_ms=300.0, max_ms=300.0)))
    wav = tone_wav(tmp_path / "a.wav", [], 3.0)
    with caplog.at_level(logging.DEBUG), Pipeline(model, audio=WavReplaySource(wav, WavReplayOptions()),
                                                   video=camera, live_video=False) as pipeline:
        assert list(pipeline.events()) is not None
        stats = pipeline.stats
    assert stats.audio_chunks == 150 and stats.camera_read_failures >= 150
    said = _lines(caplog)
    assert len(said) == 1 and said[0].startswith("WARNING video: camera: "), said[:3]
