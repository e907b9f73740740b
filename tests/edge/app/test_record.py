"""``edgesense record``: labelled frame + 1 s sound pairs from replayed sample media (real OpenCV
decoding, real WAV and JPEG files), read back by the training loader."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
import sounddevice as sd
from cli_run import edgesense, error_line
from media import CountingWebcam, GrabsByReading

from edgesense.app.cli import main
from edgesense.app.record import PairWriter, ProgressBar, Recorder, RecordOptions, session_prefix
from edgesense.frontend.audio import AudioFrontendOptions
from edgesense.frontend.wav import probe_wav, read_wav
from edgesense.loop.config import load_config
from edgesense.loop.pipeline import open_sources
from edgesense.schema.yaml import dump_yaml
from edgesense.shipped import SAMPLES, shipped_config, shipped_path

VIDEO = shipped_path(SAMPLES, "scene.mp4")
AUDIO = shipped_path(SAMPLES, "commands.wav")
RATE_HZ = AudioFrontendOptions().sample_rate_hz
CLIP = AudioFrontendOptions().clip_samples
SCENE_RATE_HZ = load_config(shipped_config("desktop")).scheduler.scene_rate_hz  # the default config's
CHUNK_SAMPLES = int(load_config(shipped_config("desktop")).audio.chunk_ms * RATE_HZ / 1000)
LSB = 2.0 / 32768  # 16-bit in, 16-bit out: the samples agree to a rounding step
WAIT_S = 120.0  # for a real-time subprocess to write its first pairs (not a speed assertion)


def replay(*args: object) -> list[str]:
    return ["record", "--video", str(VIDEO), "--audio", str(AUDIO), "--fast", "--no-preview", *map(str, args)]


def pairs(folder: Path) -> list[str]:
    images = sorted(p.stem for p in folder.glob("*.jpg"))
    assert images == sorted(p.stem for p in folder.glob("*.wav")), "every image has its sound and back"
    return images


def decoded_frames() -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(VIDEO))
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image.astype(np.float32))
    cap.release()
    return frames


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


# --------------------------------------------------------------------------- what it writes


def record_replay(folder: Path, video: Path, audio: Path, *, seconds: float,
                  on_frame=None) -> tuple[Recorder, RecordOptions, object]:
    """Record ``folder.name`` pairs from replayed files with the desktop config, as `edgesense record --fast`
    does: (the recorder, its options, its result)."""
    config = load_config(shipped_config("desktop"))
    options = RecordOptions(label=folder.name, seconds=seconds, scheduler=config.scheduler)
    audio_source, video_source = open_sources(config, sample_rate_hz=RATE_HZ, video=video, audio=audio, fast=True)
    writer = PairWriter(folder, session_prefix(folder, folder.name), sample_rate_hz=RATE_HZ)
    with audio_source, video_source:
        recorder = Recorder(audio_source, video_source, options, writer, live_video=False, on_frame=on_frame)
        return recorder, options, recorder.run()


def test_replayed_pairs_come_at_the_scene_rate_are_aligned_and_load_for_training(tmp_path):
    seconds = 4
    out = tmp_path / "my_places"
    proc = edgesense(*replay("--label", "kitchen", "--seconds", seconds, "--out", out))
    assert proc.returncode == 0, proc.stderr
    names = pairs(out / "kitchen")
    assert abs(len(names) - seconds * SCENE_RATE_HZ) <= 1
    assert f"{len(names)} pairs written to {out / 'kitchen'}" in proc.stderr
    assert f"edgesense adapt --model models/edgesense.tflite --av {out}" in proc.stderr  # the next step
    assert f"] {len(names)}/{len(names)} pairs" in proc.stderr  # the progress bar's last line
    assert "Traceback" not in proc.stderr

    frames = decoded_frames()
    source = read_wav(AUDIO, sample_rate_hz=RATE_HZ)
    fps = cv2.VideoCapture(str(VIDEO)).get(cv2.CAP_PROP_FPS)
    previous = -1
    for name in names:
        info = probe_wav(out / "kitchen" / f"{name}.wav")
        assert (info.sample_rate_hz, info.channels, info.bits_per_sample, info.num_frames) == (RATE_HZ, 1, 16, CLIP)
        image = cv2.imread(str(out / "kitchen" / f"{name}.jpg")).astype(np.float32)
        index = int(np.argmin([np.abs(image - f).mean() for f in frames]))  # which decoded frame it is
        assert index > previous
        previous = index
        implied = int(round(index / fps * RATE_HZ)) - CLIP  # the second that ends at the frame's time
        assert implied >= 0, "no pair before a whole second of audio"
        samples = read_wav(out / "kitchen" / f"{name}.wav", sample_rate_hz=RATE_HZ)
        offsets = range(max(0, implied - CHUNK_SAMPLES), min(len(source) - CLIP, implied + CHUNK_SAMPLES) + 1)
        errors = [np.abs(samples - source[o:o + CLIP]).max() for o in offsets]
        assert min(errors) <= LSB, name
        assert abs(offsets[int(np.argmin(errors))] - implied) <= CHUNK_SAMPLES

    from edgesense.train.data import load_av_folder

    index = load_av_folder(out)
    assert index.classes == ("kitchen",)
    assert sorted(item.label for item in index.items) == ["kitchen"] * len(names)
    assert not index.unpaired


def test_the_scene_rate_comes_from_the_device_config(tmp_path, capsys):
    config = tmp_path / "device.yaml"
    config.write_text(dump_yaml({"device": {"name": "t"}, "scheduler": {"scene_rate_hz": 2}}), encoding="utf-8")
    assert main(replay("--label", "office", "--seconds", 3, "--out", tmp_path / "out", "--config", config)) == 0
    assert len(pairs(tmp_path / "out" / "office")) == 6
    assert "6 pairs written" in capsys.readouterr().err


def test_a_second_session_adds_files_without_touching_the_first(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(replay("--label", "hall", "--seconds", 1, "--out", out)) == 0
    first = digest(out / "hall")
    assert main(replay("--label", "hall", "--seconds", 1, "--out", out)) == 0
    second = digest(out / "hall")
    assert {name: second[name] for name in first} == first  # same files, same bytes
    added = sorted(set(second) - set(first))
    assert len(added) == len(first)
    prefixes = {name.rsplit("-", 1)[0] for name in first}, {name.rsplit("-", 1)[0] for name in added}
    assert len(prefixes[0]) == len(prefixes[1]) == 1 and prefixes[0] != prefixes[1]
    assert all(name.startswith("hall-") for name in second)


def test_the_next_step_is_a_command_that_pastes_as_it_is_with_a_space_in_out(tmp_path, capsys):
    """It used to print ``--av /tmp/My Places --out models/My Places.tflite``: pasted, adapt refused it."""
    out = tmp_path / "My Places"
    assert main(replay("--label", "den", "--seconds", 1, "--out", out)) == 0
    line = next(x for x in capsys.readouterr().err.splitlines() if "next:" in x)
    command = shlex.split(line.split("adapt the model to them: ", 1)[1].split(" (see ", 1)[0])
    assert command == ["edgesense", "adapt", "--model", "models/edgesense.tflite", "--av", str(out), "--out",
                       "models/My Places.tflite"]


def test_media_that_ends_before_the_seconds_stops_and_says_how_many_pairs(tmp_path, capsys):
    assert main(replay("--label", "park", "--seconds", 600, "--out", tmp_path)) == 0
    written = len(pairs(tmp_path / "park"))
    err = capsys.readouterr().err
    assert "the media ended after" in err and "before the 600 s asked" in err
    assert f"{written} pairs written to {tmp_path / 'park'}" in err
    duration_s = probe_wav(AUDIO).duration_s
    assert abs(written - (duration_s - 1) * SCENE_RATE_HZ) <= 2


def test_ctrl_c_keeps_every_pair_prints_the_summary_and_exits_0(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "edgesense.app.cli", "record", "--label", "den", "--seconds", "60", "--out",
           str(out), "--video", str(VIDEO), "--audio", str(AUDIO), "--no-preview"]  # real time: still running
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + WAIT_S
        while len(list((out / "den").glob("*.wav"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopped after" in err
    written = len(pairs(out / "den"))
    assert written >= 2 and f"{written} pairs written to {out / 'den'}" in err


def test_the_headless_preview_is_skipped_and_a_window_that_quits_stops_the_recording(tmp_path):
    proc = edgesense("record", "--label", "x", "--seconds", 1, "--out", tmp_path, "--video", VIDEO, "--audio", AUDIO,
                     "--fast", env={"DISPLAY": None, "WAYLAND_DISPLAY": None})
    assert proc.returncode == 0, proc.stderr
    assert len(pairs(tmp_path / "x")) == SCENE_RATE_HZ

    class Window:  # a preview whose user presses q at the 12th frame
        frames = 0

        def __call__(self, frame, recorder):
            self.frames += 1
            return self.frames < 12

    _, _, result = record_replay(tmp_path / "y", VIDEO, AUDIO, seconds=10, on_frame=Window())
    assert result.stopped and not result.media_ended
    assert result.pairs == len(pairs(tmp_path / "y")) == 1  # frames 0-11: one slot (1.0 s) after a full second


class ShownWindow:
    """The preview's window (:class:`edgesense.app.demo.PreviewWindow` without a display): keeps what it shows."""

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []

    def show(self, image: np.ndarray) -> bool:
        self.images.append(image)
        return True

    def close(self) -> None:
        pass


@pytest.mark.parametrize("size", [None, (1920, 1080)], ids=["sample-640x480", "1080p"])
def test_the_preview_keeps_the_pair_count_and_level_on_the_frame_with_a_long_label(tmp_path, monkeypatch, make_video,
                                                                                 make_wav, size):
    """``REC LABEL n/N level`` was drawn as it came: a 33-character place name on a 640-pixel camera frame ran off its
    right edge, the count and the level with it; a 1080p frame was drawn on at full size, then shown scaled down."""
    import edgesense.app.demo as demo_mod
    import edgesense.app.record as record_mod

    import edgesense.app.overlay as overlay_mod

    drawn: list[str] = []
    put_text = overlay_mod.put_text
    monkeypatch.setattr(overlay_mod, "put_text", lambda image, text, *a: (drawn.append(text), put_text(image, text,
                                                                                                      *a)))
    label = "grandmothers_living_room_upstairs"
    video = VIDEO
    if size is not None:
        frames = [np.full((size[1], size[0], 3), 40 + 4 * i, np.uint8) for i in range(40)]
        video = make_video("hd.avi", frames, fps=20.0)
    audio = make_wav("room.wav", np.random.default_rng(0).integers(-3000, 3000, 2 * RATE_HZ, dtype=np.int16))
    window = ShownWindow()
    _, _, result = record_replay(tmp_path / label, video, audio, seconds=1,
                                 on_frame=record_mod.RecordPreview(window, label))
    assert result.pairs >= 2 and window.images
    image = window.images[-1]
    assert image.shape[1] <= demo_mod.WINDOW_MAX_W_PX and image.shape[0] <= demo_mod.WINDOW_MAX_H_PX
    red = np.flatnonzero(((image[..., 2] > 150) & (image[..., 1] < 100)).any(axis=0))
    assert red.size and red.max() < image.shape[1] - record_mod.OVERLAY_ORIGIN_PX[0] // 2  # not cut by the edge
    last = drawn[-1]
    assert last.startswith("REC grandmo") and ("..." in last) == (size is None), last  # cut where it must be
    assert re.search(rf"  {result.pairs}/{result.expected}  -?\d+\.\d dBFS$", last), last  # the count, the level


@pytest.mark.parametrize("fps", [30000 / 1001, 24000 / 1001])
def test_an_ntsc_rate_video_loses_no_pair_at_the_start(tmp_path, make_video, make_wav, level_frames, fps):
    """At 29.97 or 23.976 fps no frame falls on the first second's end: the frame just before it has
    less than a second of audio, and sampling starts with the next frame instead of skipping that one
    (it used to be counted as skipped, "the microphone lost samples, or the camera stalled", every time)."""
    video = make_video("ntsc.avi", level_frames(int(3 * fps)), fps=fps)
    audio_file = make_wav("noise.wav", np.random.default_rng(0).integers(-3000, 3000, 3 * RATE_HZ, dtype=np.int16))
    _, options, result = record_replay(tmp_path / "z", video, audio_file, seconds=1)
    assert result.skipped == 0
    assert result.pairs == options.expected_pairs == len(pairs(tmp_path / "z"))


def test_a_video_shorter_than_the_first_second_ends_the_recording_when_it_ends(tmp_path, make_video, make_wav,
                                                                             level_frames):
    """No frame has a whole second of audio before it: no pair, none counted as skipped (nothing was lost),
    and the recording ends with the video, not with the audio."""
    video = make_video("short.avi", level_frames(12), fps=25.0)  # 0.48 s
    audio_file = make_wav("noise.wav", np.random.default_rng(0).integers(-3000, 3000, 3 * RATE_HZ, dtype=np.int16))
    recorder, _, result = record_replay(tmp_path / "s", video, audio_file, seconds=1)
    assert result.media_ended and result.pairs == 0 and result.skipped == 0
    assert recorder.t_ms < 1000.0
    assert not (tmp_path / "s").exists()


class SilentCamera(GrabsByReading):
    """cv2.VideoCapture of a camera that opens and never delivers a frame (wrong format, held by another
    program): every read (and grab) fails after a frame's time."""

    def __init__(self, source, *args):
        self._open = True

    def isOpened(self):
        return self._open

    def set(self, prop, value):
        return True

    def get(self, prop):
        return 0.0

    def read(self):
        time.sleep(0.01)
        return False, None

    def release(self):
        self._open = False


def test_a_camera_that_never_gives_a_frame_is_an_error_not_a_recording_without_end(tmp_path, monkeypatch,
                                                                                    make_wav):
    """Sampling waits for a frame with a whole second of audio before it; from a silent camera none comes,
    and it used to wait as long as the microphone ran (for ever), printing nothing but the camera's retries."""
    from edgesense.sources.camera import CameraOptions, CameraSource
    from edgesense.sources.replay import WavReplayOptions, WavReplaySource

    monkeypatch.setattr(cv2, "VideoCapture", SilentCamera)
    wav = make_wav("room.wav", np.random.default_rng(0).integers(-3000, 3000, RATE_HZ, dtype=np.int16))
    options = RecordOptions(label="den", seconds=5, first_frame_timeout_s=2.0)
    writer = PairWriter(tmp_path / "den", "den-x-", sample_rate_hz=RATE_HZ)
    with WavReplaySource(wav, WavReplayOptions(loop=True)) as audio, CameraSource(CameraOptions(source=0)) as video:
        recorder = Recorder(audio, video, options, writer, live_video=True)  # a microphone that never ends
        watchdog = threading.Timer(WAIT_S, recorder.stop)
        watchdog.start()
        try:
            with pytest.raises(RuntimeError, match=r"camera: camera index 0 gave no frame in 2 s .*nothing was "):
                recorder.run()
        finally:
            watchdog.cancel()
    assert 3.0 <= recorder.t_ms / 1000 < 3.1  # the first second, then the 2 s of waiting
    assert not (tmp_path / "den").exists()
    with pytest.raises(ValueError, match="first_frame_timeout_s"):
        RecordOptions(label="den", seconds=5, first_frame_timeout_s=0)


class NoiseStream:
    """sounddevice.InputStream with the real signature: start() plays room noise into the callback from a thread,
    in 10 ms blocks at real time (like PortAudio's thread), until stopped."""

    def __init__(self, *, device, samplerate, channels, dtype, callback) -> None:
        self.samplerate, self.callback = samplerate, callback
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, daemon=True)

    def _play(self) -> None:
        rng, block, next_at = np.random.default_rng(0), self.samplerate // 100, time.monotonic()
        while not self._stop.is_set():
            self.callback(rng.normal(0.0, 0.05, (block, 1)).astype(np.float32), block, None, sd.CallbackFlags())
            next_at += block / self.samplerate
            time.sleep(max(0.0, next_at - time.monotonic()))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def close(self) -> None:
        pass


def test_recording_from_a_live_camera_without_preview_decodes_only_the_frames_it_saves(tmp_path, monkeypatch,
                                                                                      capsys):
    """A 30 fps webcam and a pair every 0.2 s (the desktop config's 5 Hz): record --no-preview decoded all 30 frames
    a second (91 for the 10 pairs of 2 s) and saved 5. Now every frame is taken off the device (the driver's queue
    holds none stale) and one is decoded per pair, as `edgesense run` does; the pairs are as whole as before."""
    devices = [{"index": 0, "name": "USB PnP Sound Device", "max_input_channels": 1, "default_samplerate": 16000.0}]
    monkeypatch.setattr(sd, "query_devices",
                        lambda device=None, kind=None: list(devices) if device is None and kind is None else devices[0])
    monkeypatch.setattr(sd, "check_input_settings", lambda **kwargs: None)
    monkeypatch.setattr(sd, "InputStream", NoiseStream)
    monkeypatch.setattr(cv2, "VideoCapture", CountingWebcam)
    CountingWebcam.calls = {}
    assert main(["record", "--label", "den", "--seconds", "2", "--out", str(tmp_path), "--no-preview"]) == 0
    kept = pairs(tmp_path / "den")
    # (a pair whose frame came late on a busy machine may be missing: the decodes are what this test counts)
    assert round(2 * SCENE_RATE_HZ) - 2 <= len(kept) <= round(2 * SCENE_RATE_HZ), capsys.readouterr().err
    calls = CountingWebcam.calls
    assert calls.get("retrieve", 0) <= len(kept) + 2, f"{calls} for {len(kept)} pairs"
    assert calls.get("grab", 0) >= 3 * calls.get("retrieve", 0)  # the other frames were taken off the device
    for name in kept:
        assert cv2.imread(str(tmp_path / "den" / f"{name}.jpg")).shape == (120, 160, 3)
        assert probe_wav(tmp_path / "den" / f"{name}.wav").num_frames == CLIP


# --------------------------------------------------------------------------- names, files, progress


def test_names_never_collide_with_an_earlier_session_and_no_file_is_overwritten(tmp_path):
    clock = [datetime(2026, 1, 2, 3, 4, 5, 600000)]
    slept = []

    def sleep(s):
        slept.append(s)
        clock[0] += timedelta(seconds=s)

    folder = tmp_path / "kitchen"
    assert session_prefix(folder, "kitchen", now=lambda: clock[0], sleep=sleep) == "kitchen-20260102-030405-"
    writer = PairWriter(folder, "kitchen-20260102-030405-", sample_rate_hz=RATE_HZ)
    image, sound = np.zeros((8, 8, 3), np.uint8), np.zeros(CLIP, np.float32)
    assert writer.write(image, sound).name == "kitchen-20260102-030405-0001.jpg"
    # the same second again: the next session takes the next second
    assert session_prefix(folder, "kitchen", now=lambda: clock[0], sleep=sleep) == "kitchen-20260102-030406-"
    assert slept and sum(slept) <= 1.0
    (folder / "kitchen-20260102-030405-0002.wav").write_bytes(b"someone else's")
    with pytest.raises(FileExistsError, match="0002.wav: already exists"):
        writer.write(image, sound)
    assert (folder / "kitchen-20260102-030405-0002.wav").read_bytes() == b"someone else's"
    assert not (folder / "kitchen-20260102-030405-0002.jpg").exists()


@pytest.mark.parametrize("limit_bytes, failing", [(40_000, ".jpg"), (20_000, ".wav")])
def test_a_write_that_fails_half_way_leaves_only_whole_pairs_and_names_the_file(tmp_path, make_video, make_wav,
                                                                                limit_bytes, failing):
    """A full disk, as a real limit on the size of a file (RLIMIT_FSIZE: writes past it fail with EFBIG):
    flat frames make small JPEGs, noise ones large JPEGs; the 1-s WAV is 32 KB. The half-written file is
    removed (it used to stay: an image without its sound, or a broken WAV) and the one error line names it."""
    resource = pytest.importorskip("resource")
    rng = np.random.default_rng(0)
    flat = [np.full((240, 320, 3), 90, np.uint8)] * 50  # 0-2 s at 25 fps
    noise = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(50)]  # 2-4 s
    video = make_video("half.avi", flat + noise)
    audio_file = make_wav("noise.wav", rng.integers(-3000, 3000, 4 * RATE_HZ, dtype=np.int16))

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "edgesense.app.cli", "record", "--video", str(video), "--audio",
                           str(audio_file), "--fast", "--no-preview", "--label", "den", "--seconds", "3", "--out",
                           str(out)], capture_output=True, text=True, preexec_fn=limit, timeout=WAIT_S, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.splitlines()[-1]  # after the progress lines of the pairs written
    assert line.startswith("edgesense: error: ") and sum("error" in x for x in proc.stderr.splitlines()) == 1
    kept = pairs(out / "den") if (out / "den").exists() else []
    assert f"{failing}: cannot write it" in line and f"the {len(kept)} pairs written before it are kept" in line
    assert len(kept) == (5 if failing == ".jpg" else 0)  # the flat frames' slots, 1.0 .. 1.8 s
    assert all(p.stat().st_size < limit_bytes for p in (out / "den").iterdir()) if kept else not (out / "den").exists()


def test_a_label_with_a_dot_keeps_every_pair(tmp_path):
    folder = tmp_path / "living.room"
    writer = PairWriter(folder, session_prefix(folder, "living.room"), sample_rate_hz=RATE_HZ)
    image, sound = np.zeros((8, 8, 3), np.uint8), np.zeros(CLIP, np.float32)
    names = [writer.write(image, sound).name for _ in range(2)]
    assert all(name.startswith("living.room-") and name.endswith(".jpg") for name in names)
    assert len(set(names)) == 2 and len(list(folder.glob("*.wav"))) == 2


def test_progress_bar_redraws_on_a_terminal_and_writes_a_line_per_tenth_elsewhere(tmp_path):
    class Stream(list):
        def __init__(self, tty):
            super().__init__()
            self.tty = tty

        def isatty(self):
            return self.tty

        def write(self, text):
            self.append(text)

        def flush(self):
            pass

    log = Stream(False)
    bar = ProgressBar("kitchen", 40, log)
    for done in range(1, 41):
        bar.update(done, done / 5, -30.0)
    bar.close()
    lines = "".join(log).splitlines()
    assert len(lines) == 10 and lines[-1].startswith("kitchen [########################] 40/40 pairs")
    assert lines[-1].endswith("8.0 s  -30.0 dBFS")
    now = [0.0]
    term = Stream(True)
    bar = ProgressBar("kitchen", 40, term, clock=lambda: now[0])
    for done in range(1, 41):
        bar.update(done, done / 5, None)  # no time passes: drawn once, and at the end
    bar.close()
    assert len(term) == 3 and all(t.startswith("\r") for t in term[:2]) and term[-1] == "\n"
    assert "40/40 pairs" in term[1] and "- dBFS" in term[1]


def test_progress_bar_with_stderr_closed_writes_nothing_to_stdout(monkeypatch, capsys):
    """``edgesense record ... 2>&-``: Python's sys.stderr is None, and print(file=None) writes to stdout."""
    monkeypatch.setattr(sys, "stderr", None)
    bar = ProgressBar("kitchen", 4)
    for done in range(1, 5):
        bar.update(done, done / 5, -30.0)
    bar.close()
    assert capsys.readouterr().out == ""


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("args, needles", [
    (("--label", "", "--seconds", "5"), ("--label", "it is empty", "got ''")),
    (("--label", "a/b", "--seconds", "5"), ("--label", "'/'", "got 'a/b'")),
    (("--label", "..", "--seconds", "5"), ("--label", "'..'", "got '..'")),
    (("--label", "my kitchen", "--seconds", "5"), ("--label", "whitespace", "got 'my kitchen'")),
    (("--label", "a\\b", "--seconds", "5"), ("--label", "it contains a '\\'", "got 'a\\\\b'")),
    # a zero-width space pasted with the name: a second class that prints like "kitchen" (it used to be one)
    (("--label", "kitchen\u200b", "--seconds", "5"), ("--label", "invisible", "U+200B", "got 'kitchen\\u200b'")),
    (("--label", "k\x1bx", "--seconds", "5"), ("--label", "control character U+001B", "got 'k\\x1bx'")),
    (("--label", "k\udcfcx", "--seconds", "5"), ("--label", "it is not UTF-8 text")),  # Latin-1 bytes in argv
    (("--label", "k" * 231, "--seconds", "5"), ("--label", "at most 230 bytes", "too long", "got 'kkk")),
    (("--label", "k", "--seconds", "0"), ("--seconds", "> 0", "got 0")),
    (("--label", "k", "--seconds", "-3"), ("--seconds", "> 0", "got -3")),
    (("--label", "k", "--seconds", "soon"), ("--seconds", "> 0", "got 'soon'")),
    (("--label", "k", "--seconds", "inf"), ("--seconds", "expected a finite number of seconds > 0", "got inf")),
])
def test_bad_label_or_seconds_is_one_line_and_exit_2(tmp_path, args, needles):
    line = error_line(edgesense("record", *args, "--out", tmp_path / "out", "--video", VIDEO, "--audio", AUDIO))
    for needle in needles:
        assert needle in line, line
    assert not (tmp_path / "out").exists()


def test_fast_without_replayed_files_is_refused_not_ignored(tmp_path):
    # The live devices run in real time: --fast was silently ignored (the recording went on to open them).
    line = error_line(edgesense("record", "--label", "k", "--seconds", 5, "--out", tmp_path / "out", "--fast"))
    assert line == "edgesense: error: --fast: acts only with --video and --audio (a replay), which are not given"
    assert not (tmp_path / "out").exists()


def test_a_label_that_is_a_recorded_place_but_for_case_is_refused_before_recording(tmp_path):
    # adapt and train refuse kitchen/ beside Kitchen/ (one place, two classes): said now, not after the session.
    out = tmp_path / "places"
    (out / "kitchen").mkdir(parents=True)
    (out / "kitchen" / "kitchen-20260102-093000-0001.jpg").write_bytes(b"mine")
    line = error_line(edgesense("record", "--label", "Kitchen", "--seconds", 5, "--out", out, "--video", VIDEO,
                                "--audio", AUDIO))
    assert line == (f"edgesense: error: --label Kitchen: expected a place that differs from the places in --out {out} "
                    "by more than case or Unicode form, got it beside 'kitchen' (pass --label kitchen to record more "
                    "of that place)")
    assert sorted(p.name for p in out.iterdir()) == ["kitchen"]


def test_a_label_that_is_a_recorded_place_but_for_unicode_form_is_refused_before_recording(tmp_path):
    """``küche`` typed composed beside a ``küche/`` folder written decomposed (macOS, a copied folder) was recorded
    as a second place; train and adapt then refused the two folders that read alike, after the session."""
    out = tmp_path / "places"
    decomposed = "ku\u0308che"
    (out / decomposed).mkdir(parents=True)
    (out / decomposed / f"{decomposed}-20260102-093000-0001.jpg").write_bytes(b"mine")
    proc = edgesense("record", "--label", "k\u00fcche", "--seconds", 5, "--out", out, "--video", VIDEO, "--audio",
                     AUDIO, "--fast", "--no-preview")
    line = error_line(proc)
    assert "--label k\u00fcche: expected a place that differs from the places in --out" in line, line
    assert f"beside {decomposed!r}" in line and f"pass --label {decomposed}" in line
    assert sorted(p.name for p in out.iterdir()) == [decomposed]


def test_out_that_is_a_file_is_one_line_and_exit_2(tmp_path):
    out = tmp_path / "places"
    out.write_text("not a folder")
    line = error_line(edgesense("record", "--label", "k", "--seconds", 5, "--out", out, "--video", VIDEO,
                                "--audio", AUDIO))
    assert f"--out {out}: expected a folder" in line and "found a file" in line


def test_a_missing_camera_or_microphone_is_one_line_naming_it_with_the_replay_hint(tmp_path):
    common = ("record", "--label", "k", "--seconds", 5, "--out", tmp_path / "out")
    line = error_line(edgesense(*common, "--video", VIDEO))
    assert line.startswith("edgesense: error: --audio: expected a file to go with --video") and "found none" in line
    line = error_line(edgesense(*common, "--audio", AUDIO))
    assert line.startswith("edgesense: error: --video: expected a file to go with --audio")

    no_camera = tmp_path / "no_camera.yaml"
    no_camera.write_text(dump_yaml({"device": {"name": "t"}, "camera": {"enabled": False}}), encoding="utf-8")
    line = error_line(edgesense(*common, "--config", no_camera))
    assert "camera.enabled: expected true (record needs the camera), found false" in line
    assert "--video FILE --audio FILE" in line

    absent = tmp_path / "absent.yaml"  # devices that exist nowhere: the same answer on any machine
    absent.write_text(dump_yaml({"device": {"name": "t"}, "camera": {"source": "/dev/video-edgesense-absent"},
                                 "audio": {"device": "edgesense-absent-microphone"}}), encoding="utf-8")
    line = error_line(edgesense(*common, "--config", absent))
    assert "microphone" in line and "camera" in line and "/dev/video-edgesense-absent" in line
    assert "--video FILE --audio FILE" in line
    assert not (tmp_path / "out").exists()


def test_record_is_a_device_command_without_desktop_imports():
    code = ("import sys, edgesense.app.record; "
            "bad = [m for m in ('tensorflow', 'tqdm', 'edgesense.train') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    assert proc.returncode == 0, proc.stdout + proc.stderr
