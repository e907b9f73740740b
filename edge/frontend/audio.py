"""The audio feature frontend shared by training and the device.

16 kHz mono float samples -> log-mel frames, computed identically whether a clip is
given whole (:func:`log_mel_spectrogram`) or in chunks of any size
(:class:`StreamingAudioFrontend`). The image side is :mod:`.image`.

Everything here is pure numpy; ``train/`` imports it, so training and the device
compute the same numbers.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from edgesense.schema.validate import is_int, is_number, require

__all__ = ["AudioFrontendOptions", "StreamingAudioFrontend", "log_mel_batch", "log_mel_spectrogram", "mel_filterbank",
           "fit_clip"]


#: The highest sample rate a frontend takes (professional audio's 384 kHz) and the longest clip it
#: frames (a minute): bounds that keep every count of samples a finite number.
MAX_SAMPLE_RATE_HZ = 384_000
MAX_CLIP_DURATION_MS = 60_000


@dataclass(frozen=True, kw_only=True)
class AudioFrontendOptions:
    """Parameters of the log-mel audio frontend (defaults follow micro_speech)."""

    sample_rate_hz: int = 16000
    window_ms: float = 30.0
    hop_ms: float = 20.0
    num_mel_bins: int = 40
    lower_edge_hz: float = 125.0
    upper_edge_hz: float = 7500.0
    clip_duration_ms: int = 1000
    log_floor: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("sample_rate_hz", "num_mel_bins"):
            require(is_int(getattr(self, name)), name, "an integer", getattr(self, name))
        for name in ("window_ms", "hop_ms", "lower_edge_hz", "upper_edge_hz", "clip_duration_ms", "log_floor"):
            require(is_number(getattr(self, name)), name, "a number", getattr(self, name))
        require(0 < self.sample_rate_hz <= MAX_SAMPLE_RATE_HZ, "sample_rate_hz",
                f"a positive integer up to {MAX_SAMPLE_RATE_HZ}", self.sample_rate_hz)
        require(0 < self.clip_duration_ms <= MAX_CLIP_DURATION_MS, "clip_duration_ms",
                f"a number in (0, {MAX_CLIP_DURATION_MS}]", self.clip_duration_ms)
        require(self.window_ms > 0, "window_ms", "> 0", self.window_ms)
        require(self.clip_duration_ms >= self.window_ms, "clip_duration_ms",
                f">= window_ms={self.window_ms}", self.clip_duration_ms)
        require(0 < self.hop_ms <= self.window_ms, "hop_ms", f"in (0, window_ms={self.window_ms}]", self.hop_ms)
        # Both are whole samples (bounded above, so the products are finite): a window or hop that
        # rounds to none has no frames.
        for name, samples in (("window_ms", self.window_samples), ("hop_ms", self.hop_samples)):
            require(samples >= 1, name, f"at least one sample at {self.sample_rate_hz} Hz", getattr(self, name))
        require(self.num_mel_bins >= 1, "num_mel_bins", ">= 1", self.num_mel_bins)
        nyquist = self.sample_rate_hz / 2
        require(0 <= self.lower_edge_hz < self.upper_edge_hz, "lower_edge_hz",
                 f"in [0, upper_edge_hz={self.upper_edge_hz})", self.lower_edge_hz)
        require(self.upper_edge_hz <= nyquist, "upper_edge_hz", f"<= Nyquist ({nyquist:g} Hz)", self.upper_edge_hz)
        require(self.log_floor > 0, "log_floor", "> 0", self.log_floor)

    @property
    def window_samples(self) -> int:
        return int(round(self.sample_rate_hz * self.window_ms / 1000))

    @property
    def hop_samples(self) -> int:
        return int(round(self.sample_rate_hz * self.hop_ms / 1000))

    @property
    def fft_length(self) -> int:
        return 1 << (self.window_samples - 1).bit_length()

    @property
    def clip_samples(self) -> int:
        return int(round(self.sample_rate_hz * self.clip_duration_ms / 1000))

    @property
    def frames_per_clip(self) -> int:
        return 1 + (self.clip_samples - self.window_samples) // self.hop_samples

    @property
    def feature_shape(self) -> tuple[int, int]:
        """Shape of one clip's features: (frames, mel bins)."""
        return (self.frames_per_clip, self.num_mel_bins)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "AudioFrontendOptions":
        return _from_dict(cls, values, "audio_frontend")


def _from_dict(cls, values: Mapping[str, Any], where: str):
    if not isinstance(values, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}; expected some of {', '.join(sorted(names))}")
    return cls(**dict(values))


# --------------------------------------------------------------------------- audio


def _hz_to_mel(hz: float | np.ndarray) -> np.ndarray:
    return np.asarray(1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0))


@functools.lru_cache(maxsize=8)
def mel_filterbank(options: AudioFrontendOptions) -> np.ndarray:
    """Triangular mel filters, shape (fft_length // 2 + 1, num_mel_bins), float64 (HTK mel scale)."""
    num_bins = options.fft_length // 2 + 1
    bin_hz = np.linspace(0.0, options.sample_rate_hz / 2, num_bins)
    edges = np.linspace(_hz_to_mel(options.lower_edge_hz), _hz_to_mel(options.upper_edge_hz),
                        options.num_mel_bins + 2)
    mel = _hz_to_mel(bin_hz)[:, None]
    lower, centre, upper = edges[:-2][None, :], edges[1:-1][None, :], edges[2:][None, :]
    rising = (mel - lower) / (centre - lower)
    falling = (upper - mel) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0  # never let DC leak into the lowest band
    weights.setflags(write=False)
    return weights


@functools.lru_cache(maxsize=8)
def _window(length: int) -> np.ndarray:
    w = np.hanning(length + 1)[:-1]  # periodic Hann
    w.setflags(write=False)
    return w


def _frames_to_log_mel(frames: np.ndarray, options: AudioFrontendOptions) -> np.ndarray:
    """Frames (n, window_samples) float64 -> log-mel (n, num_mel_bins) float32.

    Each frame is transformed on its own (a loop over rows, not one batched matmul),
    so the result for a frame never depends on how many frames were computed with it.
    """
    out = np.empty((frames.shape[0], options.num_mel_bins), dtype=np.float32)
    if frames.shape[0] == 0:
        return out
    spectra = np.fft.rfft(frames * _window(options.window_samples), n=options.fft_length, axis=-1)
    power = spectra.real ** 2 + spectra.imag ** 2
    filters = mel_filterbank(options)
    for i in range(power.shape[0]):
        out[i] = np.log(power[i] @ filters + options.log_floor)
    return out


def _full_scale(x: np.ndarray) -> np.ndarray:
    """Float samples as float64, clipped to full scale [-1, 1].

    A live microphone resampled from 44.1/48 kHz overshoots full scale where its converter clipped
    (to 1.18 on a clipped tone); the same recording read as a file (:func:`edgesense.frontend.wav.read_wav`,
    what training, ``record``'s pairs and ``--audio`` replays see) is clipped. Clipping here gives both
    the same features.
    """
    return np.clip(x.astype(np.float64, copy=False), -1.0, 1.0)


def _as_samples(samples: np.ndarray, name: str = "samples", *, clip: bool = True) -> np.ndarray:
    """Mono samples as float64 (int16 scaled by 1/32768); floats clipped to full scale unless ``clip`` is False."""
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D mono array, got shape {samples.shape}")
    if samples.dtype == np.int16:
        return samples.astype(np.float64) / 32768.0
    if not np.issubdtype(samples.dtype, np.floating):
        raise ValueError(f"{name}: expected float samples in [-1, 1] or int16, got dtype {samples.dtype}")
    return _full_scale(samples) if clip else samples.astype(np.float64, copy=False)


def log_mel_spectrogram(samples: np.ndarray, options: AudioFrontendOptions = AudioFrontendOptions()) -> np.ndarray:
    """Log-mel frames of a whole signal: shape (frames, num_mel_bins), float32.

    ``samples`` is mono at ``options.sample_rate_hz``: float in [-1, 1] (beyond it clipped) or int16.
    Frame ``i`` covers samples ``[i * hop, i * hop + window)``; a tail shorter than a
    window produces no frame.
    """
    x = _as_samples(samples)
    win, hop = options.window_samples, options.hop_samples
    count = 0 if x.size < win else 1 + (x.size - win) // hop
    if count == 0:
        return np.empty((0, options.num_mel_bins), dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop][:count]
    return _frames_to_log_mel(frames, options)


def log_mel_batch(clips: np.ndarray, options: AudioFrontendOptions = AudioFrontendOptions()) -> np.ndarray:
    """Log-mel frames of many equal-length clips at once: ``(B, samples)`` -> ``(B, frames, bins)``.

    For training (one matrix product for the whole batch); equal to :func:`log_mel_spectrogram`
    of each row up to float rounding (the device computes frame by frame).
    """
    x = np.asarray(clips)
    if x.ndim != 2:
        raise ValueError(f"clips: expected a (batch, samples) array, got shape {x.shape}")
    if x.dtype != np.int16 and not np.issubdtype(x.dtype, np.floating):  # as log_mel_spectrogram: no unscaled PCM
        raise ValueError(f"clips: expected float samples in [-1, 1] or int16, got dtype {x.dtype}")
    win, hop = options.window_samples, options.hop_samples
    count = 0 if x.shape[1] < win else 1 + (x.shape[1] - win) // hop
    if count == 0 or x.shape[0] == 0:
        return np.empty((x.shape[0], count, options.num_mel_bins), dtype=np.float32)
    x = x.astype(np.float64) / 32768.0 if x.dtype == np.int16 else _full_scale(x)
    windows = np.lib.stride_tricks.sliding_window_view(x, win, axis=1)
    frames = windows[:, ::hop][:, :count]
    spectra = np.fft.rfft(frames * _window(win), n=options.fft_length, axis=-1)
    power = spectra.real ** 2 + spectra.imag ** 2
    return np.log(power @ mel_filterbank(options) + options.log_floor).astype(np.float32)


def fit_clip(samples: np.ndarray, options: AudioFrontendOptions = AudioFrontendOptions()) -> np.ndarray:
    """Pad with zeros (centred) or trim (centred) to exactly one clip, float32."""
    x = _as_samples(samples, clip=False).astype(np.float32)
    n = options.clip_samples
    if x.size >= n:
        start = (x.size - n) // 2
        return x[start:start + n].copy()
    out = np.zeros(n, dtype=np.float32)
    start = (n - x.size) // 2
    out[start:start + x.size] = x
    return out


class StreamingAudioFrontend:
    """Incremental log-mel: :meth:`push` any chunk, get the frames it completes.

    Feeding a signal in chunks of any sizes yields exactly the frames that
    :func:`log_mel_spectrogram` gives for the whole signal.
    """

    def __init__(self, options: AudioFrontendOptions = AudioFrontendOptions()) -> None:
        self.options = options
        self._pending = np.empty(0, dtype=np.float64)
        self._frames_emitted = 0

    @property
    def frames_emitted(self) -> int:
        return self._frames_emitted

    def reset(self) -> None:
        self._pending = np.empty(0, dtype=np.float64)
        self._frames_emitted = 0

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Append samples; return the newly completed frames, shape (n, num_mel_bins)."""
        x = _as_samples(chunk, "chunk")
        buffer = np.concatenate([self._pending, x]) if self._pending.size else x
        win, hop = self.options.window_samples, self.options.hop_samples
        count = 0 if buffer.size < win else 1 + (buffer.size - win) // hop
        if count == 0:
            self._pending = buffer.copy()
            return np.empty((0, self.options.num_mel_bins), dtype=np.float32)
        frames = np.lib.stride_tricks.sliding_window_view(buffer, win)[::hop][:count]
        out = _frames_to_log_mel(frames, self.options)
        self._pending = buffer[count * hop:].copy()
        self._frames_emitted += count
        return out
