"""A preallocated, thread-safe, overwrite-oldest sample ring buffer.

The audio callback thread :meth:`AudioRingBuffer.write`\\ s into it (a bounded copy,
no allocation, no blocking beyond a short lock) and the device loop
:meth:`AudioRingBuffer.read`\\ s fixed-size chunks out of it, blocking up to a
timeout. When the reader falls behind, the oldest unread samples are overwritten
and counted in :attr:`AudioRingBuffer.dropped_samples`.

Every sample has an absolute index (0 for the first sample ever written), so a
reader can timestamp a chunk exactly even across overwrites: :meth:`read`
returns the absolute index of the chunk's first sample.
"""

from __future__ import annotations

import numbers
import threading
import time
from dataclasses import dataclass

import numpy as np

from edgesense.schema.validate import is_int, require

__all__ = ["AudioRingBuffer", "RingBufferOptions"]

#: The most samples a ring buffer holds: 2**26, 256 MiB of float32 (5.8 minutes at 192 kHz), far above a
#: microphone's longest buffer (a minute at 192 kHz, 11.5 million). A larger one failed only when the buffer was
#: allocated (MemoryError, or numpy's "Maximum allowed dimension exceeded" for 10**30), not naming the option.
MAX_CAPACITY_SAMPLES = 2**26


@dataclass(frozen=True, kw_only=True)
class RingBufferOptions:
    """Size and sample type of an :class:`AudioRingBuffer`."""

    capacity_samples: int
    dtype: str = "float32"

    def __post_init__(self) -> None:
        require(is_int(self.capacity_samples) and 1 <= self.capacity_samples <= MAX_CAPACITY_SAMPLES,
                "capacity_samples", f"an integer in [1, {MAX_CAPACITY_SAMPLES}]", self.capacity_samples)
        kind = ""
        if isinstance(self.dtype, str):  # np.dtype(None) is float64: None is no name
            try:
                kind = np.dtype(self.dtype).kind
            except TypeError:
                pass
        require(kind in ("f", "i"), "dtype", "a numpy float or int dtype name", self.dtype)


class AudioRingBuffer:
    """Single-producer / single-consumer mono sample FIFO of fixed capacity.

    ``write`` never blocks on the reader: if the new samples do not fit, the
    oldest unread ones are dropped (overwrite-oldest) and counted.
    """

    def __init__(self, options: RingBufferOptions) -> None:
        self.options = options
        self._buffer = np.zeros(options.capacity_samples, dtype=np.dtype(options.dtype))
        self._capacity = options.capacity_samples
        self._cond = threading.Condition(threading.Lock())
        self._write_index = 0  # absolute index of the next sample to be written
        self._read_index = 0  # absolute index of the next sample to be read
        self._dropped = 0
        self._closed = False

    # ------------------------------------------------------------------ properties

    @property
    def capacity_samples(self) -> int:
        return self._capacity

    @property
    def available_samples(self) -> int:
        """Unread samples currently held."""
        with self._cond:
            return self._write_index - self._read_index

    @property
    def dropped_samples(self) -> int:
        """Samples overwritten before they were read, since creation."""
        with self._cond:
            return self._dropped

    @property
    def total_written(self) -> int:
        with self._cond:
            return self._write_index

    @property
    def read_index(self) -> int:
        """Absolute index of the next sample :meth:`read` will return."""
        with self._cond:
            return self._read_index

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    # ------------------------------------------------------------------ producer

    def write(self, samples: np.ndarray) -> int:
        """Append ``samples`` (1-D); return how many unread samples this write dropped.

        Safe to call from a real-time audio callback: it copies into the
        preallocated array and allocates nothing for inputs up to the capacity.
        Writes after :meth:`close` are ignored (returns 0).
        """
        x = samples.reshape(-1) if samples.ndim != 1 else samples
        n = x.shape[0]
        with self._cond:
            if self._closed or n == 0:
                return 0
            if n > self._capacity:  # only the newest `capacity` samples can survive
                skipped = n - self._capacity
                x = x[skipped:]
                self._write_index += skipped
                n = self._capacity
            start = self._write_index % self._capacity
            first = min(n, self._capacity - start)
            self._buffer[start:start + first] = x[:first]
            if first < n:
                self._buffer[:n - first] = x[first:]
            self._write_index += n
            dropped = max(0, (self._write_index - self._read_index) - self._capacity)
            if dropped:
                self._read_index += dropped
                self._dropped += dropped
            self._cond.notify_all()
            return dropped

    def close(self) -> None:
        """Wake any blocked reader; later reads return what is left, then ``None``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # ------------------------------------------------------------------ consumer

    def _copy(self, first_index: int, num_samples: int) -> np.ndarray:
        """The held samples ``first_index ..`` as a new array (call with the lock held)."""
        start = first_index % self._capacity
        first = min(num_samples, self._capacity - start)
        out = np.empty(num_samples, dtype=self._buffer.dtype)
        out[:first] = self._buffer[start:start + first]
        if first < num_samples:
            out[first:] = self._buffer[:num_samples - first]
        return out

    def _check_count(self, num_samples: int) -> None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) \
                or not 1 <= num_samples <= self._capacity:
            raise ValueError(f"num_samples: expected an integer in [1, {self._capacity}], got {num_samples!r}")

    def read(self, num_samples: int, timeout_s: float | None = None) -> tuple[np.ndarray, int] | None:
        """Wait until ``num_samples`` are available, then return ``(samples, first_index)``.

        ``samples`` is a new float array (a copy) and ``first_index`` the absolute
        index of its first sample. Returns ``None`` on timeout, or when the
        buffer is closed with fewer than ``num_samples`` left. ``timeout_s``: seconds, ``None`` (or ``inf``,
        or more than ``threading.TIMEOUT_MAX``, 292 years) to wait for as long as it takes.
        """
        self._check_count(num_samples)
        if timeout_s is not None:  # NaN compared false with everything, and waited for ever
            if isinstance(timeout_s, bool) or not isinstance(timeout_s, numbers.Real) or not timeout_s >= 0:
                raise ValueError(f"timeout_s: expected a number >= 0 or None, got {timeout_s!r}")
            if timeout_s > threading.TIMEOUT_MAX:  # inf, 1e300: Condition.wait raises OverflowError past it
                timeout_s = None
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while self._write_index - self._read_index < num_samples:
                if self._closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            first_index = self._read_index
            out = self._copy(first_index, num_samples)
            self._read_index += num_samples
            return out, first_index

    def peek(self, first_index: int, num_samples: int) -> np.ndarray | None:
        """A copy of the samples with absolute indexes ``first_index`` to ``first_index + num_samples - 1``,
        read or not, without moving the read position (a consumer that keeps a sliding history);
        ``None`` unless all of them are held (written, and not yet overwritten by newer ones)."""
        self._check_count(num_samples)
        with self._cond:
            if (first_index < max(0, self._write_index - self._capacity)
                    or first_index + num_samples > self._write_index):
                return None
            return self._copy(first_index, num_samples)

    def clear(self) -> None:
        """Discard unread samples (not counted as dropped)."""
        with self._cond:
            self._read_index = self._write_index
