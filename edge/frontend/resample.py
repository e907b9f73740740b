"""Sample-rate conversion (polyphase, windowed sinc) for WAV files and microphones at other rates."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from edgesense.schema.validate import require

__all__ = ["ResampleOptions", "resample"]


_OUTPUT_CHUNK = 8192  # output samples per vectorised resampling step


@dataclass(frozen=True, kw_only=True)
class ResampleOptions:
    """Windowed-sinc resampler quality: zero crossings per side, Kaiser beta, cutoff as a fraction of Nyquist."""

    zero_crossings: int = 32
    kaiser_beta: float = 8.6
    rolloff: float = 0.945

    def __post_init__(self) -> None:
        require(self.zero_crossings >= 2, "zero_crossings", ">= 2", self.zero_crossings)
        require(self.kaiser_beta >= 0, "kaiser_beta", ">= 0", self.kaiser_beta)
        require(0 < self.rolloff <= 1, "rolloff", "in (0, 1]", self.rolloff)


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


def resample(x: np.ndarray, from_hz: int, to_hz: int, *, options: ResampleOptions = ResampleOptions()) -> np.ndarray:
    """Resample a 1-D signal from ``from_hz`` to ``to_hz`` (band-limited windowed-sinc interpolation).

    Output sample ``n`` is the signal at input time ``n * from_hz / to_hz``; the output has
    ``ceil(len(x) * to_hz / from_hz)`` samples. When downsampling, content above the new
    Nyquist frequency is filtered out. Returns float32.
    """
    for name, value in (("from_hz", from_hz), ("to_hz", to_hz)):
        require(isinstance(value, (int, np.integer)) and value > 0, name, "a positive integer", value)
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"x: expected a 1-D array, got shape {x.shape}")
    if from_hz == to_hz or x.size == 0:
        return x.astype(np.float32)
    g = math.gcd(int(from_hz), int(to_hz))
    up, down = int(to_hz) // g, int(from_hz) // g
    taps, half_width = _polyphase_table(up, down, options)
    n_out = -(-x.size * up // down)
    padded = np.concatenate([np.zeros(half_width), x.astype(np.float64), np.zeros(half_width + 1)])
    offsets = np.arange(-half_width + 1, half_width + 1) + half_width  # into padded
    out = np.empty(n_out, dtype=np.float32)
    for start in range(0, n_out, _OUTPUT_CHUNK):
        n = np.arange(start, min(start + _OUTPUT_CHUNK, n_out), dtype=np.int64)
        base, phase = np.divmod(n * down, up)
        window = padded[base[:, None] + offsets[None, :]]
        out[start:start + n.size] = np.einsum("ij,ij->i", window, taps[phase])
    return out
