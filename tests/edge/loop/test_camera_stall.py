"""A live camera whose read never returns (a capture wedged in its driver, a GStreamer source that stalled).

Only the capture device is faked (``cv2.VideoCapture``, whose ``read`` blocks on a ``threading.Event`` as a C
call that never returns would); the CameraSource, the LatestFrameReader, the Pipeline, its sinks and
``edgesense run`` are the production code. The loop's thread warns at half of ``camera.stall_timeout_ms`` and
ends the run at all of it, after the events so far are written (the process then exits, exit code 2, for its
service manager to restart it: no thread can free the capture).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time

import cv2
import numpy as np
import pytest
from media import TEST_THRESHOLD, GrabsByReading, scene_image, tone_wav

from edgesense.app.cli import main
from edgesense.loop.pipeline import Pipeline, PipelineOptions
from edgesense.loop.scheduler import CameraStallError
from edgesense.recognition.commands import CommandRecognizerOptions
from edgesense.recognition.scenes import SceneSmootherOptions
from edgesense.runtime.model import EdgeModel
from edgesense.schema.yaml import dump_yaml
from edgesense.sinks.jsonl import JsonLinesSink
from edgesense.sources.camera import CameraOptions, CameraSource
from edgesense.sources.replay import WavReplayOptions, WavReplaySource

STALL_TIMEOUT_MS = 1000.0  #: the shortest a config takes
FRAMES_BEFORE_THE_WEDGE = 20
GENEROUS_S = 60.0  #: an upper bound only (a shared 2-core machine): the run must end, not hang for ever
#: OpenCV's V4L2 backend: how many seconds a read waits for a frame (select()) before it fails (10 by default).
V4L2_SELECT_TIMEOUT_ENV = "OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT"


class WedgingCamera(GrabsByReading):
    """``cv2.VideoCapture`` for a device index: ``FRAMES_BEFORE_THE_WEDGE`` frames at 20 fps, then a read that
    blocks until :attr:`unblock` is set (``wedged`` is set when it starts)."""

    wedged = threading.Event()
    unblock = threading.Event()
    frames = FRAMES_BEFORE_THE_WEDGE

    def __init__(self, source, *args) -> None:
        self._rng = np.random.default_rng(0)
        self._read = 0

    def isOpened(self) -> bool:
        return True

    def set(self, prop, value) -> bool:
        return True

    def get(self, prop) -> float:
        return {cv2.CAP_PROP_FRAME_WIDTH: 160, cv2.CAP_PROP_FRAME_HEIGHT: 120, cv2.CAP_PROP_FPS: 20.0}.get(prop, 0)

    def read(self):
        time.sleep(0.05)
        if self._read >= self.frames:
            WedgingCamera.wedged.set()
            WedgingCamera.unblock.wait()  # the driver's call that never returns
        self._read += 1
        return True, scene_image("vehicle", self._rng)

    def release(self) -> None:
        pass


@pytest.fixture
def wedging_camera(monkeypatch):
    WedgingCamera.wedged, WedgingCamera.unblock = threading.Event(), threading.Event()
    WedgingCamera.frames = FRAMES_BEFORE_THE_WEDGE
    monkeypatch.setattr(cv2, "VideoCapture", WedgingCamera)
    # Its reads never fail, so none waits out OpenCV's V4L2 select() timeout: the stall timeout is the config's own.
    monkeypatch.setenv(V4L2_SELECT_TIMEOUT_ENV, "0")
    yield WedgingCamera
    WedgingCamera.unblock.set()  # lets the reader thread, left in its read, end (and say so before the next test)
    for thread in threading.enumerate():
        if thread.name == "edgesense-camera":
            thread.join(GENEROUS_S)


@pytest.fixture(scope="module")
def model(tiny_model_path) -> EdgeModel:
    return EdgeModel.load(tiny_model_path)


def quick_options() -> PipelineOptions:
    return PipelineOptions(recognizer=CommandRecognizerOptions(threshold=TEST_THRESHOLD),
                           smoother=SceneSmootherOptions(window_ms=300.0, min_hold_ms=0.0, heartbeat_ms=200.0))


def test_a_camera_read_that_never_returns_ends_the_run_after_its_events_are_written(model, wedging_camera, tmp_path,
                                                                                    caplog):
    """Beside the microphone (a WAV replayed in real time), the camera wedges after 1 s: command hops went on and
    scene events stopped for ever, without a line. Now a warning at half the timeout, and the run ends with a
    RuntimeError naming the camera and how long its read hung; every event delivered is in the events file."""
    wav = tone_wav(tmp_path / "a.wav", [("yes", 0.5)], 30.0)
    events_file = tmp_path / "events.jsonl"
    camera = CameraSource(CameraOptions(source=0, stall_timeout_ms=STALL_TIMEOUT_MS))
    delivered = []
    pipeline = Pipeline(model, quick_options(), audio=WavReplaySource(wav, WavReplayOptions(realtime=True)),
                        video=camera, sinks=[JsonLinesSink(str(events_file))], on_event=delivered.append)
    stopper = threading.Timer(GENEROUS_S, pipeline.stop)  # the old code: a run that never ends
    stopper.start()
    try:
        with caplog.at_level(logging.WARNING), pipeline, pytest.raises(CameraStallError) as info:
            pipeline.run()
        stats = pipeline.stats
    finally:
        stopper.cancel()
    assert wedging_camera.wedged.is_set()
    message = str(info.value)
    assert isinstance(info.value, RuntimeError) and "\n" not in message
    assert message.startswith("camera: a read from camera index 0 has not returned for ")
    assert "camera.stall_timeout_ms: 1000" in message and "service manager to restart it" in message
    hung_s = float(message.split("has not returned for ")[1].split(" s")[0])
    assert STALL_TIMEOUT_MS / 1000 <= hung_s < GENEROUS_S
    warnings = [r.getMessage() for r in caplog.records if "has not returned for" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("camera: a read from camera index 0")
    assert stats.camera_stalls == 1 and stats.audio_chunks > 0
    assert any(e.type == "scene" for e in delivered)
    written = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert [(e["type"], e["t_ms"]) for e in written] == [(e.type, e.t_ms) for e in delivered]


def test_a_camera_only_loop_ends_too_instead_of_idling_for_ever(model, wedging_camera, caplog):
    camera = CameraSource(CameraOptions(source=0, stall_timeout_ms=STALL_TIMEOUT_MS))
    pipeline = Pipeline(model, quick_options(), video=camera)
    stopper = threading.Timer(GENEROUS_S, pipeline.stop)
    stopper.start()
    try:
        with pipeline, pytest.raises(RuntimeError, match="camera: a read from camera index 0 has not returned"):
            events = []
            for event in pipeline.events():
                events.append(event)
    finally:
        stopper.cancel()
    assert events and pipeline.stats.camera_stalls == 1


def test_a_read_that_hangs_and_returns_is_warned_about_and_the_run_goes_on(model, wedging_camera, caplog):
    """A read that hangs past half the timeout and then returns (a slow reopen, a driver hiccup): one warning, one
    line when it returns, the run goes on and scene events come again."""
    returned = threading.Event()

    class ReleaseOnTheWarning(logging.Handler):
        def emit(self, record):
            if "has not returned for" in record.getMessage():
                wedging_camera.unblock.set()
            if "the read returned after" in record.getMessage():
                returned.set()

    handler = ReleaseOnTheWarning(level=logging.WARNING)
    logging.getLogger("edgesense.loop.scheduler").addHandler(handler)
    camera = CameraSource(CameraOptions(source=0, stall_timeout_ms=4 * STALL_TIMEOUT_MS))
    pipeline = Pipeline(model, quick_options(), video=camera)
    after = []
    try:
        with caplog.at_level(logging.WARNING), pipeline:
            deadline = time.monotonic() + GENEROUS_S
            for event in pipeline.events():
                if returned.is_set():
                    after.append(event)
                if len(after) >= 2 or time.monotonic() > deadline:
                    break
            stats = pipeline.stats
    finally:
        logging.getLogger("edgesense.loop.scheduler").removeHandler(handler)
    assert returned.is_set() and len(after) >= 2  # scene events again after the read returned
    assert stats.camera_stalls == 1
    assert len([r for r in caplog.records if "has not returned for" in r.getMessage()]) == 1


def test_without_a_stall_timeout_a_hung_read_is_left_alone(model, wedging_camera):
    """``camera.stall_timeout_ms: null``: no check (the loop waits, as before, for a camera that may block)."""
    camera = CameraSource(CameraOptions(source=0, stall_timeout_ms=None))
    pipeline = Pipeline(model, quick_options(), video=camera)
    with pipeline:
        assert pipeline._reader.stall_timeout_ms is None
        events = pipeline.events()
        next(events)
        assert wedging_camera.wedged.wait(GENEROUS_S)
        pipeline._reader.check_stall()  # returns: nothing to check against
        pipeline.stop()
        list(events)
    assert pipeline.stats.camera_stalls == 0


def test_edgesense_run_exits_2_with_one_line_and_the_events_written(tiny_model_path, wedging_camera, tmp_path,
                                                                    capsys):
    """The device service's case: ``edgesense run`` on a camera-only config ends with one error line naming the
    camera, how long its read hung and that the process exits to be restarted; exit code 2 (a failure for
    systemd's Restart=on-failure); the events so far are in the events file."""
    events_file = tmp_path / "events.jsonl"
    config = tmp_path / "device.yaml"
    config.write_text(dump_yaml({
        "device": {"name": "test-device"}, "audio": {"enabled": False},
        "camera": {"source": 0, "stall_timeout_ms": STALL_TIMEOUT_MS},
        "scenes": {"window_ms": 300, "min_hold_ms": 0, "heartbeat_ms": 200},
        "outputs": {"events": str(events_file), "mqtt": None}}), encoding="utf-8")
    started = time.monotonic()
    rc = main(["run", "--config", str(config), "--model", str(tiny_model_path), "--headless"])
    took_s = time.monotonic() - started
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and took_s < GENEROUS_S
    errors = [line for line in err.splitlines() if line.startswith("edgesense: error:")]
    assert len(errors) == 1, err
    assert errors[0].startswith("edgesense: error: camera: a read from camera index 0 has not returned for ")
    assert "the process exits, for its service manager to restart it" in errors[0]
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert events and all(e["type"] == "scene" for e in events)


class SilentV4L2Camera(GrabsByReading):
    """``cv2.VideoCapture`` for a V4L2 device that opens (in 0.2 s) and delivers ``frames`` frames, then none: as
    OpenCV's V4L2 backend does (cap_v4l.cpp, ``tryIoctl``), each read then fails, ``(False, None)``, after its
    ``select()`` timeout, ``$OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT`` seconds (10 by default)."""

    frames = 3
    opened = 0

    def __init__(self, source, *args) -> None:
        SilentV4L2Camera.opened += 1
        time.sleep(0.2)  # open(), VIDIOC_S_FMT, the buffers

    isOpened, set, get, release = WedgingCamera.isOpened, WedgingCamera.set, WedgingCamera.get, WedgingCamera.release

    def read(self):
        if SilentV4L2Camera.frames > 0:
            SilentV4L2Camera.frames -= 1
            time.sleep(0.05)
            return True, np.zeros((120, 160, 3), np.uint8)
        time.sleep(int(os.environ[V4L2_SELECT_TIMEOUT_ENV]))  # "VIDEOIO(V4L2:/dev/video0): select() timeout."
        return False, None


def test_a_v4l2_camera_that_stops_delivering_is_reopened_not_taken_for_a_stall(model, monkeypatch, caplog):
    """A USB camera still plugged in that stops sending frames: OpenCV fails each read after its select() timeout
    (10 s), just the default stall_timeout_ms, and a read that reopens the camera takes longer still, so the run
    ended with 'the capture is wedged in its driver' a minute in (exit 2, the service restarted, the same again)
    where the camera was to reopen itself with backoff. Scaled down: a 1 s select() timeout, a 1000 ms config;
    every read fails, the camera is reopened, no stall."""
    monkeypatch.setenv(V4L2_SELECT_TIMEOUT_ENV, "1")
    SilentV4L2Camera.frames, SilentV4L2Camera.opened = 3, 0
    monkeypatch.setattr(cv2, "VideoCapture", SilentV4L2Camera)
    options = CameraOptions(source=0, stall_timeout_ms=STALL_TIMEOUT_MS, reopen_after_failures=1)
    pipeline = Pipeline(model, quick_options(), video=CameraSource(options))
    stopper = threading.Timer(5.0, pipeline.stop)  # the failed read, two reopening reads (1.2 s each), and more
    stopper.start()
    try:
        with caplog.at_level(logging.WARNING), pipeline:
            list(pipeline.events())  # the old code: CameraStallError at the first read that reopened the camera
            stats = pipeline.stats
    finally:
        stopper.cancel()
    assert SilentV4L2Camera.opened >= 3 and stats.camera_reopens >= 2
    assert stats.camera_stalls == 0 and stats.camera_outages == 1
    assert not [r for r in caplog.records if "has not returned for" in r.getMessage()]
    # two select() timeouts (OpenCV skips the first frame after opening) and the open: 21 s with OpenCV's default
    assert options.effective_stall_timeout_ms == 3000.0
    monkeypatch.delenv(V4L2_SELECT_TIMEOUT_ENV)
    assert options.effective_stall_timeout_ms == 21_000.0
    assert CameraOptions(source="v4l2src ! videoconvert ! appsink",
                         stall_timeout_ms=STALL_TIMEOUT_MS).effective_stall_timeout_ms == STALL_TIMEOUT_MS
