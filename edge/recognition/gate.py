"""An energy gate: skip command inference on hops quieter than a threshold (dBFS)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesense.recognition.scores import _check_time
from edgesense.schema.validate import is_number, require

__all__ = ["EnergyGateOptions", "EnergyGate", "rms_dbfs", "speech_span"]

MS_PER_S = 1000.0
ENVELOPE_FRAME_MS = 10.0
#: A clip's spoken part: envelope frames within this many dB of the loudest frame.
SPEECH_SPAN_DB = 25.0
_EPS = 1e-12
#: int16 PCM's full scale: the frontend's (``edgesense.frontend.audio``) and the gate's reading of int16 samples.
INT16_FULL_SCALE = 32768.0
#: The level (dBFS) the gate reads for silence (no energy at all): :class:`EnergyGateOptions`' ``floor_dbfs``.
DEFAULT_FLOOR_DBFS = -120.0


# --------------------------------------------------------------------------- energy gate


def rms_dbfs(samples: Any, floor_dbfs: float = -120.0) -> float:
    """RMS level of float samples in [-1, 1] in dB relative to full scale (a full-scale square is 0 dBFS)."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return floor_dbfs
    rms = math.sqrt(float(np.mean(x * x)))
    return max(floor_dbfs, 20.0 * math.log10(rms)) if rms > 0 else floor_dbfs


def speech_span(clip: np.ndarray, sample_rate_hz: int) -> tuple[int, int]:
    """(first, end) sample of a clip's spoken part: 10 ms envelope frames within 25 dB of the loudest."""
    x = np.asarray(clip, dtype=np.float64)
    frame = max(1, int(round(sample_rate_hz * ENVELOPE_FRAME_MS / MS_PER_S)))
    n = x.size // frame
    if n == 0:
        return 0, x.size
    power = np.mean(x[:n * frame].reshape(n, frame) ** 2, axis=1)
    loud = np.flatnonzero(power >= power.max() * 10 ** (-SPEECH_SPAN_DB / 10) + _EPS)
    if loud.size == 0:
        return 0, x.size
    return int(loud[0] * frame), int(min(x.size, (loud[-1] + 1) * frame))


@dataclass(frozen=True, kw_only=True)
class EnergyGateOptions:
    """Open while the level is at least ``threshold_dbfs`` and for ``hangover_ms`` after.

    ``enabled``: whether the device loop gates command inference at all (the ``vad:`` section of
    a device config); the gate itself ignores it.
    """

    enabled: bool = False
    threshold_dbfs: float = -50.0
    hangover_ms: float = 500.0
    floor_dbfs: float = DEFAULT_FLOOR_DBFS

    def __post_init__(self) -> None:
        require(isinstance(self.enabled, bool), "enabled", "true or false", self.enabled)
        require(is_number(self.floor_dbfs) and self.floor_dbfs < 0, "floor_dbfs", "a negative number",
                 self.floor_dbfs)
        threshold = self.threshold_dbfs
        # A floor at or above a threshold that is a level (<= 0): the floor's fault where one was given (-1 against
        # the default threshold -50), else the threshold's (-130 against the default floor).
        if is_number(threshold) and threshold <= 0 and self.floor_dbfs != DEFAULT_FLOOR_DBFS:
            require(self.floor_dbfs < threshold, "floor_dbfs",
                    f"a negative number below threshold_dbfs ({threshold:g})", self.floor_dbfs)
        require(is_number(threshold) and self.floor_dbfs < threshold <= 0, "threshold_dbfs",
                 f"a number in ({self.floor_dbfs:g}, 0]", threshold)
        require(is_number(self.hangover_ms) and self.hangover_ms >= 0, "hangover_ms", "a number >= 0",
                 self.hangover_ms)


class EnergyGate:
    """A voice-activity gate on signal energy: :meth:`update` says whether to run inference."""

    def __init__(self, options: EnergyGateOptions = EnergyGateOptions()) -> None:
        require(isinstance(options, EnergyGateOptions), "options", "EnergyGateOptions", options)
        self.options = options
        self._last_t_ms: float | None = None
        self._open_until_ms = -math.inf
        self.last_dbfs = options.floor_dbfs
        self.is_open = False

    def reset(self) -> None:
        self._last_t_ms = None
        self._open_until_ms = -math.inf
        self.last_dbfs = self.options.floor_dbfs
        self.is_open = False

    def update(self, samples: Any, t_ms: float) -> bool:
        """Measure the chunk that ends at ``t_ms``; True while speech-level audio (or its hangover) lasts.
        ``samples``: floats in [-1, 1], or int16 PCM (full scale 32768, as the audio frontend reads it)."""
        x = np.asarray(samples)
        require(x.dtype.kind in "fiu", "samples", "an array of audio samples", samples)  # None read as silence
        if x.dtype == np.int16:  # measured as they were, full-scale int16 was +90 dBFS and opened the gate
            x = x.astype(np.float64) / INT16_FULL_SCALE
        t_ms = _check_time(t_ms, self._last_t_ms)
        self._last_t_ms = t_ms
        self.last_dbfs = rms_dbfs(x, self.options.floor_dbfs)
        if self.last_dbfs >= self.options.threshold_dbfs:
            self._open_until_ms = t_ms + self.options.hangover_ms
        self.is_open = t_ms <= self._open_until_ms
        return self.is_open
