"""Sample-rate conversion (polyphase, windowed sinc) for WAV files and microphones at other rates.

:func:`resample` converts a whole signal; :class:`StreamingResampler` converts one that arrives in
chunks (a live microphone at 44.1 or 48 kHz) and gives the same samples as :func:`resample` on the
whole signal, whatever the chunk sizes: each output sample is computed once all the input it
needs has arrived (``lookahead_samples`` of input), so there are no chunk edges.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from edgesense.schema.validate import is_int, is_number, require

__all__ = ["ResampleOptions", "StreamingResampler", "resample"]


_OUTPUT_CHUNK = 8192  # output samples per vectorised resampling step
#: The most zero crossings per side a filter takes: its taps grow with them (an infinite count cannot be built).
MAX_ZERO_CROSSINGS = 1024


@dataclass(frozen=True, kw_only=True)
class ResampleOptions:
    """Windowed-sinc resampler quality: zero crossings per side, Kaiser beta, cutoff as a fraction of Nyquist."""

    zero_crossings: int = 32
    kaiser_beta: float = 8.6
    rolloff: float = 0.945

    def __post_init__(self) -> None:
        require(is_int(self.zero_crossings) and 2 <= self.zero_crossings <= MAX_ZERO_CROSSINGS, "zero_crossings",
                f"an integer in [2, {MAX_ZERO_CROSSINGS}]", self.zero_crossings)
        require(is_number(self.kaiser_beta) and self.kaiser_beta >= 0, "kaiser_beta", "a number >= 0",
                self.kaiser_beta)
        require(is_number(self.rolloff) and 0 < self.rolloff <= 1, "rolloff", "a number in (0, 1]", self.rolloff)


# --------------------------------------------------------------------------- resampling


@functools.lru_cache(maxsize=16)
def _polyphase_table(up: int, down: int, options: ResampleOptions) -> tuple[np.ndarray, int]:
    """Filter taps, shape (up, 2 * half_width): row p holds the weights for output phase p/up."""
    cutoff = min(1.0, up / down) * options.rolloff  # in cycles per input sample, times 2
    half_width = int(math.ceil(options.zero_crossings / cutoff))
    offsets = np.arange(-half_width + 1, half_width + 1, dtype=np.float64)  # input k = base + offset
    phases = np.arange(up, dtype=np.float64)[:, None] / up
    u = phases - offsets[None, :]  # distance from the output instant to each input sample
    window_arg = np.clip(1.0 - (u / half_width) ** 2, 0.0, None)
    window = np.i0(options.kaiser_beta * np.sqrt(window_arg)) / np.i0(options.kaiser_beta)
    taps = cutoff * np.sinc(cutoff * u) * window
    taps /= taps.sum(axis=1, keepdims=True)  # exact unity gain at DC for every phase
    taps.setflags(write=False)
    return taps, half_width


def _check_rates(from_hz: int, to_hz: int) -> tuple[int, int]:
    """(up, down): the reduced ratio to_hz / from_hz."""
    for name, value in (("from_hz", from_hz), ("to_hz", to_hz)):
        require(isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0, name,
                "a positive integer", value)  # True is no rate of 1 Hz
    g = math.gcd(int(from_hz), int(to_hz))
    return int(to_hz) // g, int(from_hz) // g


def _outputs(padded: np.ndarray, padded_start: int, n_start: int, n_stop: int, up: int, down: int,
             taps: np.ndarray, half_width: int) -> np.ndarray:
    """Output samples ``n_start .. n_stop - 1`` from ``padded``, the input from index ``padded_start``
    on (it must hold every input sample those outputs need)."""
    offsets = np.arange(-half_width + 1, half_width + 1) - padded_start
    out = np.empty(n_stop - n_start, dtype=np.float32)
    for start in range(n_start, n_stop, _OUTPUT_CHUNK):
        n = np.arange(start, min(start + _OUTPUT_CHUNK, n_stop), dtype=np.int64)
        base, phase = np.divmod(n * down, up)
        window = padded[base[:, None] + offsets[None, :]]
        out[start - n_start:start - n_start + n.size] = np.einsum("ij,ij->i", window, taps[phase])
    return out


def resample(x: np.ndarray, from_hz: int, to_hz: int, *, options: ResampleOptions = ResampleOptions()) -> np.ndarray:
    """Resample a 1-D signal from ``from_hz`` to ``to_hz`` (band-limited windowed-sinc interpolation).

    Output sample ``n`` is the signal at input time ``n * from_hz / to_hz``; the output has
    ``ceil(len(x) * to_hz / from_hz)`` samples. When downsampling, content above the new
    Nyquist frequency is filtered out. Returns float32.
    """
    up, down = _check_rates(from_hz, to_hz)
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"x: expected a 1-D array, got shape {x.shape}")
    if from_hz == to_hz or x.size == 0:
        return x.astype(np.float32)
    taps, half_width = _polyphase_table(up, down, options)
    n_out = -(-x.size * up // down)
    padded = np.concatenate([np.zeros(half_width), x.astype(np.float64), np.zeros(half_width + 1)])
    return _outputs(padded, -half_width, 0, n_out, up, down, taps, half_width)


class StreamingResampler:
    """:func:`resample` for a signal that arrives in chunks.

    :meth:`push` returns every output sample whose input has fully arrived; the outputs of all
    pushes followed by :meth:`flush` equal ``resample(concatenated input)``. Output sample ``n``
    is the signal at input time ``n * from_hz / to_hz``, so ``samples_out`` before a push gives
    the stream position of the samples it returns. A live source never flushes: its output lags
    its input by ``lookahead_samples`` input samples (about 2 ms from 48 kHz).
    """

    def __init__(self, from_hz: int, to_hz: int, *, options: ResampleOptions = ResampleOptions()) -> None:
        self.up, self.down = _check_rates(from_hz, to_hz)
        self.from_hz, self.to_hz = int(from_hz), int(to_hz)
        self._taps, self._half_width = _polyphase_table(self.up, self.down, options)
        self._buffer = np.zeros(self._half_width, dtype=np.float64)  # input from index _buffer_start on
        self._buffer_start = -self._half_width
        self.samples_in = 0
        self.samples_out = 0
        self._flushed = False

    @property
    def lookahead_samples(self) -> int:
        """Input samples an output sample needs after its own instant."""
        return self._half_width if self.from_hz != self.to_hz else 0

    def _emit(self, n_stop: int) -> np.ndarray:
        out = _outputs(self._buffer, self._buffer_start, self.samples_out, n_stop, self.up, self.down, self._taps,
                       self._half_width) if n_stop > self.samples_out else np.zeros(0, np.float32)
        self.samples_out = max(self.samples_out, n_stop)
        keep_from = self.samples_out * self.down // self.up - self._half_width + 1  # the next output's first input
        drop = max(0, keep_from - self._buffer_start)
        self._buffer = self._buffer[drop:]
        self._buffer_start += drop
        return out

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Add input samples; returns the output samples now complete (float32, maybe none)."""
        if self._flushed:
            raise ValueError("push: the resampler was flushed; make a new one")
        x = np.asarray(chunk)
        if x.ndim != 1:
            raise ValueError(f"chunk: expected a 1-D array, got shape {x.shape}")
        if self.from_hz == self.to_hz:
            self.samples_in += x.size
            self.samples_out += x.size
            return x.astype(np.float32)
        self._buffer = np.concatenate([self._buffer, x.astype(np.float64)])
        self.samples_in += x.size
        # Output n needs input up to floor(n * down / up) + half_width: every n with n * down < (last_input + 1) * up.
        last_input = self.samples_in - 1 - self._half_width
        n_stop = ((last_input + 1) * self.up - 1) // self.down + 1 if last_input >= 0 else 0
        return self._emit(n_stop)

    def flush(self) -> np.ndarray:
        """The last output samples (the input ends: zeros after it, as :func:`resample` assumes)."""
        if self._flushed or self.from_hz == self.to_hz:
            self._flushed = True
            return np.zeros(0, np.float32)
        self._flushed = True
        self._buffer = np.concatenate([self._buffer, np.zeros(self._half_width + 1)])
        return self._emit(-(-self.samples_in * self.up // self.down))
