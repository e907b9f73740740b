"""Faults injected into the device loop (edgesense.loop.pipeline) with the tiny int8 model.

Only what this machine lacks is faked, at the very edge: ``cv2.VideoCapture`` (no
camera) and the ``sounddevice`` module (no microphone). Everything above them (the
real CameraSource with its reopen/backoff, MicrophoneSource with its ring buffer,
LatestFrameReader, Pipeline, sinks) is the production code.

* camera unplugged for ``OUTAGE_S`` seconds of stream time and plugged back: the
  loop keeps running audio inference (and emitting commands), scene events stop,
  and resume within ``SCENE_RESUME_MS`` of the camera's return;
* microphone input overflows in bursts: counted in the stats, the loop goes on;
* microphone whose callbacks stop while PortAudio keeps its stream active (a wedged driver): ``edgesense run``
  ends after ``audio.stall_timeout_ms`` with one line, exit 2, the events written;
* SIGTERM in the middle of ``edgesense run``: exit 0, events flushed, no torn line.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import sounddevice as sd_mod
from cli_run import hang_up_as_a_shell_would
from media import TEST_THRESHOLD, GrabsByReading, SmallCameraCapture, UnpluggedCapture, tone_samples, tone_wav

import edgesense.pacing as pacing
import edgesense.sources.microphone as microphone_mod
from edgesense.loop.pipeline import Pipeline, PipelineOptions
from edgesense.loop.scheduler import SchedulerOptions
from edgesense.recognition.commands import CommandRecognizerOptions
from edgesense.recognition.gate import EnergyGateOptions
from edgesense.recognition.scenes import SceneSmootherOptions
from edgesense.sources.base import SourceReadError
from edgesense.sources.camera import CameraOptions, CameraSource
from edgesense.sources.microphone import MicrophoneOptions, MicrophoneSource
from edgesense.sources.replay import WavReplayOptions, WavReplaySource

REPO = Path(__file__).resolve().parents[3]
SAMPLES = REPO / "samples"
RATE_HZ = 16000
OUTAGE_S = float(os.environ.get("EDGESENSE_CAMERA_OUTAGE_S", "3"))
SCENE_RESUME_MS = 2000.0
HEARTBEAT_MS = 400.0
HOP_MS = 100.0


def _words_wav(path: Path, starts_s: list[float], seconds: float) -> Path:
    """'yes' (the tiny model's most confident tone word, tests/media.py) with near-silence between words,
    so that the energy gate re-arms the recogniser and the same word fires again."""
    return tone_wav(path, [("yes", start) for start in starts_s], seconds, seed=1, quiet_between=True)


# --------------------------------------------------------------------------- fake camera (cv2.VideoCapture)


class UnpluggableCamera:
    """/dev/video0 that is unplugged between stream times ``down_ms`` and ``up_ms``.

    ``clock_ms`` tells the stream time. As with V4L2, a capture opened before an
    unplug stays dead after it: the CameraSource must reopen the device.
    """

    def __init__(self, clock_ms, down_ms: float, up_ms: float, fps: float = 15.0, realtime: bool = True) -> None:
        self.clock_ms, self.down_ms, self.up_ms, self.fps, self.realtime = clock_ms, down_ms, up_ms, fps, realtime
        self.opens = 0
        rng = np.random.default_rng(0)
        self.frame = np.clip(np.array([60, 190, 60]) + rng.normal(0, 12, (480, 640, 3)), 0, 255).astype(np.uint8)

    def plugged(self) -> bool:
        return not (self.down_ms <= self.clock_ms() < self.up_ms)

    def capture_class(self):
        camera = self

        class FakeCapture(GrabsByReading):
            def __init__(self, source, *args) -> None:
                self.open = camera.plugged()
                self.opened_at_ms = camera.clock_ms()
                camera.opens += self.open

            def isOpened(self) -> bool:
                return self.open

            def set(self, prop, value) -> bool:
                return True

            def get(self, prop) -> float:
                return camera.fps

            def read(self):
                if camera.realtime:
                    time.sleep(1.0 / camera.fps)  # a camera blocks until its next frame
                now = camera.clock_ms()
                dead = self.opened_at_ms < camera.down_ms <= now  # unplugged since it was opened
                if not self.open or dead or not camera.plugged():
                    return False, None
                return True, camera.frame.copy()

            def release(self) -> None:
                self.open = False

        return FakeCapture


def test_camera_outage_audio_goes_on_and_scenes_resume(tiny_model_path, tmp_path, monkeypatch, outage_s=OUTAGE_S):
    from edgesense.runtime.model import EdgeModel

    model = EdgeModel.load(tiny_model_path)
    down_ms = 2000.0
    up_ms = down_ms + outage_s * 1000.0
    seconds = up_ms / 1000.0 + 3.0
    word_s = (down_ms + 200) / 1000.0  # a word inside the outage (its event comes <= 1.5 s after it ends)
    assert word_s + 0.6 + 1.5 < up_ms / 1000.0, "outage too short to contain a word and its detection"
    wav = _words_wav(tmp_path / "words.wav", [0.4, word_s, up_ms / 1000.0 + 0.5], seconds)
    holder: dict = {}
    camera = UnpluggableCamera(lambda: holder["pipeline"].state.t_ms if "pipeline" in holder else 0.0,
                               down_ms, up_ms)
    monkeypatch.setattr(cv2, "VideoCapture", camera.capture_class())
    events = []
    options = PipelineOptions(scheduler=SchedulerOptions(command_hop_ms=HOP_MS, scene_rate_hz=5.0),
                              recognizer=CommandRecognizerOptions(threshold=TEST_THRESHOLD),
                              energy_gate=EnergyGateOptions(threshold_dbfs=-45.0, hangover_ms=300.0),
                              smoother=SceneSmootherOptions(heartbeat_ms=HEARTBEAT_MS, min_hold_ms=0.0))
    audio = WavReplaySource(wav, WavReplayOptions(realtime=True))  # real-time pacing: the camera is live
    video = CameraSource(CameraOptions(fps=15.0))  # the device's defaults: reopen after 5 failures, backoff
    samples: list[tuple[float, int]] = []  # (stream ms, command hops: inferred or gated) from another thread
    pipeline = Pipeline(model, options, audio=audio, video=video, on_event=events.append)
    holder["pipeline"] = pipeline
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            stats = pipeline.stats
            samples.append((pipeline.state.t_ms, stats.audio_inferences + stats.audio_gated))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with pipeline:
        stats = pipeline.run()
    stop.set()
    sampler.join()

    # The camera really failed and really came back through a reopen.
    assert stats.camera_read_failures > 0 and stats.camera_outages == 1 and stats.camera_reopens >= 1
    # The command side went on through the outage: every hop inferred (or skipped by the energy gate on
    # silence), and the word said during the outage was recognised (fused with the image absent).
    during = [n for t, n in samples if down_ms + 200 <= t <= up_ms - 200]
    assert len(during) >= 2, "no samples during the outage"
    expected = (up_ms - down_ms - 400) / HOP_MS
    assert during[-1] - during[0] >= 0.8 * expected, (during[0], during[-1], expected)
    assert stats.audio_inferences > 0 and stats.audio_gated > 0
    commands = [e.t_ms for e in events if e.type == "command"]
    assert any(down_ms <= t < up_ms for t in commands), f"no command event during the outage: {commands}"
    # Scene events: regular before, none during, back within SCENE_RESUME_MS after.
    scenes = [e.t_ms for e in events if e.type == "scene"]
    assert any(t < down_ms for t in scenes)
    slack_ms = 1000.0 / 15 + options.scheduler.scene_period_ms  # a frame taken just before the unplug
    assert not [t for t in scenes if down_ms + slack_ms < t < up_ms], scenes
    after = [t for t in scenes if t >= up_ms]
    assert after, f"scene events never resumed: {scenes}"
    assert after[0] - up_ms <= SCENE_RESUME_MS, f"scene events resumed {after[0] - up_ms:.0f} ms after the camera"


def test_camera_long_outage_reopened_within_2s_of_return():
    """Fake clock, no pipeline: CameraSource read every 100 ms as LatestFrameReader does, 30 s unplugged."""
    now = {"ms": 0.0}
    camera = UnpluggableCamera(lambda: now["ms"], 1000.0, 31000.0, realtime=False)
    original = cv2.VideoCapture
    cv2.VideoCapture = camera.capture_class()
    try:
        source = CameraSource(CameraOptions(), clock_ms=lambda: now["ms"])
        first_frame_after = None
        while now["ms"] < 60000 and first_frame_after is None:
            try:
                source.read()
                if now["ms"] >= camera.up_ms:
                    first_frame_after = now["ms"]
            except SourceReadError:
                pass
            now["ms"] += 100.0
        source.close()
    finally:
        cv2.VideoCapture = original
    assert first_frame_after is not None
    assert first_frame_after - camera.up_ms <= SCENE_RESUME_MS


# --------------------------------------------------------------------------- fake microphone (sounddevice)


class FakeSoundDevice:
    """The sounddevice module with one 16 kHz input whose callback reports overflow bursts.

    The stream plays ``samples`` in blocks of ``block`` frames at ``speed`` x real time;
    blocks in ``overflow_blocks`` carry ``status.input_overflow`` and, as a real
    overflow does, lose the block's samples (the driver dropped them).
    """

    class PortAudioError(Exception):
        pass

    def __init__(self, samples: np.ndarray, block: int, overflow_blocks: set[int], speed: float = 2.0) -> None:
        self.samples, self.block, self.overflow_blocks, self.speed = samples, block, overflow_blocks, speed
        self.finished = threading.Event()
        self.overflows_sent = 0

    def query_devices(self, device=None, kind=None):
        info = {"index": 0, "name": "fake mic", "max_input_channels": 1, "default_samplerate": float(RATE_HZ)}
        return info if kind else [info]

    def check_input_settings(self, **kwargs) -> None:
        pass

    def InputStream(self, *, callback, samplerate, **kwargs):  # noqa: N802 - sounddevice's name
        fake = self

        class Stream:
            def __init__(self) -> None:
                self._stop = threading.Event()
                self._thread = threading.Thread(target=self._run, daemon=True)

            def _run(self) -> None:
                for i, start in enumerate(range(0, fake.samples.size - fake.block + 1, fake.block)):
                    if self._stop.is_set():
                        return
                    overflow = i in fake.overflow_blocks
                    fake.overflows_sent += overflow
                    if not overflow:
                        block = fake.samples[start:start + fake.block, None].astype(np.float32)
                        callback(block, fake.block, None, SimpleNamespace(input_overflow=False))
                    else:  # the driver lost this block: PortAudio reports it on the next callback
                        callback(np.zeros((0, 1), np.float32), 0, None, SimpleNamespace(input_overflow=True))
                    time.sleep(fake.block / samplerate / fake.speed)
                fake.finished.set()

            def start(self) -> None:
                self._thread.start()

            def stop(self) -> None:
                self._stop.set()

            def close(self) -> None:
                self._thread.join(1.0)

        return Stream()


def test_microphone_overflow_bursts_are_counted_and_the_loop_goes_on(tiny_model_path, tmp_path, monkeypatch):
    from edgesense.runtime.model import EdgeModel

    model = EdgeModel.load(tiny_model_path)
    seconds = 4.0
    samples = np.random.default_rng(2).normal(0, 0.05, int(seconds * RATE_HZ)).astype(np.float32)
    block = 320  # 20 ms
    bursts = {*range(50, 60), *range(100, 115), *range(150, 152)}  # 27 blocks (0.54 s) lost in three bursts
    fake = FakeSoundDevice(samples, block, bursts)
    monkeypatch.setattr(microphone_mod, "_import_sounddevice", lambda: fake)
    mic = MicrophoneSource(MicrophoneOptions(read_timeout_ms=300.0))
    pipeline = Pipeline(model, PipelineOptions(scheduler=SchedulerOptions(command_hop_ms=HOP_MS)), audio=mic)
    inferences_at_end_of_bursts = []

    def watch() -> None:
        while not fake.finished.wait(0.02):
            if fake.overflows_sent == len(bursts) and not inferences_at_end_of_bursts:
                inferences_at_end_of_bursts.append(pipeline.stats.audio_inferences)
        pipeline.stop()  # the fake stream is over: end the run (a live microphone never ends by itself)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with pipeline:
        stats = pipeline.run()
    watcher.join(5)
    assert stats.audio_overflows == len(bursts) == fake.overflows_sent
    delivered_s = seconds - len(bursts) * block / RATE_HZ
    # Every delivered chunk was processed and inference ran every hop after the first full window.
    assert stats.audio_chunks >= 0.95 * delivered_s * 1000 / 20
    assert stats.audio_inferences >= 0.9 * (delivered_s * 1000 - 1000) / HOP_MS
    assert inferences_at_end_of_bursts and stats.audio_inferences > inferences_at_end_of_bursts[0], \
        "no inference after the last overflow burst"


def test_edgesense_run_on_a_deaf_microphone_exits_2_with_one_line_and_the_events_written(tiny_model_path, tmp_path,
                                                                                        monkeypatch, capsys):
    """The device service's case: the microphone's driver wedges (no more callbacks, and PortAudio still says the
    stream is active). `edgesense run` logged one warning and retried for ever, deaf until someone restarted it.
    Now it ends once no audio has come for audio.stall_timeout_ms: one error line naming the microphone and how
    long it has been silent, exit code 2 (a failure for systemd's Restart=on-failure, whose new process opens the
    device afresh), the events so far in the events file."""
    from edgesense.app.cli import main
    from edgesense.schema.yaml import dump_yaml

    samples = tone_samples([("yes", 0.5)], 2.5).astype(np.float32)
    fake = FakeSoundDevice(samples, block=160, overflow_blocks=set(), speed=1.0)  # then no callback: deaf
    monkeypatch.setattr(microphone_mod, "_import_sounddevice", lambda: fake)
    events_file = tmp_path / "events.jsonl"
    config = tmp_path / "device.yaml"
    config.write_text(dump_yaml({
        "device": {"name": "test-device"}, "camera": {"enabled": False},
        "audio": {"read_timeout_ms": 300, "stall_timeout_ms": 1000},
        "commands": {"threshold": TEST_THRESHOLD},
        "outputs": {"events": str(events_file), "mqtt": None}}), encoding="utf-8")
    stopper = threading.Timer(30.0, os.kill, (os.getpid(), signal.SIGTERM))  # the old code: a run that never ends
    stopper.start()
    started = time.monotonic()
    try:
        rc = main(["run", "--config", str(config), "--model", str(tiny_model_path), "--headless"])
    finally:
        stopper.cancel()
    took_s = time.monotonic() - started
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and took_s < 25.0
    errors = [line for line in err.splitlines() if line.startswith("edgesense: error:")]
    assert len(errors) == 1, err
    assert errors[0].startswith("edgesense: error: microphone 'fake mic': no audio for ")
    assert "(audio.stall_timeout_ms: 1000)" in errors[0]
    assert errors[0].endswith("the process exits, for its service manager to restart it")
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert [(e["type"], e["label"]) for e in events] == [("command", "yes")]


# --------------------------------------------------------------------------- SIGTERM


def _config(tmp_path: Path, model: Path, **outputs) -> Path:
    path = tmp_path / "device.yaml"
    lines = ["device: {name: fault-test}", f"model: {{path: {model}}}",
             "scenes: {heartbeat_ms: 500, min_hold_ms: 0}", "commands: {threshold: 0.5, minimum_count: 2}"]
    if outputs:
        lines.append("outputs: {" + ", ".join(f"{k}: {v}" for k, v in outputs.items()) + "}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_run_flushes_events_and_exits_0(tiny_model_path, tmp_path, sig):
    events = tmp_path / "events.jsonl"
    cmd = [sys.executable, "-m", "edgesense.app.cli", "run", "--config", str(_config(tmp_path, tiny_model_path)),
           "--video", str(SAMPLES / "scene.mp4"), "--audio", str(SAMPLES / "commands.wav"), "--headless",
           "--events", str(events)]  # real time (no --fast): 14 s of media, stopped after a few events
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if events.exists() and events.read_text().count("\n") >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "edgesense run: events:" in err  # the summary: the loop ended normally
    text = events.read_text()
    assert text.endswith("\n"), "torn last line"
    lines = text.splitlines()
    assert len(lines) >= 3
    parsed = [json.loads(line) for line in lines]  # raises on a torn line
    assert all(p["type"] in ("command", "scene") for p in parsed)
    assert max(p["t_ms"] for p in parsed) < 14000, "stopped mid-run, not at the end of the media"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_while_the_broker_is_away_waits_one_publish_timeout(tiny_model_path, tmp_path):
    """`systemctl stop` while the MQTT broker is unreachable: the sinks were flushed at the end of Pipeline.run
    and again in Pipeline.close, each waiting publish_timeout_s (5 s) for the same spooled events: about 10 s to
    stop, though the events stay spooled either way. Now one wait in all."""
    spool = tmp_path / "spool"
    config = _config(tmp_path, tiny_model_path, events="null", mqtt=f"'mqtt://127.0.0.1:{_free_port()}'",
                     mqtt_spool_dir=str(spool))
    cmd = [sys.executable, "-m", "edgesense.app.cli", "run", "--config", str(config), "--video",
           str(SAMPLES / "scene.mp4"), "--audio", str(SAMPLES / "commands.wav"), "--headless", "--events", "-"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline(), proc.communicate()  # an event was emitted (and spooled)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        stop_s = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert err.count("not acknowledged") == 1, err  # one wait, said once
    # publish_timeout_s (5 s), and the rest of the stop (about 1 s: paho's thread ends; more on a busy machine),
    # not twice 5 s
    assert 4.5 < stop_s < 9.5, err


def test_a_spool_folder_another_process_holds_names_the_config_field(tmp_path):
    """Two `edgesense run` on one spool folder: the second said `spool: DIR is in use by another EdgeSense
    process` without naming the config file and its outputs.mqtt_spool_dir, where that folder comes from."""
    from edgesense.sinks.spool import EventSpool

    spool = tmp_path / "spool"
    config = _config(tmp_path, REPO / "models" / "edgesense.tflite", events="null",
                     mqtt=f"'mqtt://127.0.0.1:{_free_port()}'", mqtt_spool_dir=str(spool))
    with EventSpool(spool):  # the other process
        with pytest.raises(RuntimeError) as info:
            Pipeline.from_config(config, audio=SAMPLES / "commands.wav", fast=True)
    assert str(info.value) == (f"{config}: outputs.mqtt_spool_dir: expected a folder no other spool holds, got "
                               f"{str(spool)!r}: it is in use by another EdgeSense process (or another sink in "
                               "this one)")
    # `edgesense run` with the default `mqtt_spool_dir: auto`: that line, saying the folder was chosen for the
    # user, is its one error line (after its own log lines only), exit 2.
    from cli_run import ERROR_PREFIX, edgesense, error_line

    from edgesense.sinks.outputs import default_spool_dir

    config.write_text(config.read_text().replace(f"mqtt_spool_dir: {spool}", "mqtt_spool_dir: auto")
                      .replace("device: {name: fault-test}", "device: {name: fault-test, device_id: held}"))
    auto = default_spool_dir("held")
    with EventSpool(auto):
        line = error_line(edgesense("run", "--config", config, "--audio", SAMPLES / "commands.wav", "--fast",
                                    "--headless", cwd=tmp_path))
    assert line == (f"{ERROR_PREFIX} {config}: outputs.mqtt_spool_dir (auto): expected a folder no other spool "
                    f"holds, got {str(auto)!r}: it is in use by another EdgeSense process (or another sink in "
                    "this one)")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["sigterm", "sighup"])
def test_sigterm_while_the_broker_gives_no_answer_stops_at_once(tiny_model_path, tmp_path, stop):
    """A broker that takes the connection and never answers (hung): a stop while the sink waited for its answer
    waited out connect_timeout_s (10 s) first. Now the wait ends with the signal, and the run stops; so does
    it with SIGHUP (the terminal closed), which the command handles as a stop too."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(4)
        config = _config(tmp_path, tiny_model_path, events="null",
                         mqtt=f"'mqtt://127.0.0.1:{hung.getsockname()[1]}'", mqtt_spool_dir=str(tmp_path / "spool"))
        cmd = [sys.executable, "-m", "edgesense.app.cli", "run", "--config", str(config), "--audio",
               str(SAMPLES / "commands.wav"), "--headless"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, preexec_fn=hang_up_as_a_shell_would)
        try:
            hung.settimeout(60)
            connection, _ = hung.accept()  # the sink is waiting for the broker's CONNACK now
            time.sleep(0.5)
            started = time.monotonic()
            proc.send_signal(stop)
            out, err = proc.communicate(timeout=60)
            stop_s = time.monotonic() - started
            connection.close()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    assert "stopped while waiting for broker" in err and "gave no answer" not in err, err
    assert stop_s < 4.0, err


# --------------------------------------------------------------------------- conditions that last, in the log


def _said(caplog, *loggers: str) -> list[str]:
    return [f"{r.levelname} {r.getMessage()}" for r in caplog.records if r.name in loggers and r.levelno >= 20]


class BlinkingCapture(SmallCameraCapture):
    """cv2.VideoCapture for a camera index whose every ``period``-th read fails (a loose USB connector)."""

    period = 20

    def __init__(self, source, *args) -> None:
        super().__init__()

    def read(self):
        self.reads += 1
        time.sleep(0.001)
        return (False, None) if self.reads % self.period == 0 else (True, self.frame())


def test_a_camera_that_drops_a_read_every_few_seconds_is_not_two_lines_each_time(monkeypatch, caplog):
    """Each failed read of a camera that drops one now and then was an outage of its own: 'scene events paused'
    and 'recovered', two warnings every few seconds (720 an hour for one every 10 s). Now an outage that comes
    back within LOG_INTERVAL_S of the last one said is not said; the next one said counts them."""
    from edgesense.loop.scheduler import LatestFrameReader, LatestFrameReaderOptions
    monkeypatch.setattr(cv2, "VideoCapture", BlinkingCapture)
    camera = CameraSource(CameraOptions(source=0))
    reader = LatestFrameReader(camera, LatestFrameReaderOptions(retry_ms=1.0))
    with caplog.at_level("DEBUG", logger="edgesense.loop.scheduler"):
        reader.start()
        deadline = time.monotonic() + 20.0
        while reader.outages < 10 and time.monotonic() < deadline:
            reader.take(timeout_s=0.01)
        said = _said(caplog, "edgesense.loop.scheduler")
        assert reader.outages >= 10 and len(said) == 2, said
        assert said[0].startswith("WARNING camera: failed to read a frame from camera index 0; going on with audio")
        assert said[1] == "WARNING camera: recovered, scene events resume (1 failed read(s))"
        monkeypatch.setattr(pacing, "LOG_INTERVAL_S", 0.0)  # the interval has passed: the next one is said
        outages = reader.outages
        while reader.outages < outages + 2 and time.monotonic() < deadline:
            reader.take(timeout_s=0.01)
    reader.stop()
    camera.close()
    assert "outages since the last such line, said at most every 0 s)" in _said(caplog, "edgesense.loop.scheduler")[2]


def test_a_camera_that_is_away_is_read_when_its_reopen_is_due_not_every_retry_ms(monkeypatch):
    """A camera unplugged for hours: the reader read it every retry_ms (100 ms) though each read until the
    camera's next reopen attempt (its backoff, up to a second) failed at once: ten wakeups a second for one
    attempt. Now the reader waits for that attempt: about one read per reopen attempt."""
    from edgesense.loop.scheduler import LatestFrameReader, LatestFrameReaderOptions
    from edgesense.sources.base import BackoffOptions
    monkeypatch.setattr(cv2, "VideoCapture", UnpluggedCapture)
    monkeypatch.setattr(UnpluggedCapture, "opens", 0)
    camera = CameraSource(CameraOptions(source=0, reopen_after_failures=1,
                                        backoff=BackoffOptions(initial_ms=300.0, max_ms=300.0)))
    reads = []
    read = camera.read

    def counted_read():
        reads.append(time.monotonic())
        return read()

    monkeypatch.setattr(camera, "read", counted_read)
    reader = LatestFrameReader(camera, LatestFrameReaderOptions(retry_ms=10.0)).start()
    time.sleep(2.0)
    reader.stop()
    camera.close()
    attempts = UnpluggedCapture.opens - 1  # the reopen attempts, each failed
    assert attempts >= 3 and reader.outages == 1
    assert len(reads) <= attempts + 3, f"{len(reads)} reads for {attempts} reopen attempts"  # about 200 before


class SteppedStream:
    """sounddevice.InputStream fed by the test, one 10-ms block at a time, on a stand-in monotonic clock."""

    instances: list["SteppedStream"] = []

    def __init__(self, *, device, samplerate, channels, dtype, callback):
        self.callback, self.active = callback, False
        SteppedStream.instances.append(self)

    def start(self):
        self.active = True

    def stop(self):
        self.active = False

    def close(self):
        pass

    def feed(self, block: np.ndarray) -> None:
        status = sd_mod.CallbackFlags()
        self.callback(block.reshape(-1, 1).astype(np.float32), block.size, None, status)


def test_a_microphone_that_keeps_stalling_or_losing_audio_is_not_lines_at_every_loss(tiny_model_path, monkeypatch,
                                                                                     caplog):
    """A microphone whose driver loses 300 ms of audio every 2 s, and stalls for 1.5 s every 10 s (read timeouts):
    each loss was a warning (clock re-anchored) and an info line (the features start afresh), each stall two
    warnings more ('no audio', 'flowing again'): hundreds of lines an hour. Now each kind is said once, then at
    most once per LOG_INTERVAL_S."""
    from edgesense.runtime.model import EdgeModel
    monkeypatch.setattr(sd_mod, "query_devices", lambda device=None, kind=None: [
        {"index": 0, "name": "USB mic", "max_input_channels": 1, "default_samplerate": 16000.0}]
        if device is None and kind is None else
        {"index": 0, "name": "USB mic", "max_input_channels": 1, "default_samplerate": 16000.0})
    monkeypatch.setattr(sd_mod, "check_input_settings", lambda **kwargs: None)
    monkeypatch.setattr(sd_mod, "InputStream", SteppedStream)
    clock = SimpleNamespace(now_ms=1000.0)
    monkeypatch.setattr(microphone_mod, "monotonic_ms", lambda: clock.now_ms)
    rng = np.random.default_rng(0)
    state = SimpleNamespace(played_ms=0.0, stalled_rounds=0)

    def play(ms: float = 20.0) -> None:  # the loop's on_progress: the audio of one chunk comes
        if state.stalled_rounds:  # this round's read timed out
            state.stalled_rounds -= 1
            clock.now_ms += 750.0
            return
        for _ in range(int(ms / 10)):
            state.played_ms += 10.0
            if state.played_ms % 10_000 == 0:
                state.stalled_rounds = 2
                return
            if state.played_ms % 2000 == 0:
                clock.now_ms += 300.0  # lost in the driver
            clock.now_ms += 10.0
            SteppedStream.instances[-1].feed(rng.standard_normal(160) * 0.01)

    with caplog.at_level("INFO"):
        microphone = MicrophoneSource(MicrophoneOptions(read_timeout_ms=50.0))
        play(100.0)
        pipeline = Pipeline(EdgeModel.load(tiny_model_path), PipelineOptions(), audio=microphone, on_progress=play)
        with pipeline:
            pipeline.run(duration_s=60.0)
            stats = pipeline.stats
    assert stats.audio_gaps >= 20 and stats.audio_clock_resyncs >= 20 and stats.audio_stalls >= 2, stats
    said = _said(caplog, "edgesense.loop.pipeline", "edgesense.sources.microphone")
    kinds = ("open at 16000 Hz", "re-anchored", "start afresh", "no audio for", "flowing again")
    assert [sum(kind in line for line in said) for kind in kinds] == [1] * len(kinds) and len(said) == 5, said


def test_a_callback_that_fails_at_every_event_is_one_warning_not_one_per_event(tiny_model_path, tmp_path, caplog):
    """An ``on_event`` callback that raised at every event wrote a warning per event; now one when it starts
    failing, as for a sink (edgesense.pacing.Outage)."""
    from media import scene_video

    from edgesense.runtime.model import EdgeModel
    from edgesense.sources.replay import VideoReplaySource
    video = scene_video(tmp_path / "v.avi", [("indoor", 3.0)])
    options = PipelineOptions(scheduler=SchedulerOptions(scene_rate_hz=10.0),
                              smoother=SceneSmootherOptions(window_ms=500.0, min_hold_ms=0.0, heartbeat_ms=100.0))

    def broken(event):
        raise RuntimeError("boom")

    with caplog.at_level("WARNING", logger="edgesense.loop.pipeline"):
        pipeline = Pipeline(EdgeModel.load(tiny_model_path), options, video=VideoReplaySource(video),
                            on_event=broken)
        with pipeline:
            stats = pipeline.run()
    assert stats.scene_events >= 10, stats
    said = _said(caplog, "edgesense.loop.pipeline")
    assert len(said) == 1 and "on_event callback" in said[0] and "boom" in said[0], said
