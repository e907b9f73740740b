"""Poor camera conditions: dark, over-exposed, blurred, occluded and noisy frames.

The trainer degrades a share of its photos at random so that the scene head learns to lean
on sound when sight is poor; the benchmark degrades the test photos the same way (with a
seeded generator) for its degraded-camera table. Images are uint8 ``(B, H, W, 3)`` RGB at the
model's input size; every function returns a new array.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import cv2
import numpy as np

from edgesense.schema.validate import is_number, require, require_range

__all__ = ["BENCH_DEGRADATIONS", "DEGRADATIONS", "Degradation", "DegradeOptions", "as_images", "degrade",
           "degrade_randomly", "to_uint8"]

Degradation = Literal["dark", "overexposed", "blurred", "occluded", "noisy"]
DEGRADATIONS: tuple[Degradation, ...] = get_args(Degradation)
#: The conditions of the benchmark's degraded-camera table (besides clean photos).
BENCH_DEGRADATIONS: tuple[Degradation, ...] = ("dark", "blurred", "occluded")
_UINT8_MAX = 255.0
_MEAN_GRAY = 0.5 * _UINT8_MAX  # what an occluder is filled with


@dataclass(frozen=True, kw_only=True)
class DegradeOptions:
    """How strong each degradation is; a value is drawn uniformly from each range per image.

    ``dark_gain_range``: brightness factor of a dark frame (a gamma of ``dark_gamma`` first, as a
    camera's auto-exposure giving up). ``overexposed_gain_range``: brightness factor of a
    washed-out frame. ``blur_sigma_fraction_range``: Gaussian blur sigma as a fraction of the
    image width. ``occluded_area_range``: share of the frame hidden by one gray rectangle
    (a hand, a lens cap half on). ``noise_std_range``: sensor noise, in uint8 steps.
    """

    dark_gain_range: tuple[float, float] = (0.08, 0.25)
    dark_gamma: float = 1.5
    overexposed_gain_range: tuple[float, float] = (2.5, 4.0)
    blur_sigma_fraction_range: tuple[float, float] = (0.03, 0.06)
    occluded_area_range: tuple[float, float] = (0.45, 0.7)
    noise_std_range: tuple[float, float] = (15.0, 35.0)

    def __post_init__(self) -> None:
        require_range("dark_gain_range", self.dark_gain_range, 0.0, 1.0)
        require(is_number(self.dark_gamma) and self.dark_gamma >= 1.0, "dark_gamma", "a number >= 1",
                self.dark_gamma)
        require_range("overexposed_gain_range", self.overexposed_gain_range, 1.0, np.inf)
        require_range("blur_sigma_fraction_range", self.blur_sigma_fraction_range, 0.0, 1.0)
        require_range("occluded_area_range", self.occluded_area_range, 0.0, 1.0)
        require_range("noise_std_range", self.noise_std_range, 0.0, _UINT8_MAX)


def as_images(images: np.ndarray) -> np.ndarray:
    """``images`` as an array, checked to be uint8 ``(B, H, W, 3)`` (ValueError otherwise)."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
        raise ValueError(f"images: expected uint8 array (batch, height, width, 3), got {x.dtype} {x.shape}")
    return x


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Pixel values rounded and clipped to uint8."""
    return np.clip(np.rint(x), 0, _UINT8_MAX).astype(np.uint8)


def _dark(x, rng, o: DegradeOptions):
    gain = rng.uniform(*o.dark_gain_range, size=(len(x), 1, 1, 1))
    return to_uint8(_UINT8_MAX * (x / _UINT8_MAX) ** o.dark_gamma * gain)


def _overexposed(x, rng, o: DegradeOptions):
    return to_uint8(x * rng.uniform(*o.overexposed_gain_range, size=(len(x), 1, 1, 1)))


def _blurred(x, rng, o: DegradeOptions):
    sigmas = rng.uniform(*o.blur_sigma_fraction_range, size=len(x)) * x.shape[2]
    return np.stack([cv2.GaussianBlur(image, (0, 0), sigmaX=float(s)) if s > 0 else image
                     for image, s in zip(x, sigmas)])


def _occluded(x, rng, o: DegradeOptions):
    _, h, w, _ = x.shape
    out = x.copy()
    area = rng.uniform(*o.occluded_area_range, size=len(x))
    aspect = rng.uniform(0.5, 2.0, size=len(x))  # width / height of the occluder
    for i in range(len(x)):
        oh = int(round(min(h, np.sqrt(area[i] * h * w / aspect[i]))))
        ow = int(round(min(w, area[i] * h * w / max(oh, 1))))
        y0, x0 = rng.integers(0, h - oh + 1), rng.integers(0, w - ow + 1)
        out[i, y0:y0 + oh, x0:x0 + ow] = _MEAN_GRAY
    return out


def _noisy(x, rng, o: DegradeOptions):
    std = rng.uniform(*o.noise_std_range, size=(len(x), 1, 1, 1))
    return to_uint8(x + rng.normal(size=x.shape) * std)


_APPLY = {"dark": _dark, "overexposed": _overexposed, "blurred": _blurred, "occluded": _occluded, "noisy": _noisy}


def degrade(images: np.ndarray, kind: Degradation, rng: np.random.Generator,
            options: DegradeOptions = DegradeOptions()) -> np.ndarray:
    """Every image degraded the ``kind`` way (strength drawn per image from ``options``)."""
    x = as_images(images)
    require(kind in _APPLY, "kind", f"one of {', '.join(DEGRADATIONS)}", kind)
    if not len(x):
        return x.copy()
    return _APPLY[kind](x, rng, options)


def degrade_randomly(images: np.ndarray, rng: np.random.Generator, *, probability: float,
                     kinds: tuple[Degradation, ...] = DEGRADATIONS,
                     options: DegradeOptions = DegradeOptions()) -> tuple[np.ndarray, np.ndarray]:
    """``(images, degraded)``: each image, with ``probability``, degraded one of ``kinds`` (drawn
    uniformly); ``degraded`` is a bool mask of the images that were."""
    x = as_images(images)
    require(is_number(probability) and 0.0 <= probability <= 1.0, "probability", "a probability in [0, 1]",
            probability)
    require(bool(kinds) and all(k in _APPLY for k in kinds), "kinds", f"some of {', '.join(DEGRADATIONS)}", kinds)
    hit = rng.random(len(x)) < probability
    which = rng.integers(0, len(kinds), size=len(x))
    out = x.copy()
    for k, kind in enumerate(kinds):
        rows = np.flatnonzero(hit & (which == k))
        if rows.size:
            out[rows] = _APPLY[kind](x[rows], rng, options)
    return out, hit
