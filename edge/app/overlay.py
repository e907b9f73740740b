"""The demo window's overlay: scene, last command, audio level and per-stage latency drawn on a frame."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import cv2
import numpy as np

from edgesense.schema.validate import require

__all__ = ["OverlayOptions", "OverlayView", "draw_overlay", "overlay_regions"]


BGR_WHITE = (255, 255, 255)
BGR_BLACK = (0, 0, 0)
BGR_GREEN = (60, 200, 60)
BGR_AMBER = (0, 190, 255)
BGR_RED = (40, 40, 230)
BGR_FLASH_A = (40, 160, 40)
BGR_FLASH_B = (20, 90, 20)
LATENCY_STAGES = ("audio_frontend", "audio_encoder", "image_preprocess", "image_encoder", "fusion")
LEVEL_AMBER_FRACTION = 0.7
LEVEL_RED_FRACTION = 0.9




def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


# --------------------------------------------------------------------------- overlay


@dataclass(frozen=True, kw_only=True)
class OverlayOptions:
    """Look of the overlay. ``command_flash_ms``: how long a command stays on screen,
    blinking every ``blink_period_ms``; the level meter spans ``level_floor_dbfs``..0 dBFS."""

    command_flash_ms: float = 1500.0
    blink_period_ms: float = 250.0
    level_floor_dbfs: float = -80.0
    meter_width_px: int = 14
    margin_px: int = 8
    panel_alpha: float = 0.55
    font_scale: float = 0.55
    line_height_px: int = 20
    banner_height_px: int = 44

    def __post_init__(self) -> None:
        require(_positive(self.command_flash_ms), "command_flash_ms", "a positive number", self.command_flash_ms)
        require(_positive(self.blink_period_ms), "blink_period_ms", "a positive number", self.blink_period_ms)
        require(isinstance(self.level_floor_dbfs, (int, float)) and self.level_floor_dbfs < 0, "level_floor_dbfs",
                 "a negative number", self.level_floor_dbfs)
        for name in ("meter_width_px", "margin_px", "line_height_px", "banner_height_px"):
            value = getattr(self, name)
            require(isinstance(value, int) and value > 0, name, "a positive integer", value)
        require(isinstance(self.panel_alpha, (int, float)) and 0 <= self.panel_alpha <= 1, "panel_alpha",
                 "a number in [0, 1]", self.panel_alpha)
        require(_positive(self.font_scale), "font_scale", "a positive number", self.font_scale)


@dataclass(frozen=True, kw_only=True)
class OverlayView:
    """What the overlay shows (built from :class:`edgesense.loop.pipeline.PipelineState` with :meth:`from_state`)."""

    scene_label: str | None = None
    scene_score: float = 0.0
    command_label: str | None = None
    command_score: float = 0.0
    command_age_ms: float | None = None  #: time since the command; None: no command yet
    stage_ms: Mapping[str, float] = field(default_factory=dict)
    level_dbfs: float | None = None  #: None: no audio

    @classmethod
    def from_state(cls, state: Any) -> "OverlayView":
        command = state.last_command
        return cls(scene_label=state.scene_label, scene_score=state.scene_score,
                   command_label=None if command is None else command.label,
                   command_score=0.0 if command is None else command.score,
                   command_age_ms=state.command_age_ms(), stage_ms=dict(state.stage_ms),
                   level_dbfs=state.level_dbfs)


def overlay_regions(shape: tuple[int, ...], options: OverlayOptions = OverlayOptions()) -> dict[str, tuple[int, int,
                                                                                                          int, int]]:
    """Where each element is drawn, as (x0, y0, x1, y1) pixel boxes, for a frame of ``shape``."""
    h, w = int(shape[0]), int(shape[1])
    m, lh = options.margin_px, options.line_height_px
    meter_x1 = w - m
    meter_x0 = meter_x1 - options.meter_width_px
    panel_w = min(w // 2, 320)
    banner_w = min(w - 4 * m - options.meter_width_px, 360)
    banner_x0 = (w - banner_w) // 2
    stages_h = lh * len(LATENCY_STAGES) + m
    return {
        "scene": (m, m, m + panel_w, m + lh + m),
        "command": (banner_x0, m + lh + 2 * m, banner_x0 + banner_w, m + lh + 2 * m + options.banner_height_px),
        "latency": (m, h - m - stages_h, m + panel_w, h - m),
        "meter": (meter_x0, m, meter_x1, h - m),
    }


def _panel(img: np.ndarray, box: tuple[int, int, int, int], alpha: float) -> None:
    x0, y0, x1, y1 = box
    roi = img[y0:y1, x0:x1]
    roi[:] = (roi.astype(np.float32) * (1 - alpha)).astype(np.uint8)


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour=BGR_WHITE, thickness: int = 1):
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)


def draw_overlay(image: np.ndarray, view: OverlayView, options: OverlayOptions = OverlayOptions()) -> np.ndarray:
    """A copy of the BGR ``image`` with the overlay drawn on it (the input is not modified)."""
    frame = np.asarray(image)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"image: expected a BGR uint8 array (H, W, 3), got shape {frame.shape} dtype {frame.dtype}")
    out = frame.copy()
    regions = overlay_regions(out.shape, options)
    m, lh, scale = options.margin_px, options.line_height_px, options.font_scale

    x0, y0, x1, y1 = regions["scene"]
    _panel(out, regions["scene"], options.panel_alpha)
    scene = "scene: -" if view.scene_label is None else f"scene: {view.scene_label} {view.scene_score:.2f}"
    _text(out, scene, (x0 + m // 2, y1 - m), scale)

    if view.command_label is not None and view.command_age_ms is not None \
            and 0 <= view.command_age_ms < options.command_flash_ms:
        blink = int(view.command_age_ms // options.blink_period_ms) % 2 == 0
        x0, y0, x1, y1 = regions["command"]
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), BGR_FLASH_A if blink else BGR_FLASH_B, -1)
        _text(out, f"{view.command_label.upper()}  {view.command_score:.2f}", (x0 + m, y1 - (y1 - y0) // 3),
              scale * 1.6, BGR_WHITE, 2)

    x0, y0, x1, y1 = regions["latency"]
    _panel(out, regions["latency"], options.panel_alpha)
    for i, stage in enumerate(LATENCY_STAGES):
        value = view.stage_ms.get(stage)
        shown = "-" if value is None else f"{value:6.2f} ms"
        _text(out, f"{stage:<16} {shown}", (x0 + m // 2, y0 + (i + 1) * lh), scale * 0.8)

    x0, y0, x1, y1 = regions["meter"]
    cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), BGR_BLACK, -1)
    if view.level_dbfs is not None:
        floor = options.level_floor_dbfs
        fraction = min(1.0, max(0.0, (view.level_dbfs - floor) / -floor))
        top = y1 - int(round(fraction * (y1 - y0)))
        colour = BGR_RED if fraction >= LEVEL_RED_FRACTION else (
            BGR_AMBER if fraction >= LEVEL_AMBER_FRACTION else BGR_GREEN)
        if top < y1:
            cv2.rectangle(out, (x0 + 1, top), (x1 - 2, y1 - 1), colour, -1)
    cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), BGR_WHITE, 1)
    return out
