"""The demo window's overlay: scene, last command, audio level and per-stage latency drawn on a frame.

Top left: the scene the events say (and, dimmed, the smoothed top scene while it differs);
top centre: the last command, flashing; bottom left: the latest per-stage latencies in an
aligned column; right edge: the audio level in dBFS with its scale and, when the energy gate
is on, the gate's threshold (the bar turns grey while the gate is closed).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Any, Mapping

import cv2
import numpy as np

from edgesense.schema.validate import is_int, is_number, is_positive, require

__all__ = ["OverlayOptions", "OverlayView", "draw_overlay", "overlay_regions", "drawable", "fit_text", "put_text"]


BGR_WHITE = (255, 255, 255)
BGR_BLACK = (0, 0, 0)
BGR_GREY = (150, 150, 150)  #: the level bar while the gate is closed
#: Secondary text (the smoothed top scene, the latency title): dimmer than white, yet 5:1 against a panel over a
#: white frame at the default ``panel_alpha`` (the bar's grey on the old 0.55 panel: 1.6:1, gone on a bright scene).
BGR_DIM_TEXT = (205, 205, 205)
BGR_GREEN = (60, 200, 60)
BGR_AMBER = (0, 190, 255)
BGR_RED = (40, 40, 230)
BGR_CYAN = (255, 220, 0)
BGR_FLASH_A = (40, 160, 40)
BGR_FLASH_B = (20, 90, 20)
LATENCY_STAGES = ("audio_frontend", "audio_encoder", "image_preprocess", "image_encoder", "fusion")
LATENCY_TITLE = "latency (ms)"
LEVEL_AMBER_FRACTION = 0.7
LEVEL_RED_FRACTION = 0.9
METER_LABEL = "dBFS"
GATE_LABEL = "gate"
TICK_LENGTH_PX = 4
SMALL_TEXT = 0.7  #: the meter's scale and the latency rows, relative to ``font_scale``
BANNER_TEXT = 1.6  #: the command banner's text, relative to ``font_scale``
BANNER_THICKNESS = 2
FONT = cv2.FONT_HERSHEY_SIMPLEX
ELLIPSIS = "..."  #: what a text cut to fit its panel ends with (the Hershey fonts have ASCII only)


# --------------------------------------------------------------------------- overlay


@dataclass(frozen=True, kw_only=True)
class OverlayOptions:
    """Look of the overlay. ``command_flash_ms``: how long a command stays on screen,
    blinking every ``blink_period_ms``; the level meter spans ``level_floor_dbfs``..0 dBFS
    with a labelled tick every ``level_tick_db``."""

    command_flash_ms: float = 1500.0
    blink_period_ms: float = 250.0
    level_floor_dbfs: float = -80.0
    level_tick_db: float = 20.0
    meter_width_px: int = 14
    meter_scale_width_px: int = 36
    margin_px: int = 8
    panel_alpha: float = 0.7  #: how much a panel darkens the frame behind it (0.7: white text 8:1 on a white frame)
    font_scale: float = 0.55
    line_height_px: int = 20
    banner_height_px: int = 44

    def __post_init__(self) -> None:
        require(is_positive(self.command_flash_ms), "command_flash_ms", "a positive number", self.command_flash_ms)
        require(is_positive(self.blink_period_ms), "blink_period_ms", "a positive number", self.blink_period_ms)
        require(is_number(self.level_floor_dbfs) and self.level_floor_dbfs < 0, "level_floor_dbfs",
                 "a finite negative number", self.level_floor_dbfs)
        require(is_positive(self.level_tick_db), "level_tick_db", "a positive number", self.level_tick_db)
        for name in ("meter_width_px", "meter_scale_width_px", "margin_px", "line_height_px", "banner_height_px"):
            value = getattr(self, name)
            require(is_int(value) and value > 0, name, "a positive integer", value)
        require(is_number(self.panel_alpha) and 0 <= self.panel_alpha <= 1, "panel_alpha",
                 "a number in [0, 1]", self.panel_alpha)
        require(is_positive(self.font_scale), "font_scale", "a positive number", self.font_scale)


@dataclass(frozen=True, kw_only=True)
class OverlayView:
    """What the overlay shows (built from :class:`edgesense.loop.pipeline.PipelineState` with :meth:`from_state`).

    ``scene_label``/``scene_score``: the latest scene *event* (what the events say, after
    hysteresis and hold); ``smoothed_label``/``smoothed_score``: the smoothed top scene right
    now, shown on a second line only while it differs from the event's label.
    """

    scene_label: str | None = None
    scene_score: float = 0.0
    smoothed_label: str | None = None
    smoothed_score: float = 0.0
    command_label: str | None = None
    command_score: float = 0.0
    command_age_ms: float | None = None  #: time since the command; None: no command yet
    stage_ms: Mapping[str, float] = field(default_factory=dict)
    level_dbfs: float | None = None  #: None: no audio
    gate_threshold_dbfs: float | None = None  #: the energy gate's threshold; None: no gate
    gate_open: bool = True

    @classmethod
    def from_state(cls, state: Any) -> "OverlayView":
        command, scene = state.last_command, state.last_scene
        return cls(scene_label=None if scene is None else scene.label,
                   scene_score=0.0 if scene is None else scene.score,
                   smoothed_label=state.scene_label, smoothed_score=state.scene_score,
                   command_label=None if command is None else command.label,
                   command_score=0.0 if command is None else command.score,
                   command_age_ms=state.command_age_ms(), stage_ms=dict(state.stage_ms),
                   level_dbfs=state.level_dbfs, gate_threshold_dbfs=state.gate_threshold_dbfs,
                   gate_open=state.gate_open)


Box = tuple[int, int, int, int]


def overlay_regions(shape: tuple[int, ...], options: OverlayOptions = OverlayOptions()) -> dict[str, Box]:
    """Where each element is drawn, as (x0, y0, x1, y1) pixel boxes, for a frame of ``shape``.

    ``meter`` holds the whole level meter (its ``dBFS`` label, scale and bar); ``meter_bar``
    is the bar inside it, from 0 dBFS (top) to ``level_floor_dbfs`` (bottom).
    """
    h, w = int(shape[0]), int(shape[1])
    m, lh = options.margin_px, options.line_height_px
    meter_x1 = w - m
    bar_x0 = meter_x1 - options.meter_width_px
    meter_x0 = bar_x0 - options.meter_scale_width_px
    panel_w = min(w // 2, 320)
    # The banner: centred on the frame where that leaves a margin before the meter, else moved left (at 320x240 it
    # reached over the meter's scale); ...
    banner_w = max(0, min(meter_x0 - 2 * m, 360))
    banner_x0 = max(m, min((w - banner_w) // 2, meter_x0 - m - banner_w))
    scene_y1 = m + 2 * lh + m
    latency_h = lh * (len(LATENCY_STAGES) + 1) + m
    latency_y0 = h - m - latency_h
    banner_y0 = scene_y1 + m
    # ... and a margin above the latency panel, lower where the frame is short (down to its text's own height and a
    # margin; at 320x240 the latency panel covered its foot)
    (_, text_h), _ = cv2.getTextSize("0", FONT, options.font_scale * BANNER_TEXT, BANNER_THICKNESS)
    room = latency_y0 - m - banner_y0
    banner_h = min(options.banner_height_px, max(text_h + m, room))
    return {
        "scene": (m, m, m + panel_w, scene_y1),
        "command": (banner_x0, banner_y0, banner_x0 + banner_w, banner_y0 + banner_h),
        "latency": (m, latency_y0, m + panel_w, h - m),
        "meter": (meter_x0, m, meter_x1, h - m),
        "meter_bar": (bar_x0, m + lh, meter_x1, h - m),
    }


def _panel(img: np.ndarray, box: Box, alpha: float) -> None:
    x0, y0, x1, y1 = (max(0, v) for v in box)  # a box past the frame's top or left edge (a tiny frame) is clipped,
    roi = img[y0:y1, x0:x1]  # not wrapped round to its bottom or right by a negative index
    roi[:] = (roi.astype(np.float32) * (1 - alpha)).astype(np.uint8)


#: Latin letters that no accent makes (Unicode does not decompose them), as their languages write them in ASCII.
_LATIN_IN_ASCII = str.maketrans({"ß": "ss", "ẞ": "SS", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o",
                                 "Ø": "O", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th",
                                 "Þ": "Th", "ı": "i", "ħ": "h", "Ħ": "H"})


def drawable(text: str) -> str:
    """``text`` in the Hershey fonts' ASCII: accents dropped (``küche`` → ``kuche``, ``café`` → ``cafe``), the
    Latin letters without one spelt out (``straße`` → ``strasse``, ``Ørsted`` → ``Orsted``), each other character
    one ``?`` (OpenCV drew one per UTF-8 byte: ``k??che``)."""
    folded = unicodedata.normalize("NFKD", text).translate(_LATIN_IN_ASCII)
    return "".join(c if c.isascii() else "?" for c in folded if not unicodedata.combining(c))


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour=BGR_WHITE, thickness: int = 1) -> None:
    cv2.putText(img, drawable(text), org, FONT, scale, colour, thickness, cv2.LINE_AA)


def _text_width(text: str, scale: float, thickness: int = 1) -> int:
    (width, _), _ = cv2.getTextSize(drawable(text), FONT, scale, thickness)
    return int(width)


def _fit(text: str, width_px: int, scale: float, thickness: int = 1, *, tail: str = "") -> str:
    """``text + tail``, or with ``text`` cut to its longest start that fits ``width_px`` with ``ELLIPSIS``
    after it (a long place name stays in its panel, its score still shown, instead of running over the
    video and the meter)."""
    if _text_width(text + tail, scale, thickness) <= width_px:
        return text + tail
    for end in range(len(text) - 1, 0, -1):
        shorter = text[:end].rstrip() + ELLIPSIS + tail
        if _text_width(shorter, scale, thickness) <= width_px:
            return shorter
    return ""


def fit_text(text: str, width_px: int, scale: float, thickness: int = 1, *, tail: str = "") -> str:
    """``text + tail`` as it fits ``width_px`` in the overlay's font: ``text`` cut, ending in ``ELLIPSIS``, so that
    ``tail`` (a count, a score) stays whole; "" when not even that fits."""
    return _fit(text, width_px, scale, thickness, tail=tail)


def put_text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour=BGR_WHITE,
             thickness: int = 1) -> None:
    """Draw ``text`` on ``img`` in the overlay's font, as :func:`drawable` (no mark per UTF-8 byte)."""
    _text(img, text, org, scale, colour, thickness)


def _level_y(dbfs: float, box: Box, floor_dbfs: float) -> int:
    """The row of ``dbfs`` on the bar ``box`` (0 dBFS at the top, the floor at the bottom)."""
    _, y0, _, y1 = box
    fraction = min(1.0, max(0.0, (dbfs - floor_dbfs) / -floor_dbfs))
    return y1 - int(round(fraction * (y1 - y0)))


def _draw_scene(out: np.ndarray, view: OverlayView, box: Box, options: OverlayOptions) -> None:
    x0, y0, x1, _ = box
    m, lh, scale = options.margin_px, options.line_height_px, options.font_scale
    width = x1 - x0 - m
    _panel(out, box, options.panel_alpha)
    scene = "scene: -" if view.scene_label is None else _fit(f"scene: {view.scene_label}", width, scale,
                                                              tail=f" {view.scene_score:.2f}")
    _text(out, scene, (x0 + m // 2, y0 + lh), scale)
    if view.smoothed_label is not None and view.smoothed_label != view.scene_label:
        # The smoothed top runs ahead of the events (hysteresis, minimum hold): say so, dimmed.
        smoothed = _fit(f"smoothed top: {view.smoothed_label}", width, scale * SMALL_TEXT,
                        tail=f" {view.smoothed_score:.2f}")
        _text(out, smoothed, (x0 + m // 2, y0 + 2 * lh), scale * SMALL_TEXT, BGR_DIM_TEXT)


def _draw_latency(out: np.ndarray, view: OverlayView, box: Box, options: OverlayOptions) -> None:
    x0, y0, x1, _ = box
    m, lh, scale = options.margin_px, options.line_height_px, options.font_scale * SMALL_TEXT
    _panel(out, box, options.panel_alpha)
    _text(out, LATENCY_TITLE, (x0 + m // 2, y0 + lh), scale, BGR_DIM_TEXT)
    for i, stage in enumerate(LATENCY_STAGES, start=2):
        value = view.stage_ms.get(stage)
        shown = "-" if value is None else f"{value:.2f}"
        y = y0 + i * lh
        _text(out, stage, (x0 + m // 2, y), scale)
        _text(out, shown, (x1 - m // 2 - _text_width(shown, scale), y), scale)  # right-aligned column


def _draw_meter(out: np.ndarray, view: OverlayView, regions: Mapping[str, Box], options: OverlayOptions) -> None:
    mx0, my0, mx1, _ = regions["meter"]
    bar = bx0, by0, bx1, by1 = regions["meter_bar"]
    floor, scale = options.level_floor_dbfs, options.font_scale * SMALL_TEXT
    _panel(out, (mx0, my0, mx1, by0), options.panel_alpha)  # behind the label
    _panel(out, (mx0, by0, bx0, by1), options.panel_alpha)  # behind the scale
    _text(out, METER_LABEL, (mx1 - _text_width(METER_LABEL, scale) - 1, by0 - options.margin_px // 2), scale)
    cv2.rectangle(out, (bx0, by0), (bx1 - 1, by1 - 1), BGR_BLACK, -1)
    if view.level_dbfs is not None:
        top = _level_y(view.level_dbfs, bar, floor)
        fraction = (by1 - top) / max(1, by1 - by0)  # a frame too small for the bar has a bar of no height
        colour = BGR_RED if fraction >= LEVEL_RED_FRACTION else (
            BGR_AMBER if fraction >= LEVEL_AMBER_FRACTION else BGR_GREEN)
        if view.gate_threshold_dbfs is not None and not view.gate_open:
            colour = BGR_GREY  # gated: command inference is skipped
        if top < by1:
            cv2.rectangle(out, (bx0 + 1, top), (bx1 - 2, by1 - 1), colour, -1)
    cv2.rectangle(out, (bx0, by0), (bx1 - 1, by1 - 1), BGR_WHITE, 1)
    gate_y = None if view.gate_threshold_dbfs is None else min(_level_y(view.gate_threshold_dbfs, bar, floor),
                                                                by1 - 1)
    text_h = options.line_height_px // 2
    tick = 0.0
    while tick >= floor:
        y = min(_level_y(tick, bar, floor), by1 - 1)
        cv2.line(out, (bx0 - TICK_LENGTH_PX, y), (bx0 - 1, y), BGR_WHITE, 1)
        if gate_y is None or abs(y - gate_y) > text_h:  # the gate's label wins over a tick's
            label = f"{tick:.0f}"
            baseline = min(max(y + text_h // 2, by0 + text_h), by1 - 1)
            _text(out, label, (bx0 - TICK_LENGTH_PX - 2 - _text_width(label, scale), baseline), scale)
        tick -= options.level_tick_db
    if gate_y is not None:
        cv2.line(out, (mx0 + _text_width(GATE_LABEL, scale) + 2, gate_y), (bx1 - 1, gate_y), BGR_CYAN, 2)
        _text(out, GATE_LABEL, (mx0 + 1, min(max(gate_y + text_h // 2, by0 + text_h), by1 - 1)), scale, BGR_CYAN)


def draw_overlay(image: np.ndarray, view: OverlayView, options: OverlayOptions = OverlayOptions()) -> np.ndarray:
    """A copy of the BGR ``image`` with the overlay drawn on it (the input is not modified)."""
    frame = np.asarray(image)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"image: expected a BGR uint8 array (H, W, 3), got shape {frame.shape} dtype {frame.dtype}")
    out = frame.copy()
    regions = overlay_regions(out.shape, options)
    m, scale = options.margin_px, options.font_scale

    _draw_scene(out, view, regions["scene"], options)
    if view.command_label is not None and view.command_age_ms is not None \
            and 0 <= view.command_age_ms < options.command_flash_ms:
        blink = int(view.command_age_ms // options.blink_period_ms) % 2 == 0
        x0, y0, x1, y1 = regions["command"]
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), BGR_FLASH_A if blink else BGR_FLASH_B, -1)
        big = scale * BANNER_TEXT
        command = _fit(view.command_label.upper(), x1 - x0 - 2 * m, big, BANNER_THICKNESS,
                       tail=f"  {view.command_score:.2f}")
        (_, text_h), _ = cv2.getTextSize("0", FONT, big, BANNER_THICKNESS)
        # the text's cap height centred in the banner (a short frame's banner is little more than that)
        _text(out, command, (x0 + m, y1 - (y1 - y0 - text_h) // 2), big, BGR_WHITE, BANNER_THICKNESS)
    _draw_latency(out, view, regions["latency"], options)
    _draw_meter(out, view, regions, options)
    return out
