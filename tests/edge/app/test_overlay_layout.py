"""The overlay as a reader sees it: its boxes and texts inside the frame and apart, its texts legible on a bright one.

The text rectangles come from the ``cv2.putText`` calls themselves (origin and ``cv2.getTextSize``), not from pixels.
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from edgesense.app.overlay import OverlayOptions, OverlayView, draw_overlay, overlay_regions

#: A busy moment: a long place name and a smoothed top beside it, a command flashing, every stage timed (one slow),
#: the gate on.
BUSY = OverlayView(scene_label="my_grandmothers_living_room", scene_score=0.91, smoothed_label="kitchen",
                   smoothed_score=0.55, command_label="yes", command_score=0.93, command_age_ms=10.0,
                   stage_ms={"audio_frontend": 0.03, "audio_encoder": 0.25, "image_preprocess": 1234.56,
                             "image_encoder": 0.31, "fusion": 0.08},
                   level_dbfs=-12.0, gate_threshold_dbfs=-55.0, gate_open=True)
SHAPES = [(480, 640, 3), (240, 320, 3), (360, 480, 3), (1280 * 9 // 16, 1280, 3)]


def drawn_texts(monkeypatch, image: np.ndarray, view: OverlayView = BUSY, options: OverlayOptions = OverlayOptions()):
    """(the overlaid image, [(text, (x0, y0, x1, y1), colour, scale)] of each text drawn)."""
    calls = []
    put = cv2.putText

    def recording(img, text, org, font, scale, colour, thickness=1, *args):
        (w, h), base = cv2.getTextSize(text, font, scale, thickness)
        x, y = org
        calls.append((text, (x, y - h, x + w, y + base), tuple(colour), scale))
        return put(img, text, org, font, scale, colour, thickness, *args)

    monkeypatch.setattr(cv2, "putText", recording)
    out = draw_overlay(image, view, options)
    monkeypatch.setattr(cv2, "putText", put)
    return out, calls


def overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def inside(box, outer) -> bool:
    return outer[0] <= box[0] and outer[1] <= box[1] and box[2] <= outer[2] and box[3] <= outer[3]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[1]}x{s[0]}")
def test_the_panels_banner_and_meter_stay_in_the_frame_and_apart(shape):
    """At 320x240 the command banner reached over the meter's scale (a banner centred on the frame was as wide as
    the frame less twice the meter) and the latency panel covered its foot."""
    regions = overlay_regions(shape)
    frame = (0, 0, shape[1], shape[0])
    boxes = {k: v for k, v in regions.items() if k != "meter_bar"}  # the bar is inside the meter
    for name, box in regions.items():
        assert inside(box, frame), (name, box)
    for (a, box_a), (b, box_b) in itertools.combinations(boxes.items(), 2):
        assert not overlaps(box_a, box_b), (a, box_a, b, box_b)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[1]}x{s[0]}")
def test_every_text_is_inside_the_frame_inside_its_box_and_overlaps_no_other(monkeypatch, shape):
    """Busy (a long place name, a slow stage's 1234.56 ms beside its name in a 320-wide frame's panel), yet every
    text whole and apart."""
    image = np.full(shape, 128, np.uint8)
    _, texts = drawn_texts(monkeypatch, image)
    regions = overlay_regions(shape)
    assert len(texts) > 10
    for text, box, _, _ in texts:
        assert inside(box, (0, 0, shape[1], shape[0])), (text, box)
        assert any(inside(box, regions[name]) for name in ("scene", "command", "latency", "meter")), (text, box)
    for (text_a, box_a, _, _), (text_b, box_b, _, _) in itertools.combinations(texts, 2):
        assert not overlaps(box_a, box_b), (text_a, box_a, text_b, box_b)
    names = [text for text, _, _, _ in texts]
    assert "1234.56" in names and "image_preprocess" in names


def luminance(bgr) -> float:
    """WCAG relative luminance of an sRGB colour given as BGR."""
    def linear(c: float) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    b, g, r = (float(c) for c in bgr)
    return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)


def contrast(a, b) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@pytest.mark.parametrize("level", [255, 200, 0])
def test_every_text_reads_against_what_is_behind_it_on_a_bright_or_a_dark_frame(monkeypatch, level):
    """WCAG's 4.5:1 for the small texts, 3:1 for the banner's large bold one. The dimmed texts (the smoothed top, the
    latency title) were grey 150 on a 0.55 panel: 1.6:1 on a white frame, hardly there on a bright scene."""
    shape = (480, 640, 3)
    image = np.full(shape, level, np.uint8)
    _, texts = drawn_texts(monkeypatch, image)
    monkeypatch.setattr(cv2, "putText", lambda img, *args, **kwargs: img)
    behind = draw_overlay(image, BUSY)  # the same overlay, its texts left out
    command_scale = max(scale for _, _, _, scale in texts)
    for text, (x0, y0, x1, y1), colour, scale in texts:
        background = np.median(behind[y0:y1, x0:x1].reshape(-1, 3), axis=0)
        need = 3.0 if scale == command_scale else 4.5
        assert contrast(colour, background) >= need, (text, colour, background.tolist())


@pytest.mark.parametrize(("name", "value"), [("meter_width_px", True), ("margin_px", True), ("line_height_px", True),
                                             ("banner_height_px", True), ("meter_scale_width_px", True),
                                             ("panel_alpha", True), ("panel_alpha", False),
                                             ("level_floor_dbfs", float("-inf")),
                                             ("level_floor_dbfs", float("nan"))])
def test_a_bool_or_an_infinite_floor_is_refused_naming_the_field(name, value):
    """``margin_px=True`` drew a one-pixel margin; ``level_floor_dbfs=-inf`` drew every level at the bar's foot."""
    with pytest.raises(ValueError, match=f"^{name}: expected"):
        OverlayOptions(**{name: value})
