"""The device loop on real media with the real tiny int8 model.

Media are written for each test: WAVs (tone "words" in the tiny model's frequency
bands, over the noise floor it was trained with) and videos encoded with
cv2.VideoWriter (frames tinted like the tiny model's scene classes), decoded back by
OpenCV. Only the hardware edges are faked: PortAudio (sounddevice's device list and
InputStream, whose callback the test drives with the WAV's samples) and the camera
(cv2.VideoCapture for a device index).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
import sounddevice as sd
from conftest import require_speech_embedding
from media import (
    DETECTION_SLACK_MS,
    REQUIRED_KEYS,
    TEST_THRESHOLD,
    TONE_S,
    CountingWebcam,
    GrabsByReading,
    scene_image,
    scene_video,
    tone_samples,
    tone_wav,
    write_wav,
)

import edgesense.loop
import edgesense.sources.microphone as microphone_mod
import edgesense.sources.replay as replay_mod
from edgesense.frontend.wav import read_wav
from edgesense.loop.config import DeviceConfig, load_config
from edgesense.loop.pipeline import Pipeline, PipelineOptions
from edgesense.loop.scheduler import FeatureWindow, PeriodicSchedule, ReplayVideoAligner, SchedulerOptions
from edgesense.loop.stats import (
    AUDIO_END_TO_EVENT, SECOND_OPINION_EMBEDDING, SECOND_OPINION_HEADS, SECOND_OPINION_STAGES, STAGES, LatencyWindow,
    PipelineStats,
)
from edgesense.recognition.commands import CommandRecognizerOptions
from edgesense.recognition.gate import EnergyGateOptions
from edgesense.recognition.scenes import SceneSmootherOptions
from edgesense.runtime.model import EdgeModel
from edgesense.runtime.second_opinion import SecondOpinion, SecondOpinionOptions
from edgesense.sinks.jsonl import JsonLinesSink
from edgesense.sources.base import BackoffOptions
from edgesense.sources.camera import CameraOptions, CameraSource
from edgesense.sources.replay import VideoReplayOptions, VideoReplaySource, WavReplayOptions, WavReplaySource
from edgesense.types import CommandEvent, SceneEvent


def quick_smoother() -> SceneSmootherOptions:
    return SceneSmootherOptions(window_ms=500.0, min_hold_ms=400.0, heartbeat_ms=1000.0)


def test_options(**overrides) -> PipelineOptions:
    values = dict(recognizer=CommandRecognizerOptions(threshold=TEST_THRESHOLD), smoother=quick_smoother())
    values.update(overrides)
    return PipelineOptions(**values)


test_options.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def model(tiny_model_path) -> EdgeModel:
    return EdgeModel.load(tiny_model_path)


class RecordingModel:
    """Delegates to the real model and records what ``fuse`` was given (present or None)."""

    def __init__(self, model: EdgeModel) -> None:
        self._model = model
        self.fused: list[tuple[bool, bool]] = []

    def __getattr__(self, name):
        return getattr(self._model, name)

    def fuse(self, audio_embedding, image_embedding):
        self.fused.append((audio_embedding is not None, image_embedding is not None))
        return self._model.fuse(audio_embedding, image_embedding)


# --------------------------------------------------------------------------- the whole loop on replayed media


def test_replay_loop_emits_commands_and_scenes_with_stats(model, tmp_path):
    wav = tone_wav(tmp_path / "a.wav", [("yes", 1.0)], 5.5)
    video = scene_video(tmp_path / "v.avi", [("indoor", 2.5), ("vehicle", 3.0)])
    events_file = tmp_path / "events.jsonl"
    seen = []
    pipeline = Pipeline(model, test_options(), audio=WavReplaySource(wav), video=VideoReplaySource(video),
                        sinks=[JsonLinesSink(events_file)], on_event=seen.append)
    with pipeline:
        stats = pipeline.run()

    lines = events_file.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == len(seen) == stats.command_events + stats.scene_events
    for record in records:
        assert REQUIRED_KEYS <= set(record)
        assert set(STAGES) <= set(record["latency_ms"])
        assert all(v >= 0 for v in record["latency_ms"].values())
    times = [r["t_ms"] for r in records]
    assert times == sorted(times)

    commands = [r for r in records if r["type"] == "command"]
    assert [c["label"] for c in commands] == ["yes"]
    word_end_ms = (1.0 + TONE_S) * 1000
    assert word_end_ms - TONE_S * 500 <= commands[0]["t_ms"] <= word_end_ms + DETECTION_SLACK_MS
    assert commands[0]["score"] > TEST_THRESHOLD
    assert commands[0]["latency_ms"]["audio_encoder"] > 0 and commands[0]["latency_ms"]["image_encoder"] > 0
    assert 0 < commands[0]["latency_ms"][AUDIO_END_TO_EVENT] < 1000

    scenes = [r for r in records if r["type"] == "scene"]
    changes = [s for s in scenes if s["reason"] == "change"]
    assert [s["label"] for s in changes] == ["indoor", "vehicle"]
    assert changes[1]["previous"] == "indoor"
    assert 2500 <= changes[1]["t_ms"] <= 2500 + 1500  # the video switched at 2.5 s
    assert any(s["reason"] == "heartbeat" for s in scenes)

    assert stats.audio_chunks == 275  # 5.5 s in 20 ms chunks
    assert stats.video_frames == 55
    assert stats.stream_ms == pytest.approx(5500.0) and stats.stream_start_ms == 0.0
    hops = int((5500 - 990) // 100) + 1  # one per 100 ms once the first second is in
    assert abs(stats.audio_inferences - hops) <= 1 and stats.audio_gated == 0
    assert abs(stats.image_inferences - 5.5 * 5) <= 1  # 5 Hz of a 10 fps video
    assert stats.frames_dropped == stats.video_frames - stats.image_inferences > 0
    assert stats.fusions < stats.audio_inferences + stats.image_inferences  # shared ticks fuse once
    assert 0 < stats.real_time_factor < 1 and 0 < stats.compute_load <= stats.real_time_factor
    for stage in STAGES:
        assert 0 < stats.percentile(stage, 50) <= stats.percentile(stage, 95)
    assert "RTF" in stats.summary() and "p50/p95" in stats.summary()


def test_fast_replay_aligns_frames_by_timestamp(model, tmp_path, make_video, level_frames):
    """With --fast nothing paces the video: the frame used at audio time t is the newest with t_frame <= t."""
    fps = 25.0
    video = make_video("levels.avi", level_frames(50), fps=fps)
    wav = write_wav(tmp_path / "a.wav", tone_samples([], 2.0))
    used = []

    def on_frame(frame, state):
        used.append((state.t_ms, frame.t_ms, int(np.median(frame.image))))

    with Pipeline(model, test_options(), audio=WavReplaySource(wav), video=VideoReplaySource(video),
                  on_frame=on_frame) as pipeline:
        list(pipeline.events())
    assert len(used) == 50  # audio ticks every 20 ms, frames every 40 ms: each frame is the newest once
    for audio_t, frame_t, level in used:
        assert frame_t <= audio_t < frame_t + 1000 / fps + 20
        index = round(frame_t * fps / 1000)
        assert abs(level - (index * 20) % 256) <= 8  # the decoded frame really is that one


class ReplayClock:
    """The replays' clock, moved on only by their own sleeps: what pacing asked for, without waiting."""

    def __init__(self) -> None:
        self.now_ms = 0.0

    def monotonic_ms(self) -> float:
        return self.now_ms

    def sleep(self, seconds: float) -> None:
        self.now_ms += seconds * 1000.0


def test_a_real_time_video_that_outlasts_the_audio_stays_in_real_time(model, tmp_path, monkeypatch):
    """Without --fast the audio paces both replays; once it ends, the rest of the video keeps that pace
    (it used to be replayed as fast as possible: 3 s of media in about 1 s)."""
    clock = ReplayClock()
    monkeypatch.setattr(replay_mod, "monotonic_ms", clock.monotonic_ms)
    monkeypatch.setattr(replay_mod, "time", clock)
    wav = write_wav(tmp_path / "a.wav", tone_samples([], 1.0))
    video = scene_video(tmp_path / "v.avi", [("indoor", 3.0)])  # 30 frames at 10 fps
    frames = []
    audio = WavReplaySource(wav, WavReplayOptions(realtime=True))
    with Pipeline(model, test_options(), audio=audio, video=VideoReplaySource(video),
                  on_frame=lambda frame, state: frames.append((frame.t_ms, clock.now_ms))) as pipeline:
        list(pipeline.events())
    assert len(frames) == 30
    tail = [(t_ms, shown_at_ms) for t_ms, shown_at_ms in frames if t_ms > 1000.0]  # after the audio's end
    assert len(tail) == 19
    for t_ms, shown_at_ms in tail:  # each at its own time on the replay's clock (which starts at 0)
        assert shown_at_ms == pytest.approx(t_ms)
    assert clock.now_ms == pytest.approx(2900.0)  # the last frame's time, as a real-time replay of 3 s


def test_audio_only_and_video_only_fuse_none_for_the_absent_modality(model, tmp_path):
    wav = tone_wav(tmp_path / "a.wav", [("yes", 0.5)], 3.0)
    video = scene_video(tmp_path / "v.avi", [("outdoor", 3.0)])

    audio_model = RecordingModel(model)
    with Pipeline(audio_model, test_options(), audio=WavReplaySource(wav)) as pipeline:
        events = list(pipeline.events())
    assert [e.label for e in events if isinstance(e, CommandEvent)] == ["yes"]
    assert not any(isinstance(e, SceneEvent) for e in events)
    assert audio_model.fused and set(audio_model.fused) == {(True, False)}
    assert events[0].latency_ms["image_encoder"] == 0.0

    video_model = RecordingModel(model)
    with Pipeline(video_model, test_options(), video=VideoReplaySource(video)) as pipeline:
        events = list(pipeline.events())
        stats = pipeline.stats
    assert events and all(isinstance(e, SceneEvent) for e in events)
    assert events[0].label == "outdoor"
    assert set(video_model.fused) == {(False, True)}
    assert stats.audio_chunks == 0 and stats.image_inferences == pytest.approx(15, abs=1)
    assert stats.stream_ms == pytest.approx(2900.0)  # first to last frame


def _one_modality_model(tiny_model_path, out, untrained: str):
    """The tiny model as a one-modality recipe's file: ``untrained`` (an encoder) calibrated on stand-ins."""
    from edgesense.quantize.convert import split_tflite_parts, write_merged

    metadata = EdgeModel.load(tiny_model_path).metadata
    metadata["quantization"]["stand_in_samples"] = {untrained: 32}
    write_merged(split_tflite_parts(tiny_model_path.read_bytes()), metadata, out)
    return out


def test_a_modality_the_model_never_trained_stays_closed(tiny_model_path, tmp_path, caplog, monkeypatch,
                                                          capsys):
    speech_only = _one_modality_model(tiny_model_path, tmp_path / "speech.tflite", "encode_image")
    scenes_only = _one_modality_model(tiny_model_path, tmp_path / "scenes.tflite", "encode_audio")
    assert EdgeModel.load(speech_only).untrained_encoders == {"encode_image"}
    assert not EdgeModel.load(tiny_model_path).untrained_encoders
    from edgesense.app.cli import main

    assert main(["inspect", str(speech_only)]) == 0
    out = capsys.readouterr().out
    assert "  untrained: encode_image (the recipe had no photos; run leaves its camera closed)" in out
    wav = tone_wav(tmp_path / "a.wav", [("yes", 0.5)], 3.0)
    video = scene_video(tmp_path / "v.avi", [("outdoor", 3.0)])
    config = DeviceConfig.from_dict({"device": {"name": "test"}, "commands": {"threshold": TEST_THRESHOLD}})

    # A speech model given both files reads the audio only: commands, and no scene from an untrained head.
    with caplog.at_level("WARNING", logger="edgesense.loop.pipeline"):
        pipeline = Pipeline.from_config(config, model_path=speech_only, video=video, audio=wav, fast=True,
                                        events=False, options=test_options())
    assert f"{speech_only} was trained without photos: --video {video} is not read" in caplog.text
    with pipeline:
        assert pipeline.video is None
        events = list(pipeline.events())
    assert [e.label for e in events] == ["yes"]

    # A scenes model given both files reads the video only.
    with Pipeline.from_config(config, model_path=scenes_only, video=video, audio=wav, fast=True, events=False,
                              options=test_options()) as pipeline:
        assert pipeline.audio is None
        events = list(pipeline.events())
    assert events and all(isinstance(e, SceneEvent) for e in events)

    # Live: the camera is not opened for a speech model (the config's camera would be).
    opened = []
    monkeypatch.setattr("edgesense.loop.pipeline.CameraSource", lambda *a, **k: opened.append(a))
    monkeypatch.setattr(sd, "query_devices", lambda device=None, kind=None: [])
    with pytest.raises(RuntimeError, match="no audio input device") as info:  # no microphone here: said
        Pipeline.from_config(config, model_path=speech_only, events=False)
    assert not opened and len(info.value.failures) == 1

    with pytest.raises(ValueError, match="trained on one modality only"):  # its only file is the other modality's
        Pipeline.from_config(config, model_path=speech_only, video=video, events=False)


def test_second_opinion_blends_every_hop_as_the_bench_scores_it(model, tmp_path, tiny_heads_path):
    require_speech_embedding()
    from edgesense.bench.streams import stream_posteriors

    wav = tone_wav(tmp_path / "a.wav", [("yes", 1.0), ("no", 3.0)], 5.0)
    options = SecondOpinionOptions(heads_path=str(tiny_heads_path), student_weight=0.4)
    second = SecondOpinion(options, labels=model.command_labels, sample_rate_hz=16000)
    pipeline = Pipeline(model, test_options(), audio=WavReplaySource(wav), second_opinion=second)
    seen: list[tuple[float, np.ndarray]] = []
    process = pipeline._recognizer.process  # observe what the recognizer is given, then let it run

    def recording(probs, t_ms, **kwargs):
        seen.append((t_ms, np.asarray(probs)))
        return process(probs, t_ms, **kwargs)

    pipeline._recognizer.process = recording
    with pipeline:
        list(pipeline.events())
        stats = pipeline.stats
    bench = stream_posteriors(model, read_wav(wav, sample_rate_hz=16000), hop_ms=100.0, progress=False,
                              second_opinion=options)
    # no hop before the heads have their context (3 embeddings: 76 + 16 mel frames + 3, 950 ms)
    assert seen[0][0] - stats.stream_start_ms == pytest.approx(1000.0) == bench.times_ms[0]
    times = np.array([t for t, _ in seen]) - stats.stream_start_ms
    assert len(seen) == bench.times_ms.size and np.allclose(times, bench.times_ms)
    np.testing.assert_allclose(np.stack([p for _, p in seen]), bench.posteriors, atol=1e-4)
    for stage in SECOND_OPINION_STAGES:
        assert stats.stage_ms[stage] and bench.timings_ms[stage].size == bench.times_ms.size
    # the embeddings are timed every chunk (20 ms), the heads every hop (100 ms)
    assert len(stats.stage_ms[SECOND_OPINION_EMBEDDING]) == stats.audio_chunks
    assert len(stats.stage_ms[SECOND_OPINION_HEADS]) == len(seen)


def test_energy_gate_skips_silence_and_rearms_the_recognizer(model, tmp_path):
    words = [("yes", 1.0), ("yes", 4.0)]
    wav = tone_wav(tmp_path / "a.wav", words, 6.5, quiet_between=True)
    gate = EnergyGateOptions(threshold_dbfs=-45.0, hangover_ms=300.0)
    with Pipeline(model, test_options(energy_gate=gate), audio=WavReplaySource(wav)) as pipeline:
        events = list(pipeline.events())
        stats = pipeline.stats
    assert [e.label for e in events] == ["yes", "yes"]
    assert 1600 <= events[0].t_ms <= 1600 + DETECTION_SLACK_MS and 4600 <= events[1].t_ms <= 4600 + DETECTION_SLACK_MS
    hops = int((6500 - 990) // 100) + 1
    assert abs(stats.audio_inferences + stats.audio_gated - hops) <= 1
    assert stats.audio_gated > hops // 3  # most of the quiet time was skipped


def test_duration_stop_and_on_frame_stop(model, tmp_path):
    wav = tone_wav(tmp_path / "a.wav", [], 4.0)
    video = scene_video(tmp_path / "v.avi", [("indoor", 4.0)])
    with Pipeline(model, test_options(), audio=WavReplaySource(wav)) as pipeline:
        pipeline.run(duration_s=1.5)
        assert pipeline.stats.stream_ms == pytest.approx(1500.0)

    # The frames the loop saw: t = 0, 100, ..., 1500 ms (not the one read ahead at 1600 ms, past the stop).
    with Pipeline(model, test_options(), audio=WavReplaySource(wav), video=VideoReplaySource(video)) as pipeline:
        stats = pipeline.run(duration_s=1.5)
    assert stats.video_frames == 16 and stats.frames_dropped == 16 - stats.image_inferences == 16 - 8

    frames = []

    def stop_after_five(frame, state):
        frames.append(frame)
        return len(frames) < 5

    with Pipeline(model, test_options(), audio=WavReplaySource(wav), video=VideoReplaySource(video),
                  on_frame=stop_after_five) as pipeline:
        pipeline.run()
        assert len(frames) == 5 and pipeline.stats.stream_ms < 1000
    with pytest.raises(RuntimeError, match="after close"):
        next(pipeline.events())


def test_audio_shorter_than_the_detectors_window_says_why_no_command_came(model, tmp_path, caplog):
    """A replayed WAV shorter than one window gave no event and no word why (the summary said 0 inferences)."""
    short = tone_wav(tmp_path / "short.wav", [], 0.6)
    with caplog.at_level(logging.WARNING, logger="edgesense.loop.pipeline"):
        with Pipeline(model, test_options(), audio=WavReplaySource(short)) as pipeline:
            pipeline.run()
    said = [r.getMessage() for r in caplog.records if "no command could be recognized" in r.getMessage()]
    assert said == ["audio: it ended after 600 ms, before the command detector had its first 1000 ms window: no "
                    "command could be recognized"]
    caplog.clear()
    whole = tone_wav(tmp_path / "whole.wav", [("yes", 0.5)], 2.5)
    with caplog.at_level(logging.WARNING, logger="edgesense.loop.pipeline"):
        with Pipeline(model, test_options(), audio=WavReplaySource(whole)) as pipeline:
            pipeline.run()
    assert "no command could be recognized" not in caplog.text


def test_failing_sink_and_callback_do_not_stop_the_loop(model, tmp_path, caplog):
    wav = tone_wav(tmp_path / "a.wav", [("yes", 0.5)], 2.5)
    good = []

    def broken(event):
        raise RuntimeError("boom")

    with Pipeline(model, test_options(), audio=WavReplaySource(wav), on_event=[broken, good.append]) as pipeline:
        stats = pipeline.run()
    assert [e.label for e in good] == ["yes"] and stats.command_events == 1
    assert "boom" in caplog.text


def every_tick_a_scene_event() -> PipelineOptions:
    """Scene updates on every command hop, each a scene event (heartbeat): a command event shares its tick."""
    return test_options(scheduler=SchedulerOptions(scene_rate_hz=10.0),
                        smoother=SceneSmootherOptions(window_ms=500.0, min_hold_ms=0.0, heartbeat_ms=100.0))


def test_close_from_a_callback_ends_the_run_after_its_tick_with_every_event_written(model, tmp_path):
    """``pipeline.close()`` in an ``on_event`` callback closed the sinks at once: the tick's next event (the scene
    event beside the command) ended run() with ``ValueError: FanOutSink: emit() on a closed sink``, unwritten."""
    wav = tone_wav(tmp_path / "a.wav", [("yes", 0.5)], 2.5)
    video = scene_video(tmp_path / "v.avi", [("indoor", 2.5)])
    events_file = tmp_path / "e.jsonl"
    sink = JsonLinesSink(events_file)
    got = []

    def close_on_a_command(event):
        got.append(event)
        if event.type == "command":
            pipeline.close()

    pipeline = Pipeline(model, every_tick_a_scene_event(), audio=WavReplaySource(wav),
                        video=VideoReplaySource(video), sinks=[sink], on_event=close_on_a_command)
    stats = pipeline.run()
    command = next(e for e in got if e.type == "command")
    assert got[-1].type == "scene" and got[-1].t_ms == command.t_ms  # the rest of its tick, then the end
    assert [json.loads(line)["t_ms"] for line in events_file.read_text().splitlines()] == [e.t_ms for e in got]
    assert stats.command_events + stats.scene_events == len(got) and stats.stream_ms < 2500
    assert sink.closed and pipeline.stopped  # closed when the run ended
    with pytest.raises(RuntimeError, match="after close"):
        pipeline.run()


def test_close_from_another_thread_mid_tick_ends_the_run_without_a_traceback(model, tmp_path):
    """close() from another thread while run() delivered a tick's first event: the next one went to the closed
    sinks and run() raised ``ValueError: FanOutSink: emit() on a closed sink``."""
    wav = tone_wav(tmp_path / "a.wav", [("yes", 0.5)], 2.5)
    video = scene_video(tmp_path / "v.avi", [("indoor", 2.5)])
    sink = JsonLinesSink(tmp_path / "e.jsonl")
    got = []

    def close_elsewhere_on_a_command(event):
        got.append(event)
        if event.type == "command":
            closer = threading.Thread(target=pipeline.close)
            closer.start()
            closer.join()

    pipeline = Pipeline(model, every_tick_a_scene_event(), audio=WavReplaySource(wav),
                        video=VideoReplaySource(video), sinks=[sink], on_event=close_elsewhere_on_a_command)
    pipeline.run()
    assert got[-1].type == "command" and sink.closed
    assert len((tmp_path / "e.jsonl").read_text().splitlines()) == len(got)


def test_a_frame_hook_that_raises_loses_no_event_of_its_tick(model, tmp_path):
    """An ``on_frame`` hook (a preview window) that raised took the events of its tick with it: counted in the
    stats, never written."""
    wav = tone_wav(tmp_path / "a.wav", [("yes", 0.5)], 2.5)
    video = scene_video(tmp_path / "v.avi", [("indoor", 2.5)])
    events_file = tmp_path / "e.jsonl"

    def display_gone_after_a_command(frame, state):
        if state.last_command is not None:
            raise RuntimeError("display gone")

    with Pipeline(model, every_tick_a_scene_event(), audio=WavReplaySource(wav), video=VideoReplaySource(video),
                  sinks=[JsonLinesSink(events_file)], on_frame=display_gone_after_a_command) as pipeline:
        with pytest.raises(RuntimeError, match="display gone"):
            pipeline.run()
        stats = pipeline.stats
    records = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert [r["label"] for r in records if r["type"] == "command"] == ["yes"]
    assert len(records) == stats.command_events + stats.scene_events


def test_stats_read_while_the_loop_times_a_stage_for_the_first_time(model, tmp_path):
    """``pipeline.stats`` read from another thread while the loop timed a stage for the first time raised
    ``RuntimeError: dictionary changed size during iteration`` (the loop's first second: a monitor polling the
    stats met it in 3 runs of 5 with the sample media). Here the loop's step comes in the middle of the read."""
    wav = tone_wav(tmp_path / "a.wav", [], 1.0)
    with Pipeline(model, test_options(), audio=WavReplaySource(wav)) as pipeline:
        pipeline.run(duration_s=0.5)  # the window is not full yet: only the audio frontend has run
        window = pipeline._stage_ms["audio_frontend"]
        values = window.values

        def values_while_the_loop_runs_the_encoder():
            pipeline._timed("audio_encoder", 1.0)  # what the loop thread does at its first command hop
            return values()

        window.values = values_while_the_loop_runs_the_encoder
        stats = pipeline.stats
        assert stats.stage_count["audio_frontend"] == 25
        del window.values
        assert pipeline.stats.stage_count["audio_encoder"] == 1


def test_two_pipelines_sharing_a_model_in_two_threads_give_the_events_of_one():
    """Two pipelines on one loaded model (one per camera, each on its thread) ran its interpreter at once: their
    inferences interleaved, and each got scores (and events) of the other's inputs (the bundled model on the
    sample media: both runs differed from a run alone, every time)."""
    root = Path(__file__).resolve().parents[3]
    config = load_config(root / "firmware_configs" / "desktop.yaml")
    bundled = EdgeModel.load(config.model_path, options=config.model.interpreter_options())
    options = PipelineOptions.from_config(config)

    def events_of_one_run():
        got = []
        with Pipeline(bundled, options, audio=WavReplaySource(root / "samples" / "speech_commands.wav"),
                      video=VideoReplaySource(root / "samples" / "scene.mp4"), on_event=got.append) as pipeline:
            pipeline.run()
        return [(e.type, e.label, e.t_ms, round(e.score, 4)) for e in got]

    alone = events_of_one_run()
    runs: list[list] = []
    threads = [threading.Thread(target=lambda: runs.append(events_of_one_run())) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(alone) >= 8 and runs == [alone, alone]


# --------------------------------------------------------------------------- live microphone (PortAudio faked)


class FakeStream:
    """sounddevice.InputStream with the real signature; start() plays a WAV's samples into the
    callback from a thread, in 10 ms blocks at real time (like PortAudio's thread)."""

    samples: np.ndarray = np.zeros(0, np.float32)
    overflow_at_block = 3
    stall_at_block = -1  # the block before which the driver stalls for stall_s (no callbacks; that audio is lost)
    stall_s = 0.0
    instances: list["FakeStream"] = []

    def __init__(self, *, device, samplerate, channels, dtype, callback):
        assert channels == 1 and dtype == "float32"
        self.samplerate, self.callback = samplerate, callback
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, daemon=True)
        self.blocks = 0
        FakeStream.instances.append(self)

    def _play(self):
        block = self.samplerate // 100
        next_at = time.monotonic()
        for i, start in enumerate(range(0, self.samples.size, block)):
            if self._stop.is_set():
                return
            if i == self.stall_at_block:
                time.sleep(self.stall_s)
                next_at += self.stall_s
            status = sd.CallbackFlags()
            status.input_overflow = i == self.overflow_at_block
            data = self.samples[start:start + block].reshape(-1, 1)
            self.callback(data, data.shape[0], None, status)
            self.blocks += 1
            next_at += block / self.samplerate
            time.sleep(max(0.0, next_at - time.monotonic()))

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(2)

    def close(self):
        pass


@pytest.fixture
def fake_portaudio(monkeypatch):
    devices = [{"index": 0, "name": "USB PnP Sound Device", "max_input_channels": 1, "default_samplerate": 16000.0}]

    def query_devices(device=None, kind=None):
        return list(devices) if device is None and kind is None else devices[0]

    monkeypatch.setattr(sd, "query_devices", query_devices)
    monkeypatch.setattr(sd, "check_input_settings", lambda **kwargs: None)
    FakeStream.instances = []
    monkeypatch.setattr(sd, "InputStream", FakeStream)
    return FakeStream


def test_live_microphone_through_its_callback(fake_portaudio, tiny_model_path):
    samples = tone_samples([("yes", 0.5)], 2.8).astype(np.float32)
    fake_portaudio.samples = samples
    config = DeviceConfig.from_dict({"device": {"name": "test"}, "camera": {"enabled": False},
                                     "commands": {"threshold": TEST_THRESHOLD}})
    pipeline = Pipeline.from_config(config, model_path=tiny_model_path, events=False,
                                    options=test_options())
    watchdog = threading.Timer(30.0, pipeline.stop)
    watchdog.start()
    try:
        with pipeline:
            assert isinstance(pipeline.audio, microphone_mod.MicrophoneSource) and pipeline.video is None
            events = list(pipeline.events(duration_s=2.7))
            stats = pipeline.stats
    finally:
        watchdog.cancel()
    assert fake_portaudio.instances and fake_portaudio.instances[0].blocks >= 270
    assert [e.label for e in events] == ["yes"]
    assert stats.audio_chunks == 135  # 2.7 s in 20 ms chunks
    assert stats.audio_overflows == 1 and stats.audio_dropped_samples == 0 and stats.audio_clock_resyncs == 0
    assert stats.audio_clipped_samples == 0  # a tone at a good level: nothing at full scale
    # Live times are on the microphone's monotonic clock: the word ended 1.1 s after its first sample.
    assert stats.stream_start_ms > 0
    assert 1100 - TONE_S * 500 <= events[0].t_ms - stats.stream_start_ms <= 1100 + DETECTION_SLACK_MS
    assert 0 <= events[0].latency_ms[AUDIO_END_TO_EVENT] < 500


def test_a_live_microphone_that_clips_is_counted_in_the_stats(fake_portaudio, tiny_model_path):
    """The samples a microphone delivered at full scale (its converter clipped a loud word) reach ``--stats``."""
    clipped = np.clip(tone_samples([("yes", 0.5)], 2.8) * 20.0, -1.0, 1.0).astype(np.float32)
    fake_portaudio.samples = clipped
    config = DeviceConfig.from_dict({"device": {"name": "test"}, "camera": {"enabled": False}})
    pipeline = Pipeline.from_config(config, model_path=tiny_model_path, events=False, options=test_options())
    watchdog = threading.Timer(30.0, pipeline.stop)
    watchdog.start()
    try:
        with pipeline:
            list(pipeline.events(duration_s=2.7))
            stats = pipeline.stats
    finally:
        watchdog.cancel()
    at_full_scale = int(np.count_nonzero(np.abs(clipped[:int(2.7 * 16000)]) >= 32767 / 32768))
    assert 0 < stats.audio_clipped_samples <= at_full_scale
    assert stats.to_dict()["audio_clipped_samples"] == stats.audio_clipped_samples


def _hops_with_a_full_window(seconds: float, hop_ms: float = 100.0) -> int:
    """Command hops in ``seconds`` of contiguous audio once the 1-s window (49 frames of 10 ms over 25 ms) is
    full: the first at the hop after 990 ms."""
    first_ms, audio_ms = 990.0, seconds * 1000
    return 0 if audio_ms < first_ms else int((audio_ms - math.ceil(first_ms / hop_ms) * hop_ms) // hop_ms) + 1


def test_live_microphone_after_a_driver_stall_stays_on_the_monotonic_clock(fake_portaudio, tiny_model_path,
                                                                          monkeypatch):
    """The driver delivers no audio for 0.6 s before the word: the loop counts the stall, and the word's event
    is stamped and timed on the monotonic clock (its audio-end-to-event latency is not the stall's length)."""
    stall_s = 0.6
    monkeypatch.setattr(fake_portaudio, "stall_at_block", 40)  # 0.4 s into the stream, before the word
    monkeypatch.setattr(fake_portaudio, "stall_s", stall_s)
    fake_portaudio.samples = tone_samples([("yes", 0.5)], 2.8).astype(np.float32)
    config = DeviceConfig.from_dict({"device": {"name": "test"}, "camera": {"enabled": False},
                                     "commands": {"threshold": TEST_THRESHOLD}})
    pipeline = Pipeline.from_config(config, model_path=tiny_model_path, events=False, options=test_options())
    watchdog = threading.Timer(30.0, pipeline.stop)
    watchdog.start()
    try:
        with pipeline:
            events = list(pipeline.events(duration_s=2.7))
            stats = pipeline.stats
    finally:
        watchdog.cancel()
    assert [e.label for e in events] == ["yes"]
    assert stats.audio_clock_resyncs == 1
    # the features started afresh after the gap: no window spliced audio from both sides of it (training never
    # saw one), so the first hop after it waits for a full second of the audio that follows
    assert stats.audio_gaps == 1
    # (the 0.4 s before it never fill one; spliced with what follows, they did: 4 hops more)
    assert abs(stats.audio_inferences - _hops_with_a_full_window(2.7 - 0.4 - stall_s)) <= 1
    assert 1100 + stall_s * 1000 - TONE_S * 500 <= events[0].t_ms - stats.stream_start_ms
    assert 0 <= events[0].latency_ms[AUDIO_END_TO_EVENT] < 500


def test_a_run_of_some_seconds_ends_while_the_microphone_stalls(fake_portaudio, tiny_model_path, monkeypatch):
    """``duration_s`` on a live microphone is its clock's time: a run of 1 s whose microphone stalls after 0.2 s
    for 4 s ends after about 1 s (it waited for the audio to come back, 4.2 s)."""
    monkeypatch.setattr(fake_portaudio, "stall_at_block", 20)
    monkeypatch.setattr(fake_portaudio, "stall_s", 4.0)
    fake_portaudio.samples = tone_samples([], 6.0).astype(np.float32)
    config = DeviceConfig.from_dict({"device": {"name": "test"}, "camera": {"enabled": False},
                                     "audio": {"read_timeout_ms": 200}})
    pipeline = Pipeline.from_config(config, model_path=tiny_model_path, events=False, options=test_options())
    watchdog = threading.Timer(10.0, pipeline.stop)
    watchdog.start()
    try:
        with pipeline:
            start = time.monotonic()
            list(pipeline.events(duration_s=1.0))
            took_s = time.monotonic() - start
            stats = pipeline.stats
    finally:
        watchdog.cancel()
    assert stats.audio_read_failures >= 1
    assert took_s < 3.0, f"a 1-s run took {took_s:.1f} s: it waited for the stalled microphone"


def test_no_microphone_is_a_clear_error_at_start(monkeypatch, tiny_model_path):
    monkeypatch.setattr(sd, "query_devices", lambda device=None, kind=None: [])
    config = DeviceConfig.from_dict({"device": {"name": "test"}, "camera": {"enabled": False}})
    with pytest.raises(RuntimeError, match="no audio input device"):
        Pipeline.from_config(config, model_path=tiny_model_path, events=False)


# --------------------------------------------------------------------------- live camera (the capture device faked)


class FakeCamera(GrabsByReading):
    """cv2.VideoCapture for a device index: frames at ``fps`` (read() blocks like a webcam);
    while ``broken`` is set, opening fails and reads return (False, None)."""

    broken = threading.Event()
    fps = 20.0
    opened = 0

    def __init__(self, source, *args):
        self._open = not self.broken.is_set()
        self._rng = np.random.default_rng(FakeCamera.opened)
        FakeCamera.opened += 1

    def isOpened(self):
        return self._open

    def set(self, prop, value):
        return True

    def get(self, prop):
        return {cv2.CAP_PROP_FRAME_WIDTH: 160, cv2.CAP_PROP_FRAME_HEIGHT: 120, cv2.CAP_PROP_FPS: self.fps}.get(prop, 0)

    def read(self):
        time.sleep(1 / self.fps)
        if self.broken.is_set() or not self._open:
            return False, None
        return True, scene_image("vehicle", self._rng)

    def release(self):
        self._open = False


def test_camera_failure_keeps_audio_running_and_scenes_resume(model, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(cv2, "VideoCapture", FakeCamera)
    FakeCamera.broken.clear()
    outage_s = (1.2, 2.8)
    wav = tone_wav(tmp_path / "a.wav", [("yes", 1.5)], 4.2)
    camera = CameraSource(CameraOptions(source=0, reopen_after_failures=2,
                                        backoff=BackoffOptions(initial_ms=50.0, max_ms=200.0)))
    options = test_options(smoother=SceneSmootherOptions(window_ms=300.0, min_hold_ms=0.0, heartbeat_ms=200.0))
    pipeline = Pipeline(model, options, audio=WavReplaySource(wav, WavReplayOptions(realtime=True)), video=camera)
    timers = [threading.Timer(outage_s[0], FakeCamera.broken.set),
              threading.Timer(outage_s[1], FakeCamera.broken.clear)]
    events = []
    with caplog.at_level("WARNING"), pipeline:
        for timer in timers:
            timer.start()
        for event in pipeline.events():
            events.append(event)
        stats = pipeline.stats
    for timer in timers:
        timer.cancel()
    FakeCamera.broken.clear()

    scenes = [e.t_ms for e in events if isinstance(e, SceneEvent)]
    commands = [e for e in events if isinstance(e, CommandEvent)]
    margin_ms = 250  # timers vs the replay's pacing
    assert any(t < outage_s[0] * 1000 for t in scenes)
    assert not [t for t in scenes if outage_s[0] * 1000 + margin_ms < t < outage_s[1] * 1000]
    assert any(t > outage_s[1] * 1000 + margin_ms for t in scenes)  # resumed after the reopen
    assert [c.label for c in commands] == ["yes"]  # the word inside the outage still fired
    assert outage_s[0] * 1000 < commands[0].t_ms < outage_s[1] * 1000
    assert commands[0].latency_ms["image_encoder"] == 0.0  # fused without the (stale) image
    assert stats.camera_read_failures >= 2 and stats.camera_reopens >= 1 and stats.camera_outages == 1
    assert stats.audio_chunks == 210
    outage_logs = [r for r in caplog.records if "scene events paused" in r.getMessage()]
    assert len(outage_logs) == 1  # logged once, not per failed read
    assert any("recovered" in r.getMessage() for r in caplog.records)


def test_a_run_of_some_seconds_ends_while_the_only_camera_gives_no_frame(model, monkeypatch, caplog):
    """A camera-only device whose camera opens but delivers nothing: ``events(duration_s=1)`` ends after about a
    second of its clock (it waited for frames for ever: ``edgesense run --duration-s 10`` never returned), and
    the outage's line does not say the loop goes on with audio it does not have."""
    monkeypatch.setattr(cv2, "VideoCapture", FakeCamera)
    FakeCamera.broken.clear()
    camera = CameraSource(CameraOptions(source=0, backoff=BackoffOptions(initial_ms=50.0, max_ms=200.0)))
    FakeCamera.broken.set()  # opened, then no frame
    pipeline = Pipeline(model, test_options(), video=camera)
    watchdog = threading.Timer(8.0, pipeline.stop)
    watchdog.start()
    try:
        with caplog.at_level("WARNING"), pipeline:
            start = time.monotonic()
            events = list(pipeline.events(duration_s=1.0))
            took_s = time.monotonic() - start
            stats = pipeline.stats
    finally:
        watchdog.cancel()
        FakeCamera.broken.clear()
    assert events == [] and stats.video_frames == 0 and stats.camera_read_failures >= 1
    assert took_s < 4.0, f"a 1-s run took {took_s:.1f} s: it waited for the camera's frames"
    outage = [r.getMessage() for r in caplog.records if "scene events paused" in r.getMessage()]
    assert len(outage) == 1 and "audio" not in outage[0].split(";")[-1]


def test_a_stalled_microphone_does_not_pause_the_live_camera(fake_portaudio, model, monkeypatch, caplog):
    """The microphone's driver stalls for 2.5 s beside a live camera: scene events go on through the stall (the
    loop waited on the microphone, and the camera's frames waited with it: no scene event for the whole stall),
    the outage is said once, and the audio is read again when it comes back."""
    stall_at_s, stall_s, run_s = 0.5, 2.5, 4.0
    monkeypatch.setattr(fake_portaudio, "stall_at_block", int(stall_at_s * 100))  # blocks of 10 ms
    monkeypatch.setattr(fake_portaudio, "stall_s", stall_s)
    fake_portaudio.samples = tone_samples([], run_s + 1.0).astype(np.float32)
    monkeypatch.setattr(cv2, "VideoCapture", FakeCamera)
    FakeCamera.broken.clear()
    options = test_options(smoother=SceneSmootherOptions(window_ms=300.0, min_hold_ms=0.0, heartbeat_ms=200.0))
    microphone = microphone_mod.MicrophoneSource(microphone_mod.MicrophoneOptions(read_timeout_ms=500.0))
    pipeline = Pipeline(model, options, audio=microphone, video=CameraSource(CameraOptions(source=0)))
    watchdog = threading.Timer(20.0, pipeline.stop)
    watchdog.start()
    try:
        with caplog.at_level("WARNING"), pipeline:
            events = list(pipeline.events(duration_s=run_s))
            stats = pipeline.stats
    finally:
        watchdog.cancel()
    scenes_s = [(e.t_ms - stats.stream_start_ms) / 1000 for e in events if isinstance(e, SceneEvent)]
    # from the read that timed out (0.5 s into the stall) to its end, less the timers' slack
    during = [t for t in scenes_s if stall_at_s + 0.5 + 0.3 < t < stall_at_s + stall_s - 0.2]
    assert len(during) >= 3, f"scene events at {scenes_s} s: none while the microphone was out"
    outage = [r.getMessage() for r in caplog.records if "no audio for" in r.getMessage()]
    assert len(outage) == 1 and outage[0].endswith("retrying, scene events go on")
    assert stats.audio_read_failures >= 2 and stats.audio_clock_resyncs == 1 and stats.audio_stalls == 1
    assert stats.audio_chunks >= (run_s - stall_s) * 50 - 5  # the audio before and after it, in 20 ms chunks


def test_a_deaf_microphone_beside_a_live_camera_ends_the_run_after_its_events_are_written(fake_portaudio, model,
                                                                                         tmp_path, monkeypatch,
                                                                                         caplog):
    """The microphone's callbacks stop for good while PortAudio keeps its stream active (a wedged driver): the loop
    said so once and retried for ever, the device deaf until someone restarted it. Now, once no audio has come for
    audio.stall_timeout_ms, the run ends with one line naming the microphone and how long it has been silent
    (a RuntimeError, as for a stream PortAudio stopped), after the events so far are written."""
    deaf_at_s, stall_timeout_ms = 2.5, 1000.0
    fake_portaudio.samples = tone_samples([("yes", 0.5)], deaf_at_s).astype(np.float32)  # then no callback at all
    monkeypatch.setattr(cv2, "VideoCapture", FakeCamera)
    FakeCamera.broken.clear()
    events_file = tmp_path / "events.jsonl"
    options = test_options(smoother=SceneSmootherOptions(window_ms=300.0, min_hold_ms=0.0, heartbeat_ms=200.0))
    microphone = microphone_mod.MicrophoneSource(microphone_mod.MicrophoneOptions(
        read_timeout_ms=300.0, stall_timeout_ms=stall_timeout_ms))
    delivered = []
    pipeline = Pipeline(model, options, audio=microphone, video=CameraSource(CameraOptions(source=0)),
                        sinks=[JsonLinesSink(str(events_file))], on_event=delivered.append)
    stopper = threading.Timer(20.0, pipeline.stop)  # the old code: a run that never ends
    stopper.start()
    started = time.monotonic()
    try:
        with caplog.at_level("WARNING"), pipeline, pytest.raises(microphone_mod.MicrophoneStallError) as info:
            pipeline.run()
        took_s = time.monotonic() - started
        stats = pipeline.stats
    finally:
        stopper.cancel()
    message = str(info.value)
    assert isinstance(info.value, RuntimeError) and "\n" not in message
    assert message.startswith("microphone 'USB PnP Sound Device': no audio for ")
    assert "(audio.stall_timeout_ms: 1000)" in message and "service manager to restart it" in message
    silent_s = float(message.split("no audio for ")[1].split(" s")[0])
    assert stall_timeout_ms / 1000 <= silent_s < stall_timeout_ms / 1000 + 1.0
    assert took_s < deaf_at_s + stall_timeout_ms / 1000 + 3.0, took_s
    outage = [r.getMessage() for r in caplog.records if "no audio for" in r.getMessage()]
    assert len(outage) == 1 and "the run ends if none has come for 1 s (audio.stall_timeout_ms)" in outage[0]
    assert stats.audio_stalls == 1
    assert [e.label for e in delivered if isinstance(e, CommandEvent)] == ["yes"]
    assert any(isinstance(e, SceneEvent) for e in delivered)
    written = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert [e["type"] for e in written] == [e.type for e in delivered]
    assert [e["t_ms"] for e in written] == pytest.approx([e.t_ms for e in delivered], abs=0.1)  # written rounded


# --------------------------------------------------------------------------- scheduler pieces and options


def test_periodic_schedule_fires_on_a_grid_without_bursts():
    s = PeriodicSchedule(100.0)
    fired = [t for t in range(0, 1000, 20) if s.due(float(t))]
    assert fired == [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]
    assert s.due(1530.0) and not s.due(1590.0) and s.due(1600.0)  # a stall skips cells, no catch-up burst
    with pytest.raises(ValueError, match="period_ms"):
        PeriodicSchedule(0)
    hop, scene = PeriodicSchedule(100.0), PeriodicSchedule(200.0)
    origin = 123456.789  # a live clock: anchored grids coincide despite float rounding
    hop.anchor(origin)
    scene.anchor(origin)
    ticks = [origin + k * 20.0 for k in range(50, 61)]  # 1000 .. 1200 ms
    both = [t for t in ticks if hop.due(t) & scene.due(t)]
    assert len(both) == 2 and hop.next_ms == pytest.approx(origin + 1300.0)


def test_an_inexact_period_stays_on_its_grid_for_hours():
    # 3 scene frames a second on 100-ms command hops: the scene falls due on hops 0, 4 and 7 of every
    # second. Adding 1000/3 ms tick after tick drifted off that grid after 2.9 hours of stream.
    scene, hops_per_s = PeriodicSchedule(1000.0 / 3.0), 10
    scene.anchor(0.0)
    hours = 4
    fired = [k for k in range(hours * 3600 * hops_per_s) if scene.due(k * 100.0)]
    assert len(fired) == hours * 3600 * 3
    assert {k % hops_per_s for k in fired} == {0, 4, 7}


def test_feature_window_keeps_the_newest_frames_in_order():
    w = FeatureWindow(4, 2)
    rows = np.arange(20, dtype=np.float32).reshape(10, 2)
    w.push(rows[:3])
    assert not w.full
    for i in range(3, 10):
        w.push(rows[i:i + 1])
        assert np.array_equal(w.view(), rows[i - 3:i + 1])
    w.push(rows)  # more than the window at once
    assert np.array_equal(w.view(), rows[-4:])
    with pytest.raises(ValueError, match="rows"):
        w.push(np.zeros((1, 3)))


def test_replay_aligner_hands_out_the_newest_frame_not_after_t(make_video, level_frames):
    video = make_video("levels.avi", level_frames(10), fps=10.0)
    aligner = ReplayVideoAligner(VideoReplaySource(video, VideoReplayOptions()))
    assert aligner.frame_at(0.0).t_ms == 0.0
    assert aligner.frame_at(50.0) is None  # frame 1 is at 100 ms
    frame = aligner.frame_at(350.0)
    assert frame.t_ms == 300.0 and aligner.dropped == 2  # frames 1 and 2 were stale
    assert abs(int(np.median(frame.image)) - 60) <= 8
    assert aligner.frame_at(10_000.0).t_ms == 900.0 and aligner.exhausted


@pytest.mark.parametrize("kwargs, field", [
    ({"scheduler": {}}, "scheduler"),
    ({"recognizer": {}}, "recognizer"),
    ({"energy_gate": 3}, "energy_gate"),
    ({"stats_window": 0}, "stats_window"),
])
def test_pipeline_options_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}: expected"):
        PipelineOptions(**kwargs)


@pytest.mark.parametrize("kwargs, field", [
    ({"command_hop_ms": 0}, "command_hop_ms"),
    ({"scene_rate_hz": -1}, "scene_rate_hz"),
    ({"embedding_max_age_ms": float("nan")}, "embedding_max_age_ms"),
])
def test_scheduler_options_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}: expected"):
        SchedulerOptions(**kwargs)


def test_options_from_config_and_embedding_age():
    config = DeviceConfig.from_dict({"device": {"name": "x"}, "scheduler": {"command_hop_ms": 50, "scene_rate_hz": 2},
                                     "commands": {"threshold": 0.6}, "vad": {"enabled": True}})
    options = PipelineOptions.from_config(config)
    assert options.scheduler.command_hop_ms == 50 and options.scheduler.scene_period_ms == 500
    assert options.recognizer.threshold == 0.6 and options.energy_gate == config.vad
    assert options.scheduler.max_embedding_age_ms == 1000  # two scene periods
    assert SchedulerOptions(embedding_max_age_ms=250).max_embedding_age_ms == 250
    assert PipelineOptions.from_config(DeviceConfig.from_dict({"device": {"name": "x"}})).energy_gate is None


def test_pipeline_needs_a_source_and_matching_sample_rate(model, tmp_path):
    with pytest.raises(ValueError, match="at least one source"):
        Pipeline(model)
    wav = write_wav(tmp_path / "a.wav", tone_samples([], 1.0))
    source = WavReplaySource(wav, WavReplayOptions(sample_rate_hz=8000))
    with Pipeline(model, audio=source) as pipeline, pytest.raises(ValueError, match="16000 Hz"):
        list(pipeline.events())


def test_arguments_of_the_wrong_kind_are_one_line_naming_the_parameter(model, tmp_path):
    """A model path, a WAV path, a callback name, a non-callable hook: each was taken and failed later (an
    AttributeError, a TypeError on the first frame, or a callback per letter of 'print' that never ran)."""
    wav = write_wav(tmp_path / "a.wav", tone_samples([], 1.0))
    cases = [(dict(model=str(wav)), "model"), (dict(model=None), "model"), (dict(audio=str(wav)), "audio"),
             (dict(video=tmp_path / "v.mp4"), "video"), (dict(on_event="print"), "on_event"),
             (dict(on_event=[print, 5]), "on_event"), (dict(on_frame=5), "on_frame")]
    for overrides, name in cases:
        with WavReplaySource(wav) as source:
            arguments = {"model": model, "audio": source, **overrides}
            with pytest.raises(ValueError, match=f"^{name}: expected "):
                Pipeline(arguments.pop("model"), **arguments)
    config = DeviceConfig.from_dict({"device": {"name": "test"}})
    for flag, value in (("fast", "no"), ("events", True), ("mqtt", True)):
        with pytest.raises(ValueError, match=f"^{flag}: expected "):
            Pipeline.from_config(config, audio=wav, **{flag: value})
    calls = []
    with Pipeline(model, test_options(), audio=WavReplaySource(wav), on_event=(calls.append, calls.append)) as ok:
        ok.run()  # a tuple of callbacks, as before


def test_stats_percentiles_and_summary_without_data():
    stats = PipelineStats()
    assert math.isnan(stats.real_time_factor) and math.isnan(stats.percentile("fusion", 50))
    assert "0 command" in stats.summary()
    assert "RTF n/a, load n/a" in stats.summary() and "nan" not in stats.summary()  # no media to divide by
    assert json.dumps({k: v for k, v in stats.to_dict().items() if isinstance(v, (int, dict))})


class CountingCamera(CountingWebcam):
    LABEL = "vehicle"
    calls: dict[str, int] = {}


@pytest.mark.parametrize("with_audio", [True, False], ids=["beside-audio", "camera-only"])
def test_a_live_camera_decodes_only_the_frames_the_scene_updates_take(model, tmp_path, monkeypatch, with_audio):
    """A 30 fps webcam and 5 scene updates a second: the reader decoded all 30 frames a second (a JPEG each, from
    a USB camera) and the loop encoded 5. Now every frame is grabbed (the driver's queue holds none stale) and
    one is decoded per scene update; the scene events, and the frames the stats count, are as before."""
    monkeypatch.setattr(cv2, "VideoCapture", CountingCamera)
    CountingCamera.calls = {}
    run_s = 2.0
    options = test_options(scheduler=SchedulerOptions(scene_rate_hz=5.0))
    audio = WavReplaySource(tone_wav(tmp_path / "a.wav", [], run_s), WavReplayOptions(realtime=True))
    with Pipeline(model, options, audio=audio if with_audio else None,
                  video=CameraSource(CameraOptions(source=0, fps=CountingCamera.FPS))) as pipeline:
        events = list(pipeline.events(duration_s=run_s))
        stats = pipeline.stats
    calls = CountingCamera.calls
    decodes = calls.get("retrieve", 0)  # read() decodes through retrieve() too
    updates = stats.image_inferences
    assert updates >= 5 and any(isinstance(e, SceneEvent) for e in events)
    assert decodes <= updates + 2, f"{decodes} frames decoded for {updates} scene updates: {calls}"
    assert calls.get("grab", 0) >= 3 * decodes  # the frames between updates were taken off the device all the same
    assert stats.video_frames >= calls["grab"] - 2 and stats.frames_dropped == stats.video_frames - updates


def test_a_live_camera_pipeline_runs_again_after_a_run_ends(model, tmp_path, monkeypatch):
    monkeypatch.setattr(cv2, "VideoCapture", FakeCamera)
    FakeCamera.broken.clear()
    wav = tone_wav(tmp_path / "a.wav", [("yes", 0.5)], 2.0)
    camera = CameraSource(CameraOptions(source=0))
    with Pipeline(model, test_options(), audio=WavReplaySource(wav, WavReplayOptions(realtime=True)),
                  video=camera) as pipeline:
        list(pipeline.events(duration_s=0.4))
        first = pipeline.stats.audio_chunks
        list(pipeline.events(duration_s=0.8))  # the camera's reader goes on; it is not started twice
        assert pipeline.stats.audio_chunks > first


def test_latency_window_keeps_the_newest_values_in_fixed_memory():
    window = LatencyWindow(100)
    nbytes = window.nbytes
    for i in range(40):
        window.append(float(i))
    assert len(window) == 40 and window.values() == tuple(float(i) for i in range(40))
    for i in range(40, 100_000):  # a month of a stage, in miniature
        window.append(float(i))
    assert len(window) == 100 and window.total == 100_000 and window.nbytes == nbytes
    assert window.sum_ms == sum(range(100_000))  # every value, not only the window's: shares and rates
    assert window.values() == tuple(float(i) for i in range(100_000 - 100, 100_000))  # oldest first, as before
    with pytest.raises(ValueError, match="capacity"):
        LatencyWindow(0)


def test_the_latency_statistics_do_not_grow_while_they_fill(model, tmp_path):
    """Memory held by the loop's own code (edgesense/loop) after 10 s of stream and after 60 s is the same,
    although the per-stage windows (1500 values) went on filling in between: 500 -> 1500 audio chunks,
    100 -> 500 command hops. (Before, a deque of Python floats grew ~32 bytes a value until full: on a device
    whose energy gate stays closed most of the day, for days.)"""
    wav = write_wav(tmp_path / "a.wav", tone_samples([], 60.0))
    loop_dir = str(Path(edgesense.loop.__file__).parent)

    def held_by_the_loop() -> int:
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, loop_dir + "/*")])
        return sum(stat.size for stat in snapshot.statistics("filename"))

    with Pipeline(model, test_options(stats_window=1500), audio=WavReplaySource(wav)) as pipeline:
        tracemalloc.start()
        try:
            list(pipeline.events(duration_s=10.0))
            before = held_by_the_loop()
            list(pipeline.events(duration_s=59.0))
            after = held_by_the_loop()
        finally:
            tracemalloc.stop()
        stats = pipeline.stats
    assert len(stats.stage_ms["audio_frontend"]) == 1500 and 500 <= len(stats.stage_ms["audio_encoder"]) < 1500
    # The run's totals count what the window let go: a stage's share of the compute time is not of its window.
    assert stats.stage_count["audio_frontend"] > 1500 == len(stats.stage_ms["audio_frontend"])
    assert stats.stage_total_ms["audio_frontend"] > sum(stats.stage_ms["audio_frontend"])
    assert stats.stage_count["audio_encoder"] == len(stats.stage_ms["audio_encoder"])
    assert stats.stage_total_ms["audio_encoder"] == pytest.approx(sum(stats.stage_ms["audio_encoder"]))
    assert after - before < 4096, f"the loop held {after - before} more bytes after 49 s more of stream"


def test_a_live_microphone_at_another_rate_than_the_models_names_the_config_file(tmp_path: Path) -> None:
    """Like every other config error, the one line names the file (it named the field alone)."""
    from edgesense.loop.pipeline import open_sources

    path = tmp_path / "device.yaml"
    path.write_text("device: {name: t}\ncamera: {enabled: false}\naudio: {sample_rate_hz: 48000}\n")
    with pytest.raises(ValueError, match=rf"^{path}: audio\.sample_rate_hz: expected 16000 \(the model's audio "
                       r"frontend\), got 48000$"):
        open_sources(load_config(path), sample_rate_hz=16000)


# ------------------------------------------------------------------- the figures of a run, read during and after it


def test_stats_read_during_a_run_count_its_wall_time_so_far(model, tmp_path):
    """``pipeline.stats`` read from another thread while a real-time replay runs: the wall time is the run's so
    far, so the real-time factor is about 1 (it was 0 s of wall time, RTF 0.000, until the run ended)."""
    wav = tone_wav(tmp_path / "a.wav", [], 1.2)
    seen = []
    with Pipeline(model, test_options(), audio=WavReplaySource(wav, WavReplayOptions(realtime=True))) as pipeline:
        reader = threading.Timer(0.6, lambda: seen.append(pipeline.stats))
        reader.start()
        pipeline.run()
        reader.join()
        after = pipeline.stats
    during = seen[0]
    assert 300 < during.stream_ms < after.stream_ms == pytest.approx(1200.0)
    assert 0.7 < during.real_time_factor < 1.5 and during.wall_ms < after.wall_ms
    assert 0.7 < after.real_time_factor < 1.5


def test_a_live_microphones_counters_stop_with_the_run(fake_portaudio, tiny_model_path):
    """The microphone's callback goes on after a run ends until the pipeline is closed (after the sinks' flush: up
    to 5 s for an MQTT broker that is away): its full ring buffer drops audio then, which no run reads. The run's
    figures are those of its end (they counted 9,600 samples dropped 0.8 s after it); a next run, which starts with
    the audio after that drop, counts it."""
    fake_portaudio.samples = tone_samples([], 3.0).astype(np.float32)
    config = DeviceConfig.from_dict({"device": {"name": "test"}, "camera": {"enabled": False},
                                     "audio": {"buffer_ms": 200}})
    pipeline = Pipeline.from_config(config, model_path=tiny_model_path, events=False, options=test_options())
    watchdog = threading.Timer(30.0, pipeline.stop)
    watchdog.start()
    try:
        with pipeline:
            list(pipeline.events(duration_s=0.5))
            at_end = pipeline.stats
            time.sleep(0.8)  # the sinks' flush, say
            later = pipeline.stats
            list(pipeline.events(duration_s=1.6))
            again = pipeline.stats
    finally:
        watchdog.cancel()
    assert at_end.audio_chunks == 25 and at_end.audio_overflows == 1 and at_end.audio_dropped_samples == 0
    assert later == at_end
    assert again.audio_dropped_samples > 0 and again.audio_gaps == 1 and again.audio_overflows == 1


def test_a_live_cameras_frames_stop_with_the_run(model, tmp_path, monkeypatch):
    """The camera's reader thread goes on after a run ends until the pipeline is closed: the frames it reads then
    never reach the loop, and are not counted as delivered and dropped (10 more of each 0.5 s after the run)."""
    monkeypatch.setattr(cv2, "VideoCapture", FakeCamera)
    FakeCamera.broken.clear()
    wav = tone_wav(tmp_path / "a.wav", [], 2.0)
    frames = []
    with Pipeline(model, test_options(), audio=WavReplaySource(wav, WavReplayOptions(realtime=True)),
                  video=CameraSource(CameraOptions(source=0)), on_frame=lambda frame, state: frames.append(frame)
                  ) as pipeline:
        list(pipeline.events(duration_s=0.6))
        at_end = pipeline.stats
        time.sleep(0.5)
        later = pipeline.stats
    assert at_end.video_frames >= len(frames) >= 5 and at_end.image_inferences >= 1
    assert (later.video_frames, later.frames_dropped, later.camera_read_failures) == \
        (at_end.video_frames, at_end.frames_dropped, at_end.camera_read_failures)
