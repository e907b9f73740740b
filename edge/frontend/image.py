"""Camera frames to the image encoder's input: centre crop, resize, RGB, the model's value range."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import cv2
import numpy as np

from edgesense.frontend.audio import _from_dict
from edgesense.schema.validate import is_int, require

__all__ = ["ImageFrontendOptions", "preprocess_frame"]


@dataclass(frozen=True, kw_only=True)
class ImageFrontendOptions:
    """Parameters of the image frontend: centre crop to the model's aspect, resize, RGB."""

    width_px: int = 96
    height_px: int = 96

    def __post_init__(self) -> None:
        require(is_int(self.width_px) and 8 <= self.width_px <= 1024, "width_px", "an integer in [8, 1024]",
                self.width_px)
        require(is_int(self.height_px) and 8 <= self.height_px <= 1024, "height_px", "an integer in [8, 1024]",
                self.height_px)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.height_px, self.width_px, 3)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ImageFrontendOptions":
        return _from_dict(cls, values, "image_frontend")


# --------------------------------------------------------------------------- image


#: The channel counts a frame may have: grayscale, BGR, BGRA.
FRAME_CHANNELS = (1, 3, 4)


def preprocess_frame(frame_bgr: np.ndarray, options: ImageFrontendOptions = ImageFrontendOptions()) -> np.ndarray:
    """A BGR uint8 frame (H, W, 3) -> RGB float32 (height_px, width_px, 3) in [0, 255].

    The largest centred crop with the model's aspect ratio is taken, then resized
    with area interpolation (bilinear when enlarging). Grayscale ((H, W) or (H, W, 1))
    and BGRA frames are accepted and converted.
    """
    frame = np.asarray(frame_bgr)
    # Checked before OpenCV sees it: cvtColor raises its own error on other dtypes and on empty frames.
    if frame.dtype != np.uint8:
        raise ValueError(f"frame: expected dtype uint8, got {frame.dtype}")
    if (frame.ndim not in (2, 3) or frame.shape[0] < 1 or frame.shape[1] < 1
            or (frame.ndim == 3 and frame.shape[2] not in FRAME_CHANNELS)):
        raise ValueError(f"frame: expected an image of shape (H, W) or (H, W, C) with C in {FRAME_CHANNELS}, "
                         f"got {frame.shape}")
    if frame.ndim == 3 and frame.shape[2] == 1:  # grayscale with its channel axis kept
        frame = frame[:, :, 0]
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    elif frame.shape[2] == 4:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    h, w = frame.shape[:2]
    target_aspect = options.width_px / options.height_px
    if w / h > target_aspect:
        crop_w, crop_h = max(1, int(round(h * target_aspect))), h
    else:
        crop_w, crop_h = w, max(1, int(round(w / target_aspect)))
    y0, x0 = (h - crop_h) // 2, (w - crop_w) // 2
    crop = frame[y0:y0 + crop_h, x0:x0 + crop_w]
    shrinking = crop_w >= options.width_px and crop_h >= options.height_px
    resized = cv2.resize(crop, (options.width_px, options.height_px),
                         interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    rgb = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
    return rgb.astype(np.float32)
