"""Sources against real media: WAVs and videos written in tmp_path and decoded by OpenCV.

The machine has no microphone or camera, so only those edges are replaced: the
microphone's PortAudio stream is a stand-in whose callback the test calls, and the
camera is a real ``cv2.VideoCapture`` opened on a video file as the device path.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import threading
import time
import tracemalloc

import cv2
import numpy as np
import pytest
import sounddevice as sd
from media import SmallCameraCapture

import edgesense.pacing as pacing
import edgesense.sources.base as base_mod
import edgesense.sources.camera as camera_mod
import edgesense.sources.microphone as microphone_mod
from edgesense.frontend.resample import resample
from edgesense.sources.base import AudioChunk, BackoffOptions, ExponentialBackoff, Source, SourceReadError, VideoFrame
from edgesense.sources.camera import CameraOptions, CameraSource
from edgesense.sources.microphone import MicrophoneOptions, MicrophoneSource, MicrophoneStallError
from edgesense.sources.replay import VideoReplayOptions, VideoReplaySource, WavReplayOptions, WavReplaySource

RATE = 16000


def frame_level(frame: VideoFrame) -> float:
    return float(frame.image.mean())


# --------------------------------------------------------------------------- items


def test_items_validate_and_are_read_only():
    chunk = AudioChunk(samples=np.zeros(320, dtype=np.float32), t_ms=40.0, sample_rate_hz=RATE)
    assert chunk.duration_ms == 20.0 and chunk.end_t_ms == 60.0
    with pytest.raises(ValueError):
        chunk.samples[0] = 1.0
    with pytest.raises(ValueError, match="samples"):
        AudioChunk(samples=np.zeros(4, dtype=np.float64), t_ms=0.0, sample_rate_hz=RATE)
    with pytest.raises(ValueError, match="image"):
        VideoFrame(image=np.zeros((4, 4), dtype=np.uint8), t_ms=0.0)


@pytest.mark.parametrize("t_ms", [None, "0", math.nan, math.inf, True, pytest.param(10**400, id="huge-int")])
def test_an_items_time_that_is_no_finite_number_is_a_value_error_naming_it(t_ms):
    """None or a string was math.isfinite's TypeError, not the ValueError of bad input naming t_ms."""
    with pytest.raises(ValueError, match="t_ms"):
        AudioChunk(samples=np.zeros(4, dtype=np.float32), t_ms=t_ms, sample_rate_hz=RATE)
    with pytest.raises(ValueError, match="t_ms"):
        VideoFrame(image=np.zeros((4, 4, 3), dtype=np.uint8), t_ms=t_ms)


def test_a_chunks_sample_rate_is_an_integer_not_a_bool():
    """``sample_rate_hz=True`` passed as a rate of 1 Hz (a bool is an int to isinstance)."""
    with pytest.raises(ValueError, match="sample_rate_hz"):
        AudioChunk(samples=np.zeros(4, dtype=np.float32), t_ms=0.0, sample_rate_hz=True)
    assert AudioChunk(samples=np.zeros(4, dtype=np.float32), t_ms=np.float32(2.5), sample_rate_hz=RATE).t_ms == 2.5


def test_items_hold_the_array_their_array_like_was_checked_as():
    """A frame given an array-like (rows of pixels) kept it as given: ``image`` was a list (annotated
    ``np.ndarray``) and ``width_px`` an AttributeError."""
    rows = [[np.array([10, 20, 30], dtype=np.uint8)] * 4] * 2
    frame = VideoFrame(image=rows, t_ms=0.0)
    assert isinstance(frame.image, np.ndarray) and frame.image.shape == (2, 4, 3)
    assert (frame.width_px, frame.height_px) == (4, 2)
    chunk = AudioChunk(samples=[np.float32(0.5)] * 3, t_ms=0.0, sample_rate_hz=RATE)
    assert isinstance(chunk.samples, np.ndarray) and chunk.samples.dtype == np.float32


def test_backoff_grows_caps_and_resets():
    backoff = ExponentialBackoff(BackoffOptions(initial_ms=100, max_ms=350, multiplier=2))
    assert [backoff.next_delay_ms() for _ in range(4)] == [100, 200, 350, 350]
    backoff.reset()
    assert backoff.next_delay_ms() == 100
    with pytest.raises(ValueError, match="max_ms"):
        BackoffOptions(initial_ms=100, max_ms=50)


# --------------------------------------------------------------------------- WAV replay


def test_wav_replay_chunks_timestamps_and_samples(make_wav):
    rng = np.random.default_rng(0)
    pcm = rng.integers(-20000, 20000, size=RATE // 2 + 100, dtype=np.int16)  # 0.5 s + 100 samples
    path = make_wav("speech.wav", pcm)
    with WavReplaySource(path, WavReplayOptions(chunk_ms=20)) as source:
        assert isinstance(source, Source)
        chunks = list(source)
        assert source.read() is None  # stays at end of stream
        assert source.stats.items == len(chunks)
    assert [c.samples.size for c in chunks[:-1]] == [320] * 25 and chunks[-1].samples.size == 100
    assert [c.t_ms for c in chunks] == pytest.approx([20.0 * i for i in range(26)])
    assert all(c.sample_rate_hz == RATE and c.samples.dtype == np.float32 for c in chunks)
    joined = np.concatenate([c.samples for c in chunks])
    np.testing.assert_allclose(joined, pcm / 32768.0, atol=1e-4)


def test_wav_replay_stereo_is_mixed_to_mono(make_wav):
    mono = (np.sin(np.arange(1600) / 10) * 10000).astype(np.int16)
    path = make_wav("stereo.wav", np.stack([mono, mono], axis=1))
    chunks = list(WavReplaySource(path, WavReplayOptions(chunk_ms=50)))
    np.testing.assert_allclose(np.concatenate([c.samples for c in chunks]), mono / 32768.0, atol=1e-4)


def test_wav_replay_realtime_paces_to_stream_clock(make_wav):
    path = make_wav("tone.wav", np.zeros(int(RATE * 0.3), dtype=np.int16))
    start = time.monotonic()
    chunks = list(WavReplaySource(path, WavReplayOptions(chunk_ms=50, realtime=True)))
    elapsed = time.monotonic() - start
    assert len(chunks) == 6
    assert elapsed >= 0.25 - 0.01  # the last chunk starts at 250 ms of stream time
    fast_start = time.monotonic()
    list(WavReplaySource(path, WavReplayOptions(chunk_ms=50)))
    assert time.monotonic() - fast_start < 0.2


def test_wav_replay_loop_keeps_stream_time_increasing(make_wav):
    path = make_wav("short.wav", np.arange(800, dtype=np.int16))  # 50 ms
    source = WavReplaySource(path, WavReplayOptions(chunk_ms=20, loop=True))
    chunks = [source.read() for _ in range(9)]  # 3 chunks per pass (20, 20, 10 ms)
    assert [c.samples.size for c in chunks] == [320, 320, 160] * 3
    assert [c.t_ms for c in chunks] == pytest.approx([0, 20, 40, 50, 70, 90, 100, 120, 140])
    np.testing.assert_array_equal(chunks[3].samples, chunks[0].samples)
    source.close()
    assert source.read() is None


def test_wav_replay_bad_files_name_the_file(tmp_path):
    missing = tmp_path / "missing.wav"
    with pytest.raises(ValueError, match="missing.wav"):
        WavReplaySource(missing)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not a RIFF file" * 10)
    with pytest.raises(ValueError, match="garbage.wav"):
        WavReplaySource(garbage)


def test_wav_replay_resamples_to_requested_rate(make_wav):
    t = np.arange(8000) / 8000
    path = make_wav("8k.wav", (np.sin(2 * np.pi * 440 * t) * 16000).astype(np.int16), sample_rate_hz=8000)
    chunks = list(WavReplaySource(path, WavReplayOptions(sample_rate_hz=RATE, chunk_ms=100)))
    assert sum(c.samples.size for c in chunks) == pytest.approx(RATE, abs=2)
    assert chunks[1].t_ms == pytest.approx(100.0)


def _through_a_pipe(data: bytes) -> tuple[str, threading.Thread, int]:
    """``data`` written into a pipe by a thread: the path of its reading end (as ``--audio /dev/stdin`` or
    ``<(cat a.wav)`` name one), the thread and the reading end's descriptor (the caller closes it)."""
    read_fd, write_fd = os.pipe()

    def write() -> None:
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(data)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    return f"/dev/fd/{read_fd}", writer, read_fd


@pytest.mark.skipif(not os.path.isdir("/dev/fd"), reason="needs /dev/fd")
def test_wav_and_video_replay_read_a_pipe(make_wav, make_video, level_frames):
    """``cat a.wav | edgesense run --audio /dev/stdin`` and ``--video <(...)``: replayed from the pipe (both were
    refused as 'WAV file not found' / 'video file not found'); a device such as /dev/null is one line saying so."""
    pcm = (np.sin(np.arange(RATE) / 7) * 12000).astype(np.int16)
    wav = make_wav("piped.wav", pcm, sample_rate_hz=48000)
    path, writer, fd = _through_a_pipe(wav.read_bytes())
    try:
        chunks = list(WavReplaySource(path, WavReplayOptions(chunk_ms=20)))
    finally:
        writer.join(5)
        os.close(fd)
    expected = list(WavReplaySource(wav, WavReplayOptions(chunk_ms=20)))
    assert [c.t_ms for c in chunks] == [c.t_ms for c in expected] and len(chunks) == 17
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]),
                                  np.concatenate([c.samples for c in expected]))
    video = make_video("piped.avi", level_frames(6), fps=10.0)
    path, writer, fd = _through_a_pipe(video.read_bytes())
    try:
        frames = list(VideoReplaySource(path))
    finally:
        writer.join(5)
        os.close(fd)
    assert [round(frame_level(f) / 20) for f in frames] == list(range(6))
    assert [f.t_ms for f in frames] == pytest.approx([100.0 * i for i in range(6)])
    if os.path.exists("/dev/null"):
        with pytest.raises(ValueError, match=r"^/dev/null: expected a WAV file or a pipe, found a device$"):
            WavReplaySource("/dev/null")
        with pytest.raises(ValueError, match=r"^/dev/null: expected a video file or a pipe, found a device$"):
            VideoReplaySource("/dev/null")


def _replay_peak_mb(path) -> tuple[float, float, list[float]]:
    """The replay's peak of traced memory (numpy's arrays and Python's) while it opens and while it plays, in MB
    (its chunks are let go), and the chunks' times."""
    tracemalloc.start()
    try:
        source = WavReplaySource(path, WavReplayOptions(chunk_ms=20))
        opened_mb = tracemalloc.get_traced_memory()[1] / 2**20
        times = [chunk.t_ms for chunk in source]
        played_mb = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    return opened_mb, played_mb, times


def test_wav_replay_of_hours_decodes_as_it_goes(make_wav):
    """A long 48-kHz stereo recording is decoded, mixed and resampled a block at a time: the replay's memory does
    not grow with the file (it read, decoded and resampled it whole at the start: about 3.5 GB an hour, 12 s
    before the first chunk for ten minutes), and the samples are those of reading the whole file."""
    from edgesense.frontend.wav import read_wav

    rng = np.random.default_rng(1)
    peaks = {}
    for seconds in (10, 60):
        stereo = rng.integers(-8000, 8000, size=(48000 * seconds, 2), dtype=np.int16)
        path = make_wav(f"{seconds}s.wav", stereo, sample_rate_hz=48000)
        opened_mb, played_mb, times = _replay_peak_mb(path)
        peaks[seconds] = played_mb
        assert opened_mb < 1, opened_mb
        assert times == pytest.approx([20.0 * i for i in range(seconds * 50)])
    assert peaks[60] < peaks[10] + 1, peaks  # six times the file, not six times the memory
    samples = np.concatenate([c.samples for c in WavReplaySource(path)])
    np.testing.assert_allclose(samples, read_wav(path), atol=1e-6, rtol=0)


def _open_handles(path) -> tuple[int, int]:
    """This process's descriptors open on ``path`` and its memory mappings of it."""
    target = os.path.realpath(path)
    fds = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            fds += os.readlink(f"/proc/self/fd/{name}") == target
        except OSError:  # the listing's own descriptor, closed by now
            pass
    with open("/proc/self/maps") as maps:
        mappings = sum(line.rstrip("\n").endswith(" " + target) for line in maps)
    return fds, mappings


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
@pytest.mark.parametrize("pcm", [np.arange(3200, dtype=np.int16), np.linspace(-1, 1, 3200, dtype=np.float32)],
                         ids=["int16", "float32"])
def test_a_closed_wav_replay_releases_its_file(make_wav, pcm):
    """close() released nothing: the file stayed mapped and its descriptor open until the source was collected, so
    a program that replays file after file and keeps the sources (a list of them, a report) ran out of
    descriptors (300 closed replays: 300 descriptors and mappings left open)."""
    path = make_wav("kept.wav", pcm)
    closed = []
    for _ in range(20):
        with WavReplaySource(path, WavReplayOptions(chunk_ms=50)) as source:
            assert source.read().samples.size == 800
        closed.append(source)  # kept, as a caller may
        assert source.read() is None and source.duration_ms == pytest.approx(200.0)
    assert _open_handles(path) == (0, 0)
    source = WavReplaySource(path)
    assert _open_handles(path) == (1, 1)  # what the check sees of an open replay
    source.close()
    source.close()  # twice is fine
    assert _open_handles(path) == (0, 0)


def test_a_float_wav_beyond_full_scale_is_said_once_by_its_replay(tmp_path, monkeypatch, caplog):
    """A float WAV at 16-bit scale replayed (``run --audio``, ``record``): its clipping is one warning for the file
    with the whole file's figures. The replay decodes a block (33 s) at a time, at its open and again as it plays:
    a warning per block each time (a 70-s file: 6; an hour's, 220; a looped one, more every pass)."""
    import edgesense.sources.replay as replay_mod

    monkeypatch.setattr(replay_mod, "WAV_BLOCK_SAMPLES", 4096)  # 4 blocks of this 1-s file
    samples = np.zeros(RATE, "<f4")
    samples[:RATE // 4] = 9830.0  # the first block beyond full scale, a quarter of the file's samples
    fmt = struct.pack("<HHIIHH", 3, 1, RATE, RATE * 4, 4, 32)  # IEEE float, mono, 32-bit
    data = samples.tobytes()
    path = tmp_path / "scaled.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE" + b"fmt "
                     + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data)
    with caplog.at_level(logging.WARNING, logger="edgesense.frontend.wav"):
        with WavReplaySource(path, WavReplayOptions(loop=True)) as source:
            chunks = [source.read() for _ in range(120)]  # two passes and more
    assert all(c is not None for c in chunks) and float(chunks[0].samples.max()) == 1.0
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: expected float samples within the +-1 full scale, found a peak of 9830: 25.0% of the samples are "
        "clipped to +-1"]


@pytest.mark.parametrize("bits", [32, 64])
def test_a_float_wav_replayed_is_decoded_once_and_a_nan_still_refused_at_its_open(tmp_path, monkeypatch, bits):
    """The open decoded every block of a float WAV to look for a NaN, and the replay decoded them all again as it
    played: a 10-min 48-kHz stereo file (230 MB) took 0.23-0.42 s to open, 0.07-0.12 s reading its floats."""
    import edgesense.frontend.wav as wav_mod
    import edgesense.sources.replay as replay_mod

    monkeypatch.setattr(replay_mod, "WAV_BLOCK_SAMPLES", 4096)
    decoded = []
    decode = wav_mod._decode
    monkeypatch.setattr(wav_mod, "_decode", lambda parsed, **kw: decoded.append(1) or decode(parsed, **kw))
    dtype, size = ("<f4", 4) if bits == 32 else ("<f8", 8)

    def float_wav(name: str, samples: np.ndarray) -> os.PathLike[str]:
        fmt = struct.pack("<HHIIHH", 3, 1, RATE, RATE * size, size, bits)
        data = samples.astype(dtype).tobytes()
        path = tmp_path / name
        path.write_bytes(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE" + b"fmt "
                         + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data)
        return path

    samples = np.linspace(-0.5, 0.5, RATE)  # 1 s: 4 blocks
    with WavReplaySource(float_wav("ok.wav", samples), WavReplayOptions(chunk_ms=100)) as source:
        played = [c.samples for c in iter(source.read, None)]
    assert len(decoded) == 4
    np.testing.assert_allclose(np.concatenate(played), samples, atol=1e-6)
    for bad in (np.nan, -np.inf, *((1e300,) if bits == 64 else ())):  # 1e300: no float32, infinite decoded
        samples[-2] = bad
        with pytest.raises(ValueError, match=r"bad\.wav: not a readable WAV file: expected finite float samples, "
                                             r"found NaN or infinity$"):
            WavReplaySource(float_wav("bad.wav", samples))


def test_a_path_or_options_of_the_wrong_type_are_one_line_naming_the_parameter(make_wav, make_video):
    """Options given as a dict (as read from YAML) or None, or no path: a ValueError naming the parameter, not an
    AttributeError from deep inside (``'dict' object has no attribute 'sample_rate_hz'``)."""
    wav = make_wav("a.wav", np.zeros(1600, np.int16))
    video = make_video("v.avi", [np.zeros((8, 8, 3), np.uint8)] * 3, fps=10.0)
    for bad in ({"chunk_ms": 10}, None):
        with pytest.raises(ValueError, match=r"^options: expected WavReplayOptions, got"):
            WavReplaySource(wav, bad)
        with pytest.raises(ValueError, match=r"^options: expected VideoReplayOptions, got"):
            VideoReplaySource(video, bad)
        with pytest.raises(ValueError, match=r"^options: expected CameraOptions, got"):
            CameraSource(bad)
        with pytest.raises(ValueError, match=r"^options: expected MicrophoneOptions, got"):
            MicrophoneSource(bad)
    for bad in (None, 3, os.fsencode(wav)):
        with pytest.raises(ValueError, match=r"^path: expected a path to a WAV file, got"):
            WavReplaySource(bad)
        with pytest.raises(ValueError, match=r"^path: expected a path to a video file, got"):
            VideoReplaySource(bad)
    with WavReplaySource(str(wav), WavReplayOptions(chunk_ms=50)) as source:
        assert source.read().samples.size == 800


def test_wav_options_validation():
    with pytest.raises(ValueError, match="chunk_ms"):
        WavReplayOptions(chunk_ms=0)
    with pytest.raises(ValueError, match="realtime"):
        WavReplayOptions(realtime="yes")


# --------------------------------------------------------------------------- video replay


@pytest.mark.parametrize("fourcc, name", [("MJPG", "clip.avi"), ("mp4v", "clip.mp4")])
def test_video_replay_decodes_every_frame_with_file_timestamps(make_video, level_frames, fourcc, name):
    images = level_frames(8)
    path = make_video(name, images, fps=20.0, fourcc=fourcc)
    with VideoReplaySource(path) as source:
        assert isinstance(source, Source) and source.fps == pytest.approx(20.0)
        frames = list(source)
    assert len(frames) == 8
    assert [f.t_ms for f in frames] == pytest.approx([50.0 * i for i in range(8)])
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
    # Each decoded frame is the one written at that position (levels 0, 20, 40, ...).
    assert [frame_level(f) for f in frames] == pytest.approx([20.0 * i for i in range(8)], abs=4)


def test_video_replay_fps_override_and_loop(make_video, level_frames):
    path = make_video("loop.avi", level_frames(3), fps=10.0)
    source = VideoReplaySource(path, VideoReplayOptions(fps=4.0, loop=True))
    frames = [source.read() for _ in range(7)]
    assert [f.t_ms for f in frames] == pytest.approx([250.0 * i for i in range(7)])
    assert [round(frame_level(f) / 20) for f in frames] == [0, 1, 2, 0, 1, 2, 0]
    source.close()
    assert source.read() is None


_MP4_CONTAINERS = (b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts")


def _mp4_box(buf: bytearray, path: tuple[bytes, ...]) -> tuple[int, list[int]]:
    """Offset of the box at ``path`` (e.g. moov/trak/mdia/mdhd) and the offsets of its parents."""
    start, end, parents = 0, len(buf), []
    for kind in path:
        pos = start
        while struct.unpack_from(">4s", buf, pos + 4)[0] != kind:
            pos += struct.unpack_from(">I", buf, pos)[0]
            assert pos + 8 <= end, f"no {kind!r} box"
        parents.append(pos)
        start, end = pos + 8, pos + struct.unpack_from(">I", buf, pos)[0]
    return parents[-1], parents[:-1]


def make_vfr_mp4(make_video, name: str, images, frame_durations_ms):
    """A real variable-frame-rate MP4 (as phones record): encoded by OpenCV at a constant rate, then its
    time-to-sample table (stts) and durations rewritten so frame ``i`` lasts ``frame_durations_ms[i]``."""
    path = make_video(name, images, fps=1000.0 / frame_durations_ms[0], fourcc="mp4v")
    buf = bytearray(path.read_bytes())
    mdhd, _ = _mp4_box(buf, (b"moov", b"trak", b"mdia", b"mdhd"))
    assert buf[mdhd + 8] == 0  # version 0: 32-bit times
    ticks = [round(d * struct.unpack_from(">I", buf, mdhd + 20)[0] / 1000) for d in frame_durations_ms]
    struct.pack_into(">I", buf, mdhd + 24, sum(ticks))
    mvhd, _ = _mp4_box(buf, (b"moov", b"mvhd"))
    movie_ticks = round(sum(frame_durations_ms) * struct.unpack_from(">I", buf, mvhd + 20)[0] / 1000)
    struct.pack_into(">I", buf, mvhd + 24, movie_ticks)
    struct.pack_into(">I", buf, _mp4_box(buf, (b"moov", b"trak", b"tkhd"))[0] + 28, movie_ticks)
    struct.pack_into(">I", buf, _mp4_box(buf, (b"moov", b"trak", b"edts", b"elst"))[0] + 16, movie_ticks)
    stts, parents = _mp4_box(buf, (b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stts"))
    old_size = struct.unpack_from(">I", buf, stts)[0]
    table = struct.pack(">I4sII", 16 + 8 * len(ticks), b"stts", 0, len(ticks))
    table += b"".join(struct.pack(">II", 1, t) for t in ticks)
    for parent in parents:  # moov is after mdat (OpenCV's muxer): no chunk offset moves
        struct.pack_into(">I", buf, parent, struct.unpack_from(">I", buf, parent)[0] + len(table) - old_size)
    buf[stts:stts + old_size] = table
    path.write_bytes(bytes(buf))
    return path


def test_video_replay_variable_frame_rate_keeps_the_file_timing(make_video, level_frames):
    """A phone video at a variable rate: frames are stamped with their presentation times, not i / average rate
    (which put the 4th frame 150 ms late here and drifts further with every slow stretch)."""
    durations = [50, 50, 50, 50, 150, 150, 150, 150]
    path = make_vfr_mp4(make_video, "phone.mp4", level_frames(8), durations)
    with VideoReplaySource(path) as source:
        frames = list(source)
    assert [round(frame_level(f) / 20) for f in frames] == list(range(8))
    assert [f.t_ms for f in frames] == pytest.approx([0, 50, 100, 150, 200, 350, 500, 650])
    # Looped, the stream time goes on increasing; fps= still stamps frames by their index.
    looped = VideoReplaySource(path, VideoReplayOptions(loop=True))
    times = [looped.read().t_ms for _ in range(10)]
    looped.close()
    assert times[:8] == pytest.approx([0, 50, 100, 150, 200, 350, 500, 650])
    assert all(b > a for a, b in zip(times, times[1:])) and times[9] - times[8] == pytest.approx(50)
    with VideoReplaySource(path, VideoReplayOptions(fps=10.0)) as source:
        assert [f.t_ms for f in source] == pytest.approx([100.0 * i for i in range(8)])


def test_video_replay_realtime(make_video, level_frames):
    path = make_video("rt.avi", level_frames(6), fps=20.0)
    start = time.monotonic()
    frames = list(VideoReplaySource(path, VideoReplayOptions(realtime=True)))
    assert len(frames) == 6
    assert time.monotonic() - start >= 0.25 - 0.01  # frame 5 is due at 250 ms


def test_video_replay_unreadable_files_raise_value_error_naming_them(tmp_path, make_video, level_frames):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2048))
    with pytest.raises(ValueError, match="corrupt.mp4"):
        VideoReplaySource(corrupt)
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.avi"):
        VideoReplaySource(empty)
    with pytest.raises(ValueError, match="nope.mp4"):
        VideoReplaySource(tmp_path / "nope.mp4")
    # A real file whose header is intact but whose frames were cut off.
    good = make_video("cut.avi", level_frames(4))
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ValueError, match="truncated.avi"):
        VideoReplaySource(truncated)


def _damage_mjpeg_frames(path, frames):
    """Overwrite the start of these frames' JPEG data in an MJPG AVI (a damaged stretch of the file)."""
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xff\xd8\xff"]
    for k in frames:
        data[starts[k]:starts[k] + 200] = bytes(200)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("fps", [None, 10.0], ids=["file times", "fps given"])
def test_video_replay_skips_undecodable_frames_and_goes_on(make_video, level_frames, caplog, fps):
    """Two frames in the middle of the file do not decode: the replay skips them with a warning and goes on,
    each later frame at its own time (it used to end there, silently dropping the rest of the video)."""
    path = make_video("damaged.avi", level_frames(8), fps=10.0)
    _damage_mjpeg_frames(path, [3, 4])
    with caplog.at_level(logging.WARNING, logger="edgesense.sources.replay"):
        with VideoReplaySource(path, VideoReplayOptions(fps=fps)) as source:
            frames = list(source)
    assert [round(frame_level(f) / 20) for f in frames] == [0, 1, 2, 5, 6, 7]
    assert source.skipped_frames == 2
    assert [f.t_ms for f in frames] == pytest.approx([0, 100, 200, 500, 600, 700])
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: frames 4 to 5 could not be decoded (a damaged file?) and were skipped; the replay goes on"]
    looped = VideoReplaySource(path, VideoReplayOptions(fps=fps, loop=True))
    times = [looped.read().t_ms for _ in range(9)]
    looped.close()
    assert times == pytest.approx([0, 100, 200, 500, 600, 700, 800, 900, 1000]) and looped.skipped_frames == 2


@pytest.mark.parametrize("fps", [None, 10.0], ids=["file times", "fps given"])
@pytest.mark.parametrize("damaged, kept", [([1], [0, 2, 3, 4, 5]), ([0], [1, 2, 3, 4, 5]),
                                           ([0, 1], [2, 3, 4, 5])], ids=["second", "first", "first two"])
def test_video_replay_skips_undecodable_frames_at_its_start(make_video, level_frames, caplog, fps, damaged, kept):
    """A video whose first or second frame does not decode is replayed from the next one, at its own time, as
    damage further on is (it was refused: 'a still image, not a video' or 'no frame could be decoded')."""
    path = make_video("damaged_start.avi", level_frames(6), fps=10.0)
    _damage_mjpeg_frames(path, damaged)
    with caplog.at_level(logging.WARNING, logger="edgesense.sources.replay"):
        with VideoReplaySource(path, VideoReplayOptions(fps=fps)) as source:
            frames = list(source)
    assert [round(frame_level(f) / 20) for f in frames] == kept
    assert [f.t_ms for f in frames] == pytest.approx([100.0 * i for i in kept])
    assert source.skipped_frames == len(damaged)
    first = damaged[0] + 1
    said = f"frame {first}" if len(damaged) == 1 else f"frames {first} to {first + len(damaged) - 1}"
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: {said} could not be decoded (a damaged file?) and {'was' if len(damaged) == 1 else 'were'} "
        "skipped; the replay goes on"]


# --------------------------------------------------------------------------- camera


class FakeClock:
    def __init__(self) -> None:
        self.now_ms = 1000.0

    def __call__(self) -> float:
        return self.now_ms


def test_camera_reads_then_fails_then_reopens(make_video, level_frames):
    """A device path that stops delivering frames: SourceReadError, then an automatic reopen."""
    path = make_video("cam.avi", level_frames(3), fps=15.0)
    clock = FakeClock()
    camera = CameraSource(CameraOptions(source=str(path), reopen_after_failures=2), clock_ms=clock)
    levels = []
    for _ in range(3):
        frame = camera.read()
        clock.now_ms += 66.0
        levels.append(round(frame_level(frame) / 20))
    assert levels == [0, 1, 2]
    for _ in range(2):
        with pytest.raises(SourceReadError, match="cam.avi"):
            camera.read()
    assert not camera.is_open  # released after 2 failures in a row
    frame = camera.read()  # reopened on this read
    assert round(frame_level(frame) / 20) == 0 and frame.t_ms == clock.now_ms
    assert camera.stats.read_failures == 2 and camera.stats.reopens == 1 and camera.stats.items == 4
    camera.close()
    assert camera.read() is None


class UndecodableCapture(SmallCameraCapture):
    """A camera whose frames come off the device but none decodes (a corrupt MJPEG stream): ``grab()`` succeeds,
    ``retrieve()`` and ``read()`` (a grab and a retrieve) fail."""

    opens = 0

    def __init__(self, *args) -> None:
        super().__init__()
        UndecodableCapture.opens += 1

    def grab(self) -> bool:
        return True

    def retrieve(self, image=None, flag=0):
        return False, None

    def read(self, image=None):
        return False, None


@pytest.mark.parametrize("decode_on_demand", [False, True], ids=["read", "grab-and-retrieve"])
def test_a_camera_none_of_whose_frames_decodes_is_reopened_however_it_is_read(monkeypatch, decode_on_demand):
    """A live camera's reader grabs every frame and decodes the wanted ones (``grab()``, ``retrieve()``): each grab
    started the failures in a row afresh, so a camera whose every frame failed to decode, which ``read()`` reopens
    after ``reopen_after_failures``, was never reopened (60 failed decodes, 0 reopens)."""
    monkeypatch.setattr(cv2, "VideoCapture", UndecodableCapture)
    UndecodableCapture.opens = 0
    stats = _undecodable_camera_tried(decode_on_demand, tries=60, every_ms=500.0)
    assert stats.read_failures == 60 and stats.reopens >= 10 and UndecodableCapture.opens >= 11


def _undecodable_camera_tried(decode_on_demand: bool, *, tries: int, every_ms: float):
    """The stats of a camera whose every frame fails to decode, read ``tries`` times ``every_ms`` apart (a fake
    clock), by ``read()`` or by ``grab()`` and ``retrieve()``."""
    clock = FakeClock()
    camera = CameraSource(CameraOptions(source=0, reopen_after_failures=5), clock_ms=clock)
    for _ in range(tries):
        clock.now_ms += every_ms
        with pytest.raises(SourceReadError):
            if decode_on_demand:
                camera.grab()
                camera.retrieve()
            else:
                camera.read()
    camera.close()
    return camera.stats


def test_a_camera_none_of_whose_frames_decodes_backs_off_as_one_whose_reads_fail(monkeypatch):
    """Each grab counted as a frame delivered, so a camera whose grabs worked and decodes all failed took the path
    of a camera that was delivering, reopened at once, every time: tried 10 times a second for a minute, 119
    reopens where read() backs off to 43."""
    monkeypatch.setattr(cv2, "VideoCapture", UndecodableCapture)
    reopens = {how: _undecodable_camera_tried(how, tries=600, every_ms=100.0).reopens for how in (False, True)}
    assert reopens[True] == reopens[False] < 60, reopens


class StalledCapture:
    """The real capture, whose next read stalls until ``resume`` is set (a USB camera that hangs)."""

    def __init__(self, real) -> None:
        self.real, self.reading, self.resume = real, threading.Event(), threading.Event()
        self.releases_during_read = []

    def read(self):
        self.reading.set()
        self.resume.wait(5.0)
        return self.real.read()

    def release(self) -> None:
        self.releases_during_read.append(not self.resume.is_set())
        self.real.release()


@pytest.mark.parametrize("close_wait_s", [5.0, 0.01], ids=["close waits for the read", "the read releases"])
def test_camera_closed_during_a_read_is_released_only_after_it(make_video, level_frames, monkeypatch, close_wait_s):
    """OpenCV crashes when a capture is released under a read in progress on another thread: close() waits
    for the read, or, when the read stalls past CLOSE_WAIT_S, leaves the release to it."""
    monkeypatch.setattr(camera_mod, "CLOSE_WAIT_S", close_wait_s)
    camera = CameraSource(CameraOptions(source=str(make_video("cam.avi", level_frames(3), fps=15.0))))
    stalled = camera._cap = StalledCapture(camera._cap)
    result = {}
    reader = threading.Thread(target=lambda: result.update(frame=camera.read()))
    reader.start()
    assert stalled.reading.wait(5.0)
    closer = threading.Thread(target=camera.close)
    closer.start()
    if close_wait_s < 1.0:
        closer.join(5.0)
        assert not closer.is_alive() and camera.is_open  # close() returned; the read still holds the capture
    stalled.resume.set()
    reader.join(5.0)
    closer.join(5.0)
    assert result == {"frame": None} and stalled.releases_during_read == [False] and not camera.is_open
    assert camera.read() is None


class PipelineCapture:
    """The real capture, its frames delivered as another appsink format would (``convert`` maps each BGR frame)."""

    def __init__(self, real, convert) -> None:
        self.real, self.convert = real, convert

    def read(self):
        ok, image = self.real.read()
        return ok, (self.convert(image) if ok else image)

    def release(self) -> None:
        self.real.release()


def test_camera_bgrx_and_grey_frames_become_bgr_and_other_formats_name_the_camera(make_video, level_frames):
    """A Jetson pipeline that ends in ``format=BGRx ! appsink`` (no CPU videoconvert) delivers 4-channel frames:
    they are used, not refused with a ValueError about an (H, W, 4) array that ends the loop."""
    camera = CameraSource(CameraOptions(source=str(make_video("cam.avi", level_frames(4), fps=15.0))))
    camera._cap = PipelineCapture(camera._cap, lambda bgr: np.dstack([bgr, np.full(bgr.shape[:2], 255, np.uint8)]))
    frame = camera.read()
    assert frame.image.shape == (48, 64, 3) and round(frame_level(frame) / 20) == 0
    camera._cap = PipelineCapture(camera._cap.real, lambda bgr: bgr[:, :, :1])  # GRAY8 as (H, W, 1)
    frame = camera.read()
    assert frame.image.shape == (48, 64, 3) and round(frame_level(frame) / 20) == 1
    camera._cap = PipelineCapture(camera._cap.real, lambda bgr: bgr[:, :, 0].astype(np.uint16) * 256)  # GRAY16_LE
    with pytest.raises(RuntimeError, match=r"camera: camera '.*cam.avi' delivers frames of shape \(48, 64\) "
                                           r"dtype uint16; expected 8-bit BGR, BGRx or grey"):
        camera.read()
    camera.close()


def _as_yuv420(bgr: np.ndarray, layout: str) -> np.ndarray:
    """A BGR frame as OpenCV's appsink hands over planar YUV 4:2:0: one plane of height * 3 / 2 rows."""
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    if layout == "I420":
        return i420
    h, w = bgr.shape[:2]
    u, v = i420[h:h + h // 4].reshape(-1), i420[h + h // 4:].reshape(-1)
    uv = np.empty(u.size * 2, np.uint8)
    uv[0::2], uv[1::2] = u, v  # NV12: the chroma interleaved, U first
    return np.concatenate([i420[:h], uv.reshape(h // 2, w)])


_VIDEO_CAPTURE = cv2.VideoCapture  # the real one, for stand-ins that wrap it while cv2.VideoCapture is replaced


class Appsink:
    """A GStreamer pipeline's appsink as OpenCV's backend delivers it, over a real capture of a video file:
    ``layout`` None passes its BGR frames as GRAY8 (one plane as tall as the frame), ``"RGBA"`` as RGBA, else as
    that planar YUV 4:2:0 layout; ``get`` reports the caps' width and height, as OpenCV's backend does."""

    def __init__(self, path, layout: str | None) -> None:
        self.real, self.layout = _VIDEO_CAPTURE(str(path)), layout

    def isOpened(self) -> bool:
        return self.real.isOpened()

    def get(self, prop: int) -> float:
        return self.real.get(prop)

    def read(self):
        ok, image = self.real.read()
        if not ok:
            return ok, image
        if self.layout is None:
            return ok, cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if self.layout == "RGBA":
            return ok, cv2.cvtColor(image, cv2.COLOR_BGR2RGBA)
        return ok, _as_yuv420(image, self.layout)

    def release(self) -> None:
        self.real.release()


@pytest.mark.parametrize("caps, layout", [
    ("video/x-raw, width=64, height=48, format=NV12", "NV12"),
    ("video/x-raw,format=(string)I420,width=64,height=48", "I420"),
    ("nvvidconv ! video/x-raw, format=RGBA", "RGBA"),
])
def test_camera_pipeline_delivering_an_unconverted_format_gives_its_colour_image(make_video, monkeypatch, caps,
                                                                               layout):
    """``libcamerasrc ! video/x-raw, format=NV12 ! appsink`` (a Pi camera module without a CPU videoconvert):
    OpenCV hands the frame over as one plane of 72 rows for a 64x48 image, which passed for a grey picture: the
    scene model saw a colourless 64x72 image with the chroma planes pasted under it. ``format=RGBA ! appsink``
    passed for BGRx: red and blue swapped (the sea orange)."""
    scene = np.zeros((48, 64, 3), np.uint8)
    scene[:, :32] = (40, 160, 60)  # green on the left
    scene[:, 32:] = (200, 60, 30)  # blue on the right
    path = make_video("cam.avi", [scene] * 3, fps=15.0)
    ok, decoded = cv2.VideoCapture(str(path)).read()  # what the camera saw, after the file's JPEG coding
    monkeypatch.setattr(camera_mod, "_opencv_has_gstreamer", lambda: True)
    monkeypatch.setattr(cv2, "VideoCapture", lambda source, api=None: Appsink(path, layout))
    camera = CameraSource(CameraOptions(source=f"libcamerasrc ! {caps} ! appsink drop=true"))
    frame = camera.read()
    camera.close()
    assert ok and frame.image.shape == (48, 64, 3)
    for half in (np.s_[:, 4:28], np.s_[:, 36:60]):  # away from the edge the chroma subsampling blurs
        np.testing.assert_allclose(frame.image[half].reshape(-1, 3).mean(0), decoded[half].reshape(-1, 3).mean(0),
                                   atol=6)


def test_camera_pipeline_delivering_planar_yuv_it_does_not_name_is_one_line_and_grey_stays_grey(make_video,
                                                                                                monkeypatch):
    path = make_video("cam.avi", [np.full((48, 64, 3), 120, np.uint8)] * 3, fps=15.0)
    monkeypatch.setattr(camera_mod, "_opencv_has_gstreamer", lambda: True)
    layouts = iter(["NV12", None])
    monkeypatch.setattr(cv2, "VideoCapture", lambda source, api=None: Appsink(path, next(layouts)))
    camera = CameraSource(CameraOptions(source="libcamerasrc ! video/x-raw, width=64, height=48 ! appsink"))
    with pytest.raises(RuntimeError, match=r"^camera: GStreamer pipeline 'libcamerasrc .*' delivers 64x48 frames "
                                           r"as 72 rows of planar YUV 4:2:0 and the pipeline names no such format; "
                                           r"expected 8-bit BGR: end it with 'videoconvert ! video/x-raw, "
                                           r"format=BGR ! appsink', or name the format"):
        camera.read()
    camera.close()
    camera = CameraSource(CameraOptions(source="v4l2src ! video/x-raw, format=GRAY8 ! appsink"))  # an IR camera
    frame = camera.read()
    camera.close()
    assert frame.image.shape == (48, 64, 3) and abs(frame_level(frame) - 120) < 3


def test_camera_reopen_uses_exponential_backoff(make_video, level_frames, tmp_path):
    path = make_video("cam.avi", level_frames(2), fps=15.0)
    clock = FakeClock()
    backoff = BackoffOptions(initial_ms=100, max_ms=1000, multiplier=2)
    camera = CameraSource(CameraOptions(source=str(path), reopen_after_failures=1, backoff=backoff), clock_ms=clock)
    camera.read(), camera.read()
    hidden = tmp_path / "unplugged.avi"
    path.rename(hidden)  # the device disappears
    with pytest.raises(SourceReadError):
        camera.read()  # end of frames -> released
    with pytest.raises(SourceReadError, match="reopening failed"):
        camera.read()  # first attempt is immediate and fails -> next in 100 ms
    clock.now_ms += 50
    with pytest.raises(SourceReadError, match="next reopen attempt in 50 ms"):
        camera.read()  # too early: no attempt
    clock.now_ms += 50
    with pytest.raises(SourceReadError, match="reopening failed"):
        camera.read()  # second attempt fails -> next in 200 ms
    hidden.rename(path)  # plugged back in
    clock.now_ms += 199
    with pytest.raises(SourceReadError, match="next reopen attempt"):
        camera.read()
    clock.now_ms += 1
    assert round(frame_level(camera.read()) / 20) == 0
    assert camera.stats.reopens == 1


def test_camera_that_opens_but_never_delivers_backs_off_without_a_warning_each_time(tmp_path, caplog):
    """A device that opens and then delivers nothing (a webcam's metadata node, a USB camera short of bandwidth):
    each reopen that brings no frame is a failure too, so reopens back off instead of cycling every
    ``reopen_after_failures`` reads forever, with a warning each time. The source warns of nothing here (it never
    delivered, so nothing stopped): the loop's one "scene events paused" line tells the user."""
    path = tmp_path / "no_frames.avi"  # OpenCV opens it, and it has no frame to read
    cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (64, 48)).release()
    clock = FakeClock()
    backoff = BackoffOptions(initial_ms=250, max_ms=1000, multiplier=2)
    camera = CameraSource(CameraOptions(source=str(path), backoff=backoff), clock_ms=clock)
    reopened_at = []
    with caplog.at_level(logging.INFO, logger="edgesense.sources.camera"):
        for _ in range(100):  # 10 s of reads, every 100 ms as LatestFrameReader retries
            reopens = camera.stats.reopens
            with pytest.raises(SourceReadError):
                camera.read()
            if camera.stats.reopens > reopens:
                reopened_at.append(clock.now_ms)
            clock.now_ms += 100.0
    camera.close()
    gaps = [b - a for a, b in zip(reopened_at, reopened_at[1:])]
    # 5 failed reads (the reopening one and 4 more), then a wait of 500, 1000, 1000 ... ms (250 before the first).
    assert len(gaps) == 6 and gaps == [400 + 500] + [400 + 1000] * 5
    assert [r.levelno for r in caplog.records].count(logging.WARNING) == 0
    assert any("reopened" in r.getMessage() for r in caplog.records)  # the capture does see this logger


def test_camera_missing_device_is_runtime_error():
    index = 57
    if os.path.exists(f"/dev/video{index}"):
        pytest.skip("this machine has that camera")
    with pytest.raises(RuntimeError, match="cannot open camera index 57"):
        CameraSource(CameraOptions(source=index))


def test_camera_gstreamer_pipeline_without_gstreamer_support_is_explained():
    if camera_mod._opencv_has_gstreamer():
        pytest.skip("this OpenCV has GStreamer")
    pipeline = "videotestsrc ! videoconvert ! appsink"
    assert camera_mod.is_gstreamer_pipeline(pipeline) and not camera_mod.is_gstreamer_pipeline("/dev/video0")
    with pytest.raises(RuntimeError, match="GStreamer"):
        CameraSource(CameraOptions(source=pipeline))


@pytest.mark.parametrize("kwargs, field", [
    ({"source": -1}, "source"), ({"source": " "}, "source"), ({"fps": "fast"}, "fps"),
    ({"width_px": 0}, "width_px"), ({"reopen_after_failures": 0}, "reopen_after_failures"),
])
def test_camera_options_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        CameraOptions(**kwargs)


# --------------------------------------------------------------------------- microphone


class FakePortAudio:
    """Stands in for the sound card only: device list, rate check and an InputStream whose
    callback the test drives, with sounddevice's own signatures and exceptions."""

    def __init__(self, devices: list[dict], native_rates: set[int]) -> None:
        self.devices = devices
        self.native_rates = native_rates
        self.streams: list[FakeInputStream] = []

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(sd, "query_devices", self.query_devices)
        monkeypatch.setattr(sd, "check_input_settings", self.check_input_settings)
        fake = self

        class _Stream(FakeInputStream):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                fake.streams.append(self)

        monkeypatch.setattr(sd, "InputStream", _Stream)

    def query_devices(self, device=None, kind=None):
        if device is None and kind is None:
            return list(self.devices)
        if device is None:
            device = next(i for i, d in enumerate(self.devices) if d["max_input_channels"] > 0)
        if isinstance(device, str):
            matches = [d for d in self.devices if device.lower() in d["name"].lower()]
            if not matches:
                raise ValueError(f"No input device matching {device!r}")
            info = matches[0]
        elif not 0 <= device < len(self.devices):
            raise sd.PortAudioError(f"Error querying device {device}")
        else:
            info = self.devices[device]
        if kind == "input" and info["max_input_channels"] < 1:
            raise ValueError("Not an input device")
        return info

    def check_input_settings(self, device=None, channels=None, dtype=None, samplerate=None, **_):
        if samplerate not in self.native_rates:
            raise sd.PortAudioError("Error opening InputStream: Invalid sample rate [PaErrorCode -9997]")


class FakeInputStream:
    def __init__(self, *, device, samplerate, channels, dtype, callback):
        self.device, self.samplerate, self.channels, self.dtype = device, samplerate, channels, dtype
        self.callback = callback
        self.started = self.closed = False

    def start(self):
        self.started = True

    def stop(self):
        self.started = False

    @property
    def active(self) -> bool:  # sounddevice's: False once PortAudio stopped the stream, by request or on a fault
        return self.started

    def close(self):
        self.closed = True

    def feed(self, samples: np.ndarray, overflow: bool = False) -> None:
        status = sd.CallbackFlags()
        status.input_overflow = overflow
        indata = np.asarray(samples, dtype=np.float32).reshape(-1, 1)
        self.callback(indata, indata.shape[0], None, status)


DEVICES = [
    {"index": 0, "name": "HDMI output", "max_input_channels": 0, "default_samplerate": 48000.0},
    {"index": 1, "name": "USB PnP Sound Device", "max_input_channels": 1, "default_samplerate": 48000.0},
]


@pytest.fixture
def portaudio(monkeypatch) -> FakePortAudio:
    fake = FakePortAudio(DEVICES, native_rates={16000, 48000})
    fake.install(monkeypatch)
    return fake


def test_microphone_chunks_are_contiguous_and_exact(portaudio):
    with MicrophoneSource(MicrophoneOptions(device="usb", chunk_ms=20)) as mic:
        stream = portaudio.streams[-1]
        assert stream.started and stream.samplerate == RATE and stream.channels == 1 and stream.dtype == "float32"
        signal = np.arange(1000, dtype=np.float32) / 1000
        before = base_mod.monotonic_ms()
        for block in np.array_split(signal, 7):  # PortAudio blocks unrelated to chunk size
            stream.feed(block)
        chunks = [mic.read() for _ in range(3)]
        assert isinstance(mic, Source)
    assert stream.closed
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), signal[:960])
    assert [c.t_ms - chunks[0].t_ms for c in chunks] == pytest.approx([0.0, 20.0, 40.0])
    # The first sample was captured before the first callback ran.
    assert chunks[0].t_ms <= before + 1.0
    assert mic.read() is None


def test_microphone_counts_overflows_and_dropped_samples(portaudio):
    mic = MicrophoneSource(MicrophoneOptions(device=1, chunk_ms=10, buffer_ms=100))  # 1600-sample ring
    stream = portaudio.streams[-1]
    stream.feed(np.zeros(1000), overflow=True)
    stream.feed(np.ones(1000))
    assert mic.stats.overflows == 1 and mic.stats.dropped_samples == 400
    chunk = mic.read()
    # The oldest 400 samples are gone; the timestamp accounts for them.
    assert chunk.samples[:5].tolist() == [0.0] * 5
    later = [mic.read() for _ in range(9)]
    assert later[-1].t_ms - chunk.t_ms == pytest.approx(90.0)
    np.testing.assert_array_equal(later[-1].samples, np.ones(160, dtype=np.float32))
    mic.close()


def test_microphone_read_blocks_until_the_callback_delivers(portaudio):
    mic = MicrophoneSource(MicrophoneOptions(chunk_ms=20, read_timeout_ms=2000))
    stream = portaudio.streams[-1]

    def audio_thread():
        for _ in range(4):
            time.sleep(0.01)
            stream.feed(np.full(80, 0.5))

    thread = threading.Thread(target=audio_thread)
    thread.start()
    chunk = mic.read()
    thread.join()
    assert chunk.samples.size == 320 and float(chunk.samples.mean()) == 0.5
    mic.close()


def test_microphone_stall_raises_source_read_error(portaudio):
    mic = MicrophoneSource(MicrophoneOptions(chunk_ms=20, read_timeout_ms=30))
    portaudio.streams[-1].feed(np.zeros(100))
    with pytest.raises(SourceReadError, match="no audio for 30 ms"):
        mic.read()
    assert mic.stats.read_failures == 1
    # a read of its own timeout (the loop polls a stalled microphone so that a live camera goes on)
    with pytest.raises(SourceReadError, match="no audio for 5 ms"):
        mic.read(timeout_ms=5)
    assert mic.stats.read_failures == 2
    for bad in (0, -1.0, float("nan"), 10 ** 9, "5"):
        with pytest.raises(ValueError, match="timeout_ms"):
            mic.read(timeout_ms=bad)
    mic.close()


def test_microphone_whose_stream_stops_mid_run_is_a_runtime_error_not_a_stall(portaudio):
    """USB microphone unplugged mid-run: PortAudio stops the stream for good. The audio already captured is
    read, then a RuntimeError naming the device (the run ends and systemd's Restart=on-failure reopens it),
    not a SourceReadError that the loop would retry forever with no audio."""
    mic = MicrophoneSource(MicrophoneOptions(device="usb", chunk_ms=20, read_timeout_ms=30))
    stream = portaudio.streams[-1]
    stream.feed(np.full(400, 0.25))
    stream.started = False  # PortAudio's thread hit the device error and ended: the stream is inactive
    assert float(mic.read().samples.mean()) == 0.25
    with pytest.raises(RuntimeError, match="microphone 'USB PnP Sound Device': the input stream stopped") as info:
        mic.read()
    assert not isinstance(info.value, SourceReadError)
    mic.close()


def test_a_deaf_microphone_whose_stream_stays_active_is_a_stall_error_after_stall_timeout_ms(portaudio, monkeypatch):
    """A wedged ALSA driver, a USB microphone whose firmware hangs, a sound server that suspended the source: the
    callbacks stop while PortAudio keeps the stream active. Every read was a SourceReadError, retried by the loop
    for ever (the device deaf until someone restarted it). Now, once no audio has come for stall_timeout_ms, a
    MicrophoneStallError (a RuntimeError, not a SourceReadError) in one line naming the device and how long it has
    been silent; audio that comes back starts the count again."""
    clock = FakeClock()
    monkeypatch.setattr(microphone_mod, "monotonic_ms", clock)
    mic = MicrophoneSource(MicrophoneOptions(device="usb", chunk_ms=20, read_timeout_ms=30, stall_timeout_ms=5000))
    stream = portaudio.streams[-1]
    stream.feed(np.zeros(320))
    assert mic.read() is not None
    clock.now_ms += 4000.0  # a transient stall: retried, and the first line says when the run would end
    with pytest.raises(SourceReadError, match=r"^microphone 'USB PnP Sound Device': no audio for 30 ms \(device "
                       r"stalled or unplugged\?\); the run ends if none has come for 5 s \(audio.stall_timeout_ms\)$"):
        mic.read()
    stream.feed(np.zeros(320))  # the audio came back
    assert mic.read() is not None
    clock.now_ms += 4999.0
    with pytest.raises(SourceReadError):
        mic.read()
    clock.now_ms += 1.0
    with pytest.raises(MicrophoneStallError) as info:
        mic.read()
    message = str(info.value)
    assert isinstance(info.value, RuntimeError) and not isinstance(info.value, SourceReadError)
    assert "\n" not in message and stream.active
    assert message.startswith("microphone 'USB PnP Sound Device': no audio for 5.0 s though PortAudio still reports "
                              "its stream active (audio.stall_timeout_ms: 5000): ")
    assert message.endswith("the process exits, for its service manager to restart it")
    assert mic.stats.read_failures == 2
    mic.close()
    # one that never delivered: counted from the stream's start
    mic = MicrophoneSource(MicrophoneOptions(device="usb", read_timeout_ms=30, stall_timeout_ms=5000))
    clock.now_ms += 5000.0
    with pytest.raises(MicrophoneStallError, match="no audio for 5.0 s"):
        mic.read()
    mic.close()


def test_a_deaf_microphone_without_a_stall_timeout_is_retried_for_ever(portaudio, monkeypatch):
    """``audio.stall_timeout_ms: null``: as before, every read finds no audio and is retried."""
    clock = FakeClock()
    monkeypatch.setattr(microphone_mod, "monotonic_ms", clock)
    mic = MicrophoneSource(MicrophoneOptions(device="usb", read_timeout_ms=30, stall_timeout_ms=None))
    clock.now_ms += 24 * 3600 * 1000.0
    with pytest.raises(SourceReadError, match=r"no audio for 30 ms \(device stalled or unplugged\?\)$"):
        mic.read()
    mic.close()


def test_microphone_unknown_device_lists_available_inputs(portaudio):
    with pytest.raises(RuntimeError, match=r"no input device 'webcam mic'.*\[1\] USB PnP Sound Device"):
        MicrophoneSource(MicrophoneOptions(device="webcam mic"))
    with pytest.raises(RuntimeError, match=r"no input device 0 .*available input devices: \[1\] USB"):
        MicrophoneSource(MicrophoneOptions(device=0))  # an output-only device
    with pytest.raises(RuntimeError, match="no input device 9"):
        MicrophoneSource(MicrophoneOptions(device=9))


def test_microphone_name_of_two_devices_is_one_line_listing_both(monkeypatch):
    """Two identical USB microphones and ``device: usb``: sounddevice's own name matching finds both. The error is
    one line that says so and lists them, not "no input device 'usb'" with sounddevice's multi-line message."""
    twins = [DEVICES[0], *({**DEVICES[1], "index": i, "name": f"USB PnP Sound Device: Audio (hw:{i},0)",
                            "hostapi": 0} for i in (1, 2))]
    fake = FakePortAudio(twins, native_rates={16000})
    fake.install(monkeypatch)
    monkeypatch.setattr(sd, "query_hostapis", lambda index=None: {"name": "ALSA"})

    def query_devices(device=None, kind=None):  # names resolved as sounddevice resolves them
        if isinstance(device, str):
            device = sd._get_device_id(device, kind, raise_on_error=True)
        return FakePortAudio.query_devices(fake, device, kind)

    monkeypatch.setattr(sd, "query_devices", query_devices)
    with pytest.raises(RuntimeError) as info:
        MicrophoneSource(MicrophoneOptions(device="usb"))
    assert str(info.value) == (
        "microphone: device 'usb' matches 2 input devices ([1] USB PnP Sound Device: Audio (hw:1,0), ALSA; "
        "[2] USB PnP Sound Device: Audio (hw:2,0), ALSA); expected one: give its index or more of its name "
        "(audio.device in a config)")
    with MicrophoneSource(MicrophoneOptions(device="hw:2")) as mic:  # more of its name: that one
        assert mic.device_name == "USB PnP Sound Device: Audio (hw:2,0)" and fake.streams[-1].device == "hw:2"


def _sweep(rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * (100 * t + 3500 * t ** 2))).astype(np.float32)  # 100 Hz -> 7.1 kHz


@pytest.mark.parametrize("device_rate", [44100, 48000])
def test_microphone_without_native_16k_resamples_as_one_pass_would(monkeypatch, device_rate):
    fake = FakePortAudio([{**DEVICES[1], "default_samplerate": float(device_rate)}], native_rates={device_rate})
    fake.install(monkeypatch)
    mic = MicrophoneSource(MicrophoneOptions(device=0, chunk_ms=20))
    stream = fake.streams[-1]
    assert stream.samplerate == device_rate and mic.device_rate_hz == device_rate
    signal = _sweep(device_rate, 1.0)
    for block in np.array_split(signal, 37):  # PortAudio blocks unrelated to chunk size
        stream.feed(block)
    chunks = [mic.read() for _ in range(int(1000 // 20))]
    mic.close()
    out = np.concatenate([c.samples for c in chunks])
    assert all(c.sample_rate_hz == RATE for c in chunks) and abs(out.size - RATE) < RATE * 0.02
    np.testing.assert_allclose(out, resample(signal, device_rate, RATE)[:out.size], atol=1e-3)  # no chunk edges
    for a, b in zip(chunks, chunks[1:]):  # contiguous stream time
        assert b.t_ms == pytest.approx(a.t_ms + a.samples.size * 1000 / RATE)


def test_a_hot_microphone_resampled_gives_the_samples_of_its_recording(monkeypatch):
    """Speech clipped at full scale by a 44.1 kHz microphone overshoots past 1.0 when resampled; the chunks (which
    the second opinion hears too) hold what a WAV of it read back holds: clipped to full scale, as read_wav does."""
    fake = FakePortAudio([{**DEVICES[1], "default_samplerate": 44100.0}], native_rates={44100})
    fake.install(monkeypatch)
    mic = MicrophoneSource(MicrophoneOptions(device=0, chunk_ms=20))
    signal = np.clip(8 * _sweep(44100, 0.5), -1.0, 1.0).astype(np.float32)  # clipped: square-ish edges
    fake.streams[-1].feed(signal)
    out = np.concatenate([mic.read().samples for _ in range(20)])
    mic.close()
    assert float(np.abs(resample(signal, 44100, RATE)).max()) > 1.05  # the overshoot the chunks must not hold
    np.testing.assert_allclose(out, np.clip(resample(signal, 44100, RATE), -1, 1)[:out.size], atol=1e-3)


def test_microphone_resampler_restarts_where_audio_resumes_after_a_drop(monkeypatch):
    fake = FakePortAudio(DEVICES, native_rates={48000})
    fake.install(monkeypatch)
    mic = MicrophoneSource(MicrophoneOptions(device=1, chunk_ms=10, buffer_ms=40))  # a 1920-sample ring
    stream = fake.streams[-1]
    stream.feed(np.zeros(960))
    first = mic.read()
    stream.feed(np.ones(4800))  # 100 ms while the loop was busy: 480 + 4800 unread, the oldest 3360 dropped
    later = mic.read()
    assert mic.stats.dropped_samples == 3360
    assert first.t_ms == pytest.approx(later.t_ms - (960 + 4800 - 1920) / 48)  # where the kept audio starts
    mic.close()


def test_microphone_that_opens_but_cannot_start_is_closed_again(portaudio, monkeypatch):
    def busy(self):
        raise sd.PortAudioError("Error starting stream: Device unavailable [PaErrorCode -9985]")

    monkeypatch.setattr(FakeInputStream, "start", busy)
    with pytest.raises(RuntimeError, match="cannot open input device 'USB PnP Sound Device'.*Device unavailable"):
        MicrophoneSource(MicrophoneOptions(device="usb"))
    assert [stream.closed for stream in portaudio.streams] == [True]  # PortAudio does not keep the device


def test_microphone_on_this_machine_without_devices_is_a_clear_runtime_error():
    """Real PortAudio, no mock: this machine has no sound card."""
    if microphone_mod.list_input_devices():
        pytest.skip("this machine has an audio input")
    with pytest.raises(RuntimeError, match="no audio input device found; available input devices: none"):
        MicrophoneSource()


def test_microphone_options_validation():
    with pytest.raises(ValueError, match="buffer_ms"):
        MicrophoneOptions(chunk_ms=100, buffer_ms=150)
    # A ring or a wait past a minute overflowed or failed to allocate only when the device opened.
    for field in ("buffer_ms", "read_timeout_ms"):
        for value in (1e308, 10**30, 60_001.0):
            with pytest.raises(ValueError, match=f"^{field}: expected"):
                MicrophoneOptions(**{field: value})
        MicrophoneOptions(**{field: 60_000.0})
    for bad in (-2, "", "  "):  # a blank name matched every device
        with pytest.raises(ValueError, match="^device: expected"):
            MicrophoneOptions(device=bad)
    with pytest.raises(ValueError, match="sample_rate_hz"):
        MicrophoneOptions(sample_rate_hz=16000.0)
    assert MicrophoneOptions().stall_timeout_ms == 30_000.0 and MicrophoneOptions(stall_timeout_ms=None)
    for bad in (999, 0, -1.0, float("nan"), float("inf"), True, "30s"):
        with pytest.raises(ValueError, match=r"^stall_timeout_ms: expected null \(never\) or a number of ms >= 1000"):
            MicrophoneOptions(stall_timeout_ms=bad)


class RealTimeFeeder:
    """Plays blocks into the stand-in stream's callback as a sound card does, on a stand-in monotonic clock:
    each block arrives when its last sample was captured."""

    def __init__(self, stream: FakeInputStream, clock: FakeClock, rate: int, block: int) -> None:
        self.stream, self.clock, self.rate, self.block = stream, clock, rate, block

    def play(self, ms: float, *, every=None) -> None:
        for _ in range(int(round(ms * self.rate / 1000 / self.block))):
            self.clock.now_ms += self.block * 1000 / self.rate
            self.stream.feed(np.zeros(self.block))
            if every is not None:
                every()


def test_microphone_clock_is_reanchored_after_a_driver_stall(portaudio, monkeypatch):
    """The driver stalls for 2 s, then the audio resumes: the chunks after the stall are on the monotonic clock
    (they lagged it by the stall for ever, and the loop's audio_end_to_event and frame pairing with them)."""
    clock = FakeClock()
    monkeypatch.setattr(microphone_mod, "monotonic_ms", clock)
    mic = MicrophoneSource(MicrophoneOptions(device="usb", chunk_ms=20))
    feeder = RealTimeFeeder(portaudio.streams[-1], clock, RATE, block=160)  # 10 ms blocks
    start_ms = clock.now_ms
    feeder.play(200)
    clock.now_ms += 2000.0  # no callback for 2 s
    resumed_ms = clock.now_ms
    feeder.play(400)
    chunks = [mic.read() for _ in range(30)]
    assert [c.t_ms for c in chunks[:10]] == pytest.approx([start_ms + 20 * i for i in range(10)])
    assert [c.t_ms for c in chunks[10:]] == pytest.approx([resumed_ms + 20 * i for i in range(20)])
    assert chunks[-1].end_t_ms == pytest.approx(clock.now_ms)
    assert mic.stats.clock_resyncs == 1
    mic.close()


def test_microphone_clock_after_a_stall_with_a_reader_that_keeps_up(portaudio, monkeypatch, caplog):
    """Read as the loop does, chunk by chunk as the audio comes: the timestamps never go back, and once the stall
    is confirmed the chunks are on the monotonic clock again; one warning says so."""
    clock = FakeClock()
    monkeypatch.setattr(microphone_mod, "monotonic_ms", clock)
    mic = MicrophoneSource(MicrophoneOptions(device="usb", chunk_ms=20))
    feeder = RealTimeFeeder(portaudio.streams[-1], clock, RATE, block=160)
    chunks = []

    def read_available() -> None:
        while mic._ring.available_samples >= 320:
            chunks.append(mic.read())

    with caplog.at_level(logging.WARNING, logger="edgesense.sources.microphone"):
        feeder.play(300, every=read_available)
        clock.now_ms += 1500.0
        feeder.play(300, every=read_available)
    times = [c.t_ms for c in chunks]
    assert len(chunks) == 30 and all(b >= a + 20 - 1e-6 for a, b in zip(times, times[1:]))
    assert chunks[-1].end_t_ms == pytest.approx(clock.now_ms)
    assert mic.stats.clock_resyncs == 1
    assert [r.getMessage() for r in caplog.records if "re-anchored" in r.getMessage()] == [
        "microphone 'USB PnP Sound Device': audio stalled or was lost in the driver; its clock is re-anchored to "
        "the monotonic clock (1 time(s) so far)"]
    mic.close()


def test_microphone_late_callback_whose_audio_was_buffered_keeps_the_clock(portaudio, monkeypatch):
    """A callback 300 ms late (the thread was not scheduled) whose samples PortAudio kept, delivered back to
    back: no audio was lost, so the timestamps stay contiguous and are not moved."""
    clock = FakeClock()
    monkeypatch.setattr(microphone_mod, "monotonic_ms", clock)
    mic = MicrophoneSource(MicrophoneOptions(device="usb", chunk_ms=20))
    feeder = RealTimeFeeder(portaudio.streams[-1], clock, RATE, block=160)
    feeder.play(200)
    clock.now_ms += 300.0
    for _ in range(30):  # the 300 ms kept in PortAudio's buffer, at once
        portaudio.streams[-1].feed(np.zeros(160))
    feeder.play(500)
    chunks = [mic.read() for _ in range(50)]
    assert [c.t_ms - chunks[0].t_ms for c in chunks] == pytest.approx([20.0 * i for i in range(50)])
    assert chunks[-1].end_t_ms == pytest.approx(clock.now_ms) and mic.stats.clock_resyncs == 0
    mic.close()


def test_microphone_clock_is_reanchored_after_a_stall_when_resampling(monkeypatch):
    fake = FakePortAudio(DEVICES, native_rates={48000})
    fake.install(monkeypatch)
    clock = FakeClock()
    monkeypatch.setattr(microphone_mod, "monotonic_ms", clock)
    mic = MicrophoneSource(MicrophoneOptions(device=1, chunk_ms=20))
    feeder = RealTimeFeeder(fake.streams[-1], clock, 48000, block=480)
    feeder.play(300)
    clock.now_ms += 2000.0
    resumed_ms = clock.now_ms
    feeder.play(600)
    chunks = [mic.read() for _ in range(44)]
    times = [c.t_ms for c in chunks]
    after = [c for c in chunks if c.t_ms >= resumed_ms]
    # The chunk that holds the resumption starts before it, on the clock before the stall.
    assert len(after) == 28 and resumed_ms <= after[0].t_ms < resumed_ms + 20 and times[len(times) - 29] < 1400
    assert clock.now_ms - 25 < chunks[-1].end_t_ms <= clock.now_ms  # within a chunk and the resampler's 2 ms
    assert all(b >= a for a, b in zip(times, times[1:])) and mic.stats.clock_resyncs == 1
    for a, b in zip(after, after[1:]):
        assert b.t_ms == pytest.approx(a.end_t_ms)
    mic.close()
    # Read as the audio comes: never backwards, and on the monotonic clock again after the stall.
    mic = MicrophoneSource(MicrophoneOptions(device=1, chunk_ms=20))
    feeder = RealTimeFeeder(fake.streams[-1], clock, 48000, block=480)
    chunks = []

    def read_available() -> None:
        while mic._ring.available_samples >= mic._chunk_samples:
            chunks.append(mic.read())

    feeder.play(300, every=read_available)
    clock.now_ms += 2000.0
    feeder.play(300, every=read_available)
    mic.close()
    assert all(b.t_ms >= a.end_t_ms - 1e-6 for a, b in zip(chunks, chunks[1:])) and mic.stats.clock_resyncs == 1
    assert clock.now_ms - 25 < chunks[-1].end_t_ms <= clock.now_ms


# --------------------------------------------------------------------------- conditions that last, in the log


class FlakyCapture(SmallCameraCapture):
    """cv2.VideoCapture for a camera index whose reads fail where ``fails(read number)`` says (a USB camera that
    resets now and then, or that opens and gives no frame); each read moves ``clock`` on by a frame at its fps."""

    def __init__(self, clock: FakeClock, fails) -> None:
        super().__init__()
        self.clock, self.fails = clock, fails

    def __call__(self, source, *args):  # cv2.VideoCapture(source): this capture, opened again
        self.opened = True
        return self

    def read(self):
        self.reads += 1
        self.clock.now_ms += 1000 / self.FPS
        return (False, None) if self.fails(self.reads) else (True, self.frame())


def _said(caplog, logger_name: str) -> list[str]:
    return [f"{r.levelname} {r.getMessage()}" for r in caplog.records
            if r.name == logger_name and r.levelno >= logging.INFO]


@pytest.mark.parametrize("scenario", ["resets every 100 reads", "opens and gives no frame"])
def test_a_camera_that_keeps_being_reopened_is_not_lines_at_every_reopen(monkeypatch, caplog, scenario):
    """A camera reset every few seconds wrote three lines at each reset ('5 failed reads in a row; reopening it',
    'opened', 'reopened'), and one that opens but gives no frame two at every reopen, about one a second (thousands
    an hour into journald on the SD card). Now the first open is said, and the reopen lines at most once per
    LOG_INTERVAL_S each, with how many they cover."""
    clock = FakeClock()
    capture = FlakyCapture(clock, (lambda n: n % 100 >= 94) if scenario.startswith("resets") else (lambda n: True))
    monkeypatch.setattr(cv2, "VideoCapture", capture)
    with caplog.at_level(logging.DEBUG, logger="edgesense.sources.camera"):
        camera = CameraSource(CameraOptions(source=0, backoff=BackoffOptions(initial_ms=50.0, max_ms=200.0)),
                              clock_ms=clock)
        while camera.stats.reopens < 20:
            try:
                camera.read()
            except SourceReadError:
                clock.now_ms += 10.0  # time goes on while the camera is closed
        said = _said(caplog, "edgesense.sources.camera")
        assert said[0] == "INFO camera: opened camera index 0 (64x48 @ 15 fps reported)"
        assert len(said) <= 3, said  # opened; at most one reopening warning and one reopened line
        monkeypatch.setattr(pacing, "LOG_INTERVAL_S", 0.0)  # the interval has passed: the next is said
        caplog.clear()
        reopens = camera.stats.reopens
        while camera.stats.reopens == reopens:
            try:
                camera.read()
            except SourceReadError:
                clock.now_ms += 10.0
    assert _said(caplog, "edgesense.sources.camera")[-1] == (
        "INFO camera: camera index 0 reopened (20 times since the last such line, said at most every 0 s)")
    camera.close()


def _reanchoring_said(caplog) -> list[str]:
    """The re-anchoring lines (5 minutes of digital silence are also said to be too quiet, once)."""
    return [line for line in _said(caplog, "edgesense.sources.microphone") if "re-anchored" in line]


def test_a_microphone_whose_driver_keeps_losing_audio_is_not_a_warning_at_every_loss(portaudio, monkeypatch,
                                                                                     caplog):
    """A USB microphone whose driver loses 300 ms every 10 s: one warning at each clock re-anchoring, 360 an hour.
    Now the first is said, later ones at most once per LOG_INTERVAL_S with how many there were."""
    clock = FakeClock()
    monkeypatch.setattr(microphone_mod, "monotonic_ms", clock)
    mic = MicrophoneSource(MicrophoneOptions(device="usb", chunk_ms=20))
    feeder = RealTimeFeeder(portaudio.streams[-1], clock, RATE, block=160)

    def read_available() -> None:
        while mic._ring.available_samples >= 320:
            mic.read()

    def lose_audio(times: int) -> None:
        for _ in range(times):
            feeder.play(10_000, every=read_available)
            clock.now_ms += 300.0  # lost in the driver

    with caplog.at_level(logging.WARNING, logger="edgesense.sources.microphone"):
        lose_audio(30)
        feeder.play(200, every=read_available)
        assert mic.stats.clock_resyncs == 30
        assert _reanchoring_said(caplog) == [
            "WARNING microphone 'USB PnP Sound Device': audio stalled or was lost in the driver; its clock is "
            "re-anchored to the monotonic clock (1 time(s) so far)"]
        monkeypatch.setattr(pacing, "LOG_INTERVAL_S", 0.0)  # the interval has passed: the next is said
        lose_audio(1)
        feeder.play(200, every=read_available)
    assert _reanchoring_said(caplog)[-1] == (
        "WARNING microphone 'USB PnP Sound Device': audio stalled or was lost in the driver; its clock is "
        "re-anchored to the monotonic clock (31 time(s) so far, 30 since the last such line, said at most every 0 s)")
    mic.close()


# --------------------------------------------------------------------------- make-up gain and clipping


#: The largest positive sample of a 16-bit converter, as PortAudio's float32 delivers it (its negative one is -1.0).
INT16_FULL_SCALE = 32767 / 32768


def _quiet_tone(rate: int, seconds: float, amplitude: float = 0.05) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _read_all(mic: MicrophoneSource, seconds: float, chunk_ms: float = 20) -> np.ndarray:
    return np.concatenate([mic.read().samples for _ in range(int(round(seconds * 1000 / chunk_ms)))])


@pytest.mark.parametrize("gain_db", [20.0, -6.0, 40.0])
def test_microphone_gain_db_is_a_make_up_gain_clipped_to_full_scale(portaudio, gain_db):
    """A microphone 20 dB too quiet lost 4.4 points of accuracy that +20 dB of make-up gain gives back: the chunks
    hold the samples times 10 ** (gain_db / 20), clipped to full scale (a word it takes past it)."""
    signal = _quiet_tone(RATE, 0.2)
    signal[1000:1100] = 0.5  # a loud moment: past full scale at +20 dB
    with MicrophoneSource(MicrophoneOptions(device="usb", gain_db=gain_db)) as mic:
        portaudio.streams[-1].feed(signal)
        out = _read_all(mic, 0.2)
    assert out.dtype == np.float32
    expected = np.clip(signal * np.float32(10 ** (gain_db / 20)), -1.0, 1.0)
    np.testing.assert_array_equal(out, expected)
    if gain_db > 0:
        assert float(out.max()) == 1.0
    assert mic.stats.clipped_samples == 0  # the gain's clipping is not the microphone's


def test_microphone_at_0_db_gives_the_samples_as_delivered(portaudio):
    """``gain_db: 0`` (the default) multiplies nothing: the chunks are the delivered samples, bit for bit, even
    values no 16-bit converter gives."""
    signal = _quiet_tone(RATE, 0.1)
    signal[:5] = [1.5, -1.5, 1e-38, -0.0, np.float32(0.1)]
    assert MicrophoneOptions().gain_db == 0.0
    with MicrophoneSource(MicrophoneOptions(device="usb", gain_db=0.0)) as mic:
        portaudio.streams[-1].feed(signal)
        out = _read_all(mic, 0.1)
    assert out.tobytes() == signal.tobytes()


def test_microphone_gain_db_applies_after_resampling_before_the_clip(monkeypatch):
    fake = FakePortAudio([{**DEVICES[1], "default_samplerate": 48000.0}], native_rates={48000})
    fake.install(monkeypatch)
    signal = _sweep(48000, 0.5) / 10  # peaks at 0.05
    with MicrophoneSource(MicrophoneOptions(device=0, gain_db=30.0)) as mic:  # x 31.6: peaks at 1.6, clipped
        fake.streams[-1].feed(signal)
        out = _read_all(mic, 0.4)
    expected = np.clip(resample(signal, 48000, RATE) * 10 ** (30 / 20), -1, 1)[:out.size]
    np.testing.assert_allclose(out, expected, atol=2e-3)
    assert float(np.abs(out).max()) <= 1.0 and np.count_nonzero(np.abs(out) == 1.0) > 0


@pytest.mark.parametrize("bad", [-20.5, 40.5, 1e308, 10**400, float("nan"), float("inf"), True, "6", "6 dB", None])
def test_microphone_gain_db_outside_its_range_is_refused_naming_it(bad):
    with pytest.raises(ValueError, match=r"^gain_db: expected a number of dB in \[-20, 40\], got ") as info:
        MicrophoneOptions(gain_db=bad)
    assert "\n" not in str(info.value)
    for good in (-20, -20.0, 0, 12.5, 40.0):
        assert MicrophoneOptions(gain_db=good).gain_db == good


def _clipped_speech(rate: int, seconds: float, clipped: int) -> np.ndarray:
    """A quiet tone with ``clipped`` samples at full scale as a 16-bit converter delivers them (both signs)."""
    signal = _quiet_tone(rate, seconds)
    at = np.linspace(0, signal.size - 1, clipped).astype(int)
    signal[at[0::2]] = INT16_FULL_SCALE
    signal[at[1::2]] = -1.0
    return signal


CLIPPING_LINE = ("WARNING microphone 'USB PnP Sound Device': {share} % of the last 10 s of audio at full scale as it "
                 "delivered it: it clips (loud words are distorted, and fewer are recognised); lower its capture gain "
                 "(alsamixer: F4 for capture, or amixer) or turn its automatic gain control off")


def _clipping_said(caplog) -> list[str]:
    return [line for line in _said(caplog, "edgesense.sources.microphone") if "full scale" in line]


def test_a_microphone_that_clips_is_counted_and_said_once_per_interval(portaudio, monkeypatch, caplog):
    """Words clipped 12 dB past full scale lost 6.9 points of accuracy, and nothing said so. Now the samples the
    microphone delivered at full scale are counted in its stats, and a window of 10 s with 0.1 % of them or more is
    a warning that says how much and what to do; at most one line per LOG_INTERVAL_S, none per chunk."""
    mic = MicrophoneSource(MicrophoneOptions(device="usb", buffer_ms=20_000))
    stream = portaudio.streams[-1]
    with caplog.at_level(logging.DEBUG, logger="edgesense.sources.microphone"):
        stream.feed(_clipped_speech(RATE, 10.0, clipped=1600))  # 1 % of 10 s
        _read_all(mic, 9.98)
        assert not _clipping_said(caplog)  # the window is not over
        mic.read()  # the window is complete
        assert mic.stats.clipped_samples == 1600
        assert _clipping_said(caplog) == [CLIPPING_LINE.format(share="1.0")]
        for _ in range(3):  # it goes on clipping: no more lines within the interval (debug ones)
            stream.feed(_clipped_speech(RATE, 10.0, clipped=800))
            _read_all(mic, 10.0)
        assert mic.stats.clipped_samples == 1600 + 3 * 800
        assert len(_clipping_said(caplog)) == 1
        monkeypatch.setattr(pacing, "LOG_INTERVAL_S", 0.0)  # the interval has passed: the next is said
        stream.feed(_clipped_speech(RATE, 10.0, clipped=320))
        _read_all(mic, 10.0)
    assert _clipping_said(caplog)[-1] == CLIPPING_LINE.format(share="0.2") + (
        " (4 such windows since the last such line, said at most every 0 s)")
    mic.close()


@pytest.mark.parametrize("clipped", [0, 10, 150])
def test_a_microphone_at_a_good_level_or_with_a_click_is_not_said_to_clip(portaudio, caplog, clipped):
    """Speech at a good level never reaches full scale; a click of the plug (10 samples) or a few ms in 10 s (under
    0.1 %) is counted but not said."""
    mic = MicrophoneSource(MicrophoneOptions(device="usb", buffer_ms=20_000))
    with caplog.at_level(logging.DEBUG, logger="edgesense.sources.microphone"):
        portaudio.streams[-1].feed(_clipped_speech(RATE, 10.0, clipped=clipped))
        _read_all(mic, 10.0)
    assert mic.stats.clipped_samples == clipped
    assert not [r for r in caplog.records if "full scale" in r.getMessage()]
    mic.close()


def test_clipping_is_counted_before_the_make_up_gain_and_the_gains_own_is_said_apart(portaudio, caplog):
    """What the converter clipped is counted as it delivered it (a gain of -20 dB does not hide it); what the make-up
    gain takes to full scale is no clipping of the microphone's, but a warning of its own says to lower the gain."""
    with caplog.at_level(logging.WARNING, logger="edgesense.sources.microphone"):
        mic = MicrophoneSource(MicrophoneOptions(device="usb", buffer_ms=20_000, gain_db=-20.0))
        portaudio.streams[-1].feed(_clipped_speech(RATE, 10.0, clipped=1600))
        _read_all(mic, 10.0)
        mic.close()
        assert mic.stats.clipped_samples == 1600
        assert _said(caplog, "edgesense.sources.microphone")[-1] == CLIPPING_LINE.format(share="1.0")
        caplog.clear()
        mic = MicrophoneSource(MicrophoneOptions(device="usb", buffer_ms=20_000, gain_db=40.0))
        portaudio.streams[-1].feed(_quiet_tone(RATE, 10.0, amplitude=0.02))  # x 100: a tone peaking at 2
        _read_all(mic, 10.0)
        mic.close()
    assert mic.stats.clipped_samples == 0
    said = _said(caplog, "edgesense.sources.microphone")
    assert len(said) == 1 and said[0].startswith(
        "WARNING microphone 'USB PnP Sound Device': 6") and said[0].endswith(
        " % of the last 10 s of audio taken to full scale by audio.gain_db (+40 dB): loud words are clipped; "
        "lower audio.gain_db")


def test_a_resampled_microphone_counts_what_its_converter_clipped(monkeypatch):
    """At 48 kHz the share is of the delivered samples, before resampling (whose overshoot is no converter's)."""
    fake = FakePortAudio([{**DEVICES[1], "default_samplerate": 48000.0}], native_rates={48000})
    fake.install(monkeypatch)
    with MicrophoneSource(MicrophoneOptions(device=0, buffer_ms=20_000)) as mic:
        fake.streams[-1].feed(_clipped_speech(48000, 1.0, clipped=480))
        _read_all(mic, 1.0)  # chunks of 960 delivered samples each
    assert mic.stats.clipped_samples == 480


def _play_and_read(mic: MicrophoneSource, stream: FakeInputStream, signal: np.ndarray, seconds: float) -> None:
    """``seconds`` of ``signal`` (10 s at a time, repeated), read as it comes."""
    for _ in range(int(round(seconds / 10))):
        stream.feed(signal)
        _read_all(mic, 10.0)


def _words_in_a_room(amplitude: float, room_amplitude: float = 0.001, seconds: float = 10.0) -> np.ndarray:
    """Words (a tone at ``amplitude``, a second on) and pauses (a second of the room's noise, -60 dBFS RMS) in turn."""
    signal = _quiet_tone(RATE, seconds, amplitude=amplitude)
    room = np.random.default_rng(0).normal(0.0, room_amplitude, signal.size).astype(np.float32)
    pauses = (np.arange(signal.size) // RATE) % 2 == 1
    signal[pauses] = room[pauses]
    return signal


@pytest.mark.parametrize(("amplitude", "gain_db", "said"), [
    (0.005, 0.0, True),  # words at -49 dBFS: a microphone 20 dB too quiet
    (0.05, 0.0, False),  # -29 dBFS: a good level
    (0.005, 20.0, False),  # too quiet, made up by audio.gain_db: the level is what the model hears
])
def test_a_microphone_too_quiet_is_said_once_after_its_first_minutes(portaudio, monkeypatch, caplog, amplitude,
                                                                      gain_db, said):
    """A microphone 20 dB too quiet lost 4.4 points of accuracy, and nothing said so. Now when no second of the
    first minutes of audio (QUIET_CHECK_S, 5; 1 here) reaches -45 dBFS while something was heard above the room,
    one warning says it may be too quiet and what to do; never again."""
    assert microphone_mod.QUIET_CHECK_S == 300.0
    monkeypatch.setattr(microphone_mod, "QUIET_CHECK_S", 60.0)
    mic = MicrophoneSource(MicrophoneOptions(device="usb", buffer_ms=20_000, gain_db=gain_db))
    stream = portaudio.streams[-1]
    words = _words_in_a_room(amplitude)
    with caplog.at_level(logging.DEBUG, logger="edgesense.sources.microphone"):
        _play_and_read(mic, stream, words, 50.0)
        assert not [line for line in _said(caplog, "edgesense.sources.microphone") if "quiet" in line]
        _play_and_read(mic, stream, words, 20.0)
        lines = [line for line in _said(caplog, "edgesense.sources.microphone") if "quiet" in line]
        assert lines == ([
            f"WARNING microphone 'USB PnP Sound Device': the loudest second of its first 1 min of audio was -49 dBFS, "
            f"11 dB above its quietest (audio.gain_db {gain_db:+g}): if that was someone speaking near it, it is too "
            "quiet (a word said at a metre reaches -30 to -20 dBFS; 20 dB too quiet, fewer words are recognised): "
            "raise its capture gain (alsamixer: F4 for capture, or amixer), or audio.gain_db"] if said else [])
        _play_and_read(mic, stream, words, 60.0)  # said once, never again
        assert [line for line in _said(caplog, "edgesense.sources.microphone") if "quiet" in line] == lines
    mic.close()


def test_a_microphone_in_a_quiet_room_where_nobody_speaks_is_not_said_to_be_too_quiet(portaudio, monkeypatch,
                                                                                    caplog):
    """A device that starts at night in a quiet room (its noise at -60 dBFS, steady: nothing heard above it) was
    warned about at every start, 5 minutes in, however well its gain was set. Only a sound heard above the room that
    stays under -45 dBFS is said; the check goes on until one is heard (here at 3 minutes)."""
    monkeypatch.setattr(microphone_mod, "QUIET_CHECK_S", 60.0)
    mic = MicrophoneSource(MicrophoneOptions(device="usb", buffer_ms=20_000))
    stream = portaudio.streams[-1]
    room = _words_in_a_room(0.001)  # the room alone: its noise, and a tone as loud as it
    with caplog.at_level(logging.DEBUG, logger="edgesense.sources.microphone"):
        _play_and_read(mic, stream, room, 180.0)
        assert not [line for line in _said(caplog, "edgesense.sources.microphone") if "quiet" in line]
        _play_and_read(mic, stream, _words_in_a_room(0.005), 60.0)  # then someone speaks, 20 dB too quiet
    lines = [line for line in _said(caplog, "edgesense.sources.microphone") if "quiet" in line]
    assert len(lines) == 1, lines
    assert "the loudest second of 1 min of its audio from minute 3 on was -49 dBFS" in lines[0], lines
    mic.close()


def test_a_microphone_whose_capture_is_switched_off_is_said_to_deliver_no_sound(portaudio, monkeypatch, caplog):
    """ALSA's capture switch off: the microphone delivers digital silence, which the line says apart."""
    monkeypatch.setattr(microphone_mod, "QUIET_CHECK_S", 60.0)
    mic = MicrophoneSource(MicrophoneOptions(device="usb", buffer_ms=20_000))
    with caplog.at_level(logging.WARNING, logger="edgesense.sources.microphone"):
        _play_and_read(mic, portaudio.streams[-1], np.zeros(RATE * 10, dtype=np.float32), 60.0)
    said = _said(caplog, "edgesense.sources.microphone")
    assert said == ["WARNING microphone 'USB PnP Sound Device': its first 1 min of audio held no sound at all "
                    "(digital silence): its capture may be switched off (alsamixer: space on its capture control)"]
    mic.close()
