"""The sources' options refuse, naming the field, the values that passed and then failed in the source itself (an
OverflowError from OpenCV, PortAudio or a backoff's arithmetic, frame times the loop refused, a buffer numpy could
not allocate). tests/test_options_hostile.py puts every hostile kind in every field; these are the failures seen."""

from __future__ import annotations

import numpy as np
import pytest

from edgesense.sources.base import MAX_DEVICE_INDEX, BackoffOptions, ExponentialBackoff
from edgesense.sources.camera import CameraOptions
from edgesense.sources.microphone import MicrophoneOptions
from edgesense.sources.replay import VideoReplayOptions, VideoReplaySource, WavReplayOptions, WavReplaySource
from edgesense.sources.ringbuffer import MAX_CAPACITY_SAMPLES, RingBufferOptions


@pytest.mark.parametrize(("field", "value"), [("multiplier", 10**400), ("max_ms", 10**400), ("max_ms", 1e308)])
def test_a_backoff_that_overflows_or_never_reopens_is_refused(field, value):
    """multiplier 10**400 raised OverflowError at the second failure; max_ms 1e308 never reopened the device."""
    with pytest.raises(ValueError, match=f"^{field}: expected "):
        BackoffOptions(**{field: value})
    ExponentialBackoff(BackoffOptions(multiplier=1e30, max_ms=3_600_000.0)).next_delay_ms()


@pytest.mark.parametrize("source", [MAX_DEVICE_INDEX + 1, 10**30])
def test_a_camera_index_past_a_c_int_is_refused(source):
    """cv2.VideoCapture(2**31) raised cv2.error ("integer won't fit into a C int") from inside the open."""
    with pytest.raises(ValueError, match=r"^source: expected a device index in \[0, 2147483647\]"):
        CameraOptions(source=source)


@pytest.mark.parametrize("device", [MAX_DEVICE_INDEX + 1, 10**30])
def test_a_microphone_index_past_a_c_int_is_refused(device):
    """sounddevice.query_devices(10**30) raised OverflowError, which the source's open did not turn into its error."""
    with pytest.raises(ValueError, match=r"^device: expected null \(the default input\), a device index in "):
        MicrophoneOptions(device=device)


@pytest.mark.parametrize("fps", [5e-324, 1e-300, 10**400])
def test_a_frame_rate_whose_period_is_infinite_is_refused(fps):
    """1000 / 5e-324 ms is infinite: the camera's stall timeout, and a replay's frame times, which the loop refused."""
    for build in (lambda: CameraOptions(fps=fps), lambda: VideoReplayOptions(fps=fps)):
        with pytest.raises(ValueError, match=r"^fps: expected (a number of frames per second|(None or )?a positive)"):
            build()


def test_a_replayed_video_at_the_slowest_rate_has_finite_frame_times(make_video, level_frames):
    path = make_video("v.avi", level_frames(3))
    with VideoReplaySource(path, VideoReplayOptions(fps=1 / 86400)) as source:
        assert [frame.t_ms for frame in source] == [0.0, 86_400_000.0, 172_800_000.0]


@pytest.mark.parametrize(("field", "value"), [("chunk_ms", 1e308), ("chunk_ms", 30_001.0),
                                              ("sample_rate_hz", 10**30), ("sample_rate_hz", 384_001)])
def test_a_wav_replay_chunk_or_rate_past_its_bound_is_refused(make_wav, field, value):
    """chunk_ms 1e308 passed and the replay raised OverflowError (an infinite sample count) opening the file."""
    with pytest.raises(ValueError, match=f"^{field}: expected "):
        WavReplayOptions(**{field: value})
    path = make_wav("a.wav", np.zeros(1600, dtype=np.float32))
    with WavReplaySource(path, WavReplayOptions(chunk_ms=30_000.0)) as source:  # the longest: the whole file
        assert [chunk.samples.size for chunk in source] == [1600]


@pytest.mark.parametrize(("kwargs", "field"), [({"capacity_samples": MAX_CAPACITY_SAMPLES + 1}, "capacity_samples"),
                                               ({"capacity_samples": 10**30}, "capacity_samples"),
                                               ({"capacity_samples": 16, "dtype": None}, "dtype")])
def test_a_ring_buffer_that_cannot_be_allocated_or_has_no_dtype_name_is_refused(kwargs, field):
    """10**30 samples passed and the buffer's allocation said "Maximum allowed dimension exceeded"; dtype None was
    taken as float64."""
    with pytest.raises(ValueError, match=f"^{field}: expected "):
        RingBufferOptions(**kwargs)
