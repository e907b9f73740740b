from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesense.sources.ringbuffer import AudioRingBuffer, RingBufferOptions


def ring(capacity: int) -> AudioRingBuffer:
    return AudioRingBuffer(RingBufferOptions(capacity_samples=capacity))


def test_fifo_order_across_wraparound():
    buf = ring(8)
    buf.write(np.arange(6, dtype=np.float32))
    samples, first = buf.read(4, timeout_s=0)
    assert first == 0 and samples.tolist() == [0, 1, 2, 3]
    buf.write(np.arange(6, 12, dtype=np.float32))  # wraps around the end of the array
    samples, first = buf.read(8, timeout_s=0)
    assert first == 4 and samples.tolist() == list(range(4, 12))
    assert buf.dropped_samples == 0 and buf.available_samples == 0


def test_overwrite_oldest_counts_dropped_samples_and_keeps_indices_exact():
    buf = ring(10)
    assert buf.write(np.arange(7, dtype=np.float32)) == 0
    assert buf.write(np.arange(7, 13, dtype=np.float32)) == 3  # 13 written, room for 10
    assert buf.dropped_samples == 3
    samples, first = buf.read(10, timeout_s=0)
    assert first == 3  # the timestamp of the chunk follows the surviving samples
    assert samples.tolist() == list(range(3, 13))


def test_write_larger_than_capacity_keeps_newest():
    buf = ring(4)
    assert buf.write(np.arange(10, dtype=np.float32)) == 6
    samples, first = buf.read(4, timeout_s=0)
    assert first == 6 and samples.tolist() == [6, 7, 8, 9]


def test_read_returns_copy_not_view():
    buf = ring(4)
    buf.write(np.ones(4, dtype=np.float32))
    samples, _ = buf.read(4, timeout_s=0)
    buf.write(np.zeros(4, dtype=np.float32))
    assert samples.tolist() == [1, 1, 1, 1]


def test_read_times_out_with_none_when_not_enough_samples():
    buf = ring(16)
    buf.write(np.zeros(3, dtype=np.float32))
    start = time.monotonic()
    assert buf.read(4, timeout_s=0.05) is None
    assert time.monotonic() - start >= 0.045
    assert buf.available_samples == 3  # a timed-out read consumes nothing


def test_blocking_read_wakes_when_producer_writes():
    buf = ring(64)

    def produce():
        for i in range(4):
            time.sleep(0.01)
            buf.write(np.full(8, i, dtype=np.float32))

    thread = threading.Thread(target=produce)
    thread.start()
    samples, first = buf.read(32, timeout_s=2.0)
    thread.join()
    assert first == 0 and samples.tolist() == [float(i) for i in range(4) for _ in range(8)]


def test_close_wakes_blocked_reader():
    buf = ring(16)
    threading.Timer(0.02, buf.close).start()
    start = time.monotonic()
    assert buf.read(4, timeout_s=5.0) is None
    assert time.monotonic() - start < 2.0
    assert buf.write(np.zeros(2, dtype=np.float32)) == 0 and buf.total_written == 0


@pytest.mark.parametrize("kwargs, field", [
    ({"capacity_samples": 0}, "capacity_samples"),
    ({"capacity_samples": 2.5}, "capacity_samples"),
    ({"capacity_samples": 8, "dtype": "U4"}, "dtype"),
])
def test_invalid_options_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        RingBufferOptions(**kwargs)


def test_invalid_read_size():
    with pytest.raises(ValueError, match="num_samples"):
        ring(4).read(5, timeout_s=0)


@settings(max_examples=60, deadline=None)
@given(capacity=st.integers(1, 32),
       ops=st.lists(st.tuples(st.booleans(), st.integers(1, 40)), min_size=1, max_size=30))
def test_matches_a_reference_deque(capacity, ops):
    """Any interleaving of writes and reads: same samples, same indices, same drop count as a model."""
    buf = ring(capacity)
    model: list[tuple[int, float]] = []  # (absolute index, value)
    written = dropped = 0
    for is_write, n in ops:
        if is_write:
            values = np.arange(written, written + n, dtype=np.float32)
            model.extend((written + i, float(v)) for i, v in enumerate(values))
            written += n
            over = max(0, len(model) - capacity)
            del model[:over]
            dropped += over
            assert buf.write(values) == over
        elif n <= capacity:
            got = buf.read(n, timeout_s=0)
            if len(model) < n:
                assert got is None
            else:
                samples, first = got
                assert first == model[0][0]
                assert samples.tolist() == [v for _, v in model[:n]]
                del model[:n]
    assert buf.dropped_samples == dropped
    assert buf.available_samples == len(model)


def test_peek_returns_held_samples_by_absolute_index_without_consuming():
    buf = ring(8)
    buf.write(np.arange(13, dtype=np.float32))  # holds 5..12, wrapped around the end of the array
    assert buf.peek(5, 8).tolist() == list(range(5, 13))
    assert buf.peek(9, 3).tolist() == [9, 10, 11]
    assert buf.peek(4, 2) is None  # 4 was overwritten
    assert buf.peek(11, 3) is None  # 13 is not written yet
    samples, first = buf.read(8, timeout_s=0)
    assert first == 5 and samples.tolist() == list(range(5, 13))
    assert buf.peek(10, 3).tolist() == [10, 11, 12]  # read samples stay until overwritten
    with pytest.raises(ValueError, match="num_samples"):
        buf.peek(5, 9)


def test_peek_before_the_first_sample_is_none_before_the_buffer_wraps():
    buf = ring(8)
    buf.write(np.array([1, 2, 3], dtype=np.float32))  # the array's end is never written yet
    assert buf.peek(-2, 4) is None
    assert buf.peek(0, 3).tolist() == [1, 2, 3]


@pytest.mark.parametrize("timeout_s", [math.nan, -1.0, True, "1"])
def test_a_read_timeout_that_is_no_number_of_seconds_is_refused_not_waited_for_ever(timeout_s):
    """NaN passed the ``>= 0`` check (it compares false) and the read waited for ever."""
    raised: list[BaseException] = []

    def read() -> None:
        try:
            ring(4).read(2, timeout_s=timeout_s)
        except BaseException as exc:  # noqa: BLE001 - what the read raised is the test's answer
            raised.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=5.0)
    assert not reader.is_alive(), "the read is still waiting"
    assert len(raised) == 1 and isinstance(raised[0], ValueError) and "timeout_s" in str(raised[0])


def test_an_infinite_read_timeout_waits_as_none_does():
    """``inf`` is ``>= 0``, as the check asks, but Condition.wait(inf) raised OverflowError."""
    buf = ring(4)
    threading.Timer(0.05, buf.write, args=(np.ones(2, dtype=np.float32),)).start()
    samples, first = buf.read(2, timeout_s=math.inf)
    assert first == 0 and samples.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("timeout_s", [1e300, 10**400, threading.TIMEOUT_MAX * 2],
                         ids=["1e300", "an-int-of-400-digits", "twice-TIMEOUT_MAX"])
def test_a_read_timeout_longer_than_threading_can_wait_waits_as_none_does(timeout_s):
    """Only ``inf`` waited as None: a finite timeout past ``threading.TIMEOUT_MAX`` (1e300, an int of 400 digits)
    still raised OverflowError, from the deadline's arithmetic or from Condition.wait."""
    buf = ring(4)
    got: list[object] = []

    def read() -> None:
        try:
            got.append(buf.read(2, timeout_s=timeout_s))
        except BaseException as exc:  # noqa: BLE001 - what the read raised is the test's answer
            got.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.05)
    buf.write(np.ones(2, dtype=np.float32))
    reader.join(timeout=5.0)
    assert not reader.is_alive(), "the read is still waiting"
    assert len(got) == 1 and isinstance(got[0], tuple), got
    samples, first = got[0]
    assert first == 0 and samples.tolist() == [1.0, 1.0]
