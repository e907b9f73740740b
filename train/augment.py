"""Batch data augmentation for audio clips, log-mel features and uint8 RGB images.

Every function is a pure function of (batch, rng, parameters): it returns a new array,
never modifies its input, and gives the same result for the same generator state.
Audio works on float32 ``(B, samples)`` clips in [-1, 1], features on ``(B, frames,
bins)`` log-mel, images on uint8 ``(B, H, W, 3)`` RGB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import cv2
import numpy as np

from edgesense.schema.validate import is_number, require, require_kinds, require_range
from edgesense.train.degrade import as_images, degrade_randomly, to_uint8

__all__ = [
    "AudioAugmentOptions",
    "ImageAugmentOptions",
    "NoisePool",
    "PhotoViews",
    "add_reverb",
    "change_speed",
    "augment_features",
    "augment_images",
    "color_jitter",
    "horizontal_flip",
    "mix_noise",
    "prepare_noise_pool",
    "random_crop",
    "random_gain",
    "shift_rows",
    "spec_augment",
    "warp_frequency",
]

_POWER_FLOOR = 1e-12  # a clip with less mean power than this counts as silent
_GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 luma of RGB
_DECAY_60_DB = 3.0 * np.log(10.0)  # amplitude envelope exp(-this * t / RT60) is down 60 dB at RT60
_REVERB_TAIL_GAIN = 0.05  # reverberant tail's per-tap amplitude relative to the direct path
#: Audio functions draw for the whole batch, then work this many rows at a time: their float64 and index
#: intermediates take several times the clips' own size, which for an example bank of a whole data set (every
#: training clip at once) would not fit in memory. Each row's numbers are the same whatever the pass.
ROWS_PER_PASS = 256


def _check_probability(name: str, value: Any) -> None:
    require(isinstance(value, (int, float)) and 0.0 <= value <= 1.0, name, "a probability in [0, 1]", value)


def _check_reference_dbfs(value: Any) -> None:
    require(is_number(value) and value <= 0, "silent_reference_dbfs", "a finite level <= 0 dBFS", value)


@dataclass(frozen=True, kw_only=True)
class AudioAugmentOptions:
    """Audio augmentation: speed -> room reverberation -> time shift -> gain -> background noise,
    then SpecAugment on features.

    ``speed_range`` resamples a clip by a factor (tempo and pitch together, as ``sox speed``),
    about its centre. Reverberation convolves with a synthetic room impulse response (a direct
    path plus exponentially decaying noise whose 60 dB decay time is drawn from ``rt60_ms_range``).

    ``silent_reference_dbfs``: for clips with no signal (digital silence) the noise level
    is set relative to this RMS level instead of the clip's power. ``mask_value=None``
    fills SpecAugment masks with each example's mean feature value.

    ``warp_probability``: share of feature rows whose mel axis is stretched by a factor drawn from
    ``warp_factor_range`` (:func:`warp_frequency`, a vocal-tract-length perturbation: the same
    words from a longer or shorter vocal tract), before SpecAugment.
    """

    sample_rate_hz: int = 16000
    speed_probability: float = 0.0
    speed_range: tuple[float, float] = (0.9, 1.1)
    reverb_probability: float = 0.0
    rt60_ms_range: tuple[float, float] = (150.0, 600.0)
    noise_probability: float = 0.8
    snr_db_range: tuple[float, float] = (0.0, 20.0)
    silent_reference_dbfs: float = -20.0
    shift_probability: float = 1.0
    max_shift_ms: float = 100.0
    gain_probability: float = 1.0
    gain_db_range: tuple[float, float] = (-6.0, 6.0)
    time_masks: int = 2
    max_time_mask_frames: int = 5
    freq_masks: int = 2
    max_freq_mask_bins: int = 5
    mask_value: float | None = None
    warp_probability: float = 0.0
    warp_factor_range: tuple[float, float] = (0.9, 1.1)

    def __post_init__(self) -> None:
        require_kinds(self)
        require(isinstance(self.sample_rate_hz, int) and self.sample_rate_hz > 0, "sample_rate_hz",
                 "a positive integer", self.sample_rate_hz)
        for name in ("speed_probability", "reverb_probability", "noise_probability", "shift_probability",
                     "gain_probability", "warp_probability"):
            _check_probability(name, getattr(self, name))
        require_range("speed_range", self.speed_range, lo=np.finfo(float).tiny)
        require_range("rt60_ms_range", self.rt60_ms_range, lo=np.finfo(float).tiny)
        require_range("snr_db_range", self.snr_db_range)
        require_range("gain_db_range", self.gain_db_range)
        require_range("warp_factor_range", self.warp_factor_range, lo=np.finfo(float).tiny)
        _check_reference_dbfs(self.silent_reference_dbfs)
        require(is_number(self.max_shift_ms) and self.max_shift_ms >= 0, "max_shift_ms", "a finite number >= 0",
                self.max_shift_ms)
        require(self.mask_value is None or is_number(self.mask_value), "mask_value",
                "a finite number, or null for each example's mean", self.mask_value)
        for name in ("time_masks", "max_time_mask_frames", "freq_masks", "max_freq_mask_bins"):
            value = getattr(self, name)
            require(isinstance(value, int) and value >= 0, name, "an integer >= 0", value)

    @property
    def max_shift_samples(self) -> int:
        return int(round(self.max_shift_ms * self.sample_rate_hz / 1000))


@dataclass(frozen=True, kw_only=True)
class ImageAugmentOptions:
    """Image augmentation: random resized crop -> horizontal flip -> colour jitter -> (with
    ``degrade_probability``) a poor camera (:mod:`edgesense.train.degrade`: dark, over-exposed,
    blurred, occluded or noisy), so that a fusion model learns to lean on sound when sight is poor.

    ``crop_scale_range`` is the crop's side length as a fraction of the image's;
    jitter factors are drawn from ``[1 - delta, 1 + delta]``.
    """

    crop_probability: float = 1.0
    crop_scale_range: tuple[float, float] = (0.75, 1.0)
    flip_probability: float = 0.5
    brightness_delta: float = 0.2
    contrast_delta: float = 0.2
    saturation_delta: float = 0.2
    degrade_probability: float = 0.0

    def __post_init__(self) -> None:
        require_kinds(self)
        _check_probability("crop_probability", self.crop_probability)
        _check_probability("degrade_probability", self.degrade_probability)
        _check_probability("flip_probability", self.flip_probability)
        require_range("crop_scale_range", self.crop_scale_range, lo=np.finfo(float).tiny, hi=1.0)
        for name in ("brightness_delta", "contrast_delta", "saturation_delta"):
            value = getattr(self, name)
            require(isinstance(value, (int, float)) and 0.0 <= value <= 1.0, name, "in [0, 1]", value)


# --------------------------------------------------------------------------- audio


def _clips(clips: np.ndarray) -> np.ndarray:
    x = np.asarray(clips)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"clips: expected float array (batch, samples), got {x.dtype} {x.shape}")
    return x


def _apply_mask(rng: np.random.Generator, batch: int, probability: float) -> np.ndarray:
    return rng.random(batch) < probability


def row_passes(rows: int) -> Iterator[slice]:
    """``rows`` in slices of at most :data:`ROWS_PER_PASS` (see there)."""
    for start in range(0, rows, ROWS_PER_PASS):
        yield slice(start, min(start + ROWS_PER_PASS, rows))


@dataclass(frozen=True)
class NoisePool:
    """Noise recordings concatenated for vectorised slicing: ``starts[i]``/``lengths[i]`` locate
    recording ``i`` in ``samples``; every recording is at least ``clip_samples`` long."""

    samples: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    clip_samples: int

    def windows(self, starts: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        """``(len(starts), clip_samples)`` as ``dtype``: row ``k`` is ``samples[starts[k]:][:clip_samples]``
        (each a contiguous stretch: copied as a slice, with no per-sample index array)."""
        n = self.clip_samples
        out = np.empty((len(starts), n), dtype)
        for k, start in enumerate(np.asarray(starts).tolist()):
            out[k] = self.samples[start:start + n]
        return out


def prepare_noise_pool(recordings: Sequence[np.ndarray], clip_samples: int) -> NoisePool:
    """Concatenate 1-D noise recordings (shorter ones are tiled to one clip)."""
    require(isinstance(clip_samples, (int, np.integer)) and clip_samples > 0, "clip_samples",
             "a positive integer", clip_samples)
    parts: list[np.ndarray] = []
    for i, rec in enumerate(recordings):
        rec = np.asarray(rec, dtype=np.float32)
        if rec.ndim != 1 or rec.size == 0:
            raise ValueError(f"noise_pool[{i}]: expected a non-empty 1-D recording, got shape {rec.shape}")
        if not np.any(rec):
            raise ValueError(f"noise_pool[{i}]: expected a noise recording, got all zeros")
        if rec.size < clip_samples:
            rec = np.tile(rec, -(-clip_samples // rec.size))
        parts.append(rec)
    if not parts:
        raise ValueError("noise_pool: expected at least one recording, got none")
    lengths = np.array([p.size for p in parts], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return NoisePool(samples=np.concatenate(parts), starts=starts, lengths=lengths, clip_samples=int(clip_samples))


def _power(x: np.ndarray) -> np.ndarray:
    return np.mean(np.square(x, dtype=np.float64), axis=-1)


def mix_noise(clips: np.ndarray, noise_pool: NoisePool | Sequence[np.ndarray], rng: np.random.Generator, *,
              snr_db_range: tuple[float, float] = (0.0, 20.0), probability: float = 0.8,
              silent_reference_dbfs: float = -20.0, return_snr_db: bool = False) -> Any:
    """Add a random stretch of a random noise recording to each clip (with ``probability``)
    at an SNR drawn uniformly from ``snr_db_range`` (clip power over noise power).

    Returns the new clips, clipped to [-1, 1] (and the drawn SNR per clip, NaN where no
    noise was added, when ``return_snr_db``).
    """
    x = _clips(clips)
    require_range("snr_db_range", tuple(snr_db_range))
    _check_probability("probability", probability)
    _check_reference_dbfs(silent_reference_dbfs)  # a NaN here made every silent clip NaN
    batch, n = x.shape
    pool = noise_pool if isinstance(noise_pool, NoisePool) else prepare_noise_pool(noise_pool, n)
    if pool.clip_samples != n:
        pool = prepare_noise_pool([pool.samples[s:s + length] for s, length in zip(pool.starts, pool.lengths)], n)
    apply = _apply_mask(rng, batch, probability)
    which = rng.integers(0, pool.lengths.size, size=batch)
    offsets = (rng.random(batch) * (pool.lengths[which] - n + 1)).astype(np.int64)
    snr_db = rng.uniform(snr_db_range[0], snr_db_range[1], size=batch)
    out = np.empty_like(x)
    for rows in row_passes(batch):
        noise = pool.windows(pool.starts[which[rows]] + offsets[rows], np.float64)
        signal_power = _power(x[rows])
        reference = np.where(signal_power > _POWER_FLOOR, signal_power, 10.0 ** (silent_reference_dbfs / 10.0))
        noise_power = np.maximum(_power(noise), _POWER_FLOOR)
        scale = np.sqrt(reference / (noise_power * 10.0 ** (snr_db[rows] / 10.0)))
        scale[~apply[rows]] = 0.0
        # x + scale * noise, clipped, in place in the noise's rows (each step the same rounding)
        noise *= scale[:, None]
        noise += x[rows]
        out[rows] = np.clip(noise, -1.0, 1.0, out=noise)
    if return_snr_db:
        return out, np.where(apply, snr_db, np.nan)
    return out


def shift_rows(clips: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Shift row ``i`` of ``(B, samples)`` by ``shifts[i]`` samples (positive: later), filling with zeros."""
    x = np.asarray(clips)
    shifts = np.asarray(shifts)
    n = x.shape[1]
    out = np.zeros_like(x)
    # A row's shift moves one contiguous stretch: copied as a slice (no per-sample index arrays to build).
    for i, shift in enumerate(np.broadcast_to(shifts[:x.shape[0]], x.shape[:1]).tolist()):
        if 0 <= shift < n:
            out[i, shift:] = x[i, :n - shift]
        elif -n < shift < 0:
            out[i, :n + shift] = x[i, -shift:]
    return out


def random_gain(clips: np.ndarray, rng: np.random.Generator, *, gain_db_range: tuple[float, float] = (-6.0, 6.0),
                probability: float = 1.0) -> np.ndarray:
    """Scale each clip by a gain drawn uniformly in dB from ``gain_db_range``; clip to [-1, 1]."""
    x = _clips(clips)
    require_range("gain_db_range", tuple(gain_db_range))
    _check_probability("probability", probability)
    gain_db = rng.uniform(gain_db_range[0], gain_db_range[1], size=x.shape[0])
    gain_db[~_apply_mask(rng, x.shape[0], probability)] = 0.0
    gain = 10.0 ** (gain_db / 20.0)
    out = np.empty_like(x)
    for rows in row_passes(x.shape[0]):
        scaled = x[rows] * gain[rows, None]
        out[rows] = np.clip(scaled, -1.0, 1.0, out=scaled)
    return out


def change_speed(clips: np.ndarray, rng: np.random.Generator, *, speed_range: tuple[float, float] = (0.9, 1.1),
                 probability: float = 1.0) -> np.ndarray:
    """Resample each clip by a factor drawn uniformly from ``speed_range`` (> 1 is faster and
    higher), about the clip's centre so a centred word stays centred; the clip keeps its length
    (zeros where the source runs out)."""
    x = _clips(clips)
    require_range("speed_range", tuple(speed_range), lo=np.finfo(float).tiny)
    _check_probability("probability", probability)
    batch, n = x.shape
    factor = rng.uniform(speed_range[0], speed_range[1], size=batch)
    factor[~_apply_mask(rng, batch, probability)] = 1.0
    out = x.copy()
    rows = np.flatnonzero(factor != 1.0)  # only the rows that change are resampled
    if not rows.size:
        return out
    centre = (n - 1) / 2.0
    for part in row_passes(rows.size):
        src = x[rows[part]]  # C-contiguous: its samples are gathered by flat index (one take, not take_along_axis)
        source = centre + (np.arange(n)[None, :] - centre) * factor[rows[part], None]
        left = np.floor(source).astype(np.int64)
        frac = (source - left).astype(x.dtype)
        valid = (source >= 0) & (source <= n - 1)
        row_start = np.arange(src.shape[0], dtype=np.int64)[:, None] * n
        lo = np.take(src, np.clip(left, 0, n - 1) + row_start)
        left += 1
        hi = np.take(src, np.clip(left, 0, n - 1, out=left) + row_start)
        # lo + frac * (hi - lo), in place (each step the same rounding)
        hi -= lo
        hi *= frac
        hi += lo
        hi[~valid] = 0
        out[rows[part]] = hi
    return out


def add_reverb(clips: np.ndarray, rng: np.random.Generator, *, sample_rate_hz: int = 16000,
               rt60_ms_range: tuple[float, float] = (150.0, 600.0), probability: float = 1.0) -> np.ndarray:
    """Convolve each clip with a synthetic room impulse response: a unit direct path followed
    by Gaussian noise decaying 60 dB over an RT60 drawn from ``rt60_ms_range``. The result keeps
    the clip's length and RMS level, clipped to [-1, 1]."""
    x = _clips(clips)
    require_range("rt60_ms_range", tuple(rt60_ms_range), lo=np.finfo(float).tiny)
    _check_probability("probability", probability)
    batch, n = x.shape
    apply = _apply_mask(rng, batch, probability)
    if not apply.any():
        return x.copy()
    rt60_s = rng.uniform(rt60_ms_range[0], rt60_ms_range[1], size=batch)[apply] / 1000.0
    taps = int(np.ceil(rt60_ms_range[1] / 1000.0 * sample_rate_hz))
    t = np.arange(taps) / sample_rate_hz
    size = 1 << int(np.ceil(np.log2(n + taps)))
    out = x.copy()
    done = 0  # rooms built so far (rt60_s holds one per applied row)
    for part in row_passes(batch):
        # drawn for every row (the same random stream, a pass at a time), used for some
        tail = rng.standard_normal((part.stop - part.start, taps))[apply[part]]
        rows = part.start + np.flatnonzero(apply[part])
        if not rows.size:
            continue
        # only the rows that get a room are built and convolved
        # tail * exp(-decay * t / rt60) * gain, in place (each step the same rounding)
        rir = np.exp(-_DECAY_60_DB * t[None, :] / rt60_s[done:done + rows.size, None])
        rir *= tail
        rir *= _REVERB_TAIL_GAIN
        done += rows.size
        rir[:, 0] = 1.0
        dry = x[rows]
        wet = np.fft.irfft(np.fft.rfft(dry, size, axis=1) * np.fft.rfft(rir, size, axis=1), size, axis=1)[:, :n]
        dry_rms, wet_rms = np.sqrt(_power(dry)), np.sqrt(np.maximum(_power(wet), _POWER_FLOOR))
        wet *= (dry_rms / wet_rms)[:, None]
        out[rows] = np.clip(wet, -1.0, 1.0, out=wet)
    return out


def _band_mask(rng: np.random.Generator, batch: int, length: int, count: int, max_width: int) -> np.ndarray:
    """(batch, length) bool: ``count`` bands per row, widths uniform in [0, max_width]."""
    mask = np.zeros((batch, length), dtype=bool)
    if count == 0 or max_width == 0 or length == 0:
        return mask
    widths = rng.integers(0, min(max_width, length) + 1, size=(batch, count))
    starts = (rng.random((batch, count)) * (length - widths + 1)).astype(np.int64)
    pos = np.arange(length)[None, None, :]
    return np.any((pos >= starts[..., None]) & (pos < (starts + widths)[..., None]), axis=1)


def _as_features(features: np.ndarray) -> np.ndarray:
    """``features`` as a float ``(batch, frames, bins)`` array; ValueError otherwise."""
    f = np.asarray(features)
    if f.ndim != 3 or not np.issubdtype(f.dtype, np.floating):
        raise ValueError(f"features: expected float array (batch, frames, bins), got {f.dtype} {f.shape}")
    return f


def spec_augment(features: np.ndarray, rng: np.random.Generator, *, time_masks: int = 2,
                 max_time_mask_frames: int = 5, freq_masks: int = 2, max_freq_mask_bins: int = 5,
                 mask_value: float | None = None) -> np.ndarray:
    """SpecAugment on ``(B, frames, bins)`` features: blank ``time_masks`` bands of frames and
    ``freq_masks`` bands of bins per example (each width uniform in [0, max]); masked cells
    become ``mask_value`` (default: the example's mean)."""
    f = _as_features(features)
    for name, value in (("time_masks", time_masks), ("max_time_mask_frames", max_time_mask_frames),
                        ("freq_masks", freq_masks), ("max_freq_mask_bins", max_freq_mask_bins)):
        require(isinstance(value, (int, np.integer)) and value >= 0, name, "an integer >= 0", value)
    batch, frames, bins = f.shape
    time_mask = _band_mask(rng, batch, frames, time_masks, max_time_mask_frames)
    freq_mask = _band_mask(rng, batch, bins, freq_masks, max_freq_mask_bins)
    masked = time_mask[:, :, None] | freq_mask[:, None, :]
    fill = f.mean(axis=(1, 2), keepdims=True) if mask_value is None else np.full((batch, 1, 1), mask_value)
    return np.where(masked, fill, f).astype(f.dtype)


def warp_frequency(features: np.ndarray, rng: np.random.Generator, *, probability: float,
                   factor_range: tuple[float, float] = (0.9, 1.1)) -> np.ndarray:
    """Stretch the bin axis of ``(B, frames, bins)`` features about bin 0 by a factor drawn uniformly
    from ``factor_range`` for a ``probability`` share of the rows (linear interpolation between bins;
    a factor above 1 moves the spectrum up, as a shorter vocal tract does; the top bin is repeated
    where a factor below 1 runs out of bins). The other rows are returned as they are."""
    f = _as_features(features)
    _check_probability("probability", probability)
    require_range("factor_range", tuple(factor_range), lo=np.finfo(float).tiny)
    rows = np.flatnonzero(_apply_mask(rng, f.shape[0], probability))
    out = f.copy()
    if not rows.size:
        return out
    bins = f.shape[2]
    factors = rng.uniform(factor_range[0], factor_range[1], size=rows.size)
    source = np.clip(np.arange(bins)[None, :] / factors[:, None], 0.0, bins - 1)  # (rows, bins)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, bins - 1)
    frac = (source - low)[:, None, :]
    picked = f[rows]
    below = np.take_along_axis(picked, np.broadcast_to(low[:, None, :], picked.shape), axis=2)
    above = np.take_along_axis(picked, np.broadcast_to(high[:, None, :], picked.shape), axis=2)
    out[rows] = (below * (1.0 - frac) + above * frac).astype(f.dtype)
    return out


def augment_features(features: np.ndarray, rng: np.random.Generator,
                     options: AudioAugmentOptions = AudioAugmentOptions()) -> np.ndarray:
    """The mel-axis warp (when ``options.warp_probability`` > 0), then SpecAugment with ``options``'
    mask counts and widths."""
    if options.warp_probability > 0:
        features = warp_frequency(features, rng, probability=options.warp_probability,
                                  factor_range=options.warp_factor_range)
    return spec_augment(features, rng, time_masks=options.time_masks,
                        max_time_mask_frames=options.max_time_mask_frames, freq_masks=options.freq_masks,
                        max_freq_mask_bins=options.max_freq_mask_bins, mask_value=options.mask_value)


# --------------------------------------------------------------------------- images


def random_crop(images: np.ndarray, rng: np.random.Generator, *, scale_range: tuple[float, float] = (0.75, 1.0),
                probability: float = 1.0) -> np.ndarray:
    """Crop a random aspect-preserving window (side = scale * size) and resize it back."""
    x = as_images(images)
    require_range("scale_range", tuple(scale_range), lo=np.finfo(float).tiny, hi=1.0)
    _check_probability("probability", probability)
    batch, h, w, _ = x.shape
    scale = rng.uniform(scale_range[0], scale_range[1], size=batch)
    apply = _apply_mask(rng, batch, probability)
    fy, fx = rng.random(batch), rng.random(batch)
    out = x.copy()
    for i in np.flatnonzero(apply):
        ch, cw = max(1, int(round(h * scale[i]))), max(1, int(round(w * scale[i])))
        if ch == h and cw == w:
            continue
        y0, x0 = int(fy[i] * (h - ch + 1)), int(fx[i] * (w - cw + 1))
        out[i] = cv2.resize(x[i, y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=cv2.INTER_LINEAR)
    return out


def horizontal_flip(images: np.ndarray, rng: np.random.Generator, *, probability: float = 0.5) -> np.ndarray:
    """Mirror each image left-right with ``probability``."""
    x = as_images(images)
    _check_probability("probability", probability)
    flip = _apply_mask(rng, x.shape[0], probability)
    out = x.copy()
    if not x.size:
        return out
    for i in np.flatnonzero(flip):  # OpenCV's mirror moves the same bytes several times faster than a reversed view
        out[i] = cv2.flip(np.ascontiguousarray(x[i]), 1)
    return out


def color_jitter(images: np.ndarray, rng: np.random.Generator, *, brightness_delta: float = 0.2,
                 contrast_delta: float = 0.2, saturation_delta: float = 0.2) -> np.ndarray:
    """Random brightness (scale), contrast (about the mean gray) and saturation (about each
    pixel's gray), factors uniform in ``[1 - delta, 1 + delta]``; rounded back to uint8."""
    x = as_images(images)
    batch = x.shape[0]
    shape = (batch, 1, 1, 1)
    brightness = rng.uniform(1 - brightness_delta, 1 + brightness_delta, size=shape).astype(np.float32)
    contrast = rng.uniform(1 - contrast_delta, 1 + contrast_delta, size=shape).astype(np.float32)
    saturation = rng.uniform(1 - saturation_delta, 1 + saturation_delta, size=shape).astype(np.float32)
    # Each step in place, in float32 as written: f = x * brightness; f = (f - mean_gray) * contrast + mean_gray;
    # f = (f - gray) * saturation + gray (the same operations in the same order: the same rounding).
    f = x.astype(np.float32)
    f *= brightness
    mean_gray = (f @ _GRAY_WEIGHTS).mean(axis=(1, 2))[:, None, None, None]
    f -= mean_gray
    f *= contrast
    f += mean_gray
    pixel_gray = f @ _GRAY_WEIGHTS
    gray = np.empty_like(f)  # each pixel's gray in all 3 channels: broadcasting it over 3 values a pixel is slow
    for channel in range(f.shape[-1]):
        gray[..., channel] = pixel_gray
    f -= gray
    f *= saturation
    f += gray
    return to_uint8(f)


def augment_images(images: np.ndarray, rng: np.random.Generator,
                   options: ImageAugmentOptions = ImageAugmentOptions()) -> np.ndarray:
    """Random resized crop, horizontal flip, colour jitter and a poor camera, as ``options`` says."""
    x = random_crop(images, rng, scale_range=options.crop_scale_range, probability=options.crop_probability)
    x = horizontal_flip(x, rng, probability=options.flip_probability)
    x = color_jitter(x, rng, brightness_delta=options.brightness_delta, contrast_delta=options.contrast_delta,
                     saturation_delta=options.saturation_delta)
    if options.degrade_probability > 0:
        x, _ = degrade_randomly(x, rng, probability=options.degrade_probability)
    return x


@dataclass(frozen=True, kw_only=True)
class PhotoViews:
    """``count`` fixed augmented views of every photo: view ``v`` of photo ``i`` is
    :func:`augment_images` of that photo alone with a generator seeded by ``(seed, i, v)``, so it
    is the same image whichever batch draws it, and a teacher can score every view once."""

    count: int
    seed: int
    augment: ImageAugmentOptions = ImageAugmentOptions()

    def __post_init__(self) -> None:
        require_kinds(self)
        require(isinstance(self.count, int) and not isinstance(self.count, bool) and self.count >= 1, "count",
                "an integer >= 1", self.count)

    def render(self, images: np.ndarray, photos: np.ndarray, views: np.ndarray) -> np.ndarray:
        """View ``views[k]`` of photo ``photos[k]`` (rows of ``images``, uint8 (N, H, W, 3)), for each k."""
        photos, views = np.asarray(photos), np.asarray(views)
        require(photos.shape == views.shape and photos.ndim == 1, "views", f"one per photo ({photos.shape})",
                views.shape)
        require(views.size == 0 or 0 <= views.min() <= views.max() < self.count, "views",
                f"indices in [0, {self.count})", views)
        return np.stack([augment_images(images[i:i + 1], np.random.default_rng([self.seed, int(i), int(v)]),
                                        self.augment)[0]
                         for i, v in zip(photos, views)]) if photos.size else images[:0].copy()

    def all_photos(self, images: np.ndarray, view: int) -> np.ndarray:
        """View ``view`` of every photo in ``images``."""
        photos = np.arange(len(images))
        return self.render(images, photos, np.full_like(photos, view))
